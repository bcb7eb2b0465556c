"""How much of a pure gaze change the geometric avatar shows on each source, as mediapipe reads it
back (issue 16).

    PYTHONPATH=. python tools/iris_readback.py --data /work/data/real --metrics RUN/metrics.json [--gaze-clips]

For each clip of an ``avatar-app evaluate`` run (its ``metrics.json``; ``--gaze-clips``: only those
where the run has a gaze figure), the source frame the run animated is driven by its own landmarks
with only the irises moved along each eye's corner line by -0.08 .. +0.08 eye widths; the geometric
avatar renders each (with :data:`~avatar_app.models.eye_flow.IRIS_GAIN` as shipped) and mediapipe
re-detects it.  Printed per source: its eye openness and eye width, and the slope of the read-back
gaze on the target's (1 = all of the change).  ``tools/eye_gains.py`` does the same on the bundled
portraits with the synthetic face.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from avatar_app.face.eyes import eye_openness, horizontal_gaze  # noqa: E402
from avatar_app.face.mesh import topology  # noqa: E402
from avatar_app.face.tracker import FaceTracker  # noqa: E402
from avatar_app.runtime.animator import GeometricAnimator  # noqa: E402
from avatar_app.train.eval_clips import run_clips, source_portrait  # noqa: E402
from avatar_app.train.eval_eyes import detect_all  # noqa: E402
from avatar_app.types import Landmarks  # noqa: E402

SHIFTS = (-0.08, -0.04, 0.0, 0.04, 0.08)  # eye widths along the corner line


def _corner_lines(points: np.ndarray):
    """Per eye ``(iris indices, image-left corner, image-right corner)``: the corners the gaze measure uses
    (:func:`~avatar_app.face.eyes.eye_gaze`: the ends of the upper lid path, ordered along x)."""
    topo = topology()
    for upper, iris in ((topo.right_eye_upper, topo.right_iris), (topo.left_eye_upper, topo.left_iris)):
        a, b = sorted((points[upper[0], :2], points[upper[-1], :2]), key=lambda p: p[0])
        yield np.asarray(iris), a, b


def looking(points: np.ndarray, shift: float) -> np.ndarray:
    """``points`` with both irises moved by ``shift`` eye widths along their eye's corner line."""
    out = points.copy()
    for iris, a, b in _corner_lines(points):
        out[iris, :2] += (b - a) * shift
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="the prepared dataset the run evaluated")
    ap.add_argument("--metrics", required=True, help="an `avatar-app evaluate` run's metrics.json")
    ap.add_argument("--gaze-clips", action="store_true", help="only the clips with a gaze figure in the run")
    args = ap.parse_args(argv)
    run = json.loads(Path(args.metrics).read_text())
    tracker = FaceTracker(max_faces=1)
    print("| source (clip) | openness | mean eye width (px) | read-back slope |\n|---|---:|---:|---:|")
    slopes = []
    for c, clip, reason in run_clips(Path(args.data), run, gaze_only=args.gaze_clips):
        if clip is None:
            print(f"| {c['key']} | skipped: {reason} | | |")
            continue
        s = int(c["source_frame"])
        points = clip.landmarks[s].copy()
        avatar = GeometricAnimator(source_portrait(clip.image(s), points))
        targets = [looking(points, d) for d in SHIFTS]
        read = detect_all(tracker, [avatar.animate(Landmarks(t, (clip.size, clip.size))) for t in targets])
        pairs = [(horizontal_gaze(t), horizontal_gaze(r)) for t, r in zip(targets, read) if r is not None]
        seen = detect_all(tracker, [clip.image(s)])[0]
        openness = f"{eye_openness(seen):.3f}" if seen is not None else "–"
        width = float(np.mean([np.linalg.norm(b - a) for _, a, b in _corner_lines(points)]))
        slope = float(np.polyfit(*zip(*pairs), 1)[0]) if len(pairs) >= 3 else None
        print(f"| {c['key']} | {openness} | {width:.1f} | {'–' if slope is None else f'{slope:.2f}'} |", flush=True)
        if slope is not None:
            slopes.append(slope)
    if slopes:
        q = np.percentile(slopes, [25, 50, 75])
        print(f"\n{len(slopes)} sources: read-back slope median {q[1]:.2f}, quartiles {q[0]:.2f}-{q[2]:.2f}, "
              f"{sum(v < 0.5 for v in slopes)} under 0.5")
    return 0


if __name__ == "__main__":
    sys.exit(main())
