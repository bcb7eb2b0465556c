"""How a shot cut meets the jump test: each frame pair's ``is_jump`` terms, smoothed and raw, and
the change of the face's look.

    PYTHONPATH=. python tools/stress_jumps.py --drivers unseen_shot_cut shot_cut [--frames 60] [--natural]

Prints, for each frame pair of a real stress driver whose step is not small, the terms of
:func:`avatar_app.face.jumps.jump_terms` (shift IOD / |log zoom| / shape IOD; a jump above
0.45 / 0.12 / 0.09 a frame) on the tracker's landmarks as the guard gets them (One-Euro smoothed,
restarted when the raw landmarks jump or the look changes) and on the same tracker without
smoothing (raw), the look's change on the raw landmarks (:func:`avatar_app.face.appearance.look_change`:
skin chroma / layout, and their score; another look above 4), and where the tracker restarted
its smoothing (``restart``, ``restart (look)`` when only the look saw it).  ``--natural`` prints
the largest terms over the drivers' own continuous clips instead (side-to-side left out of the
landmark terms: its shifts are a jump's by design; the look's terms are printed for it apart),
the look's over gaps of 1 to 3 frames, and how many of their frame pairs restarted the smoothing
(none should).  ``--every-clip`` does the same for the first ``--frames`` frames of every clip
in the folder's manifest (continuous clips the thresholds were not set on) and lists the frame
pairs the tracker would restart on; ``--cost`` times the look on a 640 × 480 frame.  Reads the
clips in place (docs/MOTION_UNSEEN.md §8).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import time  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from avatar_app.capture import stress  # noqa: E402
from avatar_app.face.appearance import LookThresholds, face_look, look_change  # noqa: E402
from avatar_app.face.jumps import is_jump, jump_terms  # noqa: E402
from avatar_app.face.tracker import FaceTracker  # noqa: E402
from avatar_app.train.stress_unseen import unseen_stress_drivers  # noqa: E402
from avatar_app.types import Frame  # noqa: E402


LOOK = LookThresholds()


def look_terms(a, b) -> tuple[float, float, float]:
    """``(chroma, layout, score)`` from look ``a`` to look ``b`` (the tracker's look test: a cut above 4)."""
    chroma, layout = look_change(a, b)
    return chroma, layout, chroma / LOOK.chroma + layout / LOOK.layout


def tracked(frames, smoothing: bool) -> tuple[list, set[int], set[int], list]:
    """The landmarks of each frame (None: no face), the frames where the smoothing restarted,
    those where only the look saw a cut, and each frame's look (of its landmarks; None: no face)."""
    tracker = FaceTracker() if smoothing else FaceTracker(smoothing=None)
    out, restarts, by_look, looks = [], set(), set(), []
    for i, f in enumerate(frames):
        before, looked = tracker.restarts, tracker.look_cuts
        t = tracker.track(f)
        out.append(t.landmarks if t.found else None)
        looks.append(face_look(f.image, t.landmarks.points) if t.found else None)
        if tracker.restarts > before:
            restarts.add(i)
        if tracker.look_cuts > looked:
            by_look.add(i)
    return out, restarts, by_look, looks


def pairs(items, gap: int = 1) -> dict[int, tuple]:
    return {i: (items[i - gap], items[i]) for i in range(gap, len(items))
            if items[i - gap] is not None and items[i] is not None}


def steps(frames, smoothing: bool) -> tuple[dict[int, tuple[float, float, float]], set[int], set[int], list]:
    lms, restarts, by_look, looks = tracked(frames, smoothing)
    return {i: jump_terms(a, b) for i, (a, b) in pairs(lms).items()}, restarts, by_look, looks


def print_steps(driver) -> None:
    (smooth, restarts, by_look, _), (raw, _, _, looks) = steps(driver.frames, True), steps(driver.frames, False)
    look = {i: look_terms(a, b) for i, (a, b) in pairs(looks).items()}
    print(f"{driver.name}: frame: smoothed shift/zoom/shape | raw (a jump above 0.45 / 0.12 / 0.09)"
          f" | look chroma/layout = score (another look above {LOOK.limit:g})")
    for i in sorted(smooth):
        s, r, k = smooth[i], raw.get(i, (0.0, 0.0, 0.0)), look.get(i, (0.0, 0.0, 0.0))
        if max(s[0] / 0.1, s[1] / 0.05, s[2] / 0.04, r[0] / 0.1, r[1] / 0.05, r[2] / 0.04, k[2] / 2.0) > 1:
            mark = "  restart (look)" if i in by_look else "  restart" if i in restarts else ""
            print(f"  {i}: {s[0]:.2f}/{s[1]:.2f}/{s[2]:.3f} | {r[0]:.2f}/{r[1]:.2f}/{r[2]:.3f}"
                  f" | {k[0]:.2f}/{k[1]:.2f} = {k[2]:.2f}{mark}")


def print_natural(drivers) -> None:
    for smoothing in (True, False):
        worst, count, restarts, by_look = np.zeros(3), 0, 0, 0
        looks = {name: {gap: [] for gap in (1, 2, 3)} for name in ("natural", "side-to-side")}
        for d in drivers:
            moved = "side_to_side" in d.name
            for seg in d.natural:
                t, r, lk, seen = steps([Frame(image=im, timestamp=i / d.fps, index=i) for i, im in enumerate(seg)], smoothing)
                for gap in (1, 2, 3):
                    looks["side-to-side" if moved else "natural"][gap] += [look_terms(a, b) for a, b in pairs(seen, gap).values()]
                if moved:
                    continue
                restarts, by_look = restarts + len(r), by_look + len(lk)
                for v in t.values():
                    worst, count = np.maximum(worst, v), count + 1
        print(f"natural motion, {'smoothed' if smoothing else 'raw'}: largest shift {worst[0]:.3f} IOD, "
              f"zoom {worst[1]:.3f}, shape {worst[2]:.3f} IOD over {count} frame pairs"
              + (f"; smoothing restarted {restarts} times ({by_look} by the look)" if smoothing else ""))
        if smoothing:
            continue
        for name, by_gap in looks.items():
            for gap, terms in by_gap.items():
                v = np.array(terms)
                print(f"  look, {name}, {gap} frame{'s' if gap > 1 else ''} apart ({len(v)} pairs): largest chroma "
                      f"{v[:, 0].max():.3f}, layout {v[:, 1].max():.3f}, score {v[:, 2].max():.3f} "
                      f"(99th percentile {np.percentile(v[:, 2], 99):.3f}; above {LOOK.limit:g}: {int((v[:, 2] > LOOK.limit).sum())})")


def print_every_clip(folder: str, frames: int) -> None:
    """Over the first ``frames`` frames of every clip in the manifest: the largest look change and
    every frame pair the tracker restarts on (by its landmarks or only by the look)."""
    scores, landmark_cuts, look_cuts, unflagged = [], [], [], [0.0]
    for row in stress.manifest_rows(folder):
        images = stress.read_clip(Path(folder) / row["file"], frames)
        fps = float(row["fps"]) or 25.0
        seq = [Frame(image=im, timestamp=i / fps, index=i) for i, im in enumerate(images)]
        lms, _, _, looks = tracked(seq, smoothing=False)
        for i, (a, b) in pairs(lms).items():
            score = look_terms(looks[i - 1], looks[i])
            scores.append(score[2])
            if is_jump(a, b, 1.0 / fps):
                landmark_cuts.append((row["file"], i, score))
            elif score[2] > LOOK.limit:
                look_cuts.append((row["file"], i, score))
            else:
                unflagged.append(score[2])
    v = np.array(scores)
    print(f"every clip's first {frames} frames: {len(v)} frame pairs; look score largest {v.max():.3f}, "
          f"99.9th percentile {np.percentile(v, 99.9):.3f}; restarts: {len(landmark_cuts)} by the landmarks, "
          f"{len(look_cuts)} more by the look (above {LOOK.limit:g}); the largest look score on a pair "
          f"restarted by neither: {max(unflagged):.3f}")
    for kind, rows in (("landmarks", landmark_cuts), ("look", look_cuts)):
        for name, i, (c, lay, score) in rows:
            print(f"  {kind}: {name} frame {i}: look {c:.2f}/{lay:.2f} = {score:.2f}")


def print_cost(repeats: int = 2000) -> None:
    """Time :func:`face_look` plus the comparison on a 640 x 480 frame (a real face, pasted)."""
    from avatar_app.face.align import similarity_fit  # noqa: F401  (warm imports)
    from skimage import data

    face = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)[:300, 100:400]
    frame = np.full((480, 640, 3), 40, np.uint8)
    frame[90:390, 170:470] = face
    tracker = FaceTracker(smoothing=None)
    t = tracker.track(Frame(image=frame, timestamp=0.0, index=0))
    points = t.landmarks.points
    start = time.perf_counter()
    for _ in range(50):
        tracker.track(Frame(image=frame, timestamp=0.0, index=0))
    tracked_ms = (time.perf_counter() - start) / 50 * 1e3
    last = face_look(frame, points)
    start = time.perf_counter()
    for _ in range(repeats):
        look = face_look(frame, points)
        look_terms(last, look)
        last = look
    look_ms = (time.perf_counter() - start) / repeats * 1e3
    print(f"the look at 640 x 480: {look_ms:.3f} ms a frame (face_look + look_change); mediapipe's tracking "
          f"of the same frame: {tracked_ms:.1f} ms ({look_ms / tracked_ms * 100:.1f} %)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", default=str(ROOT.parent / "shared" / "data" / "real_clips"))
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--drivers", nargs="*", help="real drivers by name, seen or unseen (default: all)")
    ap.add_argument("--natural", action="store_true", help="the largest terms over the drivers' own clips")
    ap.add_argument("--every-clip", action="store_true", help="the look over every clip of the manifest")
    ap.add_argument("--cost", action="store_true", help="time the look on a 640 x 480 frame")
    args = ap.parse_args()
    if args.cost:
        print_cost()
        return 0
    if args.every_clip:
        print_every_clip(args.clips, args.frames)
        return 0
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
