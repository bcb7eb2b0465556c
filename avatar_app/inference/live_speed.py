"""Does the neural animator keep up live on this machine?  Measured once, then remembered.

``--animator auto`` (the app's *auto*) takes the neural animator on a GPU because on an H200 it kept up with a
30 fps camera; a smaller GPU may not.  So the first time *auto* builds the neural animator on a GPU, backend,
preset and size, it times the networks on a few frames (after a warm-up that absorbs compiling and CUDA-graph
capture): when a frame takes longer than :data:`FRAME_SHARE` of a frame at :data:`LIVE_FPS` (90th percentile),
*auto* falls back to the geometric avatar and says why.  The verdict is kept with the backends' self-test
verdicts (``backend-verdicts.json`` in the engine folder; delete it to measure again), so later starts and
:func:`~.default_animator.machine_default` read it instead of measuring.  ``--animator neural`` is never
overruled: the user chose it.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from .selftest import Verdict, VerdictStore

log = logging.getLogger(__name__)

KIND = "neural-live"  # the verdicts' "backend" field
LIVE_FPS = 25.0  # what a call needs
# The networks run on their own thread, beside capture, tracking (mediapipe: 4-15 ms a frame on the CPU) and the
# sinks, which share the CPU and Python with them: they may use 80 % of a frame's time, no more.
FRAME_SHARE = 0.8
WARMUP, FRAMES = 5, 30


def limit_ms() -> float:
    return 1000.0 / LIVE_FPS * FRAME_SHARE


def gpu_name() -> str:
    """The name the verdicts of this machine are kept under: GPU 0's, else the CPU's."""
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001 - a broken torch install: fall through to TensorRT's view of the GPU
        pass
    try:
        import pycuda.driver as cuda

        cuda.init()
        return cuda.Device(0).name()
    except Exception:  # noqa: BLE001 - no GPU that either can see
        import platform

        return platform.processor() or platform.machine() or "cpu"


def _version(preset: str, size: int, backend: str) -> str:
    return f"{preset}@{size} on {backend}"


def frame_times(animator, frames: int = FRAMES, warmup: int = WARMUP) -> list[float]:
    """Milliseconds each of ``frames`` calls of ``animator.animate`` took, after ``warmup`` untimed ones, animating
    the portrait's own landmarks moved a little differently each frame (the head nodding and coming closer)."""
    rest = animator.source.landmarks
    base = rest.points
    centre = base[:, :2].mean(0)
    times = []
    for k in range(warmup + frames):
        t = 0.4 * np.sin(0.5 * k)
        points = base.copy()
        points[:, 1] += 0.02 * animator.source.size * t
        points[:, :2] = centre + (points[:, :2] - centre) * (1.0 + 0.03 * t)
        t0 = time.perf_counter()
        animator.animate(rest.with_points(points))
        if k >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def measure(animator, preset: str, size: int) -> Verdict:
    """The verdict on ``animator`` (a built :class:`~avatar_app.runtime.neural_animator.NeuralAnimator`) here."""
    t0 = time.perf_counter()
    times = frame_times(animator, FRAMES, WARMUP)
    if hasattr(animator, "reset"):  # the enhancer's ring buffer must not carry the test frames into the first real ones
        animator.reset()
    p90 = float(np.percentile(times, 90))
    ok = p90 <= limit_ms()
    detail = (f"the {preset} networks at {size} took {p90:.1f} ms a frame (90th percentile of {len(times)}), "
              f"{1000.0 / p90:.0f} fps; live needs at most {limit_ms():.0f} ms for {LIVE_FPS:.0f} fps")
    verdict = Verdict(KIND, gpu_name(), _version(preset, size, animator.chain.name), ok, detail,
                      time.strftime("%Y-%m-%d %H:%M"), round(time.perf_counter() - t0, 1))
    (log.info if ok else log.warning)("%s", verdict.explain())
    return verdict


def check(animator, preset: str, size: int, store: VerdictStore | None = None) -> Verdict:
    """This machine's remembered verdict for ``animator``'s backend, preset and size; measured (and remembered)
    when there is none."""
    store = store or VerdictStore()
    verdict = store.get(KIND, gpu_name(), _version(preset, size, animator.chain.name))
    if verdict is None:
        verdict = measure(animator, preset, size)
        store.put(verdict)
    return verdict


def known_slow(preset: str, size: int, store: VerdictStore | None = None) -> Verdict | None:
    """A remembered verdict that ``preset`` at ``size`` does not keep up on this machine with any backend it was
    measured on (``None``: never measured, or fast enough on one of them)."""
    store = store or VerdictStore()
    prefix = _version(preset, size, "")
    mine = [v for v in store.all(KIND, gpu_name()) if v.version.startswith(prefix)]
    return None if not mine or any(v.ok for v in mine) else mine[-1]


def fallback_note(verdict: Verdict, store: VerdictStore | None = None) -> str:
    """What the app and the CLI say when *auto* falls back to the geometric avatar."""
    path = (store or VerdictStore()).path
    return (f"the geometric avatar instead of the neural one: on this machine {verdict.detail} (measured "
            f"{verdict.when}). --animator neural (the app: animator 'neural') runs it anyway; delete {path} to "
            f"measure again")
