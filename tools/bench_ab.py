"""The live path's speed of this checkout against another one, interleaved in one process.

On a shared machine, absolute times drift with the load by more than a change costs; a ratio
measured with both versions taking turns under the same load does not. The other checkout's
``avatar_app`` is copied to a temporary package (``avatar_base``) and both run the
live path of :func:`avatar_app.runtime.bench.bench_geometric` (mediapipe tracking of a camera frame,
retargeting, rasterising, the analytic flow and the warp) taking turns frame by frame.

    python tools/bench_ab.py --base /work/main --size 256 512 --frames 200 --threads 1 [--cpu-time]
"""

from __future__ import annotations

import argparse
import importlib
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def load_base(base: Path, where: Path):
    """``base``'s ``avatar_app`` imported as ``avatar_base`` (its absolute self-imports renamed)."""
    pkg = where / "avatar_base"
    shutil.copytree(base / "avatar_app", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    for f in pkg.rglob("*.py"):
        text = f.read_text(encoding="utf-8")
        renamed = re.sub(r"\bavatar_app\b", "avatar_base", text)
        if renamed != text:
            f.write_text(renamed, encoding="utf-8")
    (where / "assets").symlink_to(base / "assets")  # the bench's portraits, found beside the package
    sys.path.insert(0, str(where))
    return importlib.import_module("avatar_base")


class _Path:
    """One version's live path, one frame at a time (as ``bench_geometric`` runs it)."""

    def __init__(self, pkg: str, size: int, clock=time.perf_counter):
        self.clock = clock
        bench = importlib.import_module(f"{pkg}.runtime.bench")
        self.frame_type = importlib.import_module(f"{pkg}.types").Frame
        self.synthetic = importlib.import_module(f"{pkg}.capture.synthetic")
        src = bench.read_image(bench.ASSETS / "astronaut.jpg")
        self.driver = bench.camera_frame(bench.read_image(bench.ASSETS / "grace_hopper.jpg"))
        self.tracker = bench.FaceTracker()
        source = bench.prepare_source(src, size, tracker=self.tracker)
        self.animator = bench.GeometricAnimator(source)
        self.retarget = bench.Retargeter(source.landmarks)
        self.times: dict[str, list[float]] = {}

    def step(self, i: int, keep: bool) -> None:
        t0 = self.clock()
        tracked = self.tracker.track(self.frame_type(self.driver, i / 30.0, i))
        t1 = self.clock()
        target = self.retarget(self.synthetic.synthetic_landmarks(self.synthetic.timeline_pose(1.0 + i / 30.0)))
        t2 = self.clock()
        self.animator.animate(target)
        t3 = self.clock()
        if not tracked.found:
            raise RuntimeError("the benchmark frame lost its face")
        if keep:
            stages = {"track": (t1 - t0) * 1e3, "retarget": (t2 - t1) * 1e3, "animate": (t3 - t2) * 1e3,
                      "total": (t3 - t0) * 1e3}
            if self.clock is time.perf_counter:  # the animator's own stage times are wall clock
                stages.update(self.animator.timings)
            for k, v in stages.items():
                self.times.setdefault(k, []).append(v)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", type=Path, required=True, help="the other checkout (its repository root)")
    p.add_argument("--size", type=int, nargs="+", default=[256, 512])
    p.add_argument("--frames", type=int, default=200, help="timed frames per version (they take turns frame by frame)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cpu-time", action="store_true",
                   help="time with the process's CPU clock (less swayed by other processes' load than the wall clock)")
    args = p.parse_args()
    clock = time.process_time if args.cpu_time else time.perf_counter
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        load_base(args.base, Path(tmp))
        for size in args.size:
            paths = {"base": _Path("avatar_base", size, clock), "this": _Path("avatar_app", size, clock)}
            for i in range(10 + args.frames):
                for path in (paths.values() if i % 2 else reversed(paths.values())):
                    path.step(i, keep=i >= 10)
            kind = "CPU" if args.cpu_time else "wall"
            print(f"size {size}, {args.frames} frames each, interleaved: median {kind} ms (base -> this, ratio)")
            for stage in paths["this"].times:
                a, b = (float(np.median(paths[k].times[stage])) for k in ("base", "this"))
                print(f"  {stage:10s} {a:8.2f} -> {b:8.2f}  {b / max(a, 1e-9):.2f}")
            for path in paths.values():
                path.tracker.close()


if __name__ == "__main__":
    main()
