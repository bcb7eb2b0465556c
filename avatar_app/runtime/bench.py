"""``avatar-app bench``: per-stage milliseconds and frames per second of the geometric path.

Each frame runs the whole live path once: mediapipe tracking (tracking mode) of a
640×480 camera-sized frame holding a real face, retargeting, rasterising the mesh,
the analytic flow, and the warp with mouth fill.  The retargeting input comes from
the synthetic driver's timeline so the flow does real work (the tracked frame is
still, but the tracker's cost does not depend on motion).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from ..capture.synthetic import synthetic_landmarks, timeline_pose
from ..face.retarget import Retargeter
from ..face.source import prepare_source, read_image
from ..face.tracker import FaceTracker
from ..types import Frame
from .animator import GeometricAnimator

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "portraits"


@dataclass
class BenchResult:
    size: int
    frames: int
    stages_ms: dict[str, tuple[float, float]]  # stage -> (median, p95)
    total_ms: tuple[float, float]

    @property
    def fps(self) -> float:
        return 1000.0 / self.total_ms[0]


def camera_frame(image: np.ndarray, size=(640, 480)) -> np.ndarray:
    """Place a portrait in a camera-sized frame (letterboxed), as a webcam would see it."""
    w, h = size
    k = min(w / image.shape[1], h / image.shape[0])
    small = cv2.resize(image, (int(image.shape[1] * k), int(image.shape[0] * k)), interpolation=cv2.INTER_AREA)
    frame = np.full((h, w, 3), 40, np.uint8)
    y0, x0 = (h - small.shape[0]) // 2, (w - small.shape[1]) // 2
    frame[y0:y0 + small.shape[0], x0:x0 + small.shape[1]] = small
    return frame


def _stats(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values)
    return float(np.median(a)), float(np.percentile(a, 95))


def bench_geometric(size: int, frames: int = 200, warmup: int = 20, source_path: str | Path | None = None,
                    driver_path: str | Path | None = None) -> BenchResult:
    """Time the geometric live path at crop ``size`` over ``frames`` frames."""
    src_img = read_image(source_path or ASSETS / "astronaut.jpg")
    drv_img = camera_frame(read_image(driver_path or ASSETS / "grace_hopper.jpg"))
    with FaceTracker() as tracker:
        source = prepare_source(src_img, size, tracker=tracker)
        animator = GeometricAnimator(source)
        retarget = Retargeter(source.landmarks)
        stages: dict[str, list[float]] = {k: [] for k in ("track", "retarget", "rasterize", "flow", "warp")}
        totals = []
        for i in range(warmup + frames):
            t0 = time.perf_counter()
            tracked = tracker.track(Frame(drv_img, i / 30.0, i))
            t1 = time.perf_counter()
            driver = synthetic_landmarks(timeline_pose(1.0 + i / 30.0))
            target = retarget(driver)
            t2 = time.perf_counter()
            animator.animate(target)
            t3 = time.perf_counter()
            if not tracked.found:
                raise RuntimeError("the benchmark frame lost its face; tracking figures would be wrong")
            if i >= warmup:
                stages["track"].append((t1 - t0) * 1e3)
                stages["retarget"].append((t2 - t1) * 1e3)
                for k, v in animator.timings.items():
                    stages[k].append(v)
                totals.append((t3 - t0) * 1e3)
    return BenchResult(size, frames, {k: _stats(v) for k, v in stages.items()}, _stats(totals))


def format_results(results: list[BenchResult]) -> str:
    names = list(results[0].stages_ms)
    head = f"{'stage (ms, median / p95)':<26}" + "".join(f"{f'{r.size}x{r.size}':>18}" for r in results)
    lines = [head]
    for n in names:
        lines.append(f"{n:<26}" + "".join(f"{r.stages_ms[n][0]:>10.2f} / {r.stages_ms[n][1]:<5.2f}" for r in results))
    lines.append(f"{'total':<26}" + "".join(f"{r.total_ms[0]:>10.2f} / {r.total_ms[1]:<5.2f}" for r in results))
    lines.append(f"{'fps (1000 / median total)':<26}" + "".join(f"{r.fps:>18.1f}" for r in results))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    lines.append(f"CPU cores available: {cores}, torch threads: {torch.get_num_threads()}, "
                 f"frames: {results[0].frames}, tracked frame: 640x480")
    return "\n".join(lines)


@dataclass
class LiveBenchResult:
    size: int
    kind: str
    animator: str
    seconds: float
    throughput_fps: float
    capture_fps: float
    latency_ms: tuple[float, float]
    stage_ms: dict[str, tuple[float, float]]
    dropped: dict[str, int]


def bench_live(size: int, kind: str = "synthetic", seconds: float = 10.0, fps: float = 30.0,
               warmup: float = 1.5, animator=None, warmup_frames: int = 0) -> LiveBenchResult:
    """The threaded live pipeline fed 640×480 frames at ``fps`` for ``seconds``.

    ``kind`` = ``"synthetic"``: the synthetic driver (its frames carry landmarks, so
    no tracking); ``"tracked"``: a still real face (Grace Hopper) in every frame,
    tracked by mediapipe, with the face pose held still.  The avatars are recorded
    to an mp4 in a temporary folder, so a real sink's cost is included.
    ``animator``: a callable making the animator from the source portrait (default: the
    geometric one); ``warmup_frames`` frames are animated before the clock starts (a
    compiled neural chain's first frames compile and capture).
    """
    from ..capture.images import ImageSequenceSource
    from ..capture.synthetic import SyntheticDriver
    from .pipeline import Pipeline

    source = prepare_source(read_image(ASSETS / "astronaut.jpg"), size)
    if kind == "synthetic":
        driver, pace = SyntheticDriver(fps=fps, duration=None, realtime=True, size=(640, 480)), False
    elif kind == "tracked":
        driver, pace = ImageSequenceSource([camera_frame(read_image(ASSETS / "grace_hopper.jpg"))], fps=fps), True
    else:
        raise ValueError(f"unknown live bench kind {kind!r}")
    import tempfile

    from ..sinks.recorder import VideoRecorder

    tmp = tempfile.TemporaryDirectory(prefix="avatar-bench-")
    recorder = VideoRecorder(Path(tmp.name) / "bench.mp4", fps, (size, size))  # a real sink's cost
    anim = animator(source) if animator is not None else None
    for _ in range(warmup_frames if anim is not None else 0):
        anim.animate(source.landmarks)  # the neutral face
    pipeline = Pipeline(source, driver, [recorder], fps=fps, pace=pace, stats_window=100000, animator=anim)
    pipeline.start()
    try:
        time.sleep(warmup)
        pipeline.reset_stats()
        n0, c0, t0 = pipeline.stats().frames_animated, pipeline.stats().frames_captured, time.monotonic()
        time.sleep(seconds)
        stats = pipeline.stats()
        elapsed = time.monotonic() - t0
    finally:
        pipeline.stop()
        tmp.cleanup()
    if pipeline.error is not None:
        raise pipeline.error
    return LiveBenchResult(size, kind, type(anim).__name__ if anim is not None else "GeometricAnimator", elapsed, (stats.frames_animated - n0) / elapsed,
                           (stats.frames_captured - c0) / elapsed, stats.latency_ms, stats.stage_ms, stats.dropped)


def format_live(results: list[LiveBenchResult]) -> str:
    lines = [f"{'run':<40}{'in fps':>8}{'out fps':>9}{'latency p50':>13}{'p95 (ms)':>10}  stage p50 ms"]
    for r in results:
        stages = ", ".join(f"{k} {v[0]:.1f}" for k, v in r.stage_ms.items())
        name = f"{r.animator.replace('Animator', '').lower()} {r.kind} {r.size}x{r.size}"
        lines.append(f"{name:<40}{r.capture_fps:>8.1f}{r.throughput_fps:>9.1f}"
                     f"{r.latency_ms[0]:>13.1f}{r.latency_ms[1]:>10.1f}  {stages}")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    lines.append(f"640x480 driving frames, {results[0].seconds:.0f} s per run after warm-up, recorded to mp4; "
                 f"latency = frame arrival to sink; CPU cores: {cores}")
    return "\n".join(lines)
