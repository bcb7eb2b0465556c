"""The worker → UI hand-over: a deleted receiver is quiet, every other error is raised."""

from __future__ import annotations

import pytest

pytest.importorskip("PySide6.QtCore", exc_type=ImportError)

import shiboken6  # noqa: E402
from PySide6.QtCore import QObject, Signal  # noqa: E402

from avatar_app.ui.bridge import emit_safely  # noqa: E402


class Emitter(QObject):
    said = Signal(str)


def test_emit_reaches_a_live_receiver_and_is_quiet_once_it_is_deleted(qapp) -> None:
    emitter = Emitter()
    heard: list[str] = []
    emitter.said.connect(heard.append)
    signal = emitter.said
    emit_safely(signal, "hello")
    assert heard == ["hello"]
    shiboken6.delete(emitter)
    with pytest.raises(RuntimeError, match="deleted"):  # what Qt itself does
        signal.emit("gone")
    emit_safely(signal, "gone")  # the window closed while a worker was reporting: nothing to do
    assert heard == ["hello"]


class FailingSignal:
    """Stands in for a signal whose emit fails for another reason: a real Qt signal raises RuntimeError
    only when its object was deleted (a slot's own exceptions go to sys.excepthook), so no real one can."""

    def emit(self, *args) -> None:
        raise RuntimeError("CUDA error: out of memory")


def test_emit_safely_raises_every_other_error(qapp) -> None:
    with pytest.raises(RuntimeError, match="out of memory"):
        emit_safely(FailingSignal(), "x")
    emitter = Emitter()
    with pytest.raises(TypeError):  # wrong arguments for a real signal
        emit_safely(emitter.said, 1, 2)
