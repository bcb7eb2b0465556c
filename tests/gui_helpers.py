"""What the desktop-app tests share: a window fixture, Start/Stop helpers and an event-loop
heartbeat (imported by test_gui*.py; not a test module)."""

from __future__ import annotations

import gc
import threading
import time

import numpy as np
import pytest
from PySide6.QtCore import Qt, QTimer

from avatar_app.ui.main_window import MainWindow


def _waiting_for_a_core() -> float | None:
    """Seconds this thread has been runnable but waiting for a CPU since it started (Linux's
    ``/proc/thread-self/schedstat``); ``None`` where the OS does not say."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


class Heartbeat:
    """A 5 ms QTimer on the UI thread; the longest gap between its ticks is the worst event-loop stall.

    :meth:`stop` gives the worst gap; :meth:`own` the worst gap less the time the UI thread was
    ready to run but waited for a core (on a machine loaded by other work that wait is the OS's, not
    the app's: a stall from the app itself — its UI thread busy, or waiting for the GIL — is counted
    whole).  Without the OS's figure, :meth:`own` is the gap."""

    def __init__(self, interval_ms: int = 5):
        # Hundreds of earlier tests leave a large heap behind: a full garbage collection of it,
        # triggered on any thread, would hold the GIL for 100+ ms and be charged to the app.
        gc.collect()
        gc.freeze()
        self.gaps: list[float] = []
        self.own_gaps: list[float] = []
        self._last = time.monotonic()
        self._waited = _waiting_for_a_core()
        self.timer = QTimer()
        self.timer.timeout.connect(self._tick)
        self.timer.start(interval_ms)

    def _tick(self) -> None:
        now, waited = time.monotonic(), _waiting_for_a_core()
        gap = now - self._last
        self.gaps.append(gap)
        self.own_gaps.append(gap - (waited - self._waited) if waited is not None and self._waited is not None else gap)
        self._last, self._waited = now, waited

    def stop(self) -> float:
        """Stop; the worst stall in ms."""
        self.timer.stop()
        gc.unfreeze()
        return max(self.gaps) * 1e3

    def percentile(self, q: float) -> float:
        """After :meth:`stop`: the q-th percentile of the gaps between ticks, in ms."""
        return float(np.percentile(self.gaps, q)) * 1e3

    def own(self) -> float:
        """After :meth:`stop`: the worst stall in ms, less the UI thread's waits for a core."""
        return max(self.own_gaps) * 1e3

    def assert_smooth(self) -> None:
        """After :meth:`stop`, for a running avatar: work the app does on every frame (on the UI thread, or
        holding the GIL) shows in a fifth or more of the gaps, so their 95th percentile is held to 30 ms; a
        freeze is any gap over 150 ms.  (The worst gap alone was held to 50 ms until single hiccups of 72-111 ms
        in CI runs on the 2-core machine, against 10-35 ms in runs on their own, also beside two busy processes.)"""
        p95, worst = self.percentile(95), max(self.gaps) * 1e3
        assert p95 < 30, f"the UI thread stalled on many frames: 95th percentile gap {p95:.1f} ms"
        assert worst < 150, f"the UI thread froze for {worst:.1f} ms"


@pytest.fixture
def make_window(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("AVATAR_APP_CONFIG", str(tmp_path / "config"))
    monkeypatch.setenv("AVATAR_APP_DATA", str(tmp_path / "data"))

    def make(**kw) -> MainWindow:
        kw.setdefault("cameras", [])
        window = MainWindow(**kw)
        qtbot.addWidget(window)
        window.show()
        return window

    return make


def wait_state(qtbot, window: MainWindow, state: str, timeout: int = 15000) -> None:
    qtbot.waitUntil(lambda: window.state == state, timeout=timeout)


def start(qtbot, window: MainWindow) -> int:
    """Press Start and wait for avatar frames; returns how many frames were shown before."""
    shown = window.avatar_view.frames_shown
    qtbot.mouseClick(window.start_button, Qt.MouseButton.LeftButton)
    wait_state(qtbot, window, "running")
    qtbot.waitUntil(lambda: window.avatar_view.frames_shown >= shown + 5, timeout=15000)
    return shown


def stop(qtbot, window: MainWindow) -> float:
    """Press Stop; seconds until the pipeline has stopped."""
    t0 = time.monotonic()
    qtbot.mouseClick(window.start_button, Qt.MouseButton.LeftButton)
    wait_state(qtbot, window, "stopped", timeout=5000)
    return time.monotonic() - t0


def as_array(qimage) -> np.ndarray:
    """A QImage as ``(H, W, 3) uint8`` RGB."""
    from PySide6.QtGui import QImage

    img = qimage.convertToFormat(QImage.Format.Format_RGB888)
    arr = np.frombuffer(img.constBits(), np.uint8, img.bytesPerLine() * img.height())
    rows = arr.reshape(img.height(), img.bytesPerLine())[:, : img.width() * 3]
    return rows.reshape(img.height(), img.width(), 3).copy()  # (the QImage's memory goes with it)


def pipeline_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("avatar-") and not t.name.startswith("avatar-ui")]
