"""Play a stress driver through the offline render or the live pipeline and keep the avatars.

The two paths the product has: :func:`offline_avatars` is ``avatar-app render``'s loop
(:func:`~avatar_app.runtime.render.drive_frames`: tracker, :class:`DriverGuard`, animator),
before video encoding; :func:`live_avatars` is ``avatar-app live``'s threaded
:class:`~avatar_app.runtime.pipeline.Pipeline` (capture → track → animate → sinks, latest-wins
slots), with every avatar it makes and the driver frame each one came from.  Live output
skips driver frames when the machine cannot keep up; :func:`~.stress_checks.check_output`
takes the indices for that.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np

from ..capture.base import FrameSource
from ..face.retarget import Retargeter
from ..face.tracker import FaceTracker
from ..runtime.animator import GeometricAnimator, retarget_options
from ..runtime.face_loss import DriverGuard
from ..runtime.pipeline import Pipeline
from ..runtime.render import drive_frames
from ..types import Frame, SourcePortrait


def offline_avatars(source: SourcePortrait, driver, animator=None) -> list[np.ndarray]:
    """The avatars (BGR) the offline render makes for every frame of ``driver`` (a
    :class:`~avatar_app.capture.stress.StressDriver`)."""
    if animator is None:
        animator = GeometricAnimator(source)
    elif hasattr(animator, "reset"):
        animator.reset()
    with FaceTracker() as tracker:
        guard = DriverGuard(Retargeter(source.landmarks, retarget_options(animator)))
        return [im for im, _ in drive_frames(source, driver.frames, tracker, animator, guard)]


class Lockstep(FrameSource):
    """Plays another source one frame at a time: the next frame only once the avatar of the
    previous one came out of the pipeline (:meth:`delivered`), so no stage ever drops one,
    however slow the machine.  The end waits for the last avatar too."""

    def __init__(self, inner: FrameSource, timeout: float = 60.0):
        self._inner = inner
        self._timeout = timeout
        self._out = threading.Semaphore(0)

    @property
    def fps(self) -> float | None:
        return self._inner.fps

    @property
    def frame_size(self) -> tuple[int, int] | None:
        return self._inner.frame_size

    def open(self) -> None:
        self._inner.open()

    def close(self) -> None:
        self._inner.close()

    def delivered(self, _avatar=None) -> None:
        self._out.release()

    def __iter__(self) -> Iterator[Frame]:
        for k, frame in enumerate(self._inner):
            if k and not self._out.acquire(timeout=self._timeout):
                return  # the pipeline stopped making avatars
            yield frame
        self._out.acquire(timeout=self._timeout)


def live_avatars(source: SourcePortrait, driver, animator=None, lockstep: bool = False,
                 timeout: float = 600.0) -> tuple[list[np.ndarray], list[int], dict]:
    """Run the live pipeline on ``driver`` (a ``StressDriver``) until it ends.

    Paced at the driver's own frame rate, as ``avatar-app live --driving`` plays a video: a
    machine that cannot keep up skips frames, as it would live.  ``lockstep``: every frame
    goes through (see :class:`Lockstep`), at whatever speed the machine has.

    Returns ``(avatars, driver frame index of each, stats)``; stats: ``frames`` (driver),
    ``dropped`` (per slot) and ``seconds``.  Raises the pipeline's own error if a stage failed.
    """
    frames = driver.source()
    feed = Lockstep(frames) if lockstep else frames
    if animator is not None and hasattr(animator, "reset"):
        animator.reset()
    pipeline = Pipeline(source, feed, [], fps=driver.fps, pace=not lockstep, animator=animator)
    got: list = []
    pipeline.subscribe(got.append)
    if lockstep:
        pipeline.subscribe(feed.delivered)
    start = time.monotonic()
    pipeline.start()
    try:
        while pipeline.running and time.monotonic() - start < timeout:
            time.sleep(0.02)
    finally:
        stats = pipeline.stats()
        pipeline.stop()
    if pipeline.error is not None:
        raise pipeline.error
    info = {"frames": len(driver.frames), "dropped": dict(stats.dropped), "seconds": time.monotonic() - start}
    return [f.image for f in got], [f.index for f in got], info
