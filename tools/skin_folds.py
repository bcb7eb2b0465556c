"""How far retargeted expressions fold the portrait's skin, with and without :class:`~avatar_app.face.folds.SkinFolds`.

    PYTHONPATH=. python tools/skin_folds.py --data PREPARED [--every 6] [--frames 80] [--seed 0]

For every prepared clip, two drivings (every ``--every``-th valid frame, at most ``--frames``, calibrated on
the first): *self*, the clip's own first frame as the portrait, and *cross*, another clip's first frame
(picked with ``--seed``).  Each frame is retargeted as live does; the shape before the head's motion is
read where the Retargeter hands it to ``SkinFolds`` and scored on the portrait's checked skin triangles:
the area turned over (px², at the prepared size) and the area under the floor the fold limit keeps
(``MIN_AREA`` of the triangle's area, or the driver's own share where that is less).  Prints, per driving,
the share of frames with more than 4 px² of either, their largest, how far the limit moved a point, and
its time per frame.  ``--continuity N`` also interpolates each pair of consecutive cross frames (shapes and
the driver's shares) in N sub-steps and prints how far the limit's correction jumps from one sub-step to the
next (a fold's edge that flickers).  Reads the prepared folder only (landmarks, no images).
docs/MOTION_TRANSITIONS.md §7.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from avatar_app.face import folds  # noqa: E402
from avatar_app.face.retarget import Retargeter  # noqa: E402
from avatar_app.types import Landmarks  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="a folder written by `avatar-app prepare`")
    ap.add_argument("--every", type=int, default=6)
    ap.add_argument("--frames", type=int, default=80)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--continuity", type=int, default=0, metavar="N", help="sub-steps between cross frames (0: off)")
    args = ap.parse_args()
    clips = sorted(p for p in Path(args.data, "clips").iterdir() if (p / "landmarks.npy").is_file())
    if len(clips) < 2:
        raise SystemExit(f"fewer than two prepared clips in {args.data}")
    limit = folds.SkinFolds.__call__
    seen: dict = {}

    def recording(self, shape, ratios=None):
        t0 = time.perf_counter()
        out = limit(self, shape, ratios) if seen["on"] else shape
        seen.update(took=time.perf_counter() - t0, limit=self, shape=shape, ratios=ratios, out=out)
        return out

    folds.SkinFolds.__call__ = recording
    for on in (False, True):
        seen["on"] = on
        rng = np.random.default_rng(args.seed)
        rows = {"self": [], "cross": []}
        drivings = []
        for i, clip in enumerate(clips):
            size = _size(clip)
            points = np.load(clip / "landmarks.npy")
            drive = np.flatnonzero(np.load(clip / "valid.npy"))[::args.every][:args.frames]
            for how in ("self", "cross"):
                other = clips[(i + 1 + rng.integers(len(clips) - 1)) % len(clips)] if how == "cross" else clip
                rt = Retargeter(Landmarks(np.load(other / "landmarks.npy")[0], (size, size)))
                rt.calibrate(Landmarks(points[drive[0]], (size, size)))
                frames = []
                for k in drive:
                    rt(Landmarks(points[k], (size, size)))
                    rows[how].append(_score(seen))
                    frames.append((seen["limit"], seen["shape"], seen["ratios"]))
                if how == "cross":
                    drivings.append(frames)
        print(f"SkinFolds {'on' if on else 'off'}:")
        for how, r in rows.items():
            a = np.array(r)
            p50, p95 = np.percentile(a, 50, axis=0), np.percentile(a, 95, axis=0)
            print(f"  {how}: {len(a)} frames; skin turned over > 4 px²: {np.mean(a[:, 0] > 4):.1%} (largest"
                  f" {a[:, 0].max():.0f}); under the floor > 4 px²: {np.mean(a[:, 1] > 4):.1%}"
                  f" (largest {a[:, 1].max():.0f});"
                  f" point moved p50/p95/max {p50[2]:.2f}/{p95[2]:.2f}/{a[:, 2].max():.2f} px;"
                  f" ms p50/p95/max {p50[3]:.2f}/{p95[3]:.2f}/{a[:, 3].max():.2f}")
        if on and args.continuity:
            j = np.array([_jump(limit, a, b, args.continuity) for frames in drivings
                          for a, b in zip(frames[:-1], frames[1:]) if _folds(limit, a) or _folds(limit, b)])
            print(f"  cross, {len(j)} pairs of consecutive frames with a fold, {args.continuity} sub-steps: the"
                  f" correction jumps > 0.5 px in {np.sum(j > 0.5)} (p95 {np.percentile(j, 95):.2f}, largest"
                  f" {j.max():.2f} px)")
    return 0


def _folds(limit, frame) -> bool:
    lim, shape, ratios = frame
    return limit(lim, shape, ratios) is not shape


def _jump(limit, a, b, steps: int) -> float:
    """The largest change of the limit's correction from one sub-step to the next, frame ``a`` to ``b``."""
    lim, worst, prev = a[0], 0.0, None
    for w in np.linspace(0.0, 1.0, steps + 1):
        shape = (1 - w) * np.asarray(a[1], np.float64) + w * np.asarray(b[1], np.float64)
        correction = np.asarray(limit(lim, shape, (1 - w) * a[2] + w * b[2]))[:, :2] - shape[:, :2]
        if prev is not None:
            worst = max(worst, float(np.linalg.norm(correction - prev, axis=1).max()))
        prev = correction
    return worst


def _size(clip: Path) -> int:
    import json

    return int(json.loads((clip / "meta.json").read_text())["frame_size"][0])


def _score(seen: dict) -> tuple[float, float, float, float]:
    """``(turned over, under the floor, largest point move, ms)`` of the last retargeted frame."""
    lim, out, ratios = seen["limit"], np.asarray(seen["out"]), seen["ratios"]
    area = lim.shares(out) * lim.sizes
    floor = np.minimum(folds.MIN_AREA, ratios) * lim.sizes
    moved = np.linalg.norm(out[:, :2] - np.asarray(seen["shape"])[:, :2], axis=1).max()
    return (float(np.maximum(-area, 0).sum()), float(np.maximum(floor - area, 0).sum()), float(moved),
            seen["took"] * 1e3)


if __name__ == "__main__":
    raise SystemExit(main())
