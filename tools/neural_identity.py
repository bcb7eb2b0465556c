"""Where the full network loses the source's identity under a stress driver (issue 13).

    PYTHONPATH=. python tools/neural_identity.py --weights assets/weights/full-real.safetensors \
        [--portrait assets/portraits/astronaut.jpg] [--drivers approach_retreat profile_turns] \
        [--frames 60] [--worst 16] [--spread 6] [--variants ...] [--every 6] [--limits 15 15 20 1.15]

The driver plays through the offline loop (tracker, DriverGuard, the neural animator's motion
limits) with the geometric animator, which records each target (so the ``geometric`` variant below
is drawn under the neural limits too).  Then, on a few frames only (the network takes ~1 s a
frame on a CPU): the ``--worst`` frames of largest head motion against the source (|log
scale| + |rotation| in radians) and ``--spread`` others evenly over the rest, each frame is
rendered several ways and its dlib identity distance to the source measured as the stress
check does (mediapipe landmarks of the output, dlib embedding):

* ``geometric`` — the geometric animator;
* ``network`` — the full network (warp network + generator), as the neural animator;
* ``warped`` — the warp network's warped source alone (no generator);
* ``generated`` — the generator's own RGB, before its blend mask;
* ``analytic+gen`` — the generator on the analytic flow (the warp network's residual zeroed).

Printed: per frame the head motion (scale, yaw / pitch / roll in degrees), each variant's
distance and the blend mask's mean inside the target face; then each variant's mean and
maximum over the frames.  ``--every N`` instead takes every N-th frame (the stress check's
sampling: N = 6) and also prints the 95th percentile; ``--limits PITCH YAW ROLL ZOOM`` runs the
retargeting with other motion limits (to test whether tighter limits would help; figures before
2026-12-04 were taken with the geometric animator's, yaw 30).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402

from avatar_app.capture import stress  # noqa: E402
from avatar_app.face.align import similarity_fit  # noqa: E402
from avatar_app.face.mesh import topology  # noqa: E402
from avatar_app.face.retarget import NEURAL_MOTION_LIMITS, MotionLimits  # noqa: E402
from avatar_app.face.source import prepare_source, read_image  # noqa: E402
from avatar_app.face.tracker import FaceTracker  # noqa: E402
from avatar_app.imaging import rgb_chw_to_bgr  # noqa: E402
from avatar_app.inference.networks import FlowStage  # noqa: E402
from avatar_app.models.identity import IdentityEncoder, identity_distance  # noqa: E402
from avatar_app.runtime.animator import GeometricAnimator  # noqa: E402
from avatar_app.runtime.neural_animator import NeuralAnimator  # noqa: E402
from avatar_app.train.stress_run import offline_avatars  # noqa: E402

VARIANTS = ("geometric", "network", "warped", "generated", "analytic+gen")


class Recording(GeometricAnimator):
    """The geometric animator, keeping every target it was given (under the neural animator's limits:
    the network variants are what this tool studies)."""

    motion_limits = NEURAL_MOTION_LIMITS

    def __init__(self, source):
        super().__init__(source)
        self.targets = []

    def animate(self, target):
        self.targets.append(target)
        return super().animate(target)


def head_motion(source, target) -> tuple[float, np.ndarray]:
    """``(scale, [pitch, yaw, roll] degrees)`` of the target's rigid points against the source's."""
    rigid = topology().rigid
    s, rot, _ = similarity_fit(source.landmarks.points[rigid].astype(np.float64),
                               target.points[rigid].astype(np.float64))
    angle = np.arccos(np.clip((np.trace(rot) - 1) / 2, -1.0, 1.0))
    axis = np.array([rot[2, 1] - rot[1, 2], rot[0, 2] - rot[2, 0], rot[1, 0] - rot[0, 1]])
    vec = axis / max(2 * np.sin(angle), 1e-9) * angle
    return float(s), np.degrees(vec)


def pick(motion: np.ndarray, worst: int, spread: int) -> list[int]:
    order = np.argsort(-motion)
    top = list(order[:worst])
    rest = order[worst:]
    extra = [int(rest[i]) for i in np.linspace(0, len(rest) - 1, spread).round().astype(int)] if spread and len(rest) else []
    return sorted(set(int(i) for i in top + extra))


class Renders:
    """The network's intermediate images for a target (torch, 256 px, no enhancer)."""

    def __init__(self, animator: NeuralAnimator):
        self.animator = animator
        self.model = animator.model.eval()
        image, cond, ident, self.source_xy, _, self.lid_lift = (
            None if a is None else torch.from_numpy(np.ascontiguousarray(a)) for a in animator._inputs.source)
        with torch.no_grad():
            self.code = self.model.encode_source(image, cond, ident)
        self.flow = FlowStage()

    @torch.no_grad()
    def __call__(self, target, zero_residual: bool = False) -> dict[str, np.ndarray]:
        cond, txy, ids, amount = (torch.from_numpy(np.ascontiguousarray(a)) if isinstance(a, np.ndarray) else a
                                  for a in self.animator.network_inputs(target))
        grid, mouth, mouth_coord, big = self.flow(self.source_xy, txy, ids, self.lid_lift)
        warp = self.model.warp
        if zero_residual:
            forward = warp.forward
            warp.forward = lambda *a, **k: (torch.zeros_like(forward(*a, **k)[0]), forward(*a, **k)[1])
        try:
            out = self.model.forward_frame(self.code, cond, grid, mouth, mouth_coord, float(amount), big)
        finally:
            if zero_residual:
                del warp.forward
        mask = out["mask"]
        rgb = (out["image"] - (1 - mask) * out["warped"]) / mask.clamp_min(1e-4)
        to_bgr = lambda t: rgb_chw_to_bgr(t.clamp(0, 1)[0].numpy())  # noqa: E731
        return {"network": to_bgr(out["image"]), "warped": to_bgr(out["warped"]), "generated": to_bgr(rgb),
                "mask": mask[0, 0].numpy()}


