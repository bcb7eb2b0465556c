"""How far a clip's later segment takes the head from where its recording showed it.

    PYTHONPATH=. python tools/recording_coverage.py --data PREPARED [--clips KEY ...] [--record 10] [--later-frames 48]

Splits each clip as ``tools/personalize_curve.py`` does (the first ``--record`` seconds, at most half the clip,
then as long again, ``--later-frames`` of it spread evenly) and prints, per clip, the **gap**: for each later frame
the distance from its landmarks' mean to the nearest recorded frame's, averaged over the later frames, in face sizes
(:func:`~avatar_app.face.mesh.face_size` of the recording's rest frame, the portrait the app takes); how far the
later frames sit from the rest frame itself; and what the recording alone shows (what a meter in the wizard could
read): its **spread** (the recorded faces' mean distance from their median place, face sizes) and the range of its
head's yaw (5th to 95th percentile, degrees).  Personalization's gain on the later segment falls as the gap grows
(Spearman -0.72 over the 13 validation people for the CPU plan); the recording's spread and yaw range do not
follow it (docs/PERSONALIZATION_REAL_FACES.md).  Default clips: the validation people's (``--val-fraction``), as
``personalize_curve`` picks them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from personalize_curve import segments  # noqa: E402

from avatar_app.face.mesh import face_size  # noqa: E402
from avatar_app.face.retarget import portrait_yaw, rest_frame  # noqa: E402
from avatar_app.train.data import split_clips  # noqa: E402
from avatar_app.train.eval_clips import load_clip  # noqa: E402
from avatar_app.train.manifest import read_manifest  # noqa: E402


def _centres(faces: list[np.ndarray]) -> np.ndarray:
    """``(F, 2)``: each face's points' mean (``(N, 2|3)`` points each), in the image plane."""
    return np.array([np.asarray(p)[:, :2].mean(0) for p in faces])


def coverage_gap(recorded: list[np.ndarray], later: list[np.ndarray], size: float) -> float:
    """Mean over ``later`` faces (``(N, 2|3)`` points each) of the distance from its points' mean to the nearest
    ``recorded`` face's, in units of ``size``."""
    seen = _centres(recorded)
    gaps = [np.linalg.norm(seen - c, axis=1).min() for c in _centres(later)]
    return float(np.mean(gaps)) / size


def spread(recorded: list[np.ndarray], size: float) -> float:
    """Mean distance of the ``recorded`` faces' point means from their median, in units of ``size``."""
    seen = _centres(recorded)
    return float(np.linalg.norm(seen - np.median(seen, axis=0), axis=1).mean()) / size


def yaw_range(recorded: list[np.ndarray]) -> float:
    """Degrees between the 5th and 95th percentiles of the ``recorded`` faces' yaw (``(478, 3)`` points each)."""
    yaws = [portrait_yaw(p) for p in recorded]
    return float(np.percentile(yaws, 95) - np.percentile(yaws, 5))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="a prepared dataset")
    p.add_argument("--clips", nargs="*", help="clip keys (default: the validation people's clips)")
    p.add_argument("--val-fraction", type=float, default=0.15)
    p.add_argument("--record", type=float, default=10.0, help="seconds recorded (at most half the clip)")
    p.add_argument("--later-frames", type=int, default=48)
    args = p.parse_args()

    entries = {c["key"]: c for c in read_manifest(args.data)["clips"]}
    keys = args.clips or sorted(split_clips(list(entries.values()), args.val_fraction)[1])
    print("| clip | recorded | later | gap (face sizes) | later from the rest frame | recording's spread | yaw range |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for key in keys:
        clip, why = load_clip(args.data, entries[key]) if key in entries else (None, "not in the manifest")
        if clip is None:
            print(f"| {key} | skipped: {why} | | | | | |")
            continue
        record, later = segments(clip, float(entries[key].get("fps") or 25.0), args.record, args.later_frames)
        rec_pts = [np.asarray(clip.landmarks[f]) for f in record]
        later_pts = [np.asarray(clip.landmarks[f]) for f in later]
        rest = rec_pts[rest_frame(rec_pts)]
        size = face_size(rest[:, :2])
        print(f"| {key} | {len(record)} | {len(later)} | {coverage_gap(rec_pts, later_pts, size):.3f} | "
              f"{coverage_gap([rest], later_pts, size):.2f} | {spread(rec_pts, size):.3f} | {yaw_range(rec_pts):.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
