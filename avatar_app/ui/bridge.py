"""Hand-over between worker threads and the Qt UI thread.

Workers never touch widgets: they emit signals (queued to the UI thread) or put images
into a :class:`FrameRelay`; a worker's errors become one sentence on a signal.  Also the
two small adapters the live pipeline needs: a frame source whose frames the UI sees,
and a sink slot the virtual camera toggle fills and empties.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import numpy as np
from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QImage

from ..capture.base import FrameSource
from ..errors import AvatarError, describe_error  # noqa: F401  (describe_error: used from here too)
from ..sinks.base import Sink

log = logging.getLogger(__name__)


def to_qimage(image: np.ndarray) -> QImage:
    """A ``(H, W, 3) uint8`` BGR array as a QImage that owns a copy of the pixels."""
    image = np.ascontiguousarray(image)
    h, w = image.shape[:2]
    return QImage(image.data, w, h, image.strides[0], QImage.Format.Format_BGR888).copy()


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


def emit_safely(signal, *args) -> None:
    """Emit from a worker thread; nothing happens once the object that owns ``signal`` is gone.

    Only that case is quiet: any other error (a RuntimeError from elsewhere included) is raised.
    """
    try:
        signal.emit(*args)
    except RuntimeError as exc:
        if not is_deleted_error(exc):
            raise


def is_deleted_error(exc: BaseException) -> bool:
    """True when ``exc`` is Qt saying the object behind a signal or widget was deleted."""
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("has been deleted" in text or "already deleted" in text)
