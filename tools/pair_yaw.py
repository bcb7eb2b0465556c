"""How far the training pairs turn the head (issue 13: a yaw limit for the neural animator).

    PYTHONPATH=. python tools/pair_yaw.py PREPARED

Relative yaw as ``retarget.limit_motion`` measures it (the y component of the rotation vector, degrees)
between two random frames of a clip of the training split (val_fraction 0.15, as configs/real-full.toml),
and between a frame and the hard pairs' pick (one of the 4 of 16 furthest in pose), mixed as the shipped
recipe drew them (hard_pairs 0.3); also each frame against its clip's median pose. 200 pairs a clip, seed 0.
"""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from avatar_app.face.retarget import _rotation_vector  # noqa: E402
from avatar_app.train.data import PreparedDataset  # noqa: E402
from avatar_app.train.large_motion import HeadPoses  # noqa: E402
ds = PreparedDataset(sys.argv[1], size=256, split="train", val_fraction=0.15, augment=False)
rng = np.random.default_rng(0)
rand, hard, frames_yaw = [], [], []
for c in ds.clip_records:
    pts = c.points(np.arange(c.frames), 256).astype(np.float64)
    poses = HeadPoses(pts, c.valid)
    idx = np.flatnonzero(c.valid)
    if len(idx) < 2:
        continue

    def yaw(a, b):
        return np.degrees(_rotation_vector(poses.rotation[b] @ poses.rotation[a].T))[1]

    for _ in range(200):
        a, b = rng.choice(idx, 2, replace=False)
        rand.append(abs(yaw(a, b)))
        h = poses.hardest(a, idx, rng)
        hard.append(abs(yaw(a, h)))
    ref = np.median([np.degrees(_rotation_vector(poses.rotation[i]))[1] for i in idx])
    frames_yaw += [abs(np.degrees(_rotation_vector(poses.rotation[i]))[1] - ref) for i in idx]
mix = np.concatenate([rand, hard[: int(len(hard) * 0.3 / 0.7)]])
for name, v in (("random pairs", rand), ("hard pairs", hard), ("recipe mix (0.3 hard)", mix), ("frames vs clip median", frames_yaw)):
    v = np.asarray(v)
    print(f"{name}: n={len(v)} p50 {np.percentile(v,50):.1f} p90 {np.percentile(v,90):.1f} p95 {np.percentile(v,95):.1f} p99 {np.percentile(v,99):.1f} p99.9 {np.percentile(v,99.9):.1f} max {v.max():.1f}")
print("clips", len(ds.clip_records), "identities", len({c.identity for c in ds.clip_records}))
