"""The personalize wizard's workers: recording with live guidance, and adaptation.

Both run on their own threads and report through Qt signals; neither touches a widget.
Guidance comes from real tracking (mediapipe) and the frame's brightness.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
from PySide6.QtCore import QObject, Signal

from ..capture.base import FrameSource
from ..errors import NoFaceError
from ..types import Frame, Landmarks
from . import adapt_job
from .adapt_job import Adapted
from .bridge import FrameRelay, call_reporting, emit_safely

log = logging.getLogger(__name__)

MIN_BRIGHTNESS = 60.0  # mean grey level (0-255) of the face below which we ask for more light
CENTRE_TOLERANCE = 0.18  # how far (in frame widths/heights) the face centre may be from the frame centre


def recording_camera(driver: str) -> FrameSource:
    """The camera the wizard records from: the main window's driver (``driver``), which must be a camera."""
    from ..capture.camera import CameraSource
    from ..errors import CameraError
    from .settings import SYNTHETIC

    if driver == SYNTHETIC:
        raise CameraError("Recording needs a camera; choose one under Driver (none was found on this machine "
                          "if the list only offers the synthetic driver).")
    return CameraSource(driver)


@dataclass(frozen=True)
class Guidance:
    """What the recording page tells the user about one frame."""

    face: bool  # a face was tracked
    centred: bool  # its centre is near the frame's centre
    bright: bool  # the face (or, without one, the frame) is bright enough
    brightness: float  # mean grey level 0-255 of the face box (or the frame)

    @property
    def ok(self) -> bool:
        return self.face and self.centred and self.bright

    def advice(self) -> str:
        """One line for the user."""
        if not self.face:
            return "No face found: sit facing the camera."
        if not self.bright:
            return "Too dark: turn on a light or face a window."
        if not self.centred:
            return "Move so that your face is in the middle of the picture."
        return "Good. Talk, turn your head and move it about a little."


