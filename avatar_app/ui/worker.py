"""The live avatar behind the desktop app: a pipeline driven from a worker thread.

Nothing here draws.  :class:`LiveController` runs every slow step (preparing a
portrait, building an animator, opening the camera or the virtual camera, starting and
stopping the pipeline) on one background worker, in the order asked, and reports
through Qt signals; images reach the UI through :class:`~avatar_app.ui.bridge.FrameRelay`,
a latest-wins hand-over, so a busy UI thread skips frames instead of queueing them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, Signal

from ..capture.base import FrameSource
from ..errors import AvatarError, DependencyError, OutputError
from ..face.retarget import RetargetOptions
from ..inference import live_speed
from ..runtime.pipeline import Pipeline
from ..types import SourcePortrait
from .bridge import FrameRelay, ObservedSource, SwitchableSink, call_reporting, describe_error, emit_safely
from .settings import SYNTHETIC, Settings

log = logging.getLogger(__name__)


@dataclass
class LiveConfig:
    """What to animate and how: the main window's choices, plus test hooks.

    ``driver_factory`` replaces the camera / synthetic driver (tests, video files); set
    ``pace`` when what it makes does not keep time itself.
    """

    choices: Settings
    fps: float = 30.0
    driver_factory: Callable[[], FrameSource] | None = None
    pace: bool = False  # play the driver at its own frame rate (video files and image lists)
    auto: bool = False  # the animator is the machine's default ("auto"): neural only if it keeps up here


class LiveController(QObject):
    """Runs the live avatar for the main window; every slow step happens on one worker thread.

    Signals:
        state_changed(str): ``starting``, ``running``, ``stopping`` or ``stopped``.
        source_ready(object): a :class:`SourcePortrait` was prepared (shown while stopped).
        stats_ready(object): a :class:`~avatar_app.runtime.stats.PipelineStats`, twice a second.
        message(str): an error or note for the status area (one sentence).
        vcam_status(bool, str): whether the virtual camera is streaming, and a short description.
    """

    state_changed = Signal(str)
    source_ready = Signal(object)
    stats_ready = Signal(object)
    message = Signal(str)
    vcam_status = Signal(bool, str)

    def __init__(self, parent: QObject | None = None, stats_every: float = 0.5):
        super().__init__(parent)
        self.avatar = FrameRelay(self)
        self.camera = FrameRelay(self)
        self.stats_every = stats_every
        self._jobs = ThreadPoolExecutor(1, thread_name_prefix="avatar-ui-worker")
        self._pipeline: Pipeline | None = None
        self._running: LiveConfig | None = None  # what the running pipeline was built from
        self._vcam = SwitchableSink(on_error=self._vcam_failed)
        self._portraits: dict[tuple[str, int], SourcePortrait] = {}
        self._tracker = None  # still-image tracker, used on the worker thread only
        self._last_stats = 0.0
        self._closed = False
        self._advised: str | None = None  # the portrait whose closed eyes the status area was last told of

    # -- called from the UI thread (each returns at once) --------------------------------
    def prepare(self, path: str, size: int):
        """Prepare a portrait (and swap it into the running avatar); errors go to :attr:`message`."""
        return self._submit(self._prepare, path, size)

    def start(self, cfg: LiveConfig):
        return self._submit(self._start, cfg)

    def stop(self):
        return self._submit(self._stop)

    def restart(self, cfg: LiveConfig):
        """Stop and start again with new settings (animator, size, driver, profile)."""
        return self._submit(self._restart, cfg)

    def switch_profile(self, cfg: LiveConfig):
        """Animate ``cfg``'s profile (or none): a running neural avatar of the same size, backend and
        architecture gets the profile's portrait and weights swapped in (no restart: its engines,
        compiled code and threads stay); anything else restarts."""
        return self._submit(self._switch_profile, cfg)

    def calibrate(self) -> None:
        """Take the driver's next face as its neutral pose."""
        if self._pipeline is not None:
            self._pipeline.calibrate()

    def set_eye_contact(self, on: bool) -> None:
        """Hold the running avatar's gaze at neutral (or let it follow); the next start uses the settings'."""
        if self._pipeline is not None:
            self._pipeline.set_eye_contact(on)

    def set_virtual_camera(self, on: bool, fps: float = 30.0, backend: str | None = None):
        return self._submit(self._set_vcam, on, fps, backend)

    def shutdown(self, timeout: float = 3.0) -> None:
        """Stop the avatar and the worker (waits up to ``timeout`` s; for window close)."""
        if self._closed:
            return
        done = self._submit(self._stop)
        self._closed = True
        try:
            done.result(timeout)
        except Exception as exc:  # closing must go on whatever happened
            log.warning("stopping the avatar on close failed: %s", exc)
        self._jobs.submit(self._close_tracker)
        self._jobs.shutdown(wait=False)

    # -- worker thread ----------------------------------------------------------------------
    def _submit(self, fn, *args):
        return self._jobs.submit(self._guarded, fn, *args)

    def _guarded(self, fn, *args) -> None:
        call_reporting(lambda: fn(*args), self.message, fn.__name__)

    def _portrait(self, path: str | None, size: int, image: np.ndarray | None = None) -> SourcePortrait:
        from ..face.source import closed_eyes_advice, prepare_source
        from ..face.tracker import FaceTracker

        if path is None and image is None:
            raise AvatarError("Choose a portrait to animate first (Source: Browse…, or drop an image on the window).")
        key = (path, size)
        if image is None and key in self._portraits:
            return self._portraits[key]
        if self._tracker is None:
            self._tracker = FaceTracker()
        portrait = prepare_source(image if image is not None else path, size, tracker=self._tracker)
        if image is None:
            self._portraits = {key: portrait}  # keep the newest only
        advice = closed_eyes_advice(portrait.landmarks.points, f"'{Path(path).name}'" if path else "this portrait")
        if advice is not None and (image is not None or path != self._advised):  # once a portrait, at either size
            emit_safely(self.message, advice)  # (logged too, but an app started from a launcher has no console)
        self._advised = path if image is None else None
        return portrait

    def _prepare(self, path: str, size: int) -> None:
        portrait = self._portrait(path, size)
        pipeline = self._pipeline
        if pipeline is not None and portrait.size == pipeline.portrait.size:
            pipeline.set_source(portrait)
        emit_safely(self.source_ready, portrait)

    def _start(self, cfg: LiveConfig) -> None:
        if self._pipeline is not None or self._closed:
            return
        emit_safely(self.state_changed, "starting")
        try:
            pipeline = self._build(cfg)
            pipeline.start()
        except BaseException:
            self._vcam.set(None)
            emit_safely(self.state_changed, "stopped")
            raise
        self._pipeline, self._running = pipeline, cfg
        emit_safely(self.state_changed, "running")
        threading.Thread(target=self._watch, args=(pipeline,), name="avatar-ui-watch", daemon=True).start()

    def _profile_portrait(self, cfg: LiveConfig):
        """``cfg``'s profile (or ``None``) and the portrait to animate."""
        c = cfg.choices
        profile = image = None
        if c.profile:
            from ..profiles import load_profile, load_source

            profile = load_profile(c.profile)
            image = load_source(profile)
        portrait = self._portrait(c.source, c.size, image)
        emit_safely(self.source_ready, portrait)
        return profile, portrait

    def _build(self, cfg: LiveConfig) -> Pipeline:
        c = cfg.choices
        profile, portrait = self._profile_portrait(cfg)
        start = start_model_for(cfg, profile)
        # auto chose the networks (the window's machine_default, which already reads the settled verdicts): neural
        # only if they keep up
        auto = cfg.auto and start is not None and profile is None and not c.weights
        if start is not None:  # (the CLI says the same): a first start on a GPU is slow, not stuck
            emit_safely(self.message, "Preparing the neural networks (on a GPU the first start compiles them: "
                                      "about a minute)…")
        animator = make_animator(cfg, portrait, start)
        why = live_speed.fallback_reason(animator, c.preset, portrait.size) if auto and animator is not None else None
        if why is not None:
            emit_safely(self.message, "Running " + why + ".")
            animator = start = None
        if animator is not None and profile is None and not c.weights:
            emit_safely(self.message, f"Neural weights: the shipped {c.preset} model, trained on real faces."
                        if start.shipped else
                        f"No neural weights installed or chosen (File → Neural weights…): running the untrained "
                        f"{c.preset} model, which looks like the geometric avatar.")
        chain = getattr(animator, "chain", None)  # the engines' backend chain says what `auto` chose, and why
        if chain is not None:
            emit_safely(self.message, f"Neural networks on {chain.choice.explain()}: {chain.device}.")
        driver, pace = open_driver(cfg)
        self._vcam = SwitchableSink(on_error=self._vcam_failed)
        if c.virtual_camera:
            self._open_vcam(cfg.fps)
        pipeline = Pipeline(portrait, ObservedSource(driver, self.camera.put), [self._vcam], fps=cfg.fps,
                            pace=pace, animator=animator, options=RetargetOptions(eye_contact=c.eye_contact))
        if profile is not None and profile.neutral is not None and c.driver != SYNTHETIC:
            pipeline.set_neutral(profile.neutral)  # the face the user calibrated while personalizing
        pipeline.subscribe(self._on_avatar)
        return pipeline

    def _on_avatar(self, frame) -> None:  # on the pipeline's sink thread
        self.avatar.put(frame.image)
        now = time.monotonic()
        pipeline = self._pipeline
        if pipeline is not None and now - self._last_stats >= self.stats_every:
            self._last_stats = now
            emit_safely(self.stats_ready, pipeline.stats())

    def _watch(self, pipeline: Pipeline) -> None:
        """Notice a pipeline that stopped by itself (driver ended, a stage failed)."""
        pipeline.wait()
        if self._pipeline is pipeline and not self._closed:
            self._submit(self._stop_if_current, pipeline)

    def _stop_if_current(self, pipeline: Pipeline) -> None:
        if self._pipeline is pipeline:
            self._stop()

    def _stop(self) -> None:
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is None:
            return
        emit_safely(self.state_changed, "stopping")
        pipeline.stop()
        if self._vcam.sink is not None:
            self._vcam.set(None)
            emit_safely(self.vcam_status, False, "closed (the avatar is stopped)")
        emit_safely(self.stats_ready, pipeline.stats())
        emit_safely(self.state_changed, "stopped")
        if pipeline.error is not None:
            emit_safely(self.message, describe_error(pipeline.error))

    def _restart(self, cfg: LiveConfig) -> None:
        if self._pipeline is not None:
            self._stop()
            self._start(cfg)

    def _switch_profile(self, cfg: LiveConfig) -> None:
        pipeline, running = self._pipeline, self._running
        if pipeline is None:
            return
        c, animator = cfg.choices, pipeline.animator
        reason = restart_reason(cfg, running, animator)
        if reason is None:
            profile, portrait = self._profile_portrait(cfg)
            start = start_model_for(cfg, profile)
            if start.model.config != animator.model.config:
                reason = f"its model is not the running one's architecture ({start.model.preset})"
        if reason is not None:
            log.info("profile switch restarts the avatar: %s", reason)
            self._restart(cfg)
            return
        pipeline.set_source(portrait, model=start.model)
        if profile is not None and profile.neutral is not None and c.driver != SYNTHETIC:
            pipeline.set_neutral(profile.neutral)
        self._running = cfg
        emit_safely(self.message, f"{'Profile ' + repr(c.profile) if c.profile else 'Plain portrait'}: weights "
                    f"swapped into the running networks ({animator.backend}), no restart.")

    def _set_vcam(self, on: bool, fps: float, backend: str | None) -> None:
        if not on:
            self._vcam.set(None)
            emit_safely(self.vcam_status, False, "off")
        elif self._pipeline is not None:
            self._open_vcam(fps, backend)
        else:
            emit_safely(self.vcam_status, False, "on: opens when the avatar starts")

    def _open_vcam(self, fps: float, backend: str | None = None) -> None:
        from ..sinks.virtualcam import VirtualCameraSink

        if self._vcam.sink is not None:
            return
        try:
            sink = VirtualCameraSink(1280, 720, fps, backend=backend)
        except (OutputError, DependencyError) as exc:
            emit_safely(self.vcam_status, False, "not available")
            emit_safely(self.message, str(exc))
            return
        self._vcam.set(sink)
        emit_safely(self.vcam_status, True, f"streaming to {sink.device} ({sink.backend})")

    def _vcam_failed(self, text: str) -> None:
        emit_safely(self.vcam_status, False, "stopped after an error")
        emit_safely(self.message, text)

    def _close_tracker(self) -> None:
        if self._tracker is not None:
            self._tracker.close()
            self._tracker = None


