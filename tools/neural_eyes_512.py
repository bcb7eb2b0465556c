"""Where the neural 512 avatar's eye motion comes from: its 512 output taken apart.

For each clip (the prepared 512 crops; the first valid frame is the source, ``--frames`` spread
over the clip drive it, as ``avatar-app evaluate --spread`` does), the neural animator runs at 512
with its chain recording every network's inputs, and these images are scored as ``evaluate``
scores an avatar (mediapipe re-detects the eyes; openness and gaze follow, r and amplitude, and
PSNR against the 512 ground truth over the pixels inside the video frame):

* ``256 output``: the generator's output (``mask · synthesis + (1 − mask) · warped``) upsampled;
* ``512 warp``: the source warped at 512 with the final grid upsampled (mouth painted);
* ``base, mask twice``: ``mask · 256 output + (1 − mask) · 512 warp``, the enhancer's base
  before 2026-12-01 (it counted the synthesis ``mask²``);
* ``base``: the enhancer's base now (:func:`~avatar_app.inference.networks.upscale_output`);
* ``512 output``: what the animator returns (the enhancer on ``base``).

It also prints the generator's mean mask over the target's eye openings.

    python tools/neural_eyes_512.py --data /work/data/eyes_tmp/real --weights assets/weights/full-real.safetensors
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avatar_app.face.eyes import CLOSED_EYES, eye_openness, horizontal_gaze  # noqa: E402
from avatar_app.face.mesh import topology  # noqa: E402
from avatar_app.face.tracker import FaceTracker  # noqa: E402
from avatar_app.imaging import rgb_chw_to_bgr  # noqa: E402
from avatar_app.inference.networks import upscale_output  # noqa: E402
from avatar_app.models.flow import fill_mouth_interior  # noqa: E402
from avatar_app.models.layers import resize_grid  # noqa: E402
from avatar_app.models.portrait import load_checkpoint  # noqa: E402
from avatar_app.runtime.neural_animator import NeuralAnimator  # noqa: E402
from avatar_app.train.eval_clips import drive_indices, load_clip, source_portrait  # noqa: E402
from avatar_app.train.eval_eyes import GAZE_MIN_SD, OPEN_MIN_SD, _follow  # noqa: E402
from avatar_app.train.manifest import read_manifest  # noqa: E402
from avatar_app.types import Landmarks  # noqa: E402

SIZE = 512
IMAGES = ("256 output", "512 warp", "base, mask twice", "base", "512 output")


def _images(e: dict, output: np.ndarray) -> dict[str, np.ndarray]:
    """The images of :data:`IMAGES` (BGR uint8) from the enhancer's recorded inputs ``e``."""
    t = {k: torch.from_numpy(np.asarray(v)) for k, v in e.items()}
    hw = (SIZE, SIZE)
    warp = F.grid_sample(t["source_full"], resize_grid(t["grid"], hw), mode="bilinear", padding_mode="border",
                         align_corners=False)
    up = F.interpolate(torch.cat([t["mouth"], t["mouth_coord"]], 1), size=hw, mode="bilinear", align_corners=False)
    warp = fill_mouth_interior(warp.flip(1), up[:, :1], up[:, 1:], t["mouth_amount"]).flip(1)
    image = F.interpolate(t["image"], size=hw, mode="bilinear", align_corners=False)
    mask = F.interpolate(t["mask"], size=hw, mode="bilinear", align_corners=False)
    base = upscale_output(t["image"], t["mask"], t["warped"], t["grid"], t["mouth"], t["mouth_coord"],
                          t["mouth_amount"], t["source_full"], SIZE)
    out = {"256 output": image, "512 warp": warp, "base, mask twice": mask * image + (1 - mask) * warp, "base": base}
    out = {k: rgb_chw_to_bgr(v.clamp(0, 1).numpy()[0]) for k, v in out.items()}
    out["512 output"] = output
    return out


def _eye_mask_mean(e: dict, target: np.ndarray) -> float:
    """The generator's mask (upsampled to 512) averaged over the target's two eye openings."""
    topo = topology()
    inside = np.zeros((SIZE, SIZE), np.uint8)
    for upper, lower in ((topo.right_eye_upper, topo.right_eye_lower), (topo.left_eye_upper, topo.left_eye_lower)):
        poly = np.concatenate([target[upper, :2], target[lower[::-1], :2]])
        cv2.fillPoly(inside, [np.round(poly).astype(np.int32)], 1)
    mask = F.interpolate(torch.from_numpy(np.asarray(e["mask"])), size=(SIZE, SIZE), mode="bilinear",
                         align_corners=False)[0, 0].numpy()
    return float(mask[inside > 0].mean()) if inside.any() else float("nan")


