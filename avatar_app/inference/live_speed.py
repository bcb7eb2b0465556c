"""Does the neural animator keep up live on this machine?  Measured on a first start, then remembered.

``--animator auto`` (the app's *auto*) takes the neural animator on a GPU because on an H200 it kept up with a
30 fps camera; a smaller GPU may not.  So when *auto* builds the neural animator for a live start on a GPU,
backend, precision, preset, size and weights not measured yet, it times the networks on a few frames (after a
warm-up that absorbs compiling and CUDA-graph capture).  When the slowest tenth of frames take longer than
:data:`FRAME_SHARE` of a frame at :data:`LIVE_FPS`, that start runs the geometric avatar and says why.  A
verdict is kept with the backends' self-test verdicts (``backend-verdicts.json`` in the engine folder); *slow*
settles only when :data:`SLOW_STARTS` starts in a row measured it (one measurement may have shared the GPU with
other work), and from then on :func:`~.default_animator.machine_default` picks the geometric avatar without
building the networks.  ``avatar-app doctor --remeasure`` forgets these verdicts (and only these).
``--animator neural`` is never overruled: the user chose it; nor is a render, which need not keep up.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import replace

import numpy as np

from .selftest import Verdict, VerdictStore

log = logging.getLogger(__name__)

KIND = "neural-live"  # the verdicts' "backend" field
LIVE_FPS = 25.0  # what a call needs
# The networks run on their own thread, beside capture, tracking (mediapipe: 4-15 ms a frame on the CPU) and the
# sinks, which share the CPU and Python with them; inside the running pipeline they also took up to 18 % longer
# than timed alone here (the H200 at 512: 6.8 ms timed, 8.0 ms live).  So they may use 80 % of a frame, no more:
# at 32 ms timed, ~38 ms live still leaves 25 fps.
FRAME_SHARE = 0.8
WARMUP, FRAMES = 5, 30
SLOW_STARTS = 2  # slow measurements on separate starts before "slow" is the remembered verdict


def limit_ms() -> float:
    return 1000.0 / LIVE_FPS * FRAME_SHARE


@functools.lru_cache(maxsize=1)
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


def key(animator, preset: str, size: int) -> str:
    """What a verdict is kept under besides the GPU: preset and size, the chain's backend and precision, and the
    weights (their hash), so other weights or a new release of them are measured again."""
    from .networks import model_hash

    chain = animator.chain
    flow = getattr(chain, "backends", {}).get("flow")
    precision = getattr(flow, "precision", "") or ""
    weights = model_hash(animator.model)[:12] if getattr(animator, "model", None) is not None else "-"
    return f"{preset}@{size} on {chain.name} {precision} weights {weights}".replace("  ", " ")


def frame_times(animator, frames: int = FRAMES, warmup: int = WARMUP, stop_over: float | None = None) -> list[float]:
    """Milliseconds each of ``frames`` calls of ``animator.animate`` took, after ``warmup`` untimed ones, animating
    the portrait's own landmarks moved a little differently each frame (the head nodding and coming closer).
    ``stop_over``: stop early once more than a tenth of ``frames`` took longer than that (the 90th percentile is
    then over it whatever the rest take)."""
    rest = animator.source.landmarks
    base = rest.points
    centre = base[:, :2].mean(0)
    times: list[float] = []
    for k in range(warmup + frames):
        t = 0.4 * np.sin(0.5 * k)
        points = base.copy()
        points[:, 1] += 0.02 * animator.source.size * t
        points[:, :2] = centre + (points[:, :2] - centre) * (1.0 + 0.03 * t)
        t0 = time.perf_counter()
        animator.animate(rest.with_points(points))
        if k >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
            if stop_over is not None and sum(x > stop_over for x in times) > frames // 10:
                break
    return times


def measure(animator, preset: str, size: int) -> Verdict:
    """The verdict on ``animator`` (a built :class:`~avatar_app.runtime.neural_animator.NeuralAnimator`) here."""
    t0 = time.perf_counter()
    times = frame_times(animator, FRAMES, WARMUP, stop_over=limit_ms())
    if hasattr(animator, "reset"):  # the enhancer's ring buffer must not carry the test frames into the first real ones
        animator.reset()
    p90 = float(np.percentile(times, 90))
    ok = p90 <= limit_ms()
    detail = (f"the {preset} networks at {size} took {p90:.1f} ms a frame (90th percentile of {len(times)}), "
              f"{1000.0 / p90:.0f} fps; live needs at most {limit_ms():.0f} ms for {LIVE_FPS:.0f} fps")
    verdict = Verdict(KIND, gpu_name(), key(animator, preset, size), ok, detail, time.strftime("%Y-%m-%d %H:%M"),
                      round(time.perf_counter() - t0, 1))
    (log.info if ok else log.warning)("%s", verdict.explain())
    return verdict


def settled_slow(verdict: Verdict | None) -> bool:
    """A slow verdict measured on :data:`SLOW_STARTS` starts in a row."""
    return verdict is not None and not verdict.ok and verdict.count >= SLOW_STARTS


def check(animator, preset: str, size: int, store: VerdictStore | None = None) -> Verdict:
    """This machine's verdict for ``animator`` (its backend, precision and weights), ``preset`` and ``size``: the
    remembered one where it has settled (fast, or slow on :data:`SLOW_STARTS` starts), else measured now and
    remembered.  A verdict that cannot be saved is still returned (and said in the log)."""
    store = store or VerdictStore()
    name, version = gpu_name(), key(animator, preset, size)
    known = store.get(KIND, name, version)
    if known is not None and (known.ok or settled_slow(known)):
        return known
    verdict = measure(animator, preset, size)
    if not verdict.ok and known is not None and not known.ok:
        verdict = replace(verdict, count=known.count + 1)
    try:
        store.put(verdict)
    except OSError as exc:
        log.warning("could not remember the live-speed verdict in %s (%s); the next start measures again",
                    store.path, exc)
    return verdict


def known_slow(preset: str, size: int, backend: str | None = None,
               store: VerdictStore | None = None) -> Verdict | None:
    """A remembered, settled verdict that ``preset`` at ``size`` does not keep up on this machine with any backend
    it was measured on (``backend``: that backend only; ``"auto"`` or ``None``: any), ``None`` when never measured
    or fast enough on one of them.  Reads no GPU when nothing was ever measured here."""
    store = store or VerdictStore()
    if not store.has(KIND):
        return None
    prefix = f"{preset}@{size} on " + ("" if backend in (None, "auto") else f"{backend} ")
    mine = [v for v in store.all(KIND, gpu_name()) if v.version.startswith(prefix)]
    if not mine or not all(settled_slow(v) for v in mine):  # (a fast one is not settled slow)
        return None
    return mine[-1]


RUN_ANYWAY = "--animator neural (the app: animator 'neural') runs them anyway"


def fallback_note(verdict: Verdict) -> str:
    """What the app and the CLI say when *auto* runs the geometric avatar because of ``verdict``."""
    again = ("; `avatar-app doctor --remeasure` measures again" if settled_slow(verdict) else
             "; the next start measures once more before this is remembered")
    return (f"the geometric avatar instead of the neural one: on this machine {verdict.detail} (measured "
            f"{verdict.when}){again}. {RUN_ANYWAY}")


def fallback_reason(animator, preset: str, size: int) -> str | None:
    """Why *auto*'s live start must run the geometric avatar instead of ``animator`` (:func:`check`), or ``None``
    when it keeps up.  A measurement that fails (the GPU out of memory, say) is such a reason, not a crash."""
    try:
        verdict = check(animator, preset, size)
    except Exception as exc:  # noqa: BLE001 - whatever stops the networks running here stops them running live
        log.warning("timing the neural networks failed: %s: %s", type(exc).__name__, exc)
        return (f"the geometric avatar instead of the neural one: timing the networks here failed "
                f"({type(exc).__name__}: {exc}). {RUN_ANYWAY}")
    return None if verdict.ok else fallback_note(verdict)
