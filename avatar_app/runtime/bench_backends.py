"""``avatar-app bench --backend``: per-network and end-to-end milliseconds of the network
chain on each backend, against eager fp32 torch measured in the same run.

The chain is the per-frame networks (flow, warp, generator and — at 512 — the
enhancer) from CPU-side inputs to the avatar on the host; the CPU-side preparation
(triangle ids, landmark image) is timed separately.  Inputs come from the synthetic
driver, so this runs anywhere torch does (no mediapipe or dlib).  Each variant is
warmed up (compilation, CUDA graph capture) before timing; per-network figures come
from a second pass that synchronizes after every network.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..capture.synthetic import FacePose, synthetic_landmarks, timeline_pose
from ..models.portrait import NET_SIZE, load_checkpoint
from ..models.shipped import untrained_model
from ..types import Landmarks, SourcePortrait


@dataclass
class Variant:
    label: str
    backend: str
    options: dict


@dataclass
class VariantFigures:
    label: str
    device: str
    chain_ms: float  # median, end to end (inputs on the host -> avatar on the host)
    p90_ms: float
    network_ms: dict[str, float]
    max_diff: float  # grey levels vs the baseline's output, worst over the timed frames
    mean_diff: float  # grey levels, mean over pixels and frames
    setup_s: float  # loading, exporting / compiling, warm-up


def gpu_variants() -> list[Variant]:
    return [Variant("eager fp32 (baseline)", "torch-cuda", dict(precision="fp32", compile=False, cuda_graphs=False)),
            Variant("eager fp16", "torch-cuda", dict(precision="fp16", compile=False, cuda_graphs=False)),
            Variant("eager fp16 + CUDA graphs", "torch-cuda", dict(precision="fp16", compile=False, cuda_graphs=True)),
            Variant("compiled fp16", "torch-cuda", dict(precision="fp16", compile=True, cuda_graphs=False)),
            Variant("compiled fp16 + CUDA graphs", "torch-cuda", dict(precision="fp16", compile=True, cuda_graphs=True))]


def cpu_variants(calibration=None) -> list[Variant]:
    out = [Variant("torch-cpu eager fp32 (baseline)", "torch-cpu", dict(precision="fp32")),
           Variant("onnxruntime fp32", "onnxruntime", dict(precision="fp32", use_accelerators=False))]
    if calibration is not None:
        out.append(Variant("onnxruntime int8", "onnxruntime", dict(precision="int8", calibration=calibration,
                                                                   use_accelerators=False)))
    return out


def _source(size: int) -> tuple[SourcePortrait, np.ndarray]:
    """A synthetic source: the synthetic face's landmarks over a textured image."""
    rng = np.random.default_rng(0)
    lm = synthetic_landmarks(FacePose(), (size, size), 60.0 * size / NET_SIZE)
    crop = (rng.uniform(0, 255, (size // 8, size // 8, 3))).astype(np.uint8).repeat(8, 0).repeat(8, 1)
    src = SourcePortrait(crop=crop, landmarks=lm, size=size, image=crop, crop_to_image=np.eye(2, 3))
    return src, rng.standard_normal(128).astype(np.float32) * 0.1


def bench_backends(variants: list[Variant], preset: str = "full", size: int = 512, frames: int = 50,
                   weights: str | None = None, progress=print) -> tuple[list[VariantFigures], float]:
    """Time each variant on the same frames; also the CPU-side preparation (ms, median)."""
    from .neural_animator import NeuralAnimator

    model = load_checkpoint(weights) if weights else untrained_model(preset)
    source, identity = _source(size)
    scale = size / 640.0
    targets = [Landmarks(synthetic_landmarks(timeline_pose(i / 25.0), (640, 640)).points * scale, (size, size))
               for i in range(frames)]
    results, reference, prep = [], None, []
    for v in variants:
        t0 = time.perf_counter()
        anim = NeuralAnimator(source, model=model, identity=identity, backend=v.backend, **v.options)
        chain = anim.chain
        inputs = []
        for t in targets:
            p0 = time.perf_counter()
            inputs.append(anim.network_inputs(t))
            prep.append((time.perf_counter() - p0) * 1e3)
        for x in inputs[:3]:  # warm-up: compilation, graph capture, allocator
            chain.frame_numpy(*x)
        setup = time.perf_counter() - t0
        chain.reset()
        times, outs = [], []
        for x in inputs:
            s0 = time.perf_counter()
            out = chain.frame_numpy(*x)
            times.append((time.perf_counter() - s0) * 1e3)
            outs.append(np.clip(out, 0, 1) * 255.0)
        chain.reset()
        chain.sync_timings = True
        per_net: dict[str, list[float]] = {}
        for x in inputs:
            chain.frame_numpy(*x)
            for k, ms in chain.timings.items():
                per_net.setdefault(k, []).append(ms)
        if reference is None:
            reference = outs
        diffs = [np.abs(a - b) for a, b in zip(outs, reference)]
        fig = VariantFigures(v.label, chain.device, float(np.median(times)), float(np.percentile(times, 90)),
                             {k: float(np.median(m)) for k, m in per_net.items()},
                             max(float(d.max()) for d in diffs), float(np.mean([d.mean() for d in diffs])), setup)
        results.append(fig)
        if progress:
            progress(f"  {v.label}: {fig.chain_ms:.2f} ms median ({fig.device}; setup {fig.setup_s:.1f} s)")
        del anim, chain
    return results, float(np.median(prep))


def format_backend_figures(rows: list[VariantFigures], prep_ms: float, preset: str, size: int) -> str:
    nets = [n for n in ("flow", "warp", "generator", "enhancer") if any(n in r.network_ms for r in rows)]
    head = f"{'variant':<34}" + "".join(f"{n:>11}" for n in nets) + f"{'chain':>9}{'p90':>8}{'vs base':>9}{'diff mean/max':>15}"
    lines = [f"preset {preset}, {NET_SIZE}->{size}, batch 1; ms (median)", head]
    base = rows[0].chain_ms
    for r in rows:
        lines.append(f"{r.label:<34}" + "".join(f"{r.network_ms.get(n, float('nan')):>11.2f}" for n in nets)
                     + f"{r.chain_ms:>9.2f}{r.p90_ms:>8.2f}{base / r.chain_ms:>8.2f}x{r.mean_diff:>9.3f}/{r.max_diff:<5.1f}")
    lines.append(f"CPU-side preparation per frame (triangle ids + landmark image): {prep_ms:.2f} ms")
    lines.append("chain: host inputs -> avatar on the host; per-network columns synchronize after each network; "
                 "diff: grey levels vs the first row's output (mean over pixels / worst pixel)")
    lines.append("devices: " + "; ".join(f"{r.label}: {r.device}" for r in rows))
    return "\n".join(lines)
