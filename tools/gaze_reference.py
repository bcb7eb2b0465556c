"""What the gaze measure gives a face that follows its driver exactly (issue 16): a reference for
``avatar-app evaluate``'s gaze r, per clip.

    PYTHONPATH=. python tools/gaze_reference.py --data /work/data/real --metrics OUT/metrics.json

``evaluate`` scores gaze by re-detecting the irises with mediapipe on the driver's frames and on
the avatar's, and correlating the two series (``train/eval_eyes.py``).  Mediapipe's own noise
bounds that correlation on a clip whose driver's eyes barely move, whatever the avatar does.  This
tool takes the clips and driving frames of an ``evaluate`` run (its ``metrics.json``, at the run's
crop size) and scores, in the avatar's place, each driving frame itself resampled as a rendering
resamples it (a 1.03x zoom, 1 degree of roll and a 1.5 px shift, bilinear).  One such perturbation:
a reference for how much of the figure the measure leaves to the avatar, not a bound.  Printed per
clip: the driver's gaze s.d. (frames with open eyes), that reference r, and each animator's r from
the run; then the means over the clips where the reference has a figure.

``--parts`` asks instead where the geometric avatar loses the figure: each clip with a gaze figure is rendered
three ways and re-detected as ``evaluate`` does: *full* (the frame's landmarks, what ``evaluate`` scores), *held*
(the irises held where the source's sit in their eyes, :func:`~avatar_app.face.eyes.hold_gaze`: head, lids and
mouth move, the iris does not, so any gaze read back is the read of a moving eye, not drawn) and *iris only* (the
source's own landmarks with the irises placed as the frame's).  Printed per clip: the full render's r against the
driver's frames and against the targets (the prepared landmarks), the iris-only render's r against the targets,
the held render's r against the driver's frames and its gaze s.d. beside the driver's; then means, medians, the
clips whose held gaze varies by at least half as much as the driver's and those whose iris-only render reads back
under r 0.9.  Only frames with a face in all four re-detections (and open driver eyes) count, so the first column
can differ a little from the run's own gaze r.

``--hold`` reads an eye-contact run (``evaluate --eye-contact``) against the detector's own floor: per clip, the
source's openness as re-detected (under :data:`~avatar_app.face.eyes.CLOSED_EYES` its "neutral gaze" is where
mediapipe places an iris behind a lid), the run's off-neutral figures (mean / 95th percentile of |avatar gaze -
source gaze|), and the same figures for the *rigid floor*: the source image itself moved by the in-plane similarity
that fits its rigid points onto each frame's, eyes untouched, re-detected.  What the floor reads is what the measure
gives an eye held perfectly still in a face that only slides, turns in the image plane and scales; the avatar's
excess over it is the share of its read that comes with the drawn head's 3-D turn and the lids.
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

from avatar_app.face.align import similarity_fit  # noqa: E402
from avatar_app.face.eyes import CLOSED_EYES, eye_openness, hold_gaze, horizontal_gaze  # noqa: E402
from avatar_app.face.mesh import topology  # noqa: E402
from avatar_app.face.tracker import FaceTracker  # noqa: E402
from avatar_app.runtime.animator import GeometricAnimator  # noqa: E402
from avatar_app.train.eval_clips import run_clips, source_portrait  # noqa: E402
from avatar_app.train.eval_eyes import _follow, detect_all, eye_follow  # noqa: E402
from avatar_app.types import Landmarks  # noqa: E402


def resampled(image: np.ndarray) -> np.ndarray:
    """``image`` through a small similarity (what any rendering of the same face does to it)."""
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), 1.0, 1.03)
    m[:, 2] += (1.5, -1.5)
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def rigidly_moved(image: np.ndarray, source_points: np.ndarray, target_points: np.ndarray) -> np.ndarray:
    """``image`` moved by the similarity that carries the face's rigid points of ``source_points`` onto
    ``target_points``' (``(478, 2+)`` px): the face slides, rolls and scales as the target's, its eyes and expression
    unchanged."""
    rigid = topology().rigid
    scale, rot, t = similarity_fit(np.asarray(source_points)[rigid, :2], np.asarray(target_points)[rigid, :2])
    m = np.hstack([scale * rot, t[:, None]])
    h, w = image.shape[:2]
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.3f}"


COLUMNS = ("r(driver, full)", "r(driver, targets)", "r(targets, full)", "r(targets, iris only)",
           "r(driver, held)", "driver s.d.", "held s.d.")


def _r(a: np.ndarray, b: np.ndarray) -> float:
    """``evaluate``'s r of ``b`` on ``a`` (0 when ``b`` does not move), whatever ``a``'s spread; NaN when ``a`` does
    not move at all."""
    r, _slope = _follow(a, b, 1e-9)
    return float("nan") if r is None else r


def clip_parts(tracker, clip, source_frame: int, frames: list[int]) -> list[float] | None:
    """The :data:`COLUMNS` of one clip, ``None`` when fewer than 3 frames have every face and open driver eyes."""
    size = clip.size
    src = clip.landmarks[source_frame]
    avatar = GeometricAnimator(source_portrait(clip.image(source_frame), src))
    targets = [clip.landmarks[i] for i in frames]
    renders = {
        "full": targets,
        "held": [hold_gaze(t, src) for t in targets],
        "iris": [hold_gaze(src, t) for t in targets],
    }
    read = {k: detect_all(tracker, [avatar.animate(Landmarks(t, (size, size))) for t in v]) for k, v in renders.items()}
    read["driver"] = detect_all(tracker, [clip.image(i) for i in frames])
    keep = [i for i in range(len(frames)) if all(read[k][i] is not None for k in read)
            and eye_openness(read["driver"][i]) >= CLOSED_EYES]
    if len(keep) < 3:
        return None
    g = {k: np.array([horizontal_gaze(read[k][i]) for i in keep]) for k in read}
    t = np.array([horizontal_gaze(targets[i]) for i in keep])
    return [_r(g["driver"], g["full"]), _r(g["driver"], t), _r(t, g["full"]), _r(t, g["iris"]),
            _r(g["driver"], g["held"]), float(g["driver"].std()), float(g["held"].std())]


def print_parts(data: Path, run: dict, tracker) -> int:
    """``--parts``: the :data:`COLUMNS` of each clip with a gaze figure, then means and medians."""
    print("| clip | " + " | ".join(COLUMNS) + " |\n|---|" + "---:|" * len(COLUMNS))
    rows = []
    for c, clip, reason in run_clips(data, run, gaze_only=True):
        parts = None if clip is None else clip_parts(tracker, clip, int(c["source_frame"]), list(c["frames"]))
        if parts is None:
            print(f"| {c['key']} | skipped: {reason or 'fewer than 3 scored frames'} |")
            continue
        rows.append(parts)
        print(f"| {c['key']} | " + " | ".join(f"{v:.3f}" for v in parts) + " |", flush=True)
    if not rows:
        return 1
    a = np.array(rows)
    print("| **mean** | " + " | ".join(f"{v:.3f}" for v in np.nanmean(a, 0)) + " |")
    print("| **median** | " + " | ".join(f"{v:.3f}" for v in np.nanmedian(a, 0)) + " |")
    moving, weak = a[:, 6] >= 0.5 * a[:, 5], a[:, 3] < 0.9
    print("\nr(driver, full), mean over the clips whose held gaze varies by at least half the driver's (moving) or "
          "whose iris-only render reads back under r 0.9 (weak):")
    for label, pick in (("moving, iris reads back", moving & ~weak), ("moving, weak", moving & weak),
                        ("still, weak", ~moving & weak), ("still, iris reads back", ~moving & ~weak)):
        print(f"  {label}: {np.nanmean(a[pick, 0]) if pick.any() else float('nan'):.3f} ({pick.sum()} clips)")
    return 0


def hold_floor(tracker, clip, source_frame: int, frames: list[int]) -> dict | None:
    """``--hold``'s figures of one clip: the source's re-detected gaze and openness and the rigid floor's mean and
    95th percentile |gaze - source gaze| over the frames with open driver eyes (as ``evaluate`` scores them);
    ``None`` without a face in the source or without a frame to score."""
    src = clip.image(source_frame)
    found = detect_all(tracker, [src])[0]
    if found is None:
        return None
    gaze0 = horizontal_gaze(found)
    drivers = detect_all(tracker, [clip.image(i) for i in frames])
    off = []
    for i, d in zip(frames, drivers):
        if d is None or eye_openness(d) < CLOSED_EYES:
            continue
        moved = detect_all(tracker, [rigidly_moved(src, clip.landmarks[source_frame], clip.landmarks[i])])[0]
        if moved is not None:
            off.append(abs(horizontal_gaze(moved) - gaze0))
    if not off:
        return None
    return {"gaze": gaze0, "open": eye_openness(found), "floor": float(np.mean(off)),
            "floor_p95": float(np.percentile(off, 95))}


def print_hold(data: Path, run: dict, tracker, limit: float = 0.03) -> int:
    """``--hold``: each clip's off-neutral figures beside the rigid floor's, then the means over the clips."""
    print("| clip | source openness | off neutral: mean / p95 | rigid floor: mean / p95 |\n|---|---:|---:|---:|")
    rows = []
    for c, clip, reason in run_clips(data, run):
        geo = c["animators"].get("geometric", {})
        hold, hold95 = geo.get("gaze_hold"), geo.get("gaze_hold_p95")
        got = None if clip is None or hold is None else hold_floor(tracker, clip, int(c["source_frame"]),
                                                                    list(c["frames"]))
        if got is None:
            print(f"| {c['key']} | skipped: {reason or 'no face in the source, or no frame scored'} |")
            continue
        closed = " (closed: no gaze to hold)" if got["open"] < CLOSED_EYES else ""
        rows.append((hold, hold95, got["floor"], got["floor_p95"], got["open"] >= CLOSED_EYES))
        print(f"| {c['key']} | {got['open']:.3f}{closed} | {hold:.3f} / {hold95:.3f} | "
              f"{got['floor']:.3f} / {got['floor_p95']:.3f} |", flush=True)
    if not rows:
        return 1
    a = np.array(rows, dtype=float)
    for label, pick in (("all clips", np.ones(len(a), bool)), ("sources with open eyes", a[:, 4] > 0)):
        m, within = a[pick].mean(0), (a[pick, :2] <= limit).sum(0)
        print(f"{label} ({int(pick.sum())}): off neutral {m[0]:.3f} / {m[1]:.3f}, rigid floor {m[2]:.3f} / {m[3]:.3f}; "
              f"clips within {limit} by mean {within[0]}, by p95 {within[1]}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="the prepared dataset the run evaluated")
    ap.add_argument("--metrics", required=True, help="an `avatar-app evaluate` run's metrics.json")
    ap.add_argument("--parts", action="store_true", help="where the geometric avatar loses gaze r (module docstring)")
    ap.add_argument("--hold", action="store_true",
                    help="an --eye-contact run's off-neutral figures against the detector's rigid floor")
    args = ap.parse_args(argv)
    run = json.loads(Path(args.metrics).read_text())
    settings = run.get("settings", {})
    if args.hold and not settings.get("eye_contact"):
        ap.error("--hold reads a run made with --eye-contact")
    if settings.get("eye_contact") and not args.hold:
        ap.error("that run held the gaze (--eye-contact): its gaze r says nothing to compare with")
    size = int(settings.get("size", 256))
    tracker = FaceTracker(max_faces=1)
    if args.hold:
        return print_hold(Path(args.data), run, tracker)
    if args.parts:
        return print_parts(Path(args.data), run, tracker)
    names = sorted({a for c in run["clips"] for a in c["animators"] if a != "static"})
    print(f"crop {size}\n| clip | driver gaze s.d. | reference r | " + " | ".join(f"{n} r" for n in names) + " |")
    print("|---|---:|---:|" + "---:|" * len(names))
    rows = []
    for c, clip, reason in run_clips(Path(args.data), run):
        if clip is None:
            print(f"| {c['key']} | skipped: {reason} |")
            continue
        frames = [clip.image(i) for i in c["frames"]]
        driver = detect_all(tracker, frames)
        reference = eye_follow(driver, detect_all(tracker, [resampled(f) for f in frames]))["gaze_r"]
        looked = [horizontal_gaze(d) for d in driver if d is not None and eye_openness(d) >= CLOSED_EYES]
        sd = f"{np.std(looked):.3f}" if looked else "–"
        rs = [c["animators"].get(n, {}).get("gaze_r") for n in names]
        print(f"| {c['key']} | {sd} | {_fmt(reference)} | " + " | ".join(_fmt(r) for r in rs) + " |", flush=True)
        if reference is not None:
            rows.append((reference, rs))
    if rows:
        means = []
        for k, n in enumerate(names):
            got = [r[1][k] for r in rows if r[1][k] is not None]
            means.append(f"{n} {np.mean(got):.3f} ({len(got)} clips)" if got else f"{n} –")
        reference = np.mean([r[0] for r in rows])
        print(f"\nmeans over the {len(rows)} clips with a reference figure: reference {reference:.3f}; "
              + "; ".join(means))
    return 0


if __name__ == "__main__":
    sys.exit(main())
