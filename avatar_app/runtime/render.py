"""Offline rendering: a source portrait animated by a driver, written to a video file.

The output is written to a hidden partial file next to the destination and moved
into place only when rendering succeeds, so a failed render never leaves a broken
video or overwrites an earlier good one.
"""

from __future__ import annotations

import logging
import os
import time
from itertools import islice
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tqdm import tqdm

from ..capture.base import FrameSource
from ..errors import InputFileError, NoFaceError
from ..face.align import paste_back
from ..face.retarget import Retargeter, RetargetOptions
from ..face.tracker import FaceTracker
from ..sinks.recorder import VideoRecorder
from ..types import Frame, SourcePortrait
from .animator import GeometricAnimator, retarget_options
from .face_loss import DriverGuard

log = logging.getLogger(__name__)


@dataclass
class RenderReport:
    """What a render did."""

    output: Path
    frames: int
    frames_with_face: int
    seconds: float
    frame_size: tuple[int, int]

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def drive_frames(source: SourcePortrait, frames: Iterable[Frame], tracker: FaceTracker, animator,
                 guard: DriverGuard) -> Iterator[tuple[np.ndarray, bool]]:
    """``(avatar, face found)`` for each driving frame, as the offline render makes them.

    The pose goes through ``guard`` on the frames' own clock, as in the live pipeline:
    before the first face the source's own pose; a lost face holds, then eases to the
    neutral; a jump (shot cut, another person) never reaches the avatar.
    """
    for frame in frames:
        tracked = tracker.track(frame)
        target = guard.update(frame.timestamp, tracked.landmarks if tracked.found else None, source.landmarks,
                              cut=tracked.cut)
        yield animator.animate(target), tracked.found


def render_video(
    source: SourcePortrait,
    driver: FrameSource,
    output: str | Path,
    *,
    tracker: FaceTracker | None = None,
    options: RetargetOptions | None = None,
    paste: bool = False,
    max_frames: int | None = None,
    progress: bool = True,
    driver_name: str = "the driving video",
    animator=None,
) -> RenderReport:
    """Animate ``source`` with every frame of ``driver`` and write ``output`` (mp4).

    The pose follows the same rules as live (:class:`DriverGuard`): a lost face holds,
    then eases to the neutral; a jump never reaches the avatar.  A driver in which no face is ever found raises
    :class:`NoFaceError`, and one that gives no frames at all :class:`InputFileError`; neither
    writes anything (an earlier ``output`` stays as it was).
    """
    output = Path(output)
    partial = output.with_name(f".{output.stem}.partial{output.suffix or '.mp4'}")
    own_tracker = tracker is None
    tracker = tracker or FaceTracker()
    animator = animator if animator is not None else GeometricAnimator(source)
    guard = DriverGuard(Retargeter(source.landmarks, retarget_options(animator, options)))
    size = source.image.shape[1::-1] if paste else (source.size, source.size)
    fps = driver.fps or 25.0
    total = getattr(driver, "frame_count", None)
    if max_frames is not None:
        total = max_frames if total is None else min(total, max_frames)
    frames = with_face = 0
    start = time.perf_counter()
    try:
        with driver, VideoRecorder(partial, fps, size) as recorder, tqdm(
            total=total, unit="frame", desc="render", disable=not progress, leave=False
        ) as bar:
            for avatar, found in drive_frames(source, islice(driver, max_frames), tracker, animator, guard):
                with_face += found
                if paste:
                    avatar = paste_back(avatar, source.image, source.crop_to_image)
                recorder.send(avatar)
                frames += 1
                bar.update(1)
        if not frames:
            raise InputFileError(f"{driver_name[:1].upper()}{driver_name[1:]} gave no frames, so no video was written; "
                                 "check that it plays, or that --max-frames is above 0.")
        if not with_face:
            raise NoFaceError(
                f"No face was found in any frame of {driver_name}; use a video where the face is visible and well lit."
            )
        os.replace(partial, output)
    finally:
        if partial.exists():
            partial.unlink()
        if own_tracker:
            tracker.close()
    seconds = time.perf_counter() - start
    log.info("rendered %d frames (%d with a face) in %.1f s to %s", frames, with_face, seconds, output)
    return RenderReport(output, frames, with_face, seconds, (int(size[0]), int(size[1])))
