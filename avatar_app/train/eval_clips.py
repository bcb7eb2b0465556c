"""The clips ``avatar-app evaluate`` reads — a prepared clip's landmarks, valid flags, identity
embedding, 256 (or 512) crops, and the mask of crop pixels that show its video (docs/DATASET.md) — and
how an animator's outputs on them are scored (shared by self- and cross-reenactment)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputFileError
from ..models.identity import IDENTITY_DIM
from .clipio import BASE_SIZE as CROP
from .clipio import clip_frame_mask, clip_meta_of, embed_identity, frame_name, read_image_file
from .report import finite_or_none


@dataclass
class EvalClip:
    key: str
    identity: str
    folder: Path
    landmarks: np.ndarray  # (N, 478, 3) float32, px of the `size` crop
    valid: np.ndarray  # (N,) bool
    embedding: np.ndarray | None  # identity.npy
    mask: np.ndarray | None = None  # (size, size) uint8: crop pixels inside the source video's frame (None: all)
    size: int = CROP  # the crops evaluated: 256 or 512

    def image(self, index: int) -> np.ndarray:
        path = self.folder / str(self.size) / frame_name(index)
        img = read_image_file(path)
        if img is None:
            raise InputFileError(f"Frame '{path}' is missing or unreadable; prepare clip '{self.key}' again.")
        if img.shape[:2] != (self.size, self.size):
            raise InputFileError(f"Frame '{path}' is {img.shape[1]}x{img.shape[0]}, not {self.size}x{self.size}; "
                                 f"prepare clip '{self.key}' again.")
        return img


def load_clip(data: Path, entry: dict, size: int = CROP) -> tuple[EvalClip | None, str]:
    """The clip at ``size`` (its landmarks in px of that crop), or ``None`` and why it cannot be used."""
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
    if not (folder / str(size)).is_dir():
        return None, f"no {size} crops"
    valid = valid.astype(bool) & np.isfinite(landmarks).all(axis=(1, 2))
    if int(valid.sum()) < 2:
        return None, "fewer than 2 frames with a face"
    embedding = None  # absent: allowed (prepared without dlib)
    if (folder / "identity.npy").is_file():
        try:
            embedding = np.load(folder / "identity.npy", allow_pickle=False).astype(np.float32).reshape(IDENTITY_DIM)
        except (OSError, ValueError) as exc:
            return None, (f"identity.npy is damaged ({exc}); delete '{folder}' and run `avatar-app prepare` again "
                          "to redo that clip")
    from ..face.align import rescale_points

    return EvalClip(key, str(entry.get("identity") or key), folder, rescale_points(landmarks, CROP, size), valid,
                    embedding, _frame_mask(folder, size), size), ""


def run_clips(data: Path, run: dict, gaze_only: bool = False) -> Iterator[tuple[dict, EvalClip | None, str]]:
    """Each clip of an ``avatar-app evaluate`` run (its parsed ``metrics.json``), read again from the prepared
    folder ``data`` at the run's crop size: ``(the run's record of the clip, the clip or None, why not)``, for tools
    that look again at what a run scored.  ``gaze_only``: only the clips where some animator has a gaze figure
    (the others are not read)."""
    from .manifest import read_manifest

    size = int(run.get("settings", {}).get("size", CROP))
    entries = {str(e["key"]): e for e in read_manifest(Path(data))["clips"]}
    for record in run["clips"]:
        if gaze_only and all(a.get("gaze_r") is None for a in record["animators"].values()):
            continue
        entry = entries.get(str(record["key"]))
        if entry is None:
            yield record, None, f"not in the manifest of {data}"
            continue
        clip, reason = load_clip(Path(data), entry, size)
        yield record, clip, reason


def _frame_mask(folder: Path, size: int = CROP) -> np.ndarray | None:
    """Where a clip's crop shows its video (a tight crop reaches past the frame edge, where the border is
    replicated: not scored); ``None`` when the whole crop does, or the clip says nothing of its frame."""
    mask = clip_frame_mask(clip_meta_of(folder), size)
    return None if mask is None or not mask.any() else mask


def source_portrait(image: np.ndarray, points: np.ndarray):
    from ..types import Landmarks, SourcePortrait

    size = image.shape[0]
    return SourcePortrait(crop=image, landmarks=Landmarks(points, (size, size)), size=size, image=image,
                          crop_to_image=np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=np.float64))


@dataclass
class Context:
    tracker: object
    identity: bool  # dlib is there: identity distances are measured
    model: object
    device: str
    include_geometric: bool
    notes: list[str] = field(default_factory=list)
    spread: bool = False  # driving frames spread over the whole clip instead of the ones after the source
    eye_contact: bool = False  # targets' gaze held at the source's (face.eyes.hold_gaze)
    include_neural: bool = True


def mean_of(values) -> float | None:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.mean(vals)) if vals else None


def identity_distance_of(ctx: Context, src_emb, images, points, picks) -> float | None:
    if not ctx.identity or src_emb is None:
        return None
    from ..models.identity import identity_distance

    dists = []
    for i in picks:
        emb, _ = embed_identity(images[i], points[i])
        if emb is not None:
            dists.append(identity_distance(src_emb, emb))
    return mean_of(dists)


def drive_indices(ctx: Context, valid_idx: np.ndarray, frames: int) -> list[int]:
    """The frames that drive: ``frames`` spread over the clip after its first valid frame
    (``ctx.spread``), or the ``frames`` right after it."""
    if ctx.spread:  # the whole clip's range of motion, not its first second
        picks = np.unique(np.linspace(1, len(valid_idx) - 1, min(frames, len(valid_idx) - 1)).round().astype(int))
        return [int(valid_idx[i]) for i in picks]
    return [int(i) for i in valid_idx[1:frames + 1]]


def _mouth_follow(targets, detected) -> float | None:
    """Pearson r between the targets' and the re-detected outputs' mouth openings (each over its own
    inter-ocular distance): how well the mouth follows; ``None`` when the targets' mouth hardly
    moves (its opening varies by under 2 % of the inter-ocular distance) or the output's does not at all."""
    from ..face.mesh import mouth_opening
    from .metrics import inter_ocular_distance

    pairs = [(mouth_opening(t) / inter_ocular_distance(t), mouth_opening(d) / inter_ocular_distance(d))
             for t, d in zip(targets, detected) if d is not None]
    if len(pairs) < 3:
        return None
    a, b = np.array(pairs).T
    if a.std() < 0.02 or b.std() < 1e-6:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def score(ctx: Context, outputs, gt, targets, src_emb, picks, times: list[float], mask=None,
          reference=None, eyes: tuple | None = None) -> dict:
    """One animator's metrics on one clip. ``gt`` None (cross-identity: no ground truth) leaves
    PSNR, SSIM and L1 out; jitter is then measured against ``reference`` (the driving frames).
    ``eyes``: ``(driver's re-detected landmarks per frame, the source's)`` for :mod:`.eval_eyes`."""
    from .eval_eyes import EYE_KEYS, eye_follow
    from .metrics import l1, landmark_follow_error, psnr, ssim, temporal_jitter

    errors, missed, detected = [], 0, []
    for out, tgt in zip(outputs, targets):
        faces = ctx.tracker.detect_faces(out)
        detected.append(np.asarray(faces[0].points) if faces else None)
        if faces:
            errors.append(landmark_follow_error(faces[0].points, tgt))
        else:
            missed += 1
    truth = gt is not None
    jitter_ref = gt if truth else reference
    return {
        "psnr": mean_of(psnr(o, g, mask) for o, g in zip(outputs, gt)) if truth else None,
        "ssim": mean_of(ssim(o, g, mask) for o, g in zip(outputs, gt)) if truth else None,
        "l1": mean_of(l1(o, g, mask) for o, g in zip(outputs, gt)) if truth else None,
        "landmark_error": mean_of(errors),
        "mouth_r": _mouth_follow([np.asarray(t) for t in targets], detected),
        "faces_missed": missed,
        "frames": len(outputs),
        "identity_distance": identity_distance_of(ctx, src_emb, outputs, targets, picks),
        "jitter": None if ctx.spread or jitter_ref is None else finite_or_none(temporal_jitter(outputs, jitter_ref)),
        "ms_per_frame": float(np.median(times)) * 1e3,  # median: the first call warms caches up
        **(eye_follow(eyes[0], detected, eyes[1]) if eyes is not None else dict.fromkeys(EYE_KEYS)),
    }
