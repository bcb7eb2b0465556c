"""How far the training pairs turn the head, and zoom (issue 13: the neural animator's motion limits).

    PYTHONPATH=. python tools/pair_yaw.py PREPARED

Relative yaw as ``retarget.limit_motion`` measures it (the y component of the rotation vector, degrees, in the
first face's head axes: ``R_a^T R_b``; the camera's axes, ``R_b R_a^T``, until the twenty-sixth session, when
the recipe mix read p95 20.3 / p99 31.6 degrees against 20.1 / 31.8 now) between two random frames of a clip of
the training split (val_fraction 0.15, as configs/real-full.toml), and between a frame and the hard pairs' pick
(one of the 4 of 16 furthest in pose), mixed as the shipped recipe drew them (hard_pairs 0.3); also each frame
against its clip's median pose. 200 pairs a clip, seed 0.
The same pairs' relative zoom (the factor between the two faces' scales, either way: 1.2 = one face 1.2x
the other's size) is printed after the yaws.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avatar_app.face.retarget import rotation_yaw  # noqa: E402
from avatar_app.train.large_motion import HeadPoses  # noqa: E402


def clip_pairs(points: np.ndarray, valid: np.ndarray, rng: np.random.Generator, pairs: int = 200) -> dict:
    """One clip's ``(N, 478, 3)`` landmarks: ``pairs`` random pairs and as many hard pairs (a frame and
    :meth:`HeadPoses.hardest`'s pick), each pair's |yaw| in degrees (``random``, ``hard``) and zoom factor
    (``random_zoom``, ``hard_zoom``: ``exp |log s_b - log s_a|``), and every frame's |yaw| against the clip's
    median (``frames``).  Empty arrays for a clip with fewer than two faces."""
    poses = HeadPoses(points.astype(np.float64), valid)
    idx = np.flatnonzero(valid)
    out: dict[str, list] = {k: [] for k in ("random", "hard", "random_zoom", "hard_zoom", "frames")}
    if len(idx) < 2:
        return {k: np.zeros(0) for k in out}

    def add(kind: str, a: int, b: int) -> None:
        out[kind].append(abs(rotation_yaw(poses.rotation[a].T @ poses.rotation[b])))
        out[f"{kind}_zoom"].append(float(np.exp(abs(poses.log_scale[b] - poses.log_scale[a]))))

    for _ in range(pairs):
        a, b = rng.choice(idx, 2, replace=False)
        add("random", a, b)
        add("hard", a, poses.hardest(a, idx, rng))
    own = np.array([rotation_yaw(poses.rotation[i]) for i in idx])
    out["frames"] = np.abs(own - np.median(own))
    return {k: np.asarray(v, np.float64) for k, v in out.items()}


def main() -> int:
    from avatar_app.train.data import PreparedDataset

    ds = PreparedDataset(sys.argv[1], size=256, split="train", val_fraction=0.15, augment=False)
    rng = np.random.default_rng(0)
    parts = [clip_pairs(c.points(np.arange(c.frames), 256), c.valid, rng) for c in ds.clip_records]
    got = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    # the recipe's share of hard pairs (0.3 of all), drawn from every clip's, not the first clips' only
    pick = rng.choice(len(got["hard"]), size=int(len(got["hard"]) * 0.3 / 0.7), replace=False)
    for what, unit, digits in (("", "degrees of yaw", 1), ("_zoom", "zoom factor", 3)):
        rand, hard = got["random" + what], got["hard" + what]
        rows = [("random pairs", rand), ("hard pairs", hard),
                ("recipe mix (0.3 hard)", np.concatenate([rand, hard[pick]]))]
        if not what:
            rows.append(("frames vs clip median", got["frames"]))
        for name, v in rows:
            q = np.percentile(v, [50, 90, 95, 99, 99.9])
            print(f"{name}, {unit}: n={len(v)} p50 {q[0]:.{digits}f} p90 {q[1]:.{digits}f} p95 {q[2]:.{digits}f} "
                  f"p99 {q[3]:.{digits}f} p99.9 {q[4]:.{digits}f} max {v.max():.{digits}f}")
    print("clips", len(ds.clip_records), "identities", len({c.identity for c in ds.clip_records}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
