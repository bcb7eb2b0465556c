"""``avatar-app bench --model``: parameters, GFLOPs and eager latency per network and preset.

Inputs are synthetic (the synthetic driver's landmarks, random source pixels and
identity), so this runs anywhere torch does — no mediapipe or dlib needed.
FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (2 per
multiply-add, convolutions and matrix products; element-wise work is not counted).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from ..capture.synthetic import FacePose, synthetic_landmarks
from ..face.mesh import topology
from ..models.conditioning import landmark_images
from ..models.flow import AnalyticFlow, rasterize_triangles
from ..models.portrait import NET_SIZE, PortraitModel
from ..models.warp import identity_grid

BUDGET_GFLOPS = {"full": 150.0, "lite": 6.0}  # whole per-frame chain, 256 -> 512


@dataclass
class NetworkFigures:
    preset: str
    network: str
    params_m: float
    gflops: float
    ms: float  # eager, median


def _inputs(device, dtype):
    s = NET_SIZE
    src = synthetic_landmarks(FacePose(), (s, s), 60).points
    tgt = synthetic_landmarks(FacePose(jaw=0.6, yaw=12), (s, s), 60).points
    ids = torch.from_numpy(rasterize_triangles(tgt, topology().triangles, s))[None]
    grid, _, _ = AnalyticFlow(s)(torch.from_numpy(src[None, :, :2].copy()), torch.from_numpy(tgt[None, :, :2].copy()), ids)
    g = torch.Generator().manual_seed(0)
    to = dict(device=device, dtype=dtype)
    return {
        "image": torch.rand(1, 3, s, s, generator=g).to(**to),
        "src_cond": landmark_images(src[None], s).to(**to),
        "tgt_cond": landmark_images(tgt[None], s).to(**to),
        "grid": grid.to(**to),
        "identity": torch.randn(1, 128, generator=g).to(**to),
        "base": torch.rand(1, 3, 2 * s, 2 * s, generator=g).to(**to),
    }


def _time(fn: Callable[[], object], device: torch.device, runs: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def _flops(fn: Callable[[], object]) -> float:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops() / 1e9


@torch.inference_mode()
def bench_model(preset: str, device: str = "cpu", half: bool = False, runs: int = 10) -> list[NetworkFigures]:
    """Figures for each network of ``preset`` (per frame unless marked 'once')."""
    dev = torch.device(device)
    dtype = torch.float16 if half else torch.float32
    model = PortraitModel(preset).to(dev, dtype).eval()
    x = _inputs(dev, dtype)
    src = model.encode_source(x["image"], x["src_cond"], x["identity"])
    ident = identity_grid(1, NET_SIZE, dev, dtype)
    flow = x["grid"].permute(0, 3, 1, 2) - ident
    residual, occ = model.warp(x["image"], x["src_cond"], x["tgt_cond"], flow, code=src.code)
    frame = model.forward_frame(src, x["tgt_cond"], x["grid"])
    history = model.enhancer.start_history(frame["image"], x["base"])

    steps: dict[str, Callable[[], object]] = {
        "source encoding (once)": lambda: model.encode_source(x["image"], x["src_cond"], x["identity"]),
        "warp network": lambda: model.warp(x["image"], x["src_cond"], x["tgt_cond"], flow, code=src.code),
        "generator": lambda: model.generator(src.features, frame["grid"], occ, x["tgt_cond"], src.identity,
                                             frame["warped"]),
        "enhancer (256->512)": lambda: model.enhancer(frame["image"], x["base"], history),
        "per-frame chain": lambda: model.enhancer(model.forward_frame(src, x["tgt_cond"], x["grid"])["image"],
                                                  x["base"], history),
    }
    def count(*modules: torch.nn.Module) -> int:
        return sum(p.numel() for m in modules for p in m.parameters())

    params = {
        "source encoding (once)": count(model.warp.code_net, model.warp.code_fc, model.generator.encoder),
        "warp network": count(model.warp),
        "generator": count(model.generator),
        "enhancer (256->512)": count(model.enhancer),
        "per-frame chain": count(model),
    }
    out = []
    for name, fn in steps.items():
        out.append(NetworkFigures(preset, name, params[name] / 1e6, _flops(fn), _time(fn, dev, runs)))
    del residual
    return out


def format_model_figures(rows: list[NetworkFigures], device: str, half: bool) -> str:
    lines = [f"{'preset':<7}{'network':<26}{'params (M)':>11}{'GFLOPs':>9}{'eager ms':>10}"]
    for r in rows:
        lines.append(f"{r.preset:<7}{r.network:<26}{r.params_m:>11.2f}{r.gflops:>9.2f}{r.ms:>10.2f}")
    for preset in dict.fromkeys(r.preset for r in rows):
        chain = next(r for r in rows if r.preset == preset and r.network == "per-frame chain")
        budget = BUDGET_GFLOPS[preset]
        verdict = "within" if chain.gflops <= budget else "OVER"
        lines.append(f"{preset}: per-frame chain {chain.gflops:.1f} GFLOPs, {verdict} the {budget:g} GFLOPs budget")
    lines.append(f"device: {device}, {'fp16' if half else 'fp32'}, batch 1, eager (no compile), "
                 f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    return "\n".join(lines)
