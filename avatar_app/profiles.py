"""Profiles: personalized identities saved under the user data dir.

A profile is one folder, ``<profiles_root()>/<name>/``::

    profile.json          {"format": "avatar-app-profile", "version": 1, name, created, files, metrics, ...}
    weights.safetensors   the personalized PortraitModel (see models/portrait.py save_checkpoint): whole, or only
                          the adapted weights over the base weights it names (shipped weights by name)
    source.png            the source portrait the profile animates (BGR image, lossless)
    neutral.npy           optional: the user's calibrated neutral face, (478, 3) float32 image px

Saving is atomic: everything is written into a hidden sibling folder
``.<name>.tmp-XXXX``, fsynced, then swapped in with renames (:mod:`avatar_app.folder_swap`).
A reader sees either the old profile or the new one, never a mixture; a failed save leaves
the old one untouched.  Folders whose names start with ``.`` are those work folders and
are never profiles (profile names cannot start with ``.``).

``metrics`` is free-form JSON; ``profiles list`` shows before/after pairs written as
``{"psnr_before": 24.1, "psnr_after": 27.3}`` or ``{"psnr": {"before": 24.1, "after": 27.3}}``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from . import __version__
from .errors import AvatarError, InputFileError, OutputError
from .folder_swap import fsync_dir, recover, remove, staging_folder, swap_in, write_synced
from .types import NUM_LANDMARKS, Landmarks

log = logging.getLogger(__name__)

FORMAT_NAME = "avatar-app-profile"
FORMAT_VERSION = 1
INFO_FILE = "profile.json"
WEIGHTS_FILE = "weights.safetensors"
SOURCE_FILE = "source.png"
NEUTRAL_FILE = "neutral.npy"

_NAME_RE = re.compile(r"[A-Za-z0-9 _.\-]{1,64}")
_TRASH_RE = re.compile(r"\.(?P<name>[A-Za-z0-9 _.\-]{1,64})\.trash-.+")
NAME_RULE = ("Profile names may only use letters, digits, spaces, '-', '_' and '.', must be 1 to 64 characters long "
             "and must not start with '.' or start or end with a space")


@dataclass
class Profile:
    """One saved profile (what :func:`load_profile` read; no weights are loaded).

    Attributes:
        name: the profile's name (= its folder name).
        path: the profile folder.
        created: ISO 8601 UTC time the profile was saved.
        weights_path: ``weights.safetensors`` (load with :func:`load_weights`).
        source_path: ``source.png``, the source portrait the profile animates (read with :func:`load_source`).
        neutral: the user's calibrated neutral face, or ``None``.
        metrics: e.g. held-out PSNR before/after personalization.
        provenance: how it was made (base weights, budget, steps, clip, ...).
        app_version: the avatar-app version that saved it.
    """

    name: str
    path: Path
    created: str
    weights_path: Path
    source_path: Path
    neutral: Landmarks | None = None
    metrics: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    app_version: str = ""


def profiles_root() -> Path:
    """``$AVATAR_APP_DATA/profiles`` if that variable is set, else ``<user data dir>/avatar-app/profiles``."""
    env = os.environ.get("AVATAR_APP_DATA")
    if env:
        return Path(env).expanduser() / "profiles"
    import platformdirs

    return Path(platformdirs.user_data_dir("avatar-app")) / "profiles"


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid profile name, else raise :class:`InputFileError`."""
    if (not isinstance(name, str) or not _NAME_RE.fullmatch(name) or name.startswith(".")
            or name != name.strip(" ")):
        raise InputFileError(f"{NAME_RULE}, so {name!r} cannot be used; choose a name like 'my-face'.")
    return name


def _root(root: str | os.PathLike | None) -> Path:
    return Path(root) if root is not None else profiles_root()


def _folder_names(root: Path) -> list[str]:
    """Names of every non-hidden folder under ``root`` (good and broken profiles), sorted."""
    if not root.is_dir():
        return []
    return sorted((p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda n: (n.lower(), n))


def _unknown(name: str, root: Path) -> InputFileError:
    names = _folder_names(root)
    known = f"the existing profiles are: {', '.join(names)}" if names else "there are no profiles yet"
    return InputFileError(f"There is no profile named '{name}' in '{root}'; {known}.")


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"profile metrics/provenance must be JSON data, not {type(obj).__name__}")


def _recover(root: Path, name: str) -> None:
    """Clean up after a save or delete that was interrupted (power cut, kill) part-way."""
    restored = recover(root, name)
    if restored is not None:
        log.warning("restoring profile '%s' from %s (an earlier save was interrupted)", name, restored)


def write_weights(model, path: str | os.PathLike, base: str | os.PathLike | None = None,
                  adapted: list[str] | None = None) -> Path:
    """A profile's weights file: with ``base`` and ``adapted``, only the adapted weights, in fp16 like the
    shipped weights they were adapted from (a delta over ``base``); otherwise the whole model."""
    import torch

    from .models.portrait import save_checkpoint

    delta = {"base": base, "keys": adapted, "dtype": torch.float16} if base is not None and adapted is not None else {}
    return save_checkpoint(model, path, **delta)


