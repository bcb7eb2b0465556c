"""Live frames from a camera, read on a background thread, newest frame wins.

All OpenCV calls on the device (open, configure, read, release) happen on the one
capture thread owned by a :class:`CameraSource`; consumers only ever see finished
:class:`~avatar_app.types.Frame` objects handed over through a one-slot mailbox.
"""

from __future__ import annotations

import glob
import math
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from enum import Enum

import cv2
import numpy as np

from avatar_app.capture.base import FrameSource
from avatar_app.errors import CameraError
from avatar_app.imaging import as_bgr
from avatar_app.types import Frame

#: Consecutive failed reads after which the device counts as lost even before
#: ``stall_timeout`` has passed (a video file at its end fails every read at once).
MAX_FAILED_READS = 5


class CameraState(str, Enum):
    """Life cycle of a :class:`CameraSource`.

    It is a ``str`` enum, so ``source.state == "streaming"`` works too.
    """

    OPENING = "opening"  #: open() called, no frame received yet
    STREAMING = "streaming"  #: frames are arriving
    LOST = "lost"  #: no frames (read failed or stalled); reconnecting if enabled
    CLOSED = "closed"  #: not started, or close() called, or the initial open failed


class _Startup:
    """Result of the capture thread's first open attempt, handed to ``open()``."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.ok = False


def _describe(device: int | str) -> str:
    return f"camera {device}" if isinstance(device, int) else f"camera '{device}'"


def _normalize_device(device: int | str | os.PathLike[str]) -> int | str:
    """``"0"`` -> ``0``; paths stay strings."""
    if isinstance(device, int):
        return device
    text = os.fspath(device)
    return int(text) if text.strip().isdigit() else text



class CameraSource(FrameSource):
    """A live camera (or anything ``cv2.VideoCapture`` opens) as a frame source.

    A background thread reads the device continuously and keeps only the newest
    frame: a slow consumer always gets the most recent frame, never a backlog, and
    every frame is handed out at most once.  Gaps in ``Frame.index`` therefore show
    how many frames the consumer skipped.

    Frames carry ``timestamp`` = ``time.monotonic()`` seconds at capture (so
    ``time.monotonic() - frame.timestamp`` is the age of a frame) and ``index``, the
    number of frames captured before it since :meth:`open` (it keeps counting across
    reconnects).

    If frames stop (``MAX_FAILED_READS`` failed reads in a row, or no frame for
    ``stall_timeout`` s) the state becomes ``"lost"``; the thread releases the device
    and, with ``reconnect``, tries to open it again every ``retry_interval`` s until
    frames flow again (state back to ``"streaming"``).  A device that is a regular
    file (a video, handy for tests) is read at its own frame rate, like a camera; at
    its end it counts as lost and, with ``reconnect``, plays again.

    Args:
        device: camera index (``0``), a device path (``"/dev/video0"``) or any source
            ``cv2.VideoCapture`` accepts.  A string of digits is taken as an index.
        width, height: requested frame size in px (the driver may pick another).
        fps: requested frame rate.
        reconnect: reopen the device after it is lost.
        retry_interval: seconds between reopen attempts.
        stall_timeout: seconds without a frame after which the device counts as lost.
        open_timeout: seconds :meth:`open` waits for the device before giving up.
    """

    def __init__(
        self,
        device: int | str,
        width: int = 640,
        height: int = 480,
        fps: float = 30.0,
        reconnect: bool = True,
        retry_interval: float = 1.0,
        stall_timeout: float = 2.0,
        open_timeout: float = 5.0,
    ) -> None:
        self.device = _normalize_device(device)
        self.requested_size = (int(width), int(height))
        self.requested_fps = float(fps)
        self.reconnect = reconnect
        self.retry_interval = float(retry_interval)
        self.stall_timeout = float(stall_timeout)
        self.open_timeout = float(open_timeout)

        self._cond = threading.Condition()  # guards every field below
        self._state = CameraState.CLOSED
        self._latest: Frame | None = None
        self._next_index = 0
        self._last_frame_time = 0.0
        self._actual_fps: float | None = None
        self._actual_size: tuple[int, int] | None = None
        self._thread: threading.Thread | None = None
        self._stop: threading.Event | None = None
        self._thread_done = True

    # ------------------------------------------------------------------ public API

    @property
    def state(self) -> CameraState:
        """Current :class:`CameraState`.

        Reports ``LOST`` as soon as ``stall_timeout`` passes without a frame, even
        while the capture thread is still blocked inside a driver call.
        """
        with self._cond:
            state = self._state
            if (
                state is CameraState.STREAMING
                and time.monotonic() - self._last_frame_time > self.stall_timeout
            ):
                return CameraState.LOST
            return state

    @property
    def fps(self) -> float | None:
        """Frame rate the device reports after opening, else the requested one."""
        with self._cond:
            return self._actual_fps if self._actual_fps else self.requested_fps

    @property
    def frame_size(self) -> tuple[int, int] | None:
        """``(width, height)`` the device reports / delivers; ``None`` before it is opened."""
        with self._cond:
            return self._actual_size

    def open(self) -> None:
        """Open the device and start the capture thread (no-op if already running).

        Returns once the device is open (frames may follow a moment later: state is
        ``"opening"`` until the first one arrives).

        Raises:
            CameraError: the device could not be opened within ``open_timeout`` s.
        """
        if self._thread is not None and self._thread.is_alive():
            return
        stop = threading.Event()
        startup = _Startup()
        with self._cond:
            self._state = CameraState.OPENING
            self._latest = None
            self._next_index = 0
            self._thread_done = False
        thread = threading.Thread(
            target=self._run,
            args=(stop, startup),
            name=f"CameraSource({self.device!r})",
            daemon=True,  # a driver call stuck forever must not block interpreter exit
        )
        self._stop, self._thread = stop, thread
        thread.start()
        if not startup.done.wait(self.open_timeout) or not startup.ok:
            stop.set()  # the thread releases the device if its open ever completes
            thread.join(timeout=1.0)
            self._thread = self._stop = None
            with self._cond:
                self._state = CameraState.CLOSED
                self._thread_done = True
            raise CameraError(
                f"Could not open {_describe(self.device)}; "
                "check it is connected and not used by another app."
            )

    def close(self) -> None:
        """Stop the capture thread (joined within about 1 s) and release the device.

        Idempotent.  A consumer blocked in :meth:`read` or iterating wakes up and stops.
        """
        stop, thread = self._stop, self._thread
        if stop is not None:
            stop.set()
        with self._cond:
            self._state = CameraState.CLOSED
            self._latest = None
            self._cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=1.0)
        self._thread = self._stop = None

    def read(self, timeout: float) -> Frame | None:
        """Take the newest frame not handed out yet, waiting up to ``timeout`` s.

        Returns ``None`` on timeout, when closed, or when the device was lost and
        ``reconnect`` is off.  Never returns the same frame twice.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            while self._latest is None:
                if self._state is CameraState.CLOSED or self._thread_done:
                    return None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            frame, self._latest = self._latest, None
            return frame

    def __iter__(self) -> Iterator[Frame]:
        """Yield frames as they arrive until :meth:`close` (opens first if needed).

        While the device is lost and being reconnected this simply waits.

        Raises:
            CameraError: the device was lost and ``reconnect`` is off.
        """
        if self._thread is None:
            self.open()
        while True:
            frame = self.read(timeout=0.1)
            if frame is not None:
                yield frame
                continue
            with self._cond:
                if self._state is CameraState.CLOSED:
                    return
                if self._thread_done and self._latest is None:
                    raise CameraError(
                        f"{_describe(self.device).capitalize()} stopped delivering frames; "
                        "check the connection and start again."
                    )

    def __repr__(self) -> str:
        return f"CameraSource({self.device!r}, state={self.state.value!r})"

    # ------------------------------------------------------------ capture thread

    def _open_device(self) -> cv2.VideoCapture | None:
        """Open and configure the device; ``None`` if it cannot be opened."""
        try:
            cap = cv2.VideoCapture(self.device)
            if not cap.isOpened():
                cap.release()
                return None
            width, height = self.requested_size
            # Each set() is a request; drivers (and video files) may ignore it.
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
            cap.set(cv2.CAP_PROP_FPS, self.requested_fps)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # less driver-side latency where supported
            reported = cap.get(cv2.CAP_PROP_FPS)
            width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
            height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
            with self._cond:
                if math.isfinite(reported) and reported > 0:
                    self._actual_fps = float(reported)
                if width > 0 and height > 0:
                    self._actual_size = (width, height)
            return cap
        except cv2.error:
            return None

    def _run(self, stop: threading.Event, startup: _Startup) -> None:
        """Capture thread: open, read until lost, reconnect, until ``stop`` is set."""
        cap: cv2.VideoCapture | None = None
        try:
            cap = self._open_device()
            startup.ok = cap is not None
            startup.done.set()
            if cap is None or stop.is_set():
                return
            is_file = isinstance(self.device, str) and os.path.isfile(self.device)
            while not stop.is_set():
                self._stream(cap, stop, paced=is_file)
                cap.release()
                cap = None
                with self._cond:
                    if stop.is_set():  # close() was called; it owns the state now
                        return
                    self._state = CameraState.LOST
                    self._cond.notify_all()
                if not self.reconnect:
                    return
                while cap is None and not stop.wait(self.retry_interval):
                    cap = self._open_device()
                if cap is None:
                    return
        finally:
            if cap is not None:
                cap.release()
            with self._cond:
                self._thread_done = True
                self._cond.notify_all()

    def _stream(self, cap: cv2.VideoCapture, stop: threading.Event, paced: bool) -> None:
        """Read frames into the mailbox until the device fails, stalls or ``stop`` is set."""
        period = 1.0 / (self.fps or 30.0) if paced else 0.0
        last_good = time.monotonic()
        next_due = last_good
        failures = 0
        while not stop.is_set():
            if paced:
                delay = next_due - time.monotonic()
                if delay > 0 and stop.wait(delay):
                    return
                next_due = max(next_due + period, time.monotonic() - period)
            ok, image = cap.read()
            now = time.monotonic()
            if ok and image is not None and image.size > 0:
                failures = 0
                last_good = now
                self._publish(as_bgr(image), now, stop)
                continue
            failures += 1
            if failures >= MAX_FAILED_READS or now - last_good > self.stall_timeout:
                return
            if stop.wait(0.01):
                return

    def _publish(self, image: np.ndarray, now: float, stop: threading.Event) -> None:
        """Put a frame in the one-slot mailbox, replacing any frame not taken yet."""
        height, width = image.shape[:2]
        with self._cond:
            if stop.is_set():
                return
            self._latest = Frame(image=image, timestamp=now, index=self._next_index)
            self._next_index += 1
            self._last_frame_time = now
            self._actual_size = (int(width), int(height))
            self._state = CameraState.STREAMING
            self._cond.notify_all()


def list_cameras() -> list[str]:
    """Cameras that appear to be present, as strings usable as ``CameraSource`` devices.

    On Linux: the ``/dev/video*`` paths, sorted numerically (``video2`` before
    ``video10``).  Elsewhere: the indexes ``"0"`` .. ``"3"`` that OpenCV can open.
    Never raises; returns ``[]`` when nothing is found.
    """
    try:
        if sys.platform.startswith("linux"):

            def key(path: str) -> tuple[int, str]:
                match = re.search(r"(\d+)$", path)
                return (int(match.group(1)) if match else -1, path)

            return sorted(glob.glob("/dev/video*"), key=key)
        found = []
        for index in range(4):
            cap = cv2.VideoCapture(index)
            try:
                if cap.isOpened():
                    found.append(str(index))
            finally:
                cap.release()
        return found
    except Exception:  # a probe must never take the app down
        return []
