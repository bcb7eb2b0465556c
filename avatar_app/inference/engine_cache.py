"""The engine cache: built artifacts (ONNX exports, INT8 models, TensorRT engines) keyed
by everything that makes them valid, with a manifest and checksums.

A key is a small dict — the model's hash, the network, the artifact kind and
precision, and for TensorRT the GPU name, compute capability and TensorRT version.
Change any field and the key (and the file name) changes; keep them and the cached
file is reused.  Each file's size and SHA-256 are in ``manifest.json``; a file that
no longer matches (a crash mid-copy, a disk error, a hand edit) is reported, deleted
and rebuilt.  Writes go to a temporary file first and are renamed into place.  Lookups,
builds and manifest updates hold a lock (a lock file between processes, a re-entrant lock
between threads), so two apps building at once neither lose manifest entries nor build the
same engine twice.

The cache is bounded: each use of a file is noted in the manifest, and when a new file takes
the total past the cap (``$AVATAR_APP_ENGINES_MAX_MB``, default 4 GB) the least recently used
files are deleted until it fits again (``avatar-app engines clean`` empties it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

from ..files import file_sha256

try:  # POSIX: one lock file serialises builds and manifest updates between processes
    import fcntl
except ImportError:  # pragma: no cover - Windows: threads of one process are still serialised
    fcntl = None

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
LOCK = ".lock"
ENV_DIR = "AVATAR_APP_ENGINES"
ENV_MAX_MB = "AVATAR_APP_ENGINES_MAX_MB"
DEFAULT_MAX_MB = 4096
STALE_TMP_S = 6 * 3600  # temporary files older than this are left-overs of a crashed build


def default_engine_dir() -> Path:
    """``$AVATAR_APP_ENGINES``; else the checkout's ``engines/`` folder; else the user cache dir."""
    if os.environ.get(ENV_DIR):
        return Path(os.environ[ENV_DIR]).expanduser()
    checkout = Path(__file__).resolve().parents[2] / "engines"
    if checkout.is_dir() and os.access(checkout, os.W_OK):
        return checkout
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("avatar-app")) / "engines"


def default_max_bytes() -> int:
    """``$AVATAR_APP_ENGINES_MAX_MB`` (megabytes) as bytes, else :data:`DEFAULT_MAX_MB`."""
    text = os.environ.get(ENV_MAX_MB)
    try:
        mb = float(text) if text else DEFAULT_MAX_MB
    except ValueError:
        log.warning("%s=%r is not a number of megabytes; the engine cache keeps %d MB", ENV_MAX_MB, text,
                    DEFAULT_MAX_MB)
        mb = DEFAULT_MAX_MB
    return int(mb * 1e6)


def key_digest(key: Mapping[str, object]) -> str:
    """A stable digest of a key's fields (order does not matter, every value does)."""
    bad = [k for k, v in key.items() if not isinstance(v, (str, int, float, bool)) or v is None]
    if bad:
        raise TypeError(f"engine key fields must be plain str/int/float/bool, not {bad}")
    return hashlib.sha256(json.dumps(dict(key), sort_keys=True).encode()).hexdigest()


class CorruptEngine(Exception):
    """A cached file failed to load; the cache deletes it and builds it again."""