def save_profile(name: str, model, source_image: np.ndarray, neutral: Landmarks | None = None,
                 metrics: dict | None = None, provenance: dict | None = None,
                 root: str | os.PathLike | None = None, base: str | os.PathLike | None = None,
                 adapted: list[str] | None = None) -> Profile:
    """Save a profile atomically, replacing any profile of the same name.

    Args:
        name: see :data:`NAME_RULE`.
        model: the personalized :class:`~avatar_app.models.portrait.PortraitModel`, or the bytes of its
            weights file as :func:`write_weights` wrote it (``base`` and ``adapted`` then say nothing more).
        source_image: the source portrait, ``(H, W, 3) uint8`` BGR (grey/BGRA are converted); saved as PNG.
        neutral: the user's calibrated neutral landmarks (in px of the image they were measured on).
        metrics, provenance: JSON-able dicts (numpy scalars/arrays and paths are converted).
        root: the profiles folder (default :func:`profiles_root`).
        base, adapted: the checkpoint personalization started from and the names of the weights it
            adapted: only those are stored, in fp16 (a small profile; the base is named, see
            :func:`~avatar_app.models.portrait.save_checkpoint`).  Either missing: the whole model.

    Raises:
        InputFileError: bad name.  OutputError: the folder could not be written (the old profile is kept).
    """
    import cv2

    from .imaging import as_bgr

    validate_name(name)
    root = _root(root)
    image = as_bgr(np.asarray(source_image))
    if neutral is not None and not isinstance(neutral, Landmarks):
        raise TypeError(f"neutral must be Landmarks or None, not {type(neutral).__name__}")
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    info = {
        "format": FORMAT_NAME, "version": FORMAT_VERSION, "name": name, "created": created,
        "app_version": __version__, "weights": WEIGHTS_FILE,
        "source": {"file": SOURCE_FILE, "size": [int(image.shape[1]), int(image.shape[0])]},
        "neutral": None if neutral is None else {
            "file": NEUTRAL_FILE, "image_size": [int(v) for v in neutral.image_size],
            "confidence": float(neutral.confidence)},
        "metrics": dict(metrics or {}), "provenance": dict(provenance or {}),
    }
    info_bytes = (json.dumps(info, indent=2, default=_json_default) + "\n").encode("utf-8")
    info = json.loads(info_bytes)  # what a later load will see (numpy values as plain JSON)

    final = root / name
    try:
        root.mkdir(parents=True, exist_ok=True)
        _recover(root, name)
        tmp = staging_folder(root, name)
    except OSError as exc:
        raise OutputError(f"Could not create the profiles folder '{root}' ({exc}); check its permissions "
                          "or set AVATAR_APP_DATA to a writable folder.") from exc
    try:
        if isinstance(model, bytes):  # written already (write_weights, in the process that adapted)
            write_synced(tmp / WEIGHTS_FILE, model)
        else:
            write_weights(model, tmp / WEIGHTS_FILE, base, adapted)
        ok, png = cv2.imencode(".png", image)
        if not ok:
            raise OSError("the PNG encoder failed")
        write_synced(tmp / SOURCE_FILE, png.tobytes())
        if neutral is not None:
            with open(tmp / NEUTRAL_FILE, "wb") as f:
                np.save(f, np.ascontiguousarray(neutral.points, dtype=np.float32), allow_pickle=False)
                f.flush()
                os.fsync(f.fileno())
        write_synced(tmp / INFO_FILE, info_bytes)  # last: a folder with profile.json is complete
        fsync_dir(tmp)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise OutputError(f"Could not save profile '{name}' in '{root}' ({exc}); free some disk space or "
                              "check the folder's permissions and try again (the previous profile is unchanged).") from exc
        raise

    try:
        swap_in(tmp, final)  # Ctrl-C between its two renames too: the old profile goes back
    except OSError as exc:
        raise OutputError(f"Could not put profile '{name}' into place in '{root}' ({exc}); check the folder's "
                          "permissions and that no other program is using it, then try again.") from exc
    return _from_info(final, info, neutral)


def _from_info(folder: Path, info: dict, neutral: Landmarks | None) -> Profile:
    # The file names are fixed (profile.json records them for people): a damaged or hand-edited
    # profile.json can never point outside the profile folder.
    return Profile(name=folder.name, path=folder, created=str(info.get("created", "")),
                   weights_path=folder / WEIGHTS_FILE, source_path=folder / SOURCE_FILE,
                   neutral=neutral, metrics=info.get("metrics") or {}, provenance=info.get("provenance") or {},
                   app_version=str(info.get("app_version", "")))


