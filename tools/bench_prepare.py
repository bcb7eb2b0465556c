"""Per-frame preparation on the CPU (OpenCV) versus on the device (torch), and what it changes.

The neural animator's per-frame inputs — the driver's landmark image and triangle-id map
at 256 px — are drawn either on the CPU (``landmark_image`` + ``rasterize_triangles``)
or by the chain itself on its device (``models/frame_inputs.py``).  This prints one JSON
line with, on whatever device is here:

* ``prepare``: ms per frame of the CPU drawing, of the torch drawing run eagerly, and of
  the torch drawing as the chain runs it (compiled and in a CUDA graph on torch-cuda),
  each including the transfer of the points and a synchronisation;
* ``frame``: ms per whole neural frame (inputs + networks, synchronised) both ways;
* ``quality`` (``--quality-clips N``, validation people of ``--data``): how close the
  torch drawing is — identical triangle ids, the analytic flow's difference in px,
  landmark-image mean/max abs difference per channel — and the PSNR between the avatar
  from CPU-drawn and from device-drawn inputs.

    python tools/bench_prepare.py                     # CUDA if torch sees it, else CPU
    python tools/bench_prepare.py --quality-clips 13  # + agreement on 13 validation people
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avatar_app.face.mesh import topology  # noqa: E402
from avatar_app.models.conditioning import landmark_image  # noqa: E402
from avatar_app.models.flow import AnalyticFlow, rasterize_triangles  # noqa: E402
from avatar_app.models.frame_inputs import FrameInputs  # noqa: E402
from avatar_app.models.portrait import NET_SIZE, PortraitModel, load_checkpoint  # noqa: E402
from avatar_app.models.shipped import shipped_weights  # noqa: E402
from avatar_app.runtime.neural_animator import NeuralAnimator  # noqa: E402
from avatar_app.train.clipio import frame_name, points_for_size, read_image_file  # noqa: E402
from avatar_app.train.manifest import read_manifest  # noqa: E402
from avatar_app.train.split import split_clips  # noqa: E402
from avatar_app.train.metrics import psnr  # noqa: E402
from avatar_app.types import Landmarks, SourcePortrait  # noqa: E402

DEFAULT_DATA = Path("/work/data/real")


def stats(ms: list[float]) -> dict:
    ms = sorted(ms)
    p95 = ms[min(len(ms) - 1, math.ceil(0.95 * len(ms)) - 1)]  # nearest rank
    return {"median": round(statistics.median(ms), 3), "p95": round(p95, 3),
            "mean": round(statistics.fmean(ms), 3), "n": len(ms)}


def timed(fn, items, sync) -> dict:
    fn(items[0])  # warm (compile, capture, caches)
    sync()
    out = []
    for item in items:
        t0 = time.perf_counter()
        fn(item)
        sync()
        out.append((time.perf_counter() - t0) * 1e3)
    return stats(out)


def portrait(image: np.ndarray, points: np.ndarray, size: int) -> SourcePortrait:
    return SourcePortrait(crop=image, landmarks=Landmarks(points, (size, size)), size=size, image=image,
                          crop_to_image=np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))


def clips(data: Path, val_fraction: float) -> list[Path]:
    """Validation-people clip folders of a prepared dataset (none without one)."""
    if not (data / "manifest.json").is_file():
        return []
    _, val = split_clips(read_manifest(data)["clips"], val_fraction)
    return [data / "clips" / k for k in val]


def clip_frames(folder: Path, size: int, count: int):
    """``(source portrait, identity, driving landmark arrays at size)`` of one clip."""
    lm = np.load(folder / "landmarks.npy")
    valid = np.flatnonzero(np.load(folder / "valid.npy"))
    src, drive = int(valid[0]), [int(i) for i in valid[1:count + 1]]
    image = read_image_file(folder / str(size) / frame_name(src))
    identity = np.load(folder / "identity.npy") if (folder / "identity.npy").is_file() else None
    return portrait(image, points_for_size(lm[src], size), size), identity, [points_for_size(lm[i], size) for i in drive]


def synthetic_frames(size: int, count: int):
    """Without a dataset: the synthetic face over a gradient image, driven by random poses."""
    from avatar_app.capture.synthetic import FacePose, synthetic_landmarks

    rng = np.random.default_rng(0)
    ramp = np.linspace(40, 220, size, dtype=np.float32)
    image = np.stack([ramp[None, :].repeat(size, 0), ramp[:, None].repeat(size, 1), np.full((size, size), 128.0)], -1)
    source = portrait(image.astype(np.uint8), synthetic_landmarks(FacePose(), (size, size), 60).points, size)
    poses = [FacePose(yaw=float(rng.uniform(-20, 20)), pitch=float(rng.uniform(-10, 10)), jaw=float(rng.uniform(0, 1)))
             for _ in range(count)]
    return source, None, [synthetic_landmarks(p, (size, size), 60).points for p in poses]


def animators(model, source, identity, backend: str):
    identity = identity if identity is not None else np.zeros(128, np.float32)
    return {mode: NeuralAnimator(source, model=model, identity=identity, backend=backend, device_prepare=mode == "device")
            for mode in ("host", "device")}


def bench(anims: dict, drive: list, device: torch.device) -> dict:
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    size = anims["host"].size
    at256 = [points_for_size_from(p, size) for p in drive]
    tri = topology().triangles
    module = FrameInputs().to(device).eval()

    def cpu_prep(p):
        rasterize_triangles(p, tri, NET_SIZE)
        landmark_image(p, NET_SIZE)

    def eager(p):
        with torch.inference_mode():
            module(torch.from_numpy(p[None]).to(device))

    chain = anims["device"].chain
    frames = {mode: (lambda t, a=a: a.chain.frame(*a.network_inputs(Landmarks(t, (size, size))))) for mode, a in
              anims.items()}
    return {"prepare": {"cpu_opencv": timed(cpu_prep, at256, sync), "torch_eager": timed(eager, at256, sync),
                        "torch_in_chain": timed(lambda p: chain.prepare_frame(p[None]), at256, sync),
                        "chain_backend": chain.prepare.device},
            "frame": {f"{mode}_prepare": timed(fn, drive, sync) for mode, fn in frames.items()}}


def points_for_size_from(points: np.ndarray, size: int) -> np.ndarray:
    """Driving points at ``size`` -> float32 px at the networks' 256 (as the animator does)."""
    from avatar_app.face.align import rescale_points

    return rescale_points(points, size, NET_SIZE)