class EngineCache:
    """Artifacts under ``root`` (created on first write), at most ``max_bytes`` of them
    (default: :func:`default_max_bytes`)."""

    _thread_lock = threading.RLock()
    _depth = threading.local()

    def __init__(self, root: str | os.PathLike | None = None, max_bytes: int | None = None):
        self.root = Path(root) if root is not None else default_engine_dir()
        self.max_bytes = default_max_bytes() if max_bytes is None else int(max_bytes)

    @contextlib.contextmanager
    def _locked(self):
        """Exclusive use of the cache (re-entrant within a thread)."""
        with self._thread_lock:
            depths = self._depth.__dict__.setdefault("by_root", {})
            root = str(self.root.resolve())
            depth = depths.get(root, 0)
            handle = None
            if depth == 0 and fcntl is not None:
                self.root.mkdir(parents=True, exist_ok=True)
                handle = open(self.root / LOCK, "a+")
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            depths[root] = depth + 1
            try:
                yield
            finally:
                depths[root] = depth
                if handle is not None:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
                    handle.close()

    def _tmp(self, name: str) -> Path:
        return self.root / f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"

    # ---------------------------------------------------------------- manifest

    def entries(self) -> dict[str, dict]:
        """Manifest entries by file name (an unreadable manifest counts as empty)."""
        path = self.root / MANIFEST
        try:
            data = json.loads(path.read_text())
            return dict(data.get("entries", {}))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, AttributeError) as exc:
            log.warning("engine manifest %s is unreadable (%s); starting a new one", path, exc)
            return {}

    def _write_manifest(self, entries: dict[str, dict]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self._tmp(MANIFEST)
        tmp.write_text(json.dumps({"format": 1, "entries": entries}, indent=1, sort_keys=True))
        os.replace(tmp, self.root / MANIFEST)

    # ---------------------------------------------------------------- lookup

    def file_name(self, key: Mapping[str, object], suffix: str) -> str:
        net, kind, prec = (str(key.get(k, "x")) for k in ("network", "kind", "precision"))
        return f"{net}-{kind}-{prec}-{key_digest(key)[:16]}{suffix}"

    def lookup(self, key: Mapping[str, object], suffix: str) -> Path | None:
        """The cached file for ``key`` if it is present and intact; a damaged one is deleted."""
        if not self.root.is_dir():
            return None
        with self._locked():
            return self._lookup(key, suffix)

    def _lookup(self, key: Mapping[str, object], suffix: str) -> Path | None:
        name = self.file_name(key, suffix)
        path = self.root / name
        entry = self.entries().get(name)
        if not path.exists():
            return None
        problem = None
        if entry is None:
            problem = "it is not in the manifest"
        elif entry.get("key") != dict(key):
            problem = "its manifest key differs"
        elif path.stat().st_size != entry.get("size"):
            problem = f"its size is {path.stat().st_size} bytes, not {entry.get('size')}"
        elif file_sha256(path) != entry.get("sha256"):
            problem = "its checksum does not match the manifest"
        if problem:
            self._invalidate(name, problem)
            return None
        entries = self.entries()
        entries[name]["used"] = time.time()
        self._write_manifest(entries)
        return path

    @staticmethod
    def _last_used(entry: dict) -> float:
        return float(entry.get("used", 0.0))

    def _evict(self, entries: dict[str, dict], keep: str) -> list[str]:
        """Delete least recently used files (never ``keep``) until the total fits the cap."""
        total = sum(int(e.get("size", 0)) for e in entries.values())
        removed = []
        for name in sorted((n for n in entries if n != keep), key=lambda n: self._last_used(entries[n])):
            if total <= self.max_bytes:
                break
            (self.root / name).unlink(missing_ok=True)
            total -= int(entries.pop(name).get("size", 0))
            removed.append(name)
        if removed:
            log.info("engine cache over %.0f MB: removed the %d least recently used file(s): %s",
                     self.max_bytes / 1e6, len(removed), ", ".join(removed))
        return removed

    def invalidate(self, name: str, reason: str) -> None:
        """Delete a cached file (and its manifest entry), saying why."""
        with self._locked():
            self._invalidate(name, reason)

    def _invalidate(self, name: str, reason: str) -> None:
        path = self.root / name
        log.warning("engine %s is damaged (%s); it will be rebuilt", path, reason)
        print(f"avatar-app: cached engine {path.name} is damaged ({reason}); rebuilding it", flush=True)
        path.unlink(missing_ok=True)
        entries = self.entries()
        if entries.pop(name, None) is not None:
            self._write_manifest(entries)

    def get_or_build(self, key: Mapping[str, object], suffix: str, build: Callable[[Path], None],
                     describe: str = "") -> Path:
        """The cached file for ``key``, building it with ``build(tmp_path)`` when needed
        (another process building the same key meanwhile is waited for, not repeated)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with self._locked():
            return self._get_or_build(key, suffix, build, describe)

    def _get_or_build(self, key, suffix, build, describe) -> Path:
        path = self._lookup(key, suffix)
        if path is not None:
            return path
        self.root.mkdir(parents=True, exist_ok=True)
        name = self.file_name(key, suffix)
        tmp = self._tmp(name)
        t0 = time.perf_counter()
        log.info("building %s%s", name, f" ({describe})" if describe else "")
        try:
            build(tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, self.root / name)
        finally:
            tmp.unlink(missing_ok=True)
        path = self.root / name
        entries = self.entries()
        entries[name] = {"key": dict(key), "size": path.stat().st_size, "sha256": file_sha256(path),
                         "built": time.strftime("%Y-%m-%dT%H:%M:%S"), "build_s": round(time.perf_counter() - t0, 2),
                         "describe": describe, "used": time.time()}
        self._evict(entries, keep=name)
        self._write_manifest(entries)
        return path

    def load(self, key: Mapping[str, object], suffix: str, build: Callable[[Path], None],
             open_fn: Callable[[Path], object], describe: str = ""):
        """``open_fn(path)`` of the cached file; if it raises :class:`CorruptEngine`,
        the file is deleted, rebuilt once and opened again."""
        path = self.get_or_build(key, suffix, build, describe)
        try:
            return open_fn(path)
        except CorruptEngine as exc:
            self.invalidate(path.name, str(exc))
            return open_fn(self.get_or_build(key, suffix, build, describe))

    def clean(self, match: Callable[[dict], bool] = lambda entry: True) -> list[str]:
        """Delete the entries ``match`` accepts (and temporary files crashed builds left); their names."""
        if not self.root.is_dir():
            return []
        with self._locked():
            entries = self.entries()
            removed = [n for n, e in entries.items() if match(e)]
            for name in removed:
                (self.root / name).unlink(missing_ok=True)
                del entries[name]
            now = time.time()
            for stray in self.root.glob(".*.tmp"):
                with contextlib.suppress(OSError):
                    if now - stray.stat().st_mtime > STALE_TMP_S:
                        stray.unlink()
            if removed:
                self._write_manifest(entries)
            return removed