def start_model_for(cfg: LiveConfig, profile=None):
    """The :class:`~avatar_app.models.shipped.StartModel` of ``profile`` (its adapted weights), else of
    ``cfg`` (the chosen weights, else the shipped ones, else the untrained model); ``None`` for
    the geometric animator."""
    from ..models.shipped import start_model

    c = cfg.choices
    if profile is not None:
        return start_model(c.preset, profile.weights_path)
    return None if c.animator == "geometric" else start_model(c.preset, c.weights)


def restart_reason(cfg: LiveConfig, running: LiveConfig, animator) -> str | None:
    """Why switching the ``running`` avatar to ``cfg``'s profile needs a restart (``None``: the
    profile's weights can be swapped into the running animator, if of the same architecture)."""
    c, was = cfg.choices, running.choices
    if not hasattr(animator, "set_model"):
        return "the running avatar is not neural"
    if c.profile is None and c.animator != "neural":
        return "without a profile the geometric animator runs"
    changed = [name for name in ("size", "backend", "driver") if getattr(c, name) != getattr(was, name)]
    return f"the {' and '.join(changed)} changed" if changed else None


def make_animator(cfg: LiveConfig, portrait: SourcePortrait, start):
    """The animator for ``start`` (``None``: the pipeline's geometric default)."""
    if start is None:
        return None
    from ..runtime.neural_animator import NeuralAnimator

    return NeuralAnimator(portrait, model=start.model, backend=cfg.choices.backend)


def open_driver(cfg: LiveConfig) -> tuple[FrameSource, bool]:
    """The driving source and whether the pipeline must pace it (video files decode too fast)."""
    if cfg.driver_factory is not None:
        return cfg.driver_factory(), cfg.pace
    if cfg.choices.driver == SYNTHETIC:
        from ..capture.synthetic import SyntheticDriver

        return SyntheticDriver(fps=cfg.fps, duration=None, realtime=True), False
    from ..capture.camera import CameraSource

    return CameraSource(cfg.choices.driver, fps=cfg.fps), False
