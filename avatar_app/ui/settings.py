"""The desktop app's settings: a small JSON file in the user config folder, written atomically.

``$AVATAR_APP_CONFIG`` (or the ``folder`` argument) overrides the folder, so tests and
portable installs never touch the real home.  Unknown keys are ignored and bad values
fall back to their defaults (with a logged warning), so an old or hand-edited file can
never stop the app from opening.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..errors import OutputError
from ..inference.backend import BACKEND_CHOICES

log = logging.getLogger(__name__)

SETTINGS_FILE = "settings.json"
ANIMATORS = ("auto", "geometric", "neural")  # auto: this machine's default (inference.default_animator)
SIZES = (256, 512)
SYNTHETIC = "synthetic"  # the driver setting for the built-in synthetic driver (else a camera device)
MAX_RECENT = 8
# Files of version 1 (no "version" key) stored every field, defaults included, when the animator's
# default was always "geometric" and the preset, which no control sets, "lite": those two stored
# values were the old defaults, not choices, so they load as today's ("auto": this machine's).
SETTINGS_VERSION = 2
_VERSION_1_DEFAULTS = {"animator": "geometric", "preset": "lite"}


@dataclass
class Settings:
    """Everything the main window remembers between runs.

    Attributes:
        source: path of the portrait to animate (``None``: the first bundled portrait).
        recent_sources: most recent first, at most :data:`MAX_RECENT`.
        driver: :data:`SYNTHETIC` or a camera device (``"/dev/video0"``, ``"0"``).
        animator: one of :data:`ANIMATORS`.
        backend: one of :data:`~avatar_app.inference.backend.BACKEND_CHOICES` (neural animator).
        preset: neural model size without weights (``lite``, ``full``, or ``auto``: full on a GPU).
        weights: neural checkpoint (``None``: the untrained preset).
        size: avatar crop side in px, one of :data:`SIZES`.
        virtual_camera: stream to a virtual camera while running.
        eye_contact: hold the avatar's gaze at the portrait's own while lids and face follow.
        profile: the personalized profile in use (``None``: the plain portrait).
        budget_s: seconds of adaptation in the personalize wizard.
        geometry: the main window's saved geometry (hex of ``QWidget.saveGeometry``).
    """

    source: str | None = None
    recent_sources: list[str] = field(default_factory=list)
    driver: str = SYNTHETIC
    animator: str = "auto"
    backend: str = "auto"
    preset: str = "auto"
    weights: str | None = None
    size: int = 256
    virtual_camera: bool = False
    eye_contact: bool = False
    profile: str | None = None
    budget_s: float = 30.0
    geometry: str | None = None

    def remember_source(self, path: str) -> None:
        """Make ``path`` the source and the most recent entry of :attr:`recent_sources`."""
        self.source = path
        self.recent_sources = [path] + [p for p in self.recent_sources if p != path][: MAX_RECENT - 1]


def resolved(settings: Settings, animator: str, preset: str) -> Settings:
    """A copy of ``settings`` whose ``auto`` animator and preset are ``animator`` and ``preset`` (this machine's)."""
    s = copy.deepcopy(settings)
    s.animator = animator if s.animator == "auto" else s.animator
    s.preset = preset if s.preset == "auto" else s.preset
    return s


PORTRAITS = Path(__file__).resolve().parents[2] / "assets" / "portraits"


def bundled_portraits() -> list[Path]:
    """The public-domain portraits shipped in ``assets/portraits`` (the app's first source; empty when not there)."""
    return sorted(PORTRAITS.glob("*.jpg")) if PORTRAITS.is_dir() else []


_CHOICES = {"animator": ANIMATORS, "backend": BACKEND_CHOICES, "preset": ("auto", "lite", "full"), "size": SIZES}


def config_dir(folder: str | os.PathLike | None = None) -> Path:
    """``folder``, else ``$AVATAR_APP_CONFIG``, else the user config folder of this OS."""
    if folder is not None:
        return Path(folder)
    env = os.environ.get("AVATAR_APP_CONFIG")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_config_dir("avatar-app"))


def _valid(name: str, value, default):
    if name in _CHOICES:
        return value in _CHOICES[name]
    if name == "recent_sources":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if name == "budget_s":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and 1 <= value <= 600
    if isinstance(default, bool):
        return isinstance(value, bool)
    return value is None or isinstance(value, str)


def load_settings(folder: str | os.PathLike | None = None) -> Settings:
    """The saved settings, or the defaults when there are none (or the file is unreadable)."""
    path = config_dir(folder) / SETTINGS_FILE
    defaults = Settings()
    if not path.is_file():
        return defaults
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        log.warning("ignoring unreadable settings file %s (%s); using defaults", path, exc)
        return defaults
    if "version" not in data:  # version 1: its stored defaults were not choices (SETTINGS_VERSION)
        data = {k: v for k, v in data.items() if _VERSION_1_DEFAULTS.get(k, object()) != v}
    values = {}
    for f in fields(Settings):
        if f.name not in data:
            continue
        default = getattr(defaults, f.name)
        if _valid(f.name, data[f.name], default):
            values[f.name] = data[f.name]
        else:
            log.warning("ignoring bad setting %s=%r in %s", f.name, data[f.name], path)
    return Settings(**values)


def save_settings(settings: Settings, folder: str | os.PathLike | None = None) -> Path:
    """Write the settings atomically (temp file, fsync, rename); returns the file's path."""
    folder = config_dir(folder)
    path = folder / SETTINGS_FILE
    data = (json.dumps({"version": SETTINGS_VERSION, **asdict(settings)}, indent=2) + "\n").encode("utf-8")
    tmp = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".settings-", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        raise OutputError(f"Could not save the settings to '{path}' ({exc}); check the folder's permissions "
                          "or set AVATAR_APP_CONFIG to a writable folder.") from exc
    return path
