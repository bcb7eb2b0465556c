"""Where a personalization's error on the *later* segment is: per frame, and by band of the crop.

    PYTHONPATH=. python tools/later_error.py --data PREPARED --clip KEY \
        [--start assets/weights/lite-meta-2.safetensors@assets/weights/lite-real.safetensors] [--steps 88] \
        [--image strip.png]

Personalizes from ``--start`` for ``--steps`` steps of the CPU plan on the clip's recording (as
``tools/personalize_curve.py`` splits it: the first ``--record`` seconds, at most half the clip), then scores the
later segment's ``--later-frames`` frames before (the start's base, as the app shows it unpersonalized) and after:
the PSNR gain of each frame in order; the L1 of the crop's top, middle and bottom thirds; and inside and outside the
face (the hull of the driving frame's landmarks: forehead to chin; outside it hair, ears, neck and background), with
each part's share of the squared error that is left (what PSNR counts).  ``--image`` writes five later frames as
rows of driver | before | after | |after - driver| x 4 (a picture of a corpus clip: keep it out of the repository).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from personalize_curve import segments, start_models  # noqa: E402

from avatar_app.models.portrait import NET_SIZE, PortraitModel  # noqa: E402
from avatar_app.train.config import TrainConfig  # noqa: E402
from avatar_app.train.eval_clips import load_clip  # noqa: E402
from avatar_app.train.manifest import read_manifest  # noqa: E402
from avatar_app.train.personalize import ClipFrames, frame_items, frame_psnr, personalize, scored_frames  # noqa: E402
from avatar_app.train.trainer import Trainer  # noqa: E402

BANDS = {"top third": slice(0, NET_SIZE // 3), "middle": slice(NET_SIZE // 3, 2 * NET_SIZE // 3),
         "bottom third": slice(2 * NET_SIZE // 3, NET_SIZE)}


def render(trainer: Trainer, model: PortraitModel, items: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """``model`` animating each item's source into its driving frame as personalization scores it
    (:func:`~avatar_app.train.personalize.scored_frames`): the outputs and the driving frames, ``(N, 3, S, S)``."""
    outs, truths = zip(*scored_frames(trainer, model, items))
    return torch.cat(outs), torch.cat(truths)


def face_masks(items: list[dict]) -> torch.Tensor:
    """``(N, S, S)`` bool: inside the convex hull of each item's driving landmarks."""
    import cv2

    masks = np.zeros((len(items), NET_SIZE, NET_SIZE), np.uint8)
    for k, it in enumerate(items):
        pts = np.asarray(it["driving_points"])[:, :2].round().astype(np.int32)
        cv2.fillConvexPoly(masks[k], cv2.convexHull(pts), 1)
    return torch.from_numpy(masks.astype(bool))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="a prepared dataset")
    p.add_argument("--clip", required=True, help="the clip's key in the manifest")
    p.add_argument("--start", default="assets/weights/lite-meta-2.safetensors@assets/weights/lite-real.safetensors",
                   help="META@BASE: adapt META, score 'before' on BASE (as tools/personalize_curve.py's --start)")
    p.add_argument("--preset", default="lite", help="the preset of untrained weights when --start is empty")
    p.add_argument("--plan", default="warp+decoder", help="the personalization plan (default: the CPU's)")
    p.add_argument("--steps", type=int, default=88, help="fixed steps, so the result does not depend on the load")
    p.add_argument("--record", type=float, default=10.0, help="seconds recorded (at most half the clip)")
    p.add_argument("--later-frames", type=int, default=48, help="later frames scored, spread over the segment")
    p.add_argument("--image", type=Path, help="write a strip of five later frames (keep it out of the repository)")
    args = p.parse_args()

    entries = {c["key"]: c for c in read_manifest(args.data)["clips"]}
    if args.clip not in entries:
        raise SystemExit(f"{args.clip}: not in {args.data}'s manifest")
    clip, why = load_clip(args.data, entries[args.clip])
    if clip is None:
        raise SystemExit(f"{args.clip}: {why}")
    record, later = segments(clip, float(entries[args.clip].get("fps") or 25.0), args.record, args.later_frames)
    frames = record + later
    whole = ClipFrames([clip.image(f) for f in frames], [clip.landmarks[f] for f in frames], reference=0)
    recording = ClipFrames(whole.crops[:len(record)], whole.points[:len(record)], reference=0)
    identity = clip.embedding if clip.embedding is not None else np.zeros(128, np.float32)
    items = frame_items(whole, [(0, len(record) + k) for k in range(len(later))], identity)
    base, meta = start_models(args.start, args.preset, "cpu")
    res = personalize(recording, base, identity, start=meta, budget_s=1e9, max_steps=args.steps, device="cpu",
                      plan=args.plan)
    cfg = TrainConfig(stage="meta", batch_size=2, num_workers=0, w_gan=0.0)
    scoring = Trainer(cfg, None, train_set=items, model=base)  # personalization's frame; each model is passed to it
    (before, truth), (after, _) = render(scoring, base, items), render(scoring, res.model, items)
    p0, p1 = frame_psnr(before, truth).numpy(), frame_psnr(after, truth).numpy()
    print(f"{args.clip}: {len(record)} frames recorded, {len(later)} later; {res.steps} steps of {res.plan}")
    print(f"later PSNR {p0.mean():.2f} -> {p1.mean():.2f} dB ({p1.mean() - p0.mean():+.2f}); frames behind: "
          f"{int((p1 < p0).sum())}")
    print("gain per later frame, in order:", " ".join(f"{g:+.1f}" for g in p1 - p0))
    e0, e1 = (before - truth).abs().mean((0, 1)), (after - truth).abs().mean((0, 1))
    for name, rows in BANDS.items():
        print(f"{name:12s} L1 {float(e0[rows].mean()):.4f} -> {float(e1[rows].mean()):.4f}")
    face = face_masks(items)
    sq = ((after - truth) ** 2).mean(1)
    for name, m in (("face", face), ("outside", ~face)):
        l1 = lambda x: float((x - truth).abs().mean(1)[m].mean())  # noqa: E731
        print(f"{name:12s} {float(m.float().mean()):.0%} of the pixels: L1 {l1(before):.4f} -> {l1(after):.4f}, "
              f"{float(sq[m].sum() / sq.sum()):.0%} of the squared error left")
    if args.image:
        import cv2

        def bgr(t: torch.Tensor) -> np.ndarray:
            return (t.permute(1, 2, 0).numpy()[..., ::-1] * 255 + 0.5).astype(np.uint8)

        rows = []
        for k in np.linspace(0, len(items) - 1, 5).round().astype(int):
            err = ((after[k] - truth[k]).abs().mean(0).numpy() * 4 * 255).clip(0, 255).astype(np.uint8)
            err = cv2.cvtColor(err, cv2.COLOR_GRAY2BGR)
            rows.append(np.hstack([bgr(truth[k]), bgr(before[k]), bgr(after[k]), err]))
        cv2.imwrite(str(args.image), np.vstack(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
