"""Why a shot cut gets through the jump test: each frame pair's ``is_jump`` terms, and an experiment.

    PYTHONPATH=. python tools/stress_jumps.py --drivers unseen_shot_cut shot_cut [--frames 60] [--natural]
    PYTHONPATH=. python tools/stress_jumps.py --drivers unseen_shot_cut shot_cut --rows --portrait grace_hopper

Prints, for each frame pair of a real stress driver whose step is not small, the terms of
:func:`avatar_app.runtime.face_loss.jump_terms` (shift IOD / |log zoom| / shape IOD; a jump above
0.45 / 0.12 / 0.09 a frame) on the tracker's landmarks as the guard gets them (One-Euro smoothed)
and on the same tracker without smoothing (raw).  ``--natural`` prints the largest terms over the
drivers' own continuous clips instead (side-to-side left out: its shifts are a jump's by design).

``--rows`` runs the offline stress check rows (docs/MOTION.md §3) with an *experimental* guard whose
jump test reads the raw landmarks while the pose still comes from the smoothed ones — not the
product's guard (docs/MOTION.md §8 says why it was not made so).  Reads the clips in place.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from avatar_app.capture import stress  # noqa: E402
from avatar_app.face.retarget import Retargeter  # noqa: E402
from avatar_app.face.source import prepare_source, read_image  # noqa: E402
from avatar_app.face.tracker import FaceTracker  # noqa: E402
from avatar_app.runtime import face_loss  # noqa: E402
from avatar_app.runtime.animator import GeometricAnimator  # noqa: E402
from avatar_app.train import stress_checks as sc  # noqa: E402
from avatar_app.train.stress_unseen import unseen_stress_drivers  # noqa: E402
from avatar_app.types import Frame  # noqa: E402


def tracked(frames, smoothing: bool) -> list:
    tracker = FaceTracker() if smoothing else FaceTracker(smoothing=None)
    out = []
    for f in frames:
        t = tracker.track(f)
        out.append(t.landmarks if t.found else None)
    return out


def steps(frames, smoothing: bool) -> dict[int, tuple[float, float, float]]:
    lms = tracked(frames, smoothing)
    return {i: face_loss.jump_terms(a, b) for i, (a, b) in enumerate(zip(lms, lms[1:]), 1)
            if a is not None and b is not None}


def print_steps(driver) -> None:
    smooth, raw = steps(driver.frames, True), steps(driver.frames, False)
    print(f"{driver.name}: frame: smoothed shift/zoom/shape | raw (a jump above 0.45 / 0.12 / 0.09)")
    for i in sorted(smooth):
        s, r = smooth[i], raw.get(i, (0.0, 0.0, 0.0))
        if max(s[0] / 0.1, s[1] / 0.05, s[2] / 0.04, r[0] / 0.1, r[1] / 0.05, r[2] / 0.04) > 1:
            print(f"  {i}: {s[0]:.2f}/{s[1]:.2f}/{s[2]:.3f} | {r[0]:.2f}/{r[1]:.2f}/{r[2]:.3f}")


def print_natural(drivers) -> None:
    for smoothing in (True, False):
        worst, pairs = np.zeros(3), 0
        for d in drivers:
            if "side_to_side" in d.name:
                continue
            for seg in d.natural:
                t = steps([Frame(image=im, timestamp=i / d.fps, index=i) for i, im in enumerate(seg)], smoothing)
                for v in t.values():
                    worst, pairs = np.maximum(worst, v), pairs + 1
        print(f"natural motion, {'smoothed' if smoothing else 'raw'}: largest shift {worst[0]:.3f} IOD, "
              f"zoom {worst[1]:.3f}, shape {worst[2]:.3f} IOD over {pairs} frame pairs")


def rows_with_raw_jump_test(drivers, portrait: str, size: int) -> None:
    """The check rows with the guard's jump test on raw landmarks (the experiment)."""
    raw_of: dict[int, object] = {}
    product = face_loss.is_jump

    def on_raw(a, b, dt, limits=face_loss.JumpThresholds()):
        return product(raw_of.get(id(a), a), raw_of.get(id(b), b), dt, limits)

    face_loss.is_jump = on_raw  # the guard looks it up at call time
    still = FaceTracker()
    source = prepare_source(read_image(ROOT / "assets" / "portraits" / f"{portrait}.jpg"), size, tracker=still)
    from avatar_app.models.identity import IdentityEncoder

    encoder = IdentityEncoder().load()
    emb = encoder.embed(source.crop, source.landmarks)
    animator = GeometricAnimator(source)
    for d in drivers:
        smooth, raw = FaceTracker(), FaceTracker(smoothing=None)
        guard = face_loss.DriverGuard(Retargeter(source.landmarks))
        images, keep = [], []
        for f in d.frames:
            t, r = smooth.track(f), raw.track(f)
            if t.found and r.found:
                raw_of[id(t.landmarks)] = r.landmarks
                keep.append(t.landmarks)  # ids stay unique while kept
            images.append(animator.animate(guard.update(f.timestamp, t.landmarks if t.found else None,
                                                        source.landmarks)))
        res = sc.check_output(f"{d.name} (raw jump test)", images, sc.driver_natural_jump(d, still), still,
                              encoder, emb)
        print(res.row(), f"<!-- {portrait} @ {size}; {'; '.join(res.failures()) or 'holds'} -->", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", default=str(ROOT.parent / "shared" / "data" / "real_clips"))
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--drivers", nargs="*", help="real drivers by name, seen or unseen (default: all)")
    ap.add_argument("--natural", action="store_true", help="the largest terms over the drivers' own clips")
    ap.add_argument("--rows", action="store_true", help="check rows with the jump test on raw landmarks")
    ap.add_argument("--portrait", default="astronaut")
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    drivers = stress.real_stress_drivers(args.clips, args.frames) + unseen_stress_drivers(args.clips, args.frames)
    drivers = [d for d in drivers if d.natural and (not args.drivers or d.name in args.drivers)]
    if args.natural:
        print_natural(drivers)
    elif args.rows:
        rows_with_raw_jump_test(drivers, args.portrait, args.size)
    else:
        for d in drivers:
            print_steps(d)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