def _read_info(name: str, folder: Path) -> dict:
    fix = f"delete it with 'avatar-app profiles delete {name}' and personalize again"
    path = folder / INFO_FILE
    if not path.is_file():
        raise InputFileError(f"Profile '{name}' has no {INFO_FILE} in '{folder}', so it is incomplete; {fix}.")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputFileError(f"Profile '{name}' has a damaged {INFO_FILE} ('{path}': {exc}); {fix}.") from exc
    if not isinstance(info, dict) or info.get("format") != FORMAT_NAME:
        raise InputFileError(f"'{path}' is not an avatar-app profile file (its format is not '{FORMAT_NAME}'); "
                             f"{fix}.")
    version = info.get("version")
    if not isinstance(version, int):
        raise InputFileError(f"Profile '{name}' has a damaged {INFO_FILE} ('{path}': no format version); {fix}.")
    if version > FORMAT_VERSION:
        raise InputFileError(f"Profile '{name}' has format version {version}, newer than this avatar-app "
                             f"understands ({FORMAT_VERSION}); update avatar-app.")
    neutral = info.get("neutral")
    bad = [key for key in ("metrics", "provenance") if not isinstance(info.get(key, {}), dict)]
    if neutral is not None and not (isinstance(neutral, dict) and isinstance(neutral.get("image_size"), list)
                                    and len(neutral["image_size"]) == 2):
        bad.append("neutral")
    if bad:
        raise InputFileError(f"Profile '{name}' has a damaged {INFO_FILE} ('{path}': bad {', '.join(bad)}); {fix}.")
    return info


def load_profile(name: str, root: str | os.PathLike | None = None) -> Profile:
    """Read a profile's description and neutral face, checking its files are there (weights are not loaded).

    Raises:
        InputFileError: unknown profile (the message lists the existing ones), missing or damaged
            ``profile.json``, not a profile, a newer format version, missing weights/source/neutral files.
    """
    validate_name(name)
    root = _root(root)
    folder = root / name
    if not folder.is_dir() and root.is_dir():
        _recover(root, name)
    if not folder.is_dir():
        raise _unknown(name, root)
    info = _read_info(name, folder)
    fix = f"delete it with 'avatar-app profiles delete {name}' and personalize again"
    profile = _from_info(folder, info, None)
    if not profile.weights_path.is_file():
        raise InputFileError(f"Profile '{name}' is missing its weights file '{profile.weights_path}'; {fix}.")
    if not profile.source_path.is_file():
        raise InputFileError(f"Profile '{name}' is missing its source image '{profile.source_path}'; {fix}.")
    if info.get("neutral") is not None:
        entry = info["neutral"]
        path = folder / NEUTRAL_FILE
        try:
            points = np.load(path, allow_pickle=False)
            profile.neutral = Landmarks(points, tuple(int(v) for v in entry["image_size"]),
                                        float(entry.get("confidence", 1.0)))
        except FileNotFoundError as exc:
            raise InputFileError(f"Profile '{name}' is missing its neutral face file '{path}'; {fix}.") from exc
        except (OSError, ValueError, TypeError) as exc:
            raise InputFileError(f"Profile '{name}' has a damaged neutral face file '{path}' (expected "
                                 f"({NUM_LANDMARKS}, 3) float32 points: {exc}); {fix}.") from exc
    return profile


def load_weights(profile: Profile, device: str = "cpu"):
    """The profile's :class:`~avatar_app.models.portrait.PortraitModel`, on ``device``, in eval mode."""
    from .models.portrait import load_checkpoint

    return load_checkpoint(profile.weights_path, device=device)


def load_source(profile: Profile) -> np.ndarray:
    """The profile's source portrait, ``(H, W, 3) uint8`` BGR."""
    from .face.source import read_image

    return read_image(profile.source_path)


def _interrupted_saves(root: Path) -> list[str]:
    """Names whose profile sits only in a ``.<name>.trash-*`` folder (a save killed between its renames)."""
    names = {m["name"] for p in root.iterdir() if (m := _TRASH_RE.fullmatch(p.name)) and p.is_dir()}
    return sorted(n for n in names if not (root / n).exists())


def list_profiles(root: str | os.PathLike | None = None) -> list[Profile]:
    """Every readable profile, sorted by name; broken ones are skipped with a logged warning each.

    A profile left in its hidden trash folder by a save that was killed between its two renames
    is put back first (with a logged warning), so it never vanishes from the list.
    """
    root = _root(root)
    if root.is_dir():
        for name in _interrupted_saves(root):
            try:
                _recover(root, name)
            except OSError as exc:
                log.warning("could not restore profile '%s' from its interrupted save in '%s': %s", name, root, exc)
    profiles = []
    for name in _folder_names(root):
        try:
            profiles.append(load_profile(name, root))
        except AvatarError as exc:
            log.warning("skipping broken profile '%s': %s", name, exc)
    return profiles


def delete_profile(name: str, root: str | os.PathLike | None = None) -> None:
    """Delete a profile (broken ones too).  Raises :class:`InputFileError` if there is none of that name."""
    validate_name(name)
    root = _root(root)
    folder = root / name
    if not folder.is_dir():
        raise _unknown(name, root)
    try:  # renamed first, so a half-deleted folder never looks like a profile
        remove(folder)
    except OSError as exc:
        raise OutputError(f"Could not delete profile '{name}' in '{root}' ({exc}); check the folder's permissions "
                          "and that no other program is using it.") from exc


__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "NAME_RULE", "Profile", "delete_profile", "list_profiles", "load_profile",
           "load_source", "load_weights", "profiles_root", "save_profile", "validate_name"]
