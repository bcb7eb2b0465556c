"""The live avatar behind the desktop app: a pipeline driven from a worker thread.

Nothing here draws.  :class:`LiveController` runs every slow step (preparing a
portrait, building an animator, opening the camera or the virtual camera, starting and
stopping the pipeline) on one background worker, in the order asked, and reports
through Qt signals; images reach the UI through :class:`FrameRelay`, a latest-wins
hand-over, so a busy UI thread skips frames instead of queueing them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QImage

from ..capture.base import FrameSource
from ..errors import AvatarError, DependencyError, OutputError
from ..runtime.pipeline import Pipeline
from ..sinks.base import Sink
from ..types import SourcePortrait
from .settings import SYNTHETIC, Settings

log = logging.getLogger(__name__)


def to_qimage(image: np.ndarray) -> QImage:
    """A ``(H, W, 3) uint8`` BGR array as a QImage that owns a copy of the pixels."""
    image = np.ascontiguousarray(image)
    h, w = image.shape[:2]
    return QImage(image.data, w, h, image.strides[0], QImage.Format.Format_BGR888).copy()


def describe_error(exc: BaseException) -> str:
    """The sentence the status area shows for an exception from a worker."""
    if isinstance(exc, AvatarError):
        return str(exc)
    return f"Something went wrong inside the app ({type(exc).__name__}: {exc}); details are in the log."


def call_reporting(fn: Callable[[], object], failed, what: str) -> tuple[bool, object]:
    """Call ``fn()`` on a worker thread: ``(True, result)``, or ``(False, None)`` after emitting
    the error's sentence on the ``failed`` signal (unexpected errors are logged with their traceback)."""
    try:
        return True, fn()
    except Exception as exc:
        if not isinstance(exc, AvatarError):
            log.exception("%s failed", what)
        emit_safely(failed, describe_error(exc))
        return False, None


class FrameRelay(QObject):
    """Hands the newest image from any thread to the UI thread (older unread ones are dropped).

    :meth:`put` (any thread) converts to a QImage there, off the UI thread, and emits
    :attr:`ready` only when the UI has taken the previous image; :meth:`take` (UI thread)
    returns the newest one.
    """

    ready = Signal()

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._lock = threading.Lock()
        self._image: QImage | None = None
        self._pending = False
        self.count = 0  # images put so far

    def put(self, image: np.ndarray) -> None:
        qimage = to_qimage(image)
        with self._lock:
            self._image = qimage
            self.count += 1
            pending, self._pending = self._pending, True
        if not pending:
            self.ready.emit()

    def take(self) -> QImage | None:
        with self._lock:
            image, self._image, self._pending = self._image, None, False
        return image


class ObservedSource(FrameSource):
    """Wraps a frame source and shows each frame to ``on_frame`` (the UI's camera view)."""

    def __init__(self, inner: FrameSource, on_frame: Callable[[np.ndarray], None]):
        self.inner = inner
        self.on_frame = on_frame

    @property
    def fps(self):
        return self.inner.fps

    @property
    def frame_size(self):
        return self.inner.frame_size

    @property
    def state(self):
        return getattr(self.inner, "state", None)

    def open(self) -> None:
        self.inner.open()

    def close(self) -> None:
        self.inner.close()

    def __iter__(self):
        for frame in self.inner:
            self.on_frame(frame.image)
            yield frame


class SwitchableSink(Sink):
    """A slot for a sink that can be filled and emptied while the pipeline runs.

    The virtual camera toggle puts a :class:`~avatar_app.sinks.virtualcam.VirtualCameraSink`
    in and takes it out; if the sink fails it is closed and ``on_error`` hears why.
    """

    name = "virtual camera slot"

    def __init__(self, on_error: Callable[[str], None] | None = None):
        self._lock = threading.Lock()
        self._sink: Sink | None = None
        self._on_error = on_error

    @property
    def sink(self) -> Sink | None:
        return self._sink

    def set(self, sink: Sink | None) -> None:
        with self._lock:
            old, self._sink = self._sink, sink
        if old is not None:
            old.close()

    def send(self, image: np.ndarray) -> None:
        with self._lock:
            sink = self._sink
            if sink is None:
                return
            try:
                sink.send(image)
                return
            except Exception as exc:
                self._sink = None
                reason = str(exc)
        sink.close()
        if self._on_error is not None:
            self._on_error(f"The {sink.name} stopped ({reason}); switch it on again to retry.")

    def close(self) -> None:
        self.set(None)


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


def emit_safely(signal, *args) -> None:
    """Emit from a worker thread; nothing happens once the receiving window is gone."""
    try:
        signal.emit(*args)
    except RuntimeError:  # the Qt object behind the signal was deleted
        pass


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
        self._vcam = SwitchableSink(on_error=self._vcam_failed)
        self._portraits: dict[tuple[str, int], SourcePortrait] = {}
        self._tracker = None  # still-image tracker, used on the worker thread only
        self._last_stats = 0.0
        self._closed = False

    # -- called from the UI thread (each returns at once) --------------------------------
    @property
    def running(self) -> bool:
        return self._pipeline is not None

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

    def calibrate(self) -> None:
        """Take the driver's next face as its neutral pose."""
        if self._pipeline is not None:
            self._pipeline.calibrate()

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
        from ..face.source import prepare_source
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
        self._pipeline = pipeline
        emit_safely(self.state_changed, "running")
        threading.Thread(target=self._watch, args=(pipeline,), name="avatar-ui-watch", daemon=True).start()

    def _build(self, cfg: LiveConfig) -> Pipeline:
        c = cfg.choices
        profile = None
        image = None
        if c.profile:
            from ..profiles import load_profile, load_source

            profile = load_profile(c.profile)
            image = load_source(profile)
        portrait = self._portrait(c.source, c.size, image)
        emit_safely(self.source_ready, portrait)
        animator = make_animator(cfg, portrait, profile)
        driver, pace = open_driver(cfg)
        self._vcam = SwitchableSink(on_error=self._vcam_failed)
        if c.virtual_camera:
            self._open_vcam(cfg.fps)
        pipeline = Pipeline(portrait, ObservedSource(driver, self.camera.put), [self._vcam], fps=cfg.fps,
                            pace=pace, animator=animator)
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


def make_animator(cfg: LiveConfig, portrait: SourcePortrait, profile=None):
    """The animator ``cfg`` asks for (``None``: the pipeline's geometric default)."""
    c = cfg.choices
    if profile is None and c.animator == "geometric":
        return None
    from ..runtime.neural_animator import NeuralAnimator

    weights = str(profile.weights_path) if profile is not None else c.weights
    return NeuralAnimator(portrait, weights=weights, preset=c.preset, backend=c.backend)


def open_driver(cfg: LiveConfig) -> tuple[FrameSource, bool]:
    """The driving source and whether the pipeline must pace it (video files decode too fast)."""
    if cfg.driver_factory is not None:
        return cfg.driver_factory(), cfg.pace
    if cfg.choices.driver == SYNTHETIC:
        from ..capture.synthetic import SyntheticDriver

        return SyntheticDriver(fps=cfg.fps, duration=None, realtime=True), False
    from ..capture.camera import CameraSource

    return CameraSource(cfg.choices.driver, fps=cfg.fps), False