def quality(model, folders: list[Path], size: int, frames: int, backend: str) -> dict:
    tri = topology().triangles
    draw = FrameInputs().eval()
    flow = AnalyticFlow(NET_SIZE)
    same, total, flow_px, cond_mean, cond_max, scores, levels = 0, 0, [], [], np.zeros(6), [], []
    for folder in folders:
        source, identity, drive = clip_frames(folder, size, frames)
        anims = animators(model, source, identity, backend)
        src = torch.from_numpy(points_for_size_from(source.landmarks.points, size)[None, :, :2]).double()
        for pts in drive:
            p = points_for_size_from(pts, size)
            ref_ids, ref_cond = rasterize_triangles(p, tri, NET_SIZE), landmark_image(p, NET_SIZE)
            with torch.inference_mode():
                cond, ids = draw(torch.from_numpy(p[None]))
                tgt = torch.from_numpy(p[None, :, :2]).double()
                g_ref = flow(src, tgt, torch.from_numpy(ref_ids)[None])[0]
                g_dev = flow(src, tgt, ids.long())[0]
            same += int((ids[0].numpy() == ref_ids).sum())
            total += ref_ids.size
            flow_px.append(float(((g_ref - g_dev) * (NET_SIZE / 2)).norm(dim=-1).mean()))
            d = np.abs(cond[0].numpy() - ref_cond).reshape(6, -1)
            cond_mean.append(d.mean(1))
            cond_max = np.maximum(cond_max, d.max(1))
            out = {mode: a.animate(Landmarks(pts, (size, size))) for mode, a in anims.items()}
            scores.append(psnr(out["host"], out["device"]))
            levels.append(int(np.abs(out["host"].astype(np.int16) - out["device"]).max()))
    return {"clips": len(folders), "frames": len(scores), "tri_ids_identical": same / max(total, 1),
            "flow_diff_px_mean": float(np.mean(flow_px)), "flow_diff_px_max_frame": float(np.max(flow_px)),
            "cond_abs_mean": [round(float(v), 6) for v in np.mean(cond_mean, 0)],
            "cond_abs_max": [round(float(v), 4) for v in cond_max],
            "psnr_host_vs_device_db": {"mean": float(np.mean(scores)), "min": float(np.min(scores))},
            "max_level_diff": int(np.max(levels))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="prepared dataset (synthetic faces without one)")
    p.add_argument("--weights", help="checkpoint (default: the shipped full-real, else an untrained full model)")
    p.add_argument("--size", type=int, default=256, choices=(256, 512))
    p.add_argument("--frames", type=int, default=30, help="driving frames timed (and per quality clip)")
    p.add_argument("--backend", help="torch-cuda or torch-cpu (default: torch-cuda where torch sees a GPU)")
    p.add_argument("--quality-clips", type=int, default=0, help="validation clips for the agreement figures")
    p.add_argument("--quality-backend", default="torch-cpu", help="backend of the PSNR comparison")
    p.add_argument("--val-fraction", type=float, default=0.15)
    args = p.parse_args()
    backend = args.backend or ("torch-cuda" if torch.cuda.is_available() else "torch-cpu")
    device = torch.device("cuda" if backend == "torch-cuda" else "cpu")
    weights = args.weights or shipped_weights("full")
    model = load_checkpoint(str(weights), "cpu") if weights else PortraitModel("full")
    folders = clips(args.data, args.val_fraction)
    source, identity, drive = clip_frames(folders[0], args.size, args.frames) if folders else \
        synthetic_frames(args.size, args.frames)
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "backend": backend, "size": args.size, "weights": str(weights) if weights else "untrained full",
              "torch_threads": torch.get_num_threads(), "driver": "real" if folders else "synthetic"}
    result.update(bench(animators(model, source, identity, backend), drive, device))
    if args.quality_clips:
        if not folders:
            result["quality"] = f"skipped: no prepared dataset at {args.data}"
        else:
            result["quality"] = quality(model, folders[:args.quality_clips], args.size, args.frames,
                                        args.quality_backend)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
