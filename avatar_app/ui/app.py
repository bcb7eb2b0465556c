"""Opening the desktop app: checks (Qt installed, a display), the QApplication, the main window."""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import threading

from ..errors import DependencyError, OutputError

log = logging.getLogger(__name__)

INSTALL_HINT = "install it with 'pip install \"avatar-app[gui]\"' (or 'pip install PySide6-Essentials')"


#: PySide6 releases whose ``Signal.emit()`` drops a reference to ``True`` on every call: on Python
#: 3.11 (where ``True`` is not immortal) a running app crashes after a few thousand emits.
BROKEN_PYSIDE = {"6.12.0"}


def require_qt() -> None:
    """Raise :class:`DependencyError` (one sentence) when PySide6 is missing or a known-broken release."""
    try:
        import PySide6
        import PySide6.QtWidgets  # noqa: F401
    except ImportError as exc:
        raise DependencyError(f"The desktop app needs PySide6, which is not installed; {INSTALL_HINT}.") from exc
    if PySide6.__version__ in BROKEN_PYSIDE and sys.version_info < (3, 12):
        raise DependencyError(f"PySide6 {PySide6.__version__} has a bug that crashes the desktop app on Python "
                              f"{sys.version_info.major}.{sys.version_info.minor}; install another release with "
                              "'pip install \"PySide6-Essentials!=6.12.0\"'.")


def check_display() -> None:
    """On Linux, fail with a sentence instead of Qt's abort when there is no display to open."""
    if not sys.platform.startswith("linux") or os.environ.get("QT_QPA_PLATFORM"):
        return
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise OutputError("Cannot open the desktop app: there is no display (DISPLAY is not set); run it in a "
                          "desktop session, or see 'avatar-app --help' for the commands that need none "
                          "(e.g. 'avatar-app live --virtual-camera').")


def route_errors(window) -> None:
    """Unexpected exceptions in slots or threads go to the status area (and the log), never a dialog."""

    def show(exc_type, exc, tb) -> None:
        log.error("unexpected error", exc_info=(exc_type, exc, tb))
        try:
            from .bridge import describe_error

            window.controller.message.emit(describe_error(exc))
        except RuntimeError as gone:
            from .bridge import is_deleted_error

            if not is_deleted_error(gone):  # the window is gone: the log above has the error
                raise

    sys.excepthook = show
    threading.excepthook = lambda args: show(args.exc_type, args.exc_value, args.exc_traceback)


def run_app(source: str | None = None, synthetic: bool = False, start: bool = False, config_dir=None) -> int:
    """Open the main window and run the event loop until it closes; returns the exit code.

    Args:
        source: a portrait to animate (else the saved choice).
        synthetic: use the synthetic driver (else the saved choice).
        start: start the avatar right away.
        config_dir: settings folder (default ``$AVATAR_APP_CONFIG`` or the user config folder).
    """
    require_qt()
    check_display()
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from .main_window import MainWindow
    from .settings import SYNTHETIC

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("avatar-app")
    window = MainWindow(config_dir=config_dir)
    if synthetic:
        i = window.driver_box.findData(SYNTHETIC)
        window.driver_box.setCurrentIndex(i)
        window.driver_box.activated.emit(i)
    if source:
        window.set_source(os.path.abspath(source))
    saved_hooks = sys.excepthook, threading.excepthook
    route_errors(window)
    # Ctrl+C in the terminal closes the window (Qt's loop would otherwise keep Python's handler from running)
    saved_sigint = signal.signal(signal.SIGINT, lambda *_: window.close())
    wake = QTimer()
    wake.timeout.connect(lambda: None)
    wake.start(200)
    window.show()
    # Everything loaded so far (torch, mediapipe, Qt) lives as long as the app: keep it out of
    # the garbage collector's scans, whose full passes hold the GIL and would stall the UI.
    gc.collect()
    gc.freeze()
    if start:
        window.toggle_running()
    try:
        return app.exec()
    finally:
        wake.stop()
        signal.signal(signal.SIGINT, saved_sigint)
        sys.excepthook, threading.excepthook = saved_hooks
