"""How far the training pairs turn the head (issue 13: a yaw limit for the neural animator).

    PYTHONPATH=. python tools/pair_yaw.py PREPARED

Relative yaw as ``retarget.limit_motion`` measures it (the y component of the rotation vector, degrees)
between two random frames of a clip of the training split (val_fraction 0.15, as configs/real-full.toml),
and between a frame and the hard pairs' pick (one of the 4 of 16 furthest in pose), mixed as the shipped
recipe drew them (hard_pairs 0.3); also each frame against its clip's median pose. 200 pairs a clip, seed 0.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avatar_app.face.retarget import _rotation_vector  # noqa: E402
from avatar_app.train.large_motion import HeadPoses  # noqa: E402


def clip_yaws(points: np.ndarray, valid: np.ndarray, rng: np.random.Generator, pairs: int = 200):
    """``(random, hard, frames)`` |yaw| in degrees for one clip's ``(N, 478, 3)`` landmarks: ``pairs`` random
    pairs, as many hard pairs (a frame and :meth:`HeadPoses.hardest`'s pick), and every frame against the
    clip's median yaw.  Empty arrays for a clip with fewer than two faces."""
    poses = HeadPoses(points.astype(np.float64), valid)
    idx = np.flatnonzero(valid)
    if len(idx) < 2:
        return np.zeros(0), np.zeros(0), np.zeros(0)

    def yaw(a: int, b: int) -> float:
        return float(np.degrees(_rotation_vector(poses.rotation[b] @ poses.rotation[a].T))[1])

    rand, hard = [], []
    for _ in range(pairs):
        a, b = rng.choice(idx, 2, replace=False)
        rand.append(abs(yaw(a, b)))
        hard.append(abs(yaw(a, poses.hardest(a, idx, rng))))
    own = np.array([np.degrees(_rotation_vector(poses.rotation[i]))[1] for i in idx])
    return np.array(rand), np.array(hard), np.abs(own - np.median(own))


def main() -> int:
    from avatar_app.train.data import PreparedDataset

    ds = PreparedDataset(sys.argv[1], size=256, split="train", val_fraction=0.15, augment=False)
    rng = np.random.default_rng(0)
    parts = [clip_yaws(c.points(np.arange(c.frames), 256), c.valid, rng) for c in ds.clip_records]
    rand, hard, frames = (np.concatenate([p[k] for p in parts]) for k in range(3))
    # the recipe's share of hard pairs (0.3 of all), drawn from every clip's, not the first clips' only
    mix = np.concatenate([rand, rng.choice(hard, size=int(len(hard) * 0.3 / 0.7), replace=False)])
    for name, v in (("random pairs", rand), ("hard pairs", hard), ("recipe mix (0.3 hard)", mix),
                    ("frames vs clip median", frames)):
        q = np.percentile(v, [50, 90, 95, 99, 99.9])
        print(f"{name}: n={len(v)} p50 {q[0]:.1f} p90 {q[1]:.1f} p95 {q[2]:.1f} p99 {q[3]:.1f} p99.9 {q[4]:.1f} "
              f"max {v.max():.1f}")
    print("clips", len(ds.clip_records), "identities", len({c.identity for c in ds.clip_records}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
