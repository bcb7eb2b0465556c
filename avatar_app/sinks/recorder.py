"""Write BGR frames to an .mp4 file."""

from __future__ import annotations

import os
import shutil

import cv2
import numpy as np

from avatar_app.errors import OutputError
from avatar_app.sinks.base import Sink

#: MPEG-4 Part 2: encoded by every OpenCV build that has FFmpeg, no licence issues.
FOURCC = "mp4v"
#: free space (bytes) below which recording stops while the file can still be finished
MIN_FREE_BYTES = 64 * 2**20
#: frames between two checks of the free space
CHECK_EVERY = 30


class VideoRecorder(Sink):
    """Record frames to an mp4 file (fourcc ``mp4v``) at a fixed frame rate.

    The parent directory is created if needed and the file is opened right away, so
    an unusable location raises :class:`~avatar_app.errors.OutputError` at
    construction, before any work is done.  Frames of another size are resized to
    ``frame_size``.  Use as a context manager or call :meth:`close`; the file is only
    complete after closing.

    A recording never fails silently (OpenCV's writer reports no failed writes):

    * every :data:`CHECK_EVERY` frames the free space of the file's disk is checked; below
      ``min_free_bytes`` the file is finished there (playable, with the frames so far) and
      :meth:`send` raises :class:`~avatar_app.errors.OutputError`;
    * :meth:`close` reads the finished file's frame count back; a file that does not hold
      every frame sent (a write failed: disk full, quota, size limit) is removed and
      :class:`~avatar_app.errors.OutputError` says so.

    Args:
        path: output file, e.g. ``out/result.mp4``.
        fps: frame rate stored in the file (frames per second, > 0).
        frame_size: ``(width, height)`` of the video in px.
        min_free_bytes: free space on the file's disk below which recording stops.
    """

    name = "recorder"

    def __init__(
        self, path: str | os.PathLike[str], fps: float, frame_size: tuple[int, int],
        min_free_bytes: int = MIN_FREE_BYTES,
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
        self.min_free_bytes = int(min_free_bytes)
        self._writer: cv2.VideoWriter | None = None

        parent = self._parent = os.path.dirname(os.path.abspath(self.path))
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
            OutputError: the disk is nearly full; the file was finished with the frames so far.
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
        if self.frames_written % CHECK_EVERY == 0:
            self._check_free_space()
        self._writer.write(np.ascontiguousarray(image))
        self.frames_written += 1

    def _check_free_space(self) -> None:
        free = shutil.disk_usage(self._parent).free
        if free >= self.min_free_bytes:
            return
        self.close()
        if self.frames_written:
            kept = f"the {self.frames_written} frames so far were kept as a playable video"
        else:
            os.remove(self.path)
            kept = "nothing was recorded"
        raise OutputError(
            f"The disk holding '{self.path}' is nearly full ({free / 2**20:.0f} MB free), so recording stopped "
            f"({kept}); free some space and record again."
        )

    def close(self) -> None:
        """Finish the file.  Idempotent.

        Raises:
            OutputError: the file does not hold every frame sent (it was removed).
        """
        if self._writer is None:
            return
        self._writer.release()
        self._writer = None
        if not self.frames_written:
            return
        stored = _frame_count(self.path)
        if stored < self.frames_written:
            if os.path.exists(self.path):
                os.remove(self.path)
            raise OutputError(
                f"Writing '{self.path}' failed: only {stored} of {self.frames_written} frames could be read back "
                "(is the disk full?), so the unplayable file was removed; free some space and record again."
            )

    def __repr__(self) -> str:
        return (
            f"VideoRecorder({self.path!r}, fps={self.fps}, frame_size={self.frame_size}, "
            f"frames_written={self.frames_written})"
        )


def _frame_count(path: str) -> int:
    """Frames an mp4 file holds by its index (0 when it cannot be opened: no index was written)."""
    cap = cv2.VideoCapture(path)
    try:
        return int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
    finally:
        cap.release()
