"""Replacing and deleting a named folder so that a reader never sees a half-written one.

The folder ``root/name`` is written as a hidden sibling ``.<name>.tmp-XXXX`` (the caller fills
and fsyncs it), then put into place with two renames (:func:`swap_in`: the old folder goes to
``.<name>.trash-XXXX`` first); a delete renames it to ``.<name>.deleted-XXXX`` before removing
it (:func:`remove`).  A process killed between those steps leaves hidden siblings that
:func:`recover` settles: a folder left only in its trash is put back.  Folders whose names
start with ``.`` are these work folders, never the named ones.

Used by :mod:`avatar_app.profiles`; nothing here knows what the folders hold.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make the renames inside folder ``path`` durable (nothing to do on Windows)."""
    if os.name == "nt":  # Windows cannot open folders for fsync; NTFS journals the renames itself
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_synced(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and fsync it."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def work_folders(root: Path, name: str, kind: str) -> list[Path]:
    """The work folders for ``name``: ``kind`` is ``tmp``, ``trash`` or ``deleted``."""
    prefix = f".{name}.{kind}-"
    return [p for p in root.iterdir() if p.name.startswith(prefix)] if root.is_dir() else []


def new_work_folder(root: Path, name: str, kind: str) -> Path:
    """A fresh, unused work-folder path ``.<name>.<kind>-<random>`` next to the named folders (not created)."""
    while True:
        path = root / f".{name}.{kind}-{secrets.token_hex(4)}"
        if not path.exists():
            return path


def staging_folder(root: Path, name: str) -> Path:
    """A new, empty ``.<name>.tmp-XXXX`` folder to write the next ``root/name`` into."""
    return Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))


def recover(root: Path, name: str) -> Path | None:
    """Clean up after a :func:`swap_in` or :func:`remove` of ``root/name`` that was interrupted (power
    cut, kill) part-way; returns the trash folder ``root/name`` was put back from, if it was."""
    for p in work_folders(root, name, "deleted"):
        shutil.rmtree(p, ignore_errors=True)
    trash = work_folders(root, name, "trash")
    restored = None
    if trash and not (root / name).exists():  # died between "old -> trash" and "new -> name": put the old one back
        restored = max(trash, key=lambda p: p.stat().st_mtime)
        os.rename(restored, root / name)
        trash.remove(restored)
    for p in trash:
        shutil.rmtree(p, ignore_errors=True)
    return restored


def swap_in(staged: Path, final: Path) -> None:
    """Put the written folder ``staged`` in place of ``final`` (which may not exist yet).

    Raises what the renames raise (``OSError``, or ``KeyboardInterrupt`` between them) after
    putting the old ``final`` back and removing ``staged``.
    """
    trash = None
    try:
        if final.exists():
            trash = new_work_folder(final.parent, final.name, "trash")
            os.rename(final, trash)
        os.rename(staged, final)
        fsync_dir(final.parent)
    except BaseException:  # Ctrl-C between the two renames too: the old folder goes back
        if trash is not None and trash.exists() and not final.exists():
            os.rename(trash, final)
        shutil.rmtree(staged, ignore_errors=True)
        raise
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


def remove(folder: Path) -> None:
    """Delete ``folder``: renamed first, so a half-deleted folder never looks like a named one.

    Raises:
        OSError: it could not be renamed (nothing was deleted).
    """
    gone = new_work_folder(folder.parent, folder.name, "deleted")
    os.rename(folder, gone)
    fsync_dir(folder.parent)
    shutil.rmtree(gone, ignore_errors=True)
