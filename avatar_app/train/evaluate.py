"""``avatar-app evaluate``: measure animators on held-out clips of a prepared dataset.

Self-reenactment: for each clip the **source** is its first valid frame's 256 crop
(with that frame's prepared landmarks), the **driver** is every later valid frame's
prepared landmarks — same person, same crop, so they are used directly as targets —
and the **ground truth** is that later frame's crop. Each animator animates the
source with those targets and is scored against the ground truth:

* PSNR (dB), SSIM (grey, 11×11 Gaussian window) and L1 (0..1) per frame, over the
  crop pixels that lie inside the clip's video frame (tight face crops reach past the
  frame edge, where the replicated border is neither truth nor anyone's output);
* landmark follow error: the output re-detected with mediapipe (still-image mode)
  against the driving landmarks, in % of the inter-ocular distance; frames where no
  face is re-detected are counted and left out;
* identity distance: dlib embedding of the source crop vs a few outputs (below 0.6 =
  same person by dlib's threshold); skipped with a note when dlib is missing;
* temporal jitter: the output sequence's mean |second temporal difference| minus the
  ground truth's own, in grey levels (0 = as smooth as the real video).

Animators: ``geometric`` (when asked), ``neural`` (the checkpoint given with
``weights``, otherwise the untrained ``preset`` model, which reproduces the geometric
one), and ``static`` — the unmoved source crop, a baseline every animator should beat
on PSNR/SSIM/L1 and landmark error.

The prepared dataset is docs/DATASET.md: its manifest comes from :mod:`.manifest` and the
train/validation split from :mod:`.split` (the one split rule, :data:`.split.SPLIT_RULE`, that
training uses); the clip files are read here, skipping (and reporting) clips that cannot be used.
The report files are written by :mod:`.report`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ..errors import InputFileError, OutputError
from .clipio import BASE_SIZE as CROP
from .clipio import embed_identity, identity_encoder
from ..face.eyes import hold_gaze
from .eval_cross import cross_clip, partner
from .eval_eyes import EYE_KEYS, detect_all
from .eval_clips import (Context, EvalClip, drive_indices, identity_distance_of, load_clip, mean_of, score,
                         source_portrait)
from .manifest import read_manifest
from .report import finite_or_none, format_table, jsonable, write_evaluation
from .split import SPLIT_RULE, split_clips

VAL_FRACTION = 0.1  # as TrainConfig.val_fraction's default
IDENTITY_SAMPLES = 4  # outputs per clip and animator that get a dlib embedding
SHEET_CLIPS = 2  # clips shown in the contact sheet

METRIC_KEYS = ("psnr", "ssim", "l1", "landmark_error", "mouth_r", *EYE_KEYS, "identity_distance", "jitter",
               "ms_per_frame")


# -- animators ----------------------------------------------------------------------------------------
class _StaticAnimator:
    """Baseline: the source crop, unmoved, for every target."""

    name = "static"

    def __init__(self, source):
        self.source = source

    def animate(self, target) -> np.ndarray:
        return self.source.crop.copy()


def _animators(ctx: Context, source, identity) -> list:
    """Geometric (when asked), neural and static animators of one source portrait."""
    from ..runtime.animator import GeometricAnimator
    from ..runtime.neural_animator import NeuralAnimator

    if identity is None:
        from ..models.identity import IDENTITY_DIM

        identity = np.zeros(IDENTITY_DIM, np.float32)
    return ([GeometricAnimator(source, device=ctx.device)] if ctx.include_geometric else []) + (
        [NeuralAnimator(source, model=ctx.model, device=ctx.device, identity=identity)] if ctx.include_neural else []
    ) + [_StaticAnimator(source)]


def _evaluate_clip(ctx: Context, clip: EvalClip, frames: int) -> tuple[dict, dict]:
    """Metrics of every animator on one clip, and the images kept for the contact sheet."""
    from ..types import Landmarks
    from .metrics import temporal_jitter

    valid_idx = np.flatnonzero(clip.valid)
    src_i = int(valid_idx[0])
    drive = drive_indices(ctx, valid_idx, frames)
    src_img = clip.image(src_i)
    source = source_portrait(src_img, clip.landmarks[src_i])
    gt = [clip.image(i) for i in drive]
    targets = [clip.landmarks[i] for i in drive]
    eyes = (detect_all(ctx.tracker, gt), _first_face(ctx, src_img, clip.landmarks[src_i]))
    if ctx.eye_contact:
        targets = [hold_gaze(t, clip.landmarks[src_i]) for t in targets]
    picks = sorted({int(round(x)) for x in np.linspace(0, len(drive) - 1, min(IDENTITY_SAMPLES, len(drive)))})

    src_emb = None
    if ctx.identity:
        src_emb, _ = embed_identity(src_img, clip.landmarks[src_i])
        if src_emb is None:
            ctx.notes.append(f"clip {clip.key}: no identity embedding of the source frame (face box too small)")
    net_identity = src_emb if src_emb is not None else clip.embedding
    if net_identity is None:
        ctx.notes.append(f"clip {clip.key}: the neural animator got a zero identity embedding (no dlib, no identity.npy)")
    animators = _animators(ctx, source, net_identity)

    result = {
        "key": clip.key, "identity": clip.identity, "source_frame": src_i, "frames": drive,
        "ground_truth": {
            "jitter": finite_or_none(temporal_jitter(gt)),
            "identity_distance": identity_distance_of(ctx, src_emb, gt, targets, picks),
        },
        "animators": {},
    }
    images = {"ground truth": gt}
    for anim in animators:
        outputs, times = [], []
        for t in targets:
            t0 = time.perf_counter()
            outputs.append(anim.animate(Landmarks(t, (clip.size, clip.size))))
            times.append(time.perf_counter() - t0)
        result["animators"][anim.name] = score(ctx, outputs, gt, targets, src_emb, picks, times, clip.mask,
                                               eyes=eyes)
        if anim.name != "static":
            images[anim.name] = outputs
    return result, images


def _first_face(ctx: Context, image, fallback):
    """The landmarks re-detected on ``image`` (as outputs are), else ``fallback``."""
    found = detect_all(ctx.tracker, [image])[0]
    return fallback if found is None else found


def _aggregate(clip_results: list[dict]) -> tuple[dict, dict]:
    names = []
    for c in clip_results:
        names += [n for n in c["animators"] if n not in names]
    agg = {}
    for name in names:
        per = [c["animators"][name] for c in clip_results if name in c["animators"]]
        entry = {k: mean_of(p[k] for p in per) for k in METRIC_KEYS}
        entry["faces_missed"] = int(sum(p["faces_missed"] for p in per))
        entry["frames"] = int(sum(p["frames"] for p in per))
        entry["clips"] = len(per)
        entry["gaze_clips"] = sum(p["gaze_r"] is not None for p in per)  # clips with clear eye movement
        entry["open_clips"] = sum(p["open_r"] is not None for p in per)
        for k in ("gaze_hold", "gaze_hold_p95"):  # eye contact: the clip furthest off neutral
            entry[f"{k}_worst"] = max((p[k] for p in per if p[k] is not None), default=None)
        agg[name] = entry
    gt = {k: mean_of(c["ground_truth"][k] for c in clip_results) for k in ("jitter", "identity_distance")}
    return agg, gt


# -- entry points ---------------------------------------------------------------------------------------------
def evaluate(data: Path, out: Path, weights: str | None = None, preset: str = "lite", device: str = "cpu",
             clips: int = 4, frames: int = 32, split: str = "val", include_geometric: bool = True,
             progress: bool = True, val_fraction: float = VAL_FRACTION, spread: bool = False,
             cross: bool = False, size: int = CROP, eye_contact: bool = False, include_neural: bool = True) -> dict:
    """Evaluate the animators on up to ``clips`` clips of a prepared dataset and write a report.

    ``split="val"`` takes the validation clips exactly as training splits them
    (:func:`.split.split_clips` with ``val_fraction``, rule :data:`.split.SPLIT_RULE`);
    ``split="all"`` uses every clip. Clips are taken in key order; incomplete clips and
    clips with fewer than 2 valid frames are skipped (listed in the report).

    Per clip, the first valid frame is the source and the next ``frames`` valid frames drive
    it (see the module docstring for the metrics).

    Args:
        data: the prepared dataset folder (docs/DATASET.md).
        out: folder for ``metrics.json``, ``report.md`` and ``contact_sheet.jpg`` (created).
        weights: a neural checkpoint; ``None`` evaluates the untrained ``preset`` model.
        preset: ``lite`` or ``full`` (without ``weights``).
        device: torch device for both animators.
        clips: most clips to evaluate.
        frames: most driven frames per clip.
        split: ``"val"``, ``"train"`` (training people's clips, the first of each person: for
            choosing a setting without looking at the validation people) or ``"all"``.
        include_geometric: also evaluate the geometric animator.
        include_neural: also evaluate the neural animator (slow on a CPU, above all at 512).
        progress: show a progress bar over clips.
        val_fraction: share of identities held out for validation (as in training).
        spread: drive with ``frames`` frames spread evenly over each whole clip (its full range
            of motion) instead of the ``frames`` frames that follow the source; jitter, which
            needs consecutive frames, is then not measured.
        cross: cross-identity reenactment (:mod:`.eval_cross`): each clip drives the first
            frame of the next clip of another person; no ground truth, so identity distance to
            the source, landmark error against the retargeted targets and mouth follow.
        size: the prepared crops to animate and score (256, or 512 where prepared; metrics are in
            units of the face, so sizes compare).
        eye_contact: hold the targets' gaze at the source's (as ``live --eye-contact`` does) to
            measure that gaze stays put while the lids follow.

    Returns:
        The aggregate: ``{animator: {"psnr", "ssim", "l1", "landmark_error", "faces_missed",
        "frames", "identity_distance", "jitter", "ms_per_frame", "clips"}}`` (``None`` where a
        metric could not be measured), animators ``geometric``, ``neural``, ``static``.

    Raises:
        InputFileError: no dataset, no manifest, or no usable clip in the split.
        OutputError: ``out`` cannot be written.
    """
    if split not in ("val", "train", "all"):
        raise ValueError(f"split must be 'val', 'train' or 'all', not {split!r}")
    if clips < 1 or frames < 1:
        raise ValueError("clips and frames must be at least 1")
    data, out = Path(data), Path(out)
    entries = {str(e["key"]): e for e in read_manifest(data)["clips"]}
    if not entries:
        raise InputFileError(f"The prepared dataset '{data}' has no clips in its manifest; prepare it from a folder "
                             "with face videos.")
    if split == "all":
        keys = sorted(entries)
    else:
        train_keys, val_keys = split_clips(list(entries.values()), val_fraction)
        keys = val_keys if split == "val" else _first_of_each_person(train_keys, entries)

    usable, skipped = [], []
    for key in keys:
        if len(usable) >= clips:
            break
        clip, reason = load_clip(data, entries[key], size)
        if clip is None:
            skipped.append({"key": key, "reason": reason})
        else:
            usable.append(clip)
    if not usable:
        why = "; ".join(f"{s['key']}: {s['reason']}" for s in skipped[:3]) or "the split selects no clip"
        hint = " or use --split all" if split == "val" else ""
        raise InputFileError(
            f"The prepared dataset '{data}' has no usable clip for the '{split}' split ({len(entries)} clip(s) in the "
            f"manifest; {why}); prepare more videos{hint}.")

    from tqdm import tqdm

    from ..errors import DependencyError
    from ..face.tracker import FaceTracker
    from ..models.portrait import load_checkpoint
    from ..models.shipped import untrained_model

    notes: list[str] = []
    identity = True
    try:
        identity_encoder()
    except DependencyError as exc:
        identity = False
        notes.append(f"identity distance skipped: {exc}")
    if weights:
        model = load_checkpoint(weights, device)
        neural_desc = f"checkpoint {weights}"
        neural_label = f"neural ({Path(weights).name})"
    else:
        model = untrained_model(preset)
        neural_desc = f"untrained {preset} model (no --weights; reproduces the geometric avatar by construction)"
        neural_label = f"neural (untrained {preset})"
        if include_neural:
            notes.append(f"the neural animator ran the untrained {preset} model because no weights were given")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"Could not create the output folder '{out}' ({exc}); choose another --out.") from exc
    labels = {"geometric": "geometric", "neural": neural_label, "static": "static source (baseline)",
              "ground truth": "ground truth", "driver": "driver (another person)"}

    results, shown = [], []
    tracker = FaceTracker(max_faces=1)
    ctx = Context(tracker, identity, model, device, include_geometric, notes, spread, eye_contact, include_neural)
    if spread:
        notes.append("driving frames spread over each whole clip: temporal jitter is not measured")
    try:
        for k, clip in enumerate(tqdm(usable, desc="evaluate", unit="clip", disable=not progress, leave=False)):
            try:
                if cross:
                    other = partner(usable, k)
                    if other is None:
                        skipped.append({"key": clip.key, "reason": "no clip of another person to drive"})
                        continue
                    res, images = cross_clip(ctx, clip, other, frames, lambda p, e: _animators(ctx, p, e))
                else:
                    res, images = _evaluate_clip(ctx, clip, frames)
            except InputFileError as exc:  # a frame file missing or damaged: skip the clip, say so
                skipped.append({"key": clip.key, "reason": str(exc)})
                continue
            results.append(res)
            if len(shown) < SHEET_CLIPS:
                shown.append((res, images))
    finally:
        tracker.close()

    if not results:
        if cross:
            raise InputFileError(f"Cross-identity evaluation needs clips of at least two people in the '{split}' split "
                                 f"of '{data}' ({skipped[-1]['key']}: {skipped[-1]['reason']}); allow more --clips.")
        raise InputFileError(
            f"Every clip selected from the prepared dataset '{data}' for the '{split}' split has missing or "
            f"damaged frame files (e.g. '{skipped[-1]['key']}'); prepare the dataset again.")
    aggregate, gt = _aggregate(results)
    for name, entry in aggregate.items():
        if entry["faces_missed"]:
            notes.append(f"{labels.get(name, name)}: no face was re-detected in {entry['faces_missed']} of "
                         f"{entry['frames']} outputs; those frames are left out of the landmark error")
    metrics = jsonable({
        "settings": {"data": str(data), "weights": weights, "preset": preset, "device": device, "clips": clips,
                     "frames": frames, "split": split, "val_fraction": val_fraction, "spread": spread, "cross": cross,
                     "size": size, "eye_contact": eye_contact,
                     "include_geometric": include_geometric,
                     "include_neural": include_neural, "neural": neural_desc,
                     "identity_samples": IDENTITY_SAMPLES},
        "split_rule": {"val": SPLIT_RULE, "train": "the training side of: " + SPLIT_RULE + "; the first clip of each person"
                       }.get(split, "all clips (split 'all'); the validation rule is: " + SPLIT_RULE),
        "labels": labels,
        "clips": results,
        "aggregate": aggregate,
        "ground_truth": gt,
        "skipped": skipped,
        "notes": notes,
    })
    write_evaluation(out, metrics, shown)
    return metrics["aggregate"]


def _first_of_each_person(keys: list[str], entries: dict[str, dict]) -> list[str]:
    """The first of ``keys`` (in order) of each identity: one clip per person."""
    seen, chosen = set(), []
    for key in keys:
        person = str(entries[key].get("identity") or key)
        if person not in seen:
            seen.add(person)
            chosen.append(key)
    return chosen


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def add_evaluate_parser(sub) -> argparse.ArgumentParser:
    """Add ``evaluate`` to the CLI's subparsers (dispatch to :func:`run_evaluate`)."""
    p = sub.add_parser("evaluate", help="score the animators on held-out clips of a prepared dataset")
    p.add_argument("--data", required=True, metavar="PREPARED", help="a dataset folder written by `avatar-app prepare`")
    p.add_argument("--weights", metavar="PATH", help="neural checkpoint to evaluate (default: the untrained model)")
    p.add_argument("--preset", choices=("lite", "full"), default="lite",
                   help="network size of the untrained model without --weights (default lite)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    p.add_argument("--clips", type=_positive_int, default=4, help="most clips to evaluate (default 4)")
    p.add_argument("--frames", type=_positive_int, default=32, help="most driven frames per clip (default 32)")
    p.add_argument("--split", choices=("val", "train", "all"), default="val",
                   help="val: held-out identities, as training splits them (default); train: the training people, "
                        "one clip each (to choose settings without the validation people); all: every clip")
    p.add_argument("--cross", action="store_true",
                   help="cross-identity: each clip drives another person's first frame (identity kept, motion "
                        "followed; no ground truth)")
    p.add_argument("--spread", action="store_true",
                   help="drive with frames spread over each whole clip (its full range of motion) instead of the "
                        "frames right after the source")
    p.add_argument("--size", type=int, choices=(256, 512), default=CROP,
                   help="animate and score the prepared crops of this size (default 256; 512 needs them prepared)")
    p.add_argument("--eye-contact", action="store_true",
                   help="hold the avatar's gaze at the source's while lids follow (measures the eye-contact option)")
    p.add_argument("--no-neural", action="store_true", help="geometric and static animators only (fast on a CPU)")
    p.add_argument("--val-fraction", type=float, default=VAL_FRACTION, metavar="F",
                   help=f"share of people held out, as in training (default {VAL_FRACTION}; configs/real-*.toml: 0.15)")
    p.add_argument("--out", metavar="DIR", default=None, help="where to write the report (default: PREPARED/eval)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def run_evaluate(args) -> int:
    """Run ``avatar-app evaluate``: print the table and where the files are."""
    out = Path(args.out) if args.out else Path(args.data) / "eval"
    aggregate = evaluate(Path(args.data), out, weights=args.weights, preset=args.preset, device=args.device,
                         clips=args.clips, frames=args.frames, split=args.split, progress=not args.no_progress,
                         val_fraction=args.val_fraction, spread=args.spread, cross=args.cross,
                         size=args.size, eye_contact=args.eye_contact, include_neural=not args.no_neural)
    labels = json.loads((out / "metrics.json").read_text(encoding="utf-8"))["labels"]
    print(format_table(aggregate, labels))
    print(f"\nwrote {out / 'report.md'}, {out / 'metrics.json'} and {out / 'contact_sheet.jpg'}")
    return 0


__all__ = ["add_evaluate_parser", "evaluate", "run_evaluate"]
