"""Preparing a source portrait once: read, find the face, aligned crop, landmarks."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from ..errors import InputFileError, NoFaceError
from ..imaging import as_bgr
from ..types import SourcePortrait
from .align import face_crop_box, transform_points, warp_to_crop
from .eyes import CLOSED_EYES, eye_openness
from .tracker import FaceTracker

log = logging.getLogger(__name__)

CROP_SIZES = (256, 512)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as BGR ``uint8 (H, W, 3)``; clear errors for missing/unreadable files."""
    p = Path(path)
    if not p.exists():
        raise InputFileError(f"Source image '{p}' does not exist; check the path.")
    if p.is_dir():
        raise InputFileError(f"Source '{p}' is a folder; give an image file (jpg, png, ...).")
    data = np.fromfile(str(p), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise InputFileError(f"Could not read '{p}' as an image; use a JPEG, PNG, BMP or WebP file.")
    return image


def prepare_source(
    image: np.ndarray | str | Path,
    size: int = 256,
    face_index: int | None = None,
    tracker: FaceTracker | None = None,
    crop_scale: float = 1.0,
) -> SourcePortrait:
    """Find a face in ``image`` and build its :class:`SourcePortrait`.

    Args:
        image: BGR array or a path to an image file.
        size: crop side, 256 or 512.
        face_index: which face (0 = largest); ``None`` = the largest.
        tracker: a tracker to reuse (one is made and closed otherwise).
        crop_scale: framing of the crop (1.0 = face with room for hair and turns).
    """
    if size not in CROP_SIZES:
        raise ValueError(f"crop size must be one of {CROP_SIZES}, not {size}")
    path = None
    if not isinstance(image, np.ndarray):
        path = str(image)
        image = read_image(image)
    name = f"'{path}'" if path else "the source image"
    try:
        image = as_bgr(image)
    except ValueError as exc:
        raise InputFileError(f"{name[0].upper() + name[1:]} cannot be used: {exc}.") from exc
    own = tracker is None
    tracker = tracker or FaceTracker()
    try:
        faces = tracker.detect_faces(image)
    finally:
        if own:
            tracker.close()
    if not faces:
        raise NoFaceError(f"No face was found in {name}; use a photo where one face is clearly visible and well lit.")
    index = 0 if face_index is None else face_index
    if not 0 <= index < len(faces):
        raise NoFaceError(
            f"{name} has {len(faces)} face(s), so face index {index} does not exist; "
            f"choose 0 to {len(faces) - 1} (0 = largest)."
        )
    lm = faces[index]
    box = face_crop_box(lm.points, crop_scale)
    to_crop = box.image_to_crop(size)
    crop = warp_to_crop(image, to_crop, size, antialias=True)  # a large photo: averaged, not aliased
    crop_lm = lm.with_points(transform_points(lm.points, to_crop))
    crop_lm = type(crop_lm)(crop_lm.points, (size, size), lm.confidence)
    warn_if_eyes_closed(crop_lm.points, name)
    return SourcePortrait(
        crop=crop, landmarks=crop_lm, size=size, image=image, crop_to_image=box.crop_to_image(size),
        face_index=index, path=path,
    )


def closed_eyes_advice(points: np.ndarray, name: str = "the source image") -> str | None:
    """What to tell the user when a portrait's eyes are closed or nearly so (``None`` when they are open): the
    analytic flow can only show the eyeball the portrait shows (docs/EYES.md), so its eyes open dark."""
    openness = eye_openness(points)
    if openness >= CLOSED_EYES:
        return None
    return (f"The eyes in {name} are closed or nearly closed (lid gap {openness:.2f} of the eye's width): the avatar "
            "opens them over what the portrait shows next to the lids (a dark slit, no eyeball), and eye contact has "
            "no gaze to hold; for eyes that open naturally, use a portrait with open eyes.")


def warn_if_eyes_closed(points: np.ndarray, name: str = "the source image") -> bool:
    """Log :func:`closed_eyes_advice` (and return True) when a portrait's eyes are closed or nearly so."""
    advice = closed_eyes_advice(points, name)
    if advice is not None:
        log.warning("%s", advice)
    return advice is not None
