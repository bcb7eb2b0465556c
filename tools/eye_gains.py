"""Measure how much of the eye motion the analytic flow renders, as mediapipe reads it back.

The public-domain portraits (``assets/portraits``) are driven by the synthetic face: blinks
from 0 to 1 and looks from -0.4 to 0.4 iris widths. Mediapipe (still-image mode) re-detects
each avatar; the slope of the re-detected eye openness on the target's (and of the
horizontal gaze) says how much of the targets' eye motion the avatar shows (1 = all).

``--gain 1`` renders the targets' eye motion as it is (what the flow did before the gains);
the default keeps the flow's own :data:`~avatar_app.models.eye_flow.LID_GAIN` and
:data:`~avatar_app.models.eye_flow.IRIS_GAIN`, which were chosen as about 1 / the slopes
measured with ``--gain 1`` on the astronaut (docs/EYES.md). No clip of the corpus is used.

Usage: ``python tools/eye_gains.py [--gain 1] [--size 256]`` from the repository root.
"""

from __future__ import annotations

import argparse

import numpy as np

from avatar_app.capture.synthetic import FacePose, synthetic_landmarks
from avatar_app.face.eyes import eye_openness, horizontal_gaze
from avatar_app.face.retarget import Retargeter
from avatar_app.face.source import prepare_source, read_image
from avatar_app.face.tracker import FaceTracker
from avatar_app.models import eye_flow
from avatar_app.runtime.animator import GeometricAnimator

BLINKS = (0.0, 0.3, 0.6, 0.8, 1.0)
LOOKS = (-0.4, -0.2, 0.0, 0.2, 0.4)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gain", type=float, default=None, help="lid and iris gain to render with (default: the flow's)")
    p.add_argument("--size", type=int, choices=(256, 512), default=256)
    args = p.parse_args()
    if args.gain is not None:
        eye_flow.LID_GAIN = eye_flow.IRIS_GAIN = args.gain
    print(f"lid gain {eye_flow.LID_GAIN}, iris gain {eye_flow.IRIS_GAIN}, {args.size} px")
    tracker = FaceTracker(max_faces=1)
    try:
        for name in ("astronaut", "grace_hopper"):
            source = prepare_source(read_image(f"assets/portraits/{name}.jpg"), args.size, tracker=tracker)
            retarget = Retargeter(source.landmarks)
            retarget.calibrate(synthetic_landmarks(FacePose()))
            animator = GeometricAnimator(source)
            rows = {}
            for label, measure, poses in (
                ("openness", eye_openness, [FacePose(blink_left=b, blink_right=b) for b in BLINKS]),
                ("gaze", horizontal_gaze, [FacePose(gaze=(g, 0.0)) for g in LOOKS]),
            ):
                pairs = []
                for pose in poses:
                    target = retarget(synthetic_landmarks(pose))
                    faces = tracker.detect_faces(animator.animate(target))
                    if faces:
                        pairs.append((measure(target.points), measure(faces[0].points)))
                t, a = np.array(pairs).T
                rows[label] = f"slope {np.polyfit(t, a, 1)[0]:.2f} (target {t.round(3)} -> read {a.round(3)})"
            print(f"{name}: " + "; ".join(f"{k} {v}" for k, v in rows.items()))
    finally:
        tracker.close()


if __name__ == "__main__":
    main()
