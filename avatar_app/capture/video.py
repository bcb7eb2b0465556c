"""Frames from a video file (the "driving video")."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import cv2

from avatar_app.capture.base import FrameSource
from avatar_app.errors import InputFileError
from avatar_app.imaging import as_bgr
from avatar_app.types import Frame

#: Frame rate assumed when the container does not state a usable one.
DEFAULT_FPS = 25.0



class VideoFileSource(FrameSource):
    """Decode a video file frame by frame.

    The file is checked when the object is created: a missing file, or one that
    OpenCV cannot decode (not a video, empty, truncated), raises
    :class:`~avatar_app.errors.InputFileError` right away.

    Frames carry ``timestamp = index / fps`` seconds (presentation time at the nominal
    rate) and a running ``index`` starting at 0.  With ``loop=True`` the video starts
    over at its end and ``index``/``timestamp`` keep counting up, so they stay
    monotonic.  Iteration continues where the previous one stopped, like a file
    object; without ``loop`` it ends at the last frame.

    Args:
        path: the video file.
        loop: restart at the beginning when the end is reached (endless iteration).
    """

    def __init__(self, path: str | os.PathLike[str], loop: bool = False) -> None:
        self.path = os.fspath(path)
        self.loop = loop
        self._cap: cv2.VideoCapture | None = None
        self._index = 0
        if not os.path.exists(self.path):
            raise InputFileError(
                f"Driving video '{self.path}' does not exist; check the path and try again."
            )
        if not os.path.isfile(self.path):
            raise InputFileError(
                f"Driving video '{self.path}' is not a file; pass the path of a video file."
            )
        cap = self._open_capture()
        try:
            fps = cap.get(cv2.CAP_PROP_FPS)
            count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
            ok, first = cap.read()
        finally:
            cap.release()
        if not ok or first is None or first.size == 0:
            raise InputFileError(self._undecodable_message())
        self._fps = float(fps) if math.isfinite(fps) and fps > 0 else DEFAULT_FPS
        self._frame_count = int(count) if math.isfinite(count) and count > 0 else None
        height, width = first.shape[:2]
        self._frame_size = (int(width), int(height))

    def _undecodable_message(self) -> str:
        return (
            f"Driving video '{self.path}' could not be decoded; "
            "make sure it is a valid video file (e.g. .mp4) that is not empty or truncated."
        )

    def _open_capture(self) -> cv2.VideoCapture:
        """Open a fresh decoder on the file; raises InputFileError if OpenCV refuses it."""
        cap = cv2.VideoCapture(self.path)
        if not cap.isOpened():
            cap.release()
            raise InputFileError(self._undecodable_message())
        return cap

    @property
    def fps(self) -> float:
        """Nominal frame rate from the container (``DEFAULT_FPS`` = 25 if it has none)."""
        return self._fps

    @property
    def frame_size(self) -> tuple[int, int]:
        """``(width, height)`` of the decoded frames in px."""
        return self._frame_size

    @property
    def frame_count(self) -> int | None:
        """Number of frames the container announces, ``None`` if it does not say.

        This is the container's claim; some formats only estimate it.
        """
        return self._frame_count

    @property
    def duration(self) -> float | None:
        """Length in seconds (``frame_count / fps``), ``None`` if unknown."""
        return None if self._frame_count is None else self._frame_count / self._fps

    def open(self) -> None:
        """Open the decoder at the start of the file (no-op if already open).

        Opening again after :meth:`close` starts over at frame 0 / index 0.
        """
        if self._cap is None:
            self._cap = self._open_capture()
            self._index = 0

    def close(self) -> None:
        """Release the decoder.  Idempotent."""
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def read(self) -> Frame | None:
        """Decode the next frame; ``None`` at the end of the video (never with ``loop``).

        Opens the source first if needed.
        """
        self.open()
        assert self._cap is not None
        ok, image = self._cap.read()
        if not ok or image is None:
            if not self.loop or self._index == 0:
                return None
            # Reopening is more reliable than seeking to frame 0 for all codecs.
            self._cap.release()
            self._cap = self._open_capture()
            ok, image = self._cap.read()
            if not ok or image is None:
                return None
        frame = Frame(image=as_bgr(image), timestamp=self._index / self._fps, index=self._index)
        self._index += 1
        return frame

    def __iter__(self) -> Iterator[Frame]:
        """Yield frames until the end of the video (forever with ``loop=True``)."""
        while True:
            frame = self.read()
            if frame is None:
                return
            yield frame

    def __repr__(self) -> str:
        return f"VideoFileSource({self.path!r}, loop={self.loop})"