def guidance(image: np.ndarray, landmarks: Landmarks | None, min_brightness: float = MIN_BRIGHTNESS,
             tolerance: float = CENTRE_TOLERANCE) -> Guidance:
    """Guidance for a BGR ``(H, W, 3)`` frame and the landmarks tracked on it (``None``: no face)."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    h, w = grey.shape
    if landmarks is None:
        value = float(grey.mean())
        return Guidance(False, False, value >= min_brightness, value)
    x0, y0 = np.clip(landmarks.xy.min(0), 0, [w - 1, h - 1]).astype(int)
    x1, y1 = np.clip(landmarks.xy.max(0), 0, [w - 1, h - 1]).astype(int)
    value = float(grey[y0:y1 + 1, x0:x1 + 1].mean())
    cx, cy = (x0 + x1) / 2 / w, (y0 + y1) / 2 / h
    centred = abs(cx - 0.5) <= tolerance and abs(cy - 0.5) <= tolerance
    return Guidance(True, bool(centred), value >= min_brightness, value)


class Recorder(QObject):
    """Records ``seconds`` of frames after a ``countdown``, tracking each frame for guidance.

    Signals:
        phase(str, float): ``countdown`` or ``recording`` and the seconds left in it.
        guidance(object): a :class:`Guidance`, about ten times a second.
        finished(list): the recorded BGR frames (at :attr:`fps`).
        failed(str): why recording stopped (one sentence).

    The live picture goes through :attr:`frames` (a :class:`FrameRelay`).  Frames are read
    at the source's rate (sources that do not keep time themselves are paced).  The countdown
    and the recording are timed on the frames' own clock (a camera's capture time, a file's
    index / fps), not on the wall clock: a slow moment (a frame stalled on a busy machine) makes
    a file's recording later, never shorter, and afterwards the pace goes on from then instead of
    rushing through the frames it missed; a camera that delivers fewer frames than it reports
    still records ``seconds`` of its time.
    """

    phase = Signal(str, float)
    guidance = Signal(object)
    finished = Signal(object)  # (a Python list: not converted to a Qt container)
    failed = Signal(str)

    def __init__(self, source_factory: Callable[[], FrameSource], seconds: float = 10.0, countdown: float = 3.0,
                 parent: QObject | None = None):
        super().__init__(parent)
        self.source_factory = source_factory
        self.seconds = seconds
        self.countdown = countdown
        self.frames = FrameRelay(self)
        self.fps = 30.0  # the source's frame rate, known once it is open
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="avatar-ui-recorder", daemon=True)
        self._thread.start()

    def stop(self, wait: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(wait)

    def _run(self) -> None:
        from ..face.tracker import FaceTracker

        def record():
            with FaceTracker() as tracker:
                return self._record(tracker)

        ok, images = call_reporting(record, self.failed, "recording")
        if not ok or images is None:
            return  # failed (and said why), or stopped by the user
        if len(images) < 10:
            emit_safely(self.failed, f"Only {len(images)} frames were recorded; check the camera and record again.")
            return
        emit_safely(self.finished, images)

    def _record(self, tracker) -> list[np.ndarray] | None:
        images: list[np.ndarray] = []
        last_guidance = 0.0
        with self.source_factory() as source:
            fps = self.fps = source.fps or 30.0
            period = 1.0 / fps
            # lengths on the source's clock (a camera: capture time; a file: index / fps), so a camera that
            # delivers fewer frames than it reports still records self.seconds, and a slow moment here
            # makes a file's recording later, never shorter
            countdown = round(self.countdown * fps) * period
            total = countdown + max(1, round(self.seconds * fps)) * period
            start = due = time.monotonic()
            first = None
            for n, frame in enumerate(source):
                delay = due - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return None
                if self._stop.is_set():
                    return None
                now = time.monotonic()
                if now - due > period:  # more than a frame late (a slow frame before): go on from now, no rush
                    due = now
                due += period
                result = tracker.track(Frame(frame.image, now - start, n))
                self.frames.put(frame.image)
                if now - last_guidance >= 0.1:
                    last_guidance = now
                    emit_safely(self.guidance, guidance(frame.image, result.landmarks))
                first = frame.timestamp if first is None else first
                t = frame.timestamp - first
                if t < countdown - period / 2:
                    emit_safely(self.phase, "countdown", countdown - t)
                    continue
                images.append(frame.image.copy())
                left = total - period - t  # until the last frame's time
                emit_safely(self.phase, "recording", max(0.0, left))
                if left < period / 2:
                    break
        return images


class Adapter(QObject):
    """Finds the face in the recording, then personalizes for ``budget_s`` s, in a process of its own
    (:mod:`.adapt_job`: nothing it does can hold this process's GIL and stall the UI); a thread here
    hands it the frames and relays what it says.

    Signals:
        stage(str): what it is doing now.
        estimate(object): what the budget buys on this machine now (a :class:`~avatar_app.train.budget.Estimate`,
            measured by a probe before most of the budget is spent).
        progress(dict): personalization's ``{"step", "elapsed", "eta", "loss", "expected_steps"}``.
        finished(object): an :class:`~.adapt_job.Adapted`.
        failed(str): one sentence (also when cancelled).
    """

    stage = Signal(str)
    estimate = Signal(object)
    progress = Signal(object)
    finished = Signal(object)
    failed = Signal(str)

    def __init__(self, images: list[np.ndarray], fps: float, budget_s: float, weights: str | None = None,
                 preset: str = "lite", parent: QObject | None = None):
        super().__init__(parent)
        self.images, self.fps, self.budget_s = images, fps, budget_s
        self.weights, self.preset = weights, preset
        self._cancelled = threading.Event()
        self._sending = threading.Lock()  # held while the frames go (the UI thread never waits for it)
        self._frames_sent = False
        self._conn = None
        self._process = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="avatar-ui-adapter", daemon=True)
        self._thread.start()

    def cancel(self, wait: float = 0.0) -> None:
        """Ask the adaptation to stop at its next step; ``wait``: seconds to wait for it (then it is ended)."""
        self._cancelled.set()
        if self._sending.acquire(blocking=False):  # else the frames are going: _adapt sends "cancel" after them
            try:
                if self._frames_sent:
                    adapt_job.send(self._conn, "cancel")
            except OSError:
                pass  # the child has already finished
            finally:
                self._sending.release()
        if wait and self._thread is not None:
            self._thread.join(wait)
            if self._process is not None and self._process.is_alive():
                self._process.terminate()

    def _run(self) -> None:
        ok, outcome = call_reporting(self._adapt, self.failed, "adaptation")
        if ok:
            kind, payload = outcome
            if kind == "finished":
                emit_safely(self.finished, payload)
            elif kind == "failed":
                emit_safely(self.failed, payload)
            else:
                emit_safely(self.failed, "Cancelled: nothing was saved.")
        if self._process is not None:  # said what happened first: the child's exit takes a moment
            self._process.join(5.0)

    def _adapt(self) -> tuple[str, object]:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: fork after torch/Qt threads can hang
        here, there = ctx.Pipe()
        process = ctx.Process(target=adapt_job.child_main, args=(there, self.budget_s, self.weights, self.preset),
                              name="avatar-adapt", daemon=True)
        emit_safely(self.stage, "Starting the adaptation…")
        process.start()
        there.close()
        self._conn, self._process = here, process
        try:
            with self._sending:
                adapt_job.send_frames(here, self.images, self.fps)
                self._frames_sent = True
                if self._cancelled.is_set():
                    adapt_job.send(here, "cancel")
            relay = {"stage": self.stage, "estimate": self.estimate, "progress": self.progress}
            while True:
                kind, payload = adapt_job.receive(here)
                if kind not in relay:
                    return kind, payload
                emit_safely(relay[kind], payload)
        except (EOFError, OSError):
            if self._cancelled.is_set():
                return "cancelled", None
            return "failed", f"Adaptation stopped unexpectedly (its process exited with code {process.exitcode})."
        finally:
            here.close()


def save_adapted(name: str, adapted: Adapted, budget_s: float):
    """Save ``adapted`` as profile ``name`` (atomically; see :func:`~avatar_app.profiles.save_profile`)."""
    from ..profiles import save_profile

    clip, result = adapted.clip, adapted.result
    if not clip.crops:
        raise NoFaceError("The recording has no usable frames; record again.")
    provenance = {"base_weights": adapted.base_weights, "budget_s": budget_s, "clip": "recorded in the desktop app",
                  "device": adapted.device, "frames": len(clip.crops)}
    return save_profile(name, adapted.weights, clip.crops[clip.reference], neutral=clip.neutral,
                        metrics=result.metrics(), provenance=provenance)
