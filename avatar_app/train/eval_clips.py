"""The clips ``avatar-app evaluate`` reads: a prepared clip's landmarks, valid flags, identity
embedding, 256 crops, and the mask of crop pixels that show its video (docs/DATASET.md)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputFileError
from .clipio import BASE_SIZE as CROP
from .clipio import clip_frame_mask, frame_name, read_image_file


@dataclass
class EvalClip:
    key: str
    identity: str
    folder: Path
    landmarks: np.ndarray  # (N, 478, 3) float32, 256-crop px
    valid: np.ndarray  # (N,) bool
    embedding: np.ndarray | None  # identity.npy
    mask: np.ndarray | None = None  # (256, 256) uint8: crop pixels inside the source video's frame (None: all)

    def image(self, index: int) -> np.ndarray:
        path = self.folder / str(CROP) / frame_name(index)
        img = read_image_file(path)
        if img is None:
            raise InputFileError(f"Frame '{path}' is missing or unreadable; prepare clip '{self.key}' again.")
        if img.shape[:2] != (CROP, CROP):
            raise InputFileError(f"Frame '{path}' is {img.shape[1]}x{img.shape[0]}, not {CROP}x{CROP}; "
                                 f"prepare clip '{self.key}' again.")
        return img


def load_clip(data: Path, entry: dict) -> tuple[EvalClip | None, str]:
    """The clip, or ``None`` and why it cannot be used."""
    key = str(entry["key"])
    folder = data / "clips" / key
    if not (folder / "meta.json").is_file():
        return None, "not completely prepared (no meta.json)"
    try:
        landmarks = np.load(folder / "landmarks.npy", allow_pickle=False)
        valid = np.load(folder / "valid.npy", allow_pickle=False)
    except (OSError, ValueError) as exc:
        return None, f"landmarks.npy or valid.npy unreadable ({exc})"
    if landmarks.ndim != 3 or landmarks.shape[1:] != (478, 3) or valid.shape != (landmarks.shape[0],):
        return None, f"landmarks {landmarks.shape} and valid {valid.shape} do not match the format"
    if not (folder / str(CROP)).is_dir():
        return None, f"no {CROP} crops"
    valid = valid.astype(bool) & np.isfinite(landmarks).all(axis=(1, 2))
    if int(valid.sum()) < 2:
        return None, "fewer than 2 frames with a face"
    embedding = None
    if (folder / "identity.npy").is_file():
        try:
            embedding = np.load(folder / "identity.npy", allow_pickle=False).astype(np.float32).reshape(-1)
        except (OSError, ValueError):
            embedding = None
    return EvalClip(key, str(entry.get("identity") or key), folder, landmarks.astype(np.float32), valid, embedding,
                 _frame_mask(folder)), ""


def _frame_mask(folder: Path) -> np.ndarray | None:
    """Where a clip's crop shows its video (a tight crop reaches past the frame edge, where the border is
    replicated: not scored); ``None`` when the whole crop does, or the clip says nothing of its frame."""
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    mask = clip_frame_mask(meta, CROP) if isinstance(meta, dict) else None
    return None if mask is None or not mask.any() else mask