def _psnr(a: np.ndarray, b: np.ndarray, frame_mask) -> float:
    err = (a.astype(np.float64) - b.astype(np.float64)) ** 2
    mse = err[frame_mask.astype(bool)].mean() if frame_mask is not None else err.mean()
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-12)))


def _scores(driver: list, avatar: list) -> dict:
    pairs = [(d, a) for d, a in zip(driver, avatar) if d is not None and a is not None]
    od, oa = (np.array([eye_openness(p[i]) for p in pairs]) for i in (0, 1))
    gd, ga = (np.array([horizontal_gaze(p[i]) for p in pairs]) for i in (0, 1))
    look = od >= CLOSED_EYES
    (open_r, open_amp), (gaze_r, gaze_amp) = _follow(od, oa, OPEN_MIN_SD), _follow(gd[look], ga[look], GAZE_MIN_SD)
    return {"open_r": open_r, "open_amp": open_amp, "gaze_r": gaze_r, "gaze_amp": gaze_amp}


def evaluate_clip(clip, model, tracker, frames: int) -> dict:
    valid = np.flatnonzero(clip.valid)
    src = int(valid[0])
    drive = drive_indices(SimpleNamespace(spread=True), valid, frames)
    identity = clip.embedding if clip.embedding is not None else np.zeros(128, np.float32)
    record: dict = {}
    anim = NeuralAnimator(source_portrait(clip.image(src), clip.landmarks[src]), model=model, identity=identity,
                          record=record)
    anim.reset()
    detected = {k: [] for k in ("driver", *IMAGES)}
    psnrs = {k: [] for k in IMAGES}
    masks = []
    for i in drive:
        record.clear()
        output = anim.animate(Landmarks(clip.landmarks[i], (SIZE, SIZE)))
        e = record["enhancer"][-1]
        truth = clip.image(i)
        for name, img in _images(e, output).items():
            faces = tracker.detect_faces(img)
            detected[name].append(np.asarray(faces[0].points) if faces else None)
            psnrs[name].append(_psnr(img, truth, clip.mask))
        faces = tracker.detect_faces(truth)
        detected["driver"].append(np.asarray(faces[0].points) if faces else None)
        masks.append(_eye_mask_mean(e, clip.landmarks[i]))
    out = {name: {**_scores(detected["driver"], detected[name]), "psnr": float(np.mean(psnrs[name]))}
           for name in IMAGES}
    out["eye_mask"] = float(np.nanmean(masks))
    return out


def _mean(rows, name, key):
    vals = [r[name][key] for r in rows if r[name][key] is not None]
    return (float(np.mean(vals)) if vals else float("nan")), len(vals)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, type=Path, help="a prepared dataset with 512 crops")
    p.add_argument("--weights", required=True)
    p.add_argument("--clips", type=int, default=13, help="the first N clips in key order (default 13)")
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--json", type=Path, help="write the per-clip figures here")
    args = p.parse_args()
    torch.set_grad_enabled(False)
    entries = {str(e["key"]): e for e in read_manifest(args.data)["clips"]}
    model = load_checkpoint(args.weights, "cpu")
    tracker = FaceTracker(max_faces=1)
    rows = {}
    try:
        for key in sorted(entries)[:args.clips]:
            clip, why = load_clip(args.data, entries[key], SIZE)
            if clip is None:
                print(f"{key}: skipped ({why})")
                continue
            rows[key] = evaluate_clip(clip, model, tracker, args.frames)
            r = rows[key]
            print(f"{key}: eye mask {r['eye_mask']:.2f}; " + "; ".join(
                f"{n} open {r[n]['open_amp'] or float('nan'):.2f}x psnr {r[n]['psnr']:.2f}" for n in IMAGES), flush=True)
    finally:
        tracker.close()
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print(f"\nmean over {len(rows)} clips; eye mask {np.mean([r['eye_mask'] for r in rows.values()]):.2f}")
    print("| image | PSNR | openness r | openness amplitude | gaze r | gaze amplitude |\n|---|---:|---:|---:|---:|---:|")
    for name in IMAGES:
        (o_r, n_o), (o_a, _), (g_r, n_g), (g_a, _) = (_mean(rows.values(), name, k)
                                                      for k in ("open_r", "open_amp", "gaze_r", "gaze_amp"))
        ps = np.mean([r[name]["psnr"] for r in rows.values()])
        print(f"| {name} | {ps:.2f} | {o_r:.3f} ({n_o}) | {o_a:.2f} | {g_r:.3f} ({n_g}) | {g_a:.2f} |")


if __name__ == "__main__":
    main()
