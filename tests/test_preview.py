"""PreviewWindow: key mapping, the no-display error, and (with Xvfb) a real window."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import time
from threading import Thread, get_ident

import cv2
import numpy as np
import pytest

from avatar_app.errors import OutputError
from avatar_app.sinks import PreviewWindow, Sink
from avatar_app.sinks.preview import key_action


def test_key_action() -> None:
    assert key_action(ord("c")) == key_action(ord("C")) == "calibrate"
    assert key_action(ord("q")) == key_action(ord("Q")) == key_action(27) == "quit"
    assert key_action(-1) is None
    assert key_action(ord("x")) is None
    assert key_action(0x100000 | ord("q")) == "quit"  # modifier bits are ignored


@pytest.mark.skipif(platform.system() != "Linux", reason="DISPLAY only decides this on Linux")
def test_no_display_raises_output_error(monkeypatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(OutputError) as info:
        PreviewWindow()
    msg = str(info.value)
    assert msg.startswith("Cannot open a preview window (no display")
    assert "run without --preview" in msg


class FakeGui:
    """Stands in for OpenCV's HighGUI calls so send()'s logic runs without a display."""

    def __init__(self, keys: list[int]) -> None:
        self.keys = list(keys)
        self.shown: list[np.ndarray] = []
        self.visible = 1.0
        self.created: list[int] = []  # thread ids
        self.destroyed: list[int] = []

    def install(self, monkeypatch) -> None:
        monkeypatch.setenv("DISPLAY", ":fake")
        monkeypatch.setattr(cv2, "getBuildInformation", lambda: "  GUI:    QT5\n")
        monkeypatch.setattr(cv2, "namedWindow", lambda t, f=0: self.created.append(get_ident()))
        monkeypatch.setattr(cv2, "imshow", lambda title, img: self.shown.append(img))
        monkeypatch.setattr(cv2, "waitKey", lambda delay=0: self.keys.pop(0) if self.keys else -1)
        monkeypatch.setattr(cv2, "getWindowProperty", lambda title, prop: self.visible)
        monkeypatch.setattr(cv2, "destroyWindow", lambda title: self.destroyed.append(get_ident()))


def test_send_maps_keys_and_window_close(monkeypatch) -> None:
    gui = FakeGui([-1, ord("c"), ord("x"), ord("Q"), 27])
    gui.install(monkeypatch)
    actions: list[str] = []
    img = np.zeros((100, 200, 3), np.uint8)
    with PreviewWindow(on_key=actions.append, scale=0.5) as win:
        assert isinstance(win, Sink) and win.name == "preview"
        assert gui.created == []  # the window appears with the first frame
        for _ in range(5):
            win.send(img)
        assert actions == ["calibrate", "quit", "quit"] and len(gui.created) == 1
        assert gui.shown[0].shape == (50, 100, 3)
        gui.visible = 0.0  # the user closes the window
        win.send(img)
        assert actions[-1] == "quit" and win.closed
        win.send(img)  # no-op: the window is not reopened
        assert len(gui.shown) == 6 and actions.count("quit") == 3
    win.close()
    assert len(gui.destroyed) == 1 and len(gui.created) == 1


def test_gui_calls_stay_in_the_sending_thread(monkeypatch) -> None:
    gui = FakeGui([])
    gui.install(monkeypatch)
    img = np.zeros((10, 10, 3), np.uint8)
    win = PreviewWindow()  # built on this thread, like the live pipeline does

    def worker() -> None:
        for _ in range(3):
            win.send(img)

    t = Thread(target=worker)
    t.start()
    t.join()
    assert gui.created == [t.ident] and len(gui.shown) == 3
    win.close()  # from another thread: must not touch the GUI (could block with Qt)
    assert gui.destroyed == [] and win.closed
    win.send(img)
    assert len(gui.shown) == 3


def test_opencv_without_gui_raises_output_error(monkeypatch) -> None:
    monkeypatch.setenv("DISPLAY", ":fake")
    monkeypatch.setattr(cv2, "getBuildInformation", lambda: "  GUI:     NONE\n")
    with pytest.raises(OutputError, match="Cannot open a preview window .*opencv-contrib-python"):
        PreviewWindow()

    def no_gui(title, flags=0):
        raise cv2.error("The function is not implemented. Rebuild the library with GUI support")

    monkeypatch.setattr(cv2, "getBuildInformation", lambda: "")  # cannot tell: try it
    monkeypatch.setattr(cv2, "namedWindow", no_gui)
    win = PreviewWindow()
    with pytest.raises(OutputError, match="Cannot open a preview window .*without --preview"):
        win.send(np.zeros((10, 10, 3), np.uint8))


REAL_WINDOW_SCRIPT = """
import numpy as np, cv2
from avatar_app.sinks import PreviewWindow
actions = []
with PreviewWindow(on_key=actions.append) as win:
    for _ in range(5):
        win.send(np.full((120, 160, 3), 90, np.uint8))
    assert cv2.getWindowProperty(win.title, cv2.WND_PROP_VISIBLE) >= 1
    assert not win.closed and actions == [] and win.frames_shown == 5
print("ok")
"""


@pytest.mark.skipif(
    shutil.which("Xvfb") is None, reason="Xvfb is not installed (no X server for a real window)"
)
def test_real_window_under_xvfb() -> None:
    display = ":97"
    xvfb = subprocess.Popen(
        ["Xvfb", display, "-screen", "0", "640x480x24", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.0)
        env = dict(os.environ, DISPLAY=display)
        env.pop("WAYLAND_DISPLAY", None)
        env.pop("QT_QPA_PLATFORM", None)
        result = subprocess.run(
            [sys.executable, "-c", REAL_WINDOW_SCRIPT],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0 and "ok" in result.stdout, result.stderr
    finally:
        xvfb.terminate()
        xvfb.wait(timeout=10)


def test_q_in_the_preview_stops_live(monkeypatch, astronaut_path) -> None:
    """README: `live` runs until Ctrl-C or Q in the preview window (no --duration here: only the key stops it)."""
    from avatar_app.cli import main

    FakeGui([-1] * 14 + [ord("q")]).install(monkeypatch)
    done: list[int] = []
    runner = Thread(target=lambda: done.append(main(["live", "--source", str(astronaut_path), "--synthetic",
                                                     "--preview"])), daemon=True)
    runner.start()
    runner.join(60)
    assert done == [0], "live did not stop on Q"
