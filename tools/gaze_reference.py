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

from avatar_app.face.eyes import CLOSED_EYES, eye_openness, horizontal_gaze  # noqa: E402
from avatar_app.face.tracker import FaceTracker  # noqa: E402
from avatar_app.train.eval_clips import load_clip  # noqa: E402
from avatar_app.train.eval_eyes import detect_all, eye_follow  # noqa: E402
from avatar_app.train.manifest import read_manifest  # noqa: E402


def resampled(image: np.ndarray) -> np.ndarray:
    """``image`` through a small similarity (what any rendering of the same face does to it)."""
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), 1.0, 1.03)
    m[:, 2] += (1.5, -1.5)
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="the prepared dataset the run evaluated")
    ap.add_argument("--metrics", required=True, help="an `avatar-app evaluate` run's metrics.json")
    args = ap.parse_args(argv)
    run = json.loads(Path(args.metrics).read_text())
    settings = run.get("settings", {})
    if settings.get("eye_contact"):
        ap.error("that run held the gaze (--eye-contact): its gaze r says nothing to compare with")
    size = int(settings.get("size", 256))
    entries = {str(e["key"]): e for e in read_manifest(Path(args.data))["clips"]}
    tracker = FaceTracker(max_faces=1)
    names = sorted({a for c in run["clips"] for a in c["animators"] if a != "static"})
    print(f"crop {size}\n| clip | driver gaze s.d. | reference r | " + " | ".join(f"{n} r" for n in names) + " |")
    print("|---|---:|---:|" + "---:|" * len(names))
    rows = []
    for c in run["clips"]:
        clip, reason = load_clip(Path(args.data), entries[c["key"]], size)
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
        print(f"\nmeans over the {len(rows)} clips with a reference figure: reference {np.mean([r[0] for r in rows]):.3f}; "
              + "; ".join(means))
    return 0


if __name__ == "__main__":
    sys.exit(main())
