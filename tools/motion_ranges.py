"""How far each head motion can go before the geometric animator's output tears.

    PYTHONPATH=. python tools/motion_ranges.py [--size 256] [--portraits a.jpg ...]

Drives each portrait with the synthetic face posed along one axis at a time (yaw,
pitch, roll, scale, shift), re-detects the output with mediapipe and prints, per
value, whether a face was found, how far its landmarks are from the target (in %
of the inter-ocular distance) and how much of the source face (and of the face with the
ears and nearest hair, 0.15 face heights around it) the flow shows again outside the
moved head (:func:`avatar_app.train.ghost.ghost_area`, % of that area).  docs/MOTION.md quotes the table; the soft limits in
``avatar_app/face/retarget.py`` sit inside the ranges where every portrait holds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from avatar_app.capture.synthetic import FacePose, synthetic_landmarks  # noqa: E402
from avatar_app.face.retarget import Retargeter, RetargetOptions  # noqa: E402
from avatar_app.face.source import prepare_source, read_image  # noqa: E402
from avatar_app.face.mesh import topology  # noqa: E402
from avatar_app.face.tracker import FaceTracker  # noqa: E402
from avatar_app.models.flow import AnalyticFlow, rasterize_triangles  # noqa: E402
from avatar_app.runtime.animator import GeometricAnimator  # noqa: E402
from avatar_app.train.ghost import ghost_area  # noqa: E402
from avatar_app.train.metrics import landmark_follow_error  # noqa: E402

AXES = {
    # both ways: a portrait turned from the camera tears sooner turning further (docs/MOTION_TRANSITIONS.md §5)
    "yaw (deg)": ([-60, -50, -40, -30, -15, 0, 15, 30, 40, 50, 60], lambda v: FacePose(yaw=v)),
    "pitch (deg)": ([0, 10, 20, 30, 40], lambda v: FacePose(pitch=v)),
    "roll (deg)": ([0, 15, 30, 45, 60], lambda v: FacePose(roll=v)),
    "scale (x)": ([0.5, 0.7, 1.0, 1.3, 1.6, 2.0], lambda v: FacePose(scale=v)),
    "shift (face widths)": ([0.0, 0.2, 0.4, 0.6, 0.8], lambda v: FacePose(shift=(v, 0.0))),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--portraits", nargs="*", default=[str(p) for p in sorted((ROOT / "assets" / "portraits").glob("*.jpg"))])
    ap.add_argument("--limited", action="store_true", help="retarget with today's soft limits on")
    args = ap.parse_args()
    still = FaceTracker()
    print("| portrait | axis | value | faces found | follow error (% IOD) | ghost: face / head (%) |")
    print("|---|---|---|---|---|---|")
    for portrait in args.portraits:
        source = prepare_source(read_image(portrait), args.size, tracker=still)
        animator = GeometricAnimator(source)
        flow = AnalyticFlow(args.size, resolution=args.size)
        src_xy = torch.from_numpy(source.landmarks.xy[None].copy())
        for axis, (values, pose) in AXES.items():
            for v in values:
                rt = Retargeter(source.landmarks, RetargetOptions(motion_limits=args.limited))
                rt.calibrate(synthetic_landmarks(FacePose()))
                target = rt(synthetic_landmarks(pose(v)))
                faces = still.detect_faces(animator.animate(target))
                err = landmark_follow_error(faces[0].xy, target.xy) if faces else float("nan")
                grid = flow(src_xy, torch.from_numpy(target.xy[None].copy()),
                            torch.from_numpy(rasterize_triangles(target.points, topology().triangles, args.size))[None])[0]
                ghost = [100 * ghost_area(grid, source.landmarks.xy, target.xy, grow) for grow in (0, 0.15)]
                print(f"| {Path(portrait).stem} | {axis} | {v} | {len(faces)} | {err:.1f} | "
                      f"{ghost[0]:.1f} / {ghost[1]:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