def face_mean(mask: np.ndarray, target) -> float:
    hull = cv2.convexHull(target.xy[topology().face_oval].astype(np.float32) * (mask.shape[0] / target.image_size[0]))
    inside = np.zeros(mask.shape, np.uint8)
    cv2.fillConvexPoly(inside, hull.astype(np.int32), 1)
    return float(mask[inside > 0].mean())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", required=True)
    ap.add_argument("--preset", default="full")
    ap.add_argument("--portrait", default=str(ROOT / "assets" / "portraits" / "astronaut.jpg"))
    ap.add_argument("--clips", default=str(ROOT.parent / "shared" / "data" / "real_clips"))
    ap.add_argument("--drivers", nargs="*", default=["approach_retreat", "profile_turns"])
    ap.add_argument("--frames", type=int, default=60, help="real frames a driver")
    ap.add_argument("--worst", type=int, default=16)
    ap.add_argument("--spread", type=int, default=6)
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--every", type=int, help="every N-th frame instead of --worst / --spread")
    ap.add_argument("--limits", type=float, nargs=4, metavar=("PITCH", "YAW", "ROLL", "ZOOM"))
    args = ap.parse_args()
    if args.limits:
        Recording.motion_limits = MotionLimits(*args.limits)

    still = FaceTracker()
    encoder = IdentityEncoder().load()
    source = prepare_source(read_image(args.portrait), 256, tracker=still)
    emb = encoder.embed(source.crop, source.landmarks)
    drivers = [stress.profile_turns(), stress.synthetic_cut()]
    if Path(args.clips, "MANIFEST.tsv").is_file():
        drivers = stress.real_stress_drivers(args.clips, args.frames) + drivers
    renders = Renders(NeuralAnimator(source, weights=args.weights, preset=args.preset)) \
        if set(args.variants) - {"geometric"} else None

    def distance(image) -> float:
        faces = still.detect_faces(image)
        return identity_distance(encoder.embed(image, faces[0]), emb) if faces else float("nan")

    for d in (d for d in drivers if d.name in args.drivers):
        rec = Recording(source)
        geometric = offline_avatars(source, d, rec)
        motion = [head_motion(source, t) for t in rec.targets]
        size = np.array([abs(np.log(s)) + np.linalg.norm(np.radians(r)) for s, r in motion])
        frames = list(range(0, len(size), args.every)) if args.every else pick(size, args.worst, args.spread)
        print(f"\n{Path(args.portrait).stem} {d.name}: {len(frames)} of {len(rec.targets)} frames")
        print("| frame | scale | pitch | yaw | roll | " + " | ".join(args.variants) + " | mask in face |")
        print("|---" * (6 + len(args.variants)) + "|")
        table = {v: [] for v in args.variants}
        for i in frames:
            got = {"geometric": geometric[i]}
            mask = float("nan")
            if renders is not None:
                r = renders(rec.targets[i])
                got.update(r)
                mask = face_mean(r["mask"], rec.targets[i])
                if "analytic+gen" in args.variants:
                    got["analytic+gen"] = renders(rec.targets[i], zero_residual=True)["network"]
            row = [distance(got[v]) for v in args.variants]
            for v, x in zip(args.variants, row):
                table[v].append(x)
            s, r = motion[i]
            print(f"| {i} | {s:.2f} | {r[0]:.0f} | {r[1]:.0f} | {r[2]:.0f} | "
                  + " | ".join(f"{x:.3f}" for x in row) + f" | {mask:.2f} |", flush=True)
        print("| mean | | | | | " + " | ".join(f"{np.nanmean(table[v]):.3f}" for v in args.variants) + " | |")
        print("| max | | | | | " + " | ".join(f"{np.nanmax(table[v]):.3f}" for v in args.variants) + " | |")
        if args.every:
            print("| p95 | | | | | " + " | ".join(f"{np.nanpercentile(table[v], 95):.3f}" for v in args.variants)
                  + " | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
