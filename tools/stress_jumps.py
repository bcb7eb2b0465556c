"""How a shot cut meets the jump test: each frame pair's ``is_jump`` terms, smoothed and raw.

    PYTHONPATH=. python tools/stress_jumps.py --drivers unseen_shot_cut shot_cut [--frames 60] [--natural]

Prints, for each frame pair of a real stress driver whose step is not small, the terms of
:func:`avatar_app.face.jumps.jump_terms` (shift IOD / |log zoom| / shape IOD; a jump above
0.45 / 0.12 / 0.09 a frame) on the tracker's landmarks as the guard gets them (One-Euro smoothed,
restarted when the raw landmarks jump) and on the same tracker without smoothing (raw), and
where the tracker restarted its smoothing (``restart``).  ``--natural`` prints the largest terms
over the drivers' own continuous clips instead (side-to-side left out: its shifts are a jump's by
design) and how many of their frame pairs restarted the smoothing (none should).  Reads the
clips in place (docs/MOTION_UNSEEN.md §8).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from avatar_app.capture import stress  # noqa: E402
from avatar_app.face.jumps import jump_terms  # noqa: E402
from avatar_app.face.tracker import FaceTracker  # noqa: E402
from avatar_app.train.stress_unseen import unseen_stress_drivers  # noqa: E402
from avatar_app.types import Frame  # noqa: E402


def tracked(frames, smoothing: bool) -> tuple[list, set[int]]:
    """The landmarks of each frame (None: no face) and the frames where the smoothing restarted."""
    tracker = FaceTracker() if smoothing else FaceTracker(smoothing=None)
    out, restarts = [], set()
    for i, f in enumerate(frames):
        before = tracker.restarts
        t = tracker.track(f)
        out.append(t.landmarks if t.found else None)
        if tracker.restarts > before:
            restarts.add(i)
    return out, restarts


def steps(frames, smoothing: bool) -> tuple[dict[int, tuple[float, float, float]], set[int]]:
    lms, restarts = tracked(frames, smoothing)
    return {i: jump_terms(a, b) for i, (a, b) in enumerate(zip(lms, lms[1:]), 1)
            if a is not None and b is not None}, restarts


def print_steps(driver) -> None:
    (smooth, restarts), (raw, _) = steps(driver.frames, True), steps(driver.frames, False)
    print(f"{driver.name}: frame: smoothed shift/zoom/shape | raw (a jump above 0.45 / 0.12 / 0.09)")
    for i in sorted(smooth):
        s, r = smooth[i], raw.get(i, (0.0, 0.0, 0.0))
        if max(s[0] / 0.1, s[1] / 0.05, s[2] / 0.04, r[0] / 0.1, r[1] / 0.05, r[2] / 0.04) > 1:
            print(f"  {i}: {s[0]:.2f}/{s[1]:.2f}/{s[2]:.3f} | {r[0]:.2f}/{r[1]:.2f}/{r[2]:.3f}"
                  f"{'  restart' if i in restarts else ''}")


def print_natural(drivers) -> None:
    for smoothing in (True, False):
        worst, pairs, restarts = np.zeros(3), 0, 0
        for d in drivers:
            if "side_to_side" in d.name:
                continue
            for seg in d.natural:
                t, r = steps([Frame(image=im, timestamp=i / d.fps, index=i) for i, im in enumerate(seg)], smoothing)
                restarts += len(r)
                for v in t.values():
                    worst, pairs = np.maximum(worst, v), pairs + 1
        print(f"natural motion, {'smoothed' if smoothing else 'raw'}: largest shift {worst[0]:.3f} IOD, "
              f"zoom {worst[1]:.3f}, shape {worst[2]:.3f} IOD over {pairs} frame pairs"
              + (f"; smoothing restarted {restarts} times" if smoothing else ""))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", default=str(ROOT.parent / "shared" / "data" / "real_clips"))
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--drivers", nargs="*", help="real drivers by name, seen or unseen (default: all)")
    ap.add_argument("--natural", action="store_true", help="the largest terms over the drivers' own clips")
    args = ap.parse_args()
    drivers = stress.real_stress_drivers(args.clips, args.frames) + unseen_stress_drivers(args.clips, args.frames)
    drivers = [d for d in drivers if d.natural and (not args.drivers or d.name in args.drivers)]
    if args.natural:
        print_natural(drivers)
    else:
        for d in drivers:
            print_steps(d)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
