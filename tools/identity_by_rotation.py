"""How far real people are from themselves as their head turns: the stress check's identity distance on video.

    PYTHONPATH=. python tools/identity_by_rotation.py PREPARED [--per-clip 25] [--json OUT.json]

For every clip of a prepared dataset (``avatar-app prepare``: 256 crops and landmarks), the dlib
distance (:func:`~avatar_app.models.identity.identity_distance`, as the stress checks measure it) of
about ``--per-clip`` frames spread over the clip to the clip's own frame nearest the mesh's neutral
pose, binned by the head rotation between the two (the angle of the similarity fit of the rigid
points, :class:`~avatar_app.train.large_motion.HeadPoses`).  Expressions vary too (people talk): the
figures are what a real person's own video gives, the bar against which an avatar's distance under
the same rotation can be read (docs/MOTION_CROSS_PAIRS.md §7.5).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from avatar_app.models.identity import IdentityEncoder, identity_distance  # noqa: E402
from avatar_app.train.large_motion import HeadPoses, rotation_angle  # noqa: E402
from avatar_app.types import Landmarks  # noqa: E402

BINS = (0, 10, 20, 30, 45, 180)  # degrees


def clip_distances(folder: Path, encoder: IdentityEncoder, per_clip: int) -> list[tuple[int, float, float]]:
    """``(frame, rotation from the reference in degrees, identity distance)`` for one prepared clip."""
    points, valid = np.load(folder / "landmarks.npy"), np.load(folder / "valid.npy").astype(bool)
    frames = np.flatnonzero(valid)
    if len(frames) < 2:
        return []
    poses = HeadPoses(points, valid)
    ref = int(frames[np.argmin(rotation_angle(poses.rotation[frames]))])  # nearest the mesh's neutral pose

    def embed(k: int) -> np.ndarray:
        image = cv2.imread(str(folder / "256" / f"{k:06d}.jpg"))
        return encoder.embed(image, Landmarks(points[k], (image.shape[1], image.shape[0])))

    reference = embed(ref)
    picked = frames[:: max(1, len(frames) // per_clip)]
    picked = picked[picked != ref]
    turns = np.degrees(rotation_angle(poses.rotation[picked] @ poses.rotation[ref].T))
    return [(int(k), float(t), identity_distance(embed(int(k)), reference)) for k, t in zip(picked, turns)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("prepared", type=Path)
    ap.add_argument("--per-clip", type=int, default=25)
    ap.add_argument("--json", type=Path, help="write every (clip, frame, rotation, distance) here")
    args = ap.parse_args()
    encoder = IdentityEncoder().load()
    rows = []
    for folder in sorted((args.prepared / "clips").iterdir()):
        rows += [(folder.name, *r) for r in clip_distances(folder, encoder, args.per_clip)]
    turns, dists = np.array([r[2] for r in rows]), np.array([r[3] for r in rows])
    print(f"{len(rows)} frames of {len({r[0] for r in rows})} clips against each clip's most frontal frame")
    print("| rotation | frames | median | p95 | share over 0.45 |")
    print("|---|---:|---:|---:|---:|")
    for lo, hi in zip(BINS[:-1], BINS[1:]):
        d = dists[(turns >= lo) & (turns < hi)]
        if len(d):
            print(f"| {lo}–{hi}° | {len(d)} | {np.median(d):.3f} | {np.percentile(d, 95):.3f} | {np.mean(d > 0.45):.2f} |")
    if args.json:
        args.json.write_text(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
