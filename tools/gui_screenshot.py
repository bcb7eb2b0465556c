"""A screenshot of the running desktop app: the synthetic driver animating a portrait.

README's ``docs/gui.png`` is made with it, from a real X server (Xvfb)::

    xvfb-run -a -s "-screen 0 1280x800x24" python tools/gui_screenshot.py docs/gui.png

(``QT_QPA_PLATFORM=offscreen`` works too.)  Settings go to a temporary folder, so the
user's own settings are not touched.  Exits with 1 if the picture is blank.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def blank_reason(rgb) -> str | None:
    """Why an ``(H, W, 3)`` screenshot looks blank, or ``None`` if it shows a picture."""
    import numpy as np

    colours = len(np.unique(rgb.reshape(-1, 3), axis=0))
    if rgb.std() < 20 or colours < 1000:
        return f"only {colours} colours, contrast {rgb.std():.1f}"
    return None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("output", help="PNG file to write")
    p.add_argument("--seconds", type=float, default=4.0, help="how long the avatar runs before the shot")
    p.add_argument("--source", default=None, help="portrait (default: the first bundled one)")
    args = p.parse_args()
    if "AVATAR_APP_CONFIG" not in os.environ:  # a throw-away settings folder, removed at exit
        os.environ["AVATAR_APP_CONFIG"] = tempfile.mkdtemp(prefix="avatar-app-shot-")
        atexit.register(shutil.rmtree, os.environ["AVATAR_APP_CONFIG"], ignore_errors=True)
    os.environ.setdefault("AVATAR_APP_DATA", os.environ["AVATAR_APP_CONFIG"])

    import numpy as np
    from PySide6.QtCore import QTimer
    from PySide6.QtGui import QImage
    from PySide6.QtWidgets import QApplication

    from avatar_app.ui.main_window import MainWindow

    app = QApplication(sys.argv[:1])
    window = MainWindow(cameras=[])
    if args.source:
        window.set_source(os.path.abspath(args.source))
    window.show()
    window.toggle_running()
    shot = []

    def take() -> None:
        if window.avatar_view.frames_shown < 10 and len(shot) < 20:  # wait (up to 10 s more) for the avatar
            shot.append(None)
            QTimer.singleShot(500, take)
            return
        if app.platformName() == "offscreen":
            shot.append(window.grab())
        else:  # the real screen's pixels, as a user would see them
            g = window.frameGeometry()
            shot.append(window.screen().grabWindow(0, g.x(), g.y(), g.width(), g.height()))
        app.quit()

    QTimer.singleShot(round(args.seconds * 1000), take)
    app.exec()
    shot = shot[-1]
    if shot is None:
        print("no avatar frames arrived", file=sys.stderr)
        return 1
    image = shot.toImage().convertToFormat(QImage.Format.Format_RGB888)
    rows = np.frombuffer(image.constBits(), np.uint8).reshape(image.height(), image.bytesPerLine())
    rgb = rows[:, : image.width() * 3].reshape(image.height(), image.width(), 3).copy()
    stats = window.stats_label.text().splitlines()[0]
    window.close()
    reason = blank_reason(rgb)
    if reason:
        print(f"the screenshot is blank ({reason})", file=sys.stderr)
        return 1
    shot.save(args.output)
    print(f"wrote {args.output} ({image.width()}x{image.height()}, platform {app.platformName()}): {stats}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
