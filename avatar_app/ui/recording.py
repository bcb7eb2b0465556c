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
from ..types import Frame, Landmarks, SourcePortrait
from .bridge import FrameRelay, call_reporting, emit_safely

log = logging.getLogger(__name__)

MIN_BRIGHTNESS = 60.0  # mean grey level (0-255) of the face below which we ask for more light
CENTRE_TOLERANCE = 0.18  # how far (in frame widths/heights) the face centre may be from the frame centre


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
        return "Good. Talk and turn your head a little."


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
    at the source's rate (sources that do not keep time themselves are paced).
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
            start = time.monotonic()
            for n, frame in enumerate(source):
                delay = start + n / fps - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return None
                if self._stop.is_set():
                    return None
                now = time.monotonic()
                result = tracker.track(Frame(frame.image, now - start, n))
                self.frames.put(frame.image)
                if now - last_guidance >= 0.1:
                    last_guidance = now
                    emit_safely(self.guidance, guidance(frame.image, result.landmarks))
                elapsed = now - start
                if elapsed < self.countdown:
                    emit_safely(self.phase, "countdown", self.countdown - elapsed)
                    continue
                if elapsed >= self.countdown + self.seconds:
                    break
                images.append(frame.image.copy())
                emit_safely(self.phase, "recording", self.countdown + self.seconds - elapsed)
        return images


@dataclass
class Adapted:
    """The outcome of adaptation, ready to save or discard."""

    result: object  # PersonalizeResult
    clip: object  # ClipFrames
    previews: list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # (held-out frame, before, after), 256 px BGR
    base_weights: str
    device: str = "cpu"
    base_path: str | None = None  # the checkpoint adapted (a profile stores only the adapted weights over it)


class Adapter(QObject):
    """Finds the face in the recording, then personalizes for ``budget_s`` s on a thread.

    Signals:
        stage(str): what it is doing now.
        estimate(object): what the budget buys on this machine now (a :class:`~avatar_app.train.budget.Estimate`,
            measured by a probe before most of the budget is spent).
        progress(dict): personalization's ``{"step", "elapsed", "eta", "loss", "expected_steps"}``.
        finished(object): an :class:`Adapted`.
        failed(str): one sentence (also when cancelled).
    """

    stage = Signal(str)
    estimate = Signal(object)
    progress = Signal(object)
    finished = Signal(object)
    failed = Signal(str)

    def __init__(self, images: list[np.ndarray], fps: float, budget_s: float, weights: str | None = None,
                 preset: str = "lite", parent: QObject | None = None):
        from ..train.personalize import CancelToken

        super().__init__(parent)
        self.images, self.fps, self.budget_s = images, fps, budget_s
        self.weights, self.preset = weights, preset
        self.cancel_token = CancelToken()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="avatar-ui-adapter", daemon=True)
        self._thread.start()

    def cancel(self, wait: float = 0.0) -> None:
        self.cancel_token.cancel()
        if wait and self._thread is not None:
            self._thread.join(wait)

    def _run(self) -> None:
        ok, adapted = call_reporting(self._adapt, self.failed, "adaptation")
        if not ok:
            return
        if adapted is None:
            emit_safely(self.failed, "Cancelled: nothing was saved.")
        else:
            emit_safely(self.finished, adapted)

    def _adapt(self) -> Adapted | None:
        import torch

        from ..capture.images import ImageSequenceSource
        from ..models.identity import IdentityEncoder
        from ..models.shipped import start_model
        from ..train.personalize import clip_frames, personalize

        emit_safely(self.stage, "Finding your face in the recording…")
        clip = clip_frames(ImageSequenceSource(self.images, fps=self.fps, loop=False))
        ref = clip.reference
        size = clip.crops[ref].shape[0]
        emit_safely(self.stage, "Measuring your face's identity…")
        identity = IdentityEncoder().embed(clip.crops[ref], Landmarks(clip.points[ref], (size, size)))
        start = start_model(self.preset, self.weights)  # chosen, else the shipped real-trained ones
        base = start.model
        emit_safely(self.stage, f"Adapting the model to you ({self.budget_s:.0f} s)…")
        device = "cuda" if torch.cuda.is_available() else "cpu"
        result = personalize(clip, base, identity, budget_s=self.budget_s, cancel=self.cancel_token, device=device,
                             progress=lambda info: emit_safely(self.progress, info),
                             on_estimate=lambda e: emit_safely(self.estimate, e))
        if result.cancelled:
            return None
        emit_safely(self.stage, "Comparing before and after on frames it did not train on…")
        previews = before_after(clip, base, result.model, identity)
        return Adapted(result, clip, previews, start.describe(), device,
                       str(start.weights) if start.weights is not None else None)


def before_after(clip, base, adapted, identity: np.ndarray, count: int = 2):
    """``count`` held-out frames of ``clip`` with the reference frame animated to each by
    ``base`` and by ``adapted``: a list of ``(frame, before, after)`` BGR crops."""
    from ..runtime.neural_animator import NeuralAnimator
    from ..train.personalize import held_out_indices

    ref = clip.reference
    size = clip.crops[ref].shape[0]
    portrait = SourcePortrait(crop=clip.crops[ref], landmarks=Landmarks(clip.points[ref], (size, size)), size=size,
                              image=clip.crops[ref], crop_to_image=np.eye(2, 3))
    held = held_out_indices(len(clip.crops), ref)
    picks = [held[round(k * (len(held) - 1) / max(1, count - 1))] for k in range(min(count, len(held)))]
    animators = [NeuralAnimator(portrait, model=m, identity=identity, device="cpu") for m in (base, adapted)]
    return [(clip.crops[i], *(a.animate(Landmarks(clip.points[i], (size, size))) for a in animators)) for i in picks]


def save_adapted(name: str, adapted: Adapted, budget_s: float):
    """Save ``adapted`` as profile ``name`` (atomically; see :func:`~avatar_app.profiles.save_profile`)."""
    from ..profiles import save_profile

    clip, result = adapted.clip, adapted.result
    if not clip.crops:
        raise NoFaceError("The recording has no usable frames; record again.")
    provenance = {"base_weights": adapted.base_weights, "budget_s": budget_s, "clip": "recorded in the desktop app",
                  "device": adapted.device, "frames": len(clip.crops)}
    return save_profile(name, result.model.cpu(), clip.crops[clip.reference], neutral=clip.neutral,
                        metrics=result.metrics(), provenance=provenance, base=adapted.base_path,
                        adapted=result.adapted)
