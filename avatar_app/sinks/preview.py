"""A local preview window (OpenCV HighGUI) that also reads the app's hot keys.

Threading: OpenCV's GUI belongs to the thread that first uses it, and with the Qt
build (opencv-contrib-python) a call from any other thread blocks until that thread
pumps GUI events, which can hang.  The live pipeline builds its sinks on the main
thread but calls ``send`` from its sink thread, so this window does only cheap checks
in ``__init__`` (display present, OpenCV built with a GUI: the usual errors still
appear at start-up) and creates the window on the first :meth:`PreviewWindow.send`,
in the sending thread.  Every later GUI call happens in that same thread; :meth:`close`
from another thread only marks the window closed (it goes away with the process).
On macOS the GUI must run on the main thread.
"""

from __future__ import annotations

import os
import platform
import re
import threading
from collections.abc import Callable

import cv2
import numpy as np

from avatar_app.errors import OutputError
from avatar_app.sinks.base import Sink

DEFAULT_TITLE = "avatar-app - press C to calibrate, Q to quit"

_ESC = 27
_KEYS = {
    ord("c"): "calibrate",
    ord("C"): "calibrate",
    ord("q"): "quit",
    ord("Q"): "quit",
    _ESC: "quit",
}


def key_action(code: int) -> str | None:
    """Map a ``cv2.waitKey`` code to an action.

    Returns:
        ``"calibrate"`` for C, ``"quit"`` for Q or Esc, ``None`` for anything else
        (including ``-1``, no key).
    """
    if code is None or code < 0:
        return None
    return _KEYS.get(code & 0xFF)


def _opencv_gui() -> str | None:
    """The GUI toolkit OpenCV was built with ("QT5", "GTK3", ...), or None if headless."""
    match = re.search(r"^\s*GUI:\s*(\S+)", cv2.getBuildInformation(), re.MULTILINE)
    if match is None:
        return "unknown"  # cannot tell: let namedWindow decide
    return None if match.group(1).upper() == "NONE" else match.group(1)


def _window_error(detail: str) -> OutputError:
    return OutputError(
        f"Cannot open a preview window ({detail}); run without --preview, "
        "or start the app from a desktop session."
    )


class PreviewWindow(Sink):
    """Show frames in an OpenCV window and report key presses.

    Args:
        title: window title (also OpenCV's window id).
        on_key: called with ``"calibrate"`` (C) or ``"quit"`` (Q, Esc, or the window
            was closed by the user), from inside :meth:`send`.
        scale: display size relative to the frames (e.g. 0.5 for half size).

    Raises:
        OutputError: there is no display, or this OpenCV build has no GUI.
    """

    name = "preview"

    def __init__(
        self,
        title: str = DEFAULT_TITLE,
        on_key: Callable[[str], None] | None = None,
        scale: float = 1.0,
    ) -> None:
        if not float(scale) > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.title = title
        self.on_key = on_key
        self.scale = float(scale)
        self.frames_shown = 0
        self._closed = False
        self._owner: int | None = None  # thread that created the window
        if platform.system() == "Linux" and not (
            os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
        ):
            # Checked here: OpenCV's Qt build aborts the whole process without a display.
            raise _window_error("no display: DISPLAY and WAYLAND_DISPLAY are not set")
        if _opencv_gui() is None:
            raise _window_error(
                "no display support in this OpenCV build; replace opencv-python-headless "
                "with opencv-contrib-python to get one"
            )

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called or the user closed the window."""
        return self._closed

    def _create(self) -> None:
        try:
            cv2.namedWindow(self.title, cv2.WINDOW_AUTOSIZE)
        except cv2.error as exc:
            lines = str(exc).strip().splitlines()
            raise _window_error(
                f"no display or no GUI support in OpenCV: {lines[-1] if lines else exc}"
            ) from exc
        self._owner = threading.get_ident()

    def send(self, image: np.ndarray) -> None:
        """Show a frame and poll the keyboard (``waitKey(1)``).

        The first call creates the window.  Does nothing once the window is closed
        (it is not reopened).

        Raises:
            OutputError: the window cannot be created.
        """
        if self._closed:
            return
        if self._owner is None:
            self._create()
        if self.scale != 1.0:
            h, w = image.shape[:2]
            size = (max(1, round(w * self.scale)), max(1, round(h * self.scale)))
            interp = cv2.INTER_AREA if self.scale < 1 else cv2.INTER_LINEAR
            image = cv2.resize(image, size, interpolation=interp)
        cv2.imshow(self.title, image)
        self.frames_shown += 1
        action = key_action(cv2.waitKey(1))
        try:
            visible = cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE)
        except cv2.error:  # the window is gone
            visible = 0
        if visible < 1:  # closed by the user
            self._closed = True
            action = "quit"
        if action is not None and self.on_key is not None:
            self.on_key(action)

    def close(self) -> None:
        """Destroy the window (from the thread that showed it).  Idempotent."""
        self._closed = True
        owner, self._owner = self._owner, None
        if owner is not None and owner == threading.get_ident():
            try:
                cv2.destroyWindow(self.title)
                cv2.waitKey(1)  # let the GUI process the destroy event
            except cv2.error:
                pass
