"""Write BGR frames to an .mp4 file."""

from __future__ import annotations

import os

import cv2
import numpy as np

from avatar_app.errors import OutputError
from avatar_app.sinks.base import Sink

#: MPEG-4 Part 2: encoded by every OpenCV build that has FFmpeg, no licence issues.
FOURCC = "mp4v"


class VideoRecorder(Sink):
    """Record frames to an mp4 file (fourcc ``mp4v``) at a fixed frame rate.

    The parent directory is created if needed and the file is opened right away, so
    an unusable location raises :class:`~avatar_app.errors.OutputError` at
    construction, before any work is done.  Frames of another size are resized to
    ``frame_size``.  Use as a context manager or call :meth:`close`; the file is only
    complete after closing.

    Args:
        path: output file, e.g. ``out/result.mp4``.
        fps: frame rate stored in the file (frames per second, > 0).
        frame_size: ``(width, height)`` of the video in px.
    """

    name = "recorder"

    def __init__(
        self, path: str | os.PathLike[str], fps: float, frame_size: tuple[int, int]
    ) -> None:
        self.path = os.fspath(path)
        self.fps = float(fps)
        width, height = (int(v) for v in frame_size)
        if width <= 0 or height <= 0:
            raise ValueError(f"frame_size must be positive (width, height), got {frame_size}")
        if not self.fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.frame_size = (width, height)
        self.frames_written = 0
        self._writer: cv2.VideoWriter | None = None

        parent = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as exc:
            raise OutputError(
                f"Could not create the folder '{parent}' for output video '{self.path}' "
                f"({exc.strerror or exc}); choose a location you can write to."
            ) from exc
        writer = cv2.VideoWriter(
            self.path, cv2.VideoWriter_fourcc(*FOURCC), self.fps, self.frame_size
        )
        if not writer.isOpened():
            writer.release()
            raise OutputError(
                f"Could not write output video '{self.path}'; "
                "choose a writable location and a file name ending in .mp4."
            )
        self._writer = writer

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._writer is None

    def send(self, image_bgr: np.ndarray) -> None:
        """Append one frame.

        Args:
            image_bgr: ``(H, W, 3) uint8`` BGR (``(H, W)`` gray is accepted too);
                resized to ``frame_size`` if it differs.

        Raises:
            RuntimeError: the recorder is already closed (a programming error).
            ValueError: the array is not an 8-bit image.
        """
        if self._writer is None:
            raise RuntimeError(f"VideoRecorder for '{self.path}' is already closed")
        image = np.asarray(image_bgr)
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise ValueError(f"expected a uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        elif image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
        elif image.shape[2] != 3:
            raise ValueError(f"expected 3 colour channels, got shape {image.shape}")
        if (image.shape[1], image.shape[0]) != self.frame_size:
            image = cv2.resize(image, self.frame_size, interpolation=cv2.INTER_AREA)
        self._writer.write(np.ascontiguousarray(image))
        self.frames_written += 1

    def close(self) -> None:
        """Finish the file.  Idempotent."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def __repr__(self) -> str:
        return (
            f"VideoRecorder({self.path!r}, fps={self.fps}, frame_size={self.frame_size}, "
            f"frames_written={self.frames_written})"
        )
