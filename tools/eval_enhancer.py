"""The temporal enhancer at 512 on validation people, through the app's own 512 path.

For each validation clip cropped from at least ``--min-side`` source pixels, the first
frame's 512 crop is the source and the clip's next ``--frames`` frames drive it (their
prepared landmarks); the neural animator at 512 runs the checkpoint three ways:

* ``enhancer``: as shipped (the temporal enhancer refines the 512 base);
* ``no enhancer``: the same checkpoint with its enhancer reset to the untrained one, which
  returns its base exactly (the source warped at 512 with the generator blended in);
* ``bicubic``: the 256 neural output upscaled by bicubic interpolation.

Scored against the 512 ground truth over the pixels inside the video frame: PSNR, and
temporal jitter excess (mean |second difference| over the ground truth's own).

    python tools/eval_enhancer.py --data PREPARED --weights assets/weights/full-real.safetensors
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avatar_app.models.enhancer import TemporalEnhancer  # noqa: E402
from avatar_app.models.portrait import load_checkpoint  # noqa: E402
from avatar_app.runtime.neural_animator import NeuralAnimator  # noqa: E402
from avatar_app.train.clipio import (clip_frame_mask, clip_meta_of, frame_name, points_for_size,  # noqa: E402
                                     read_image_file)
from avatar_app.train.manifest import read_manifest  # noqa: E402
from avatar_app.train.split import split_clips  # noqa: E402
from avatar_app.train.metrics import psnr, temporal_jitter  # noqa: E402
from avatar_app.types import Landmarks, SourcePortrait  # noqa: E402


def portrait(image: np.ndarray, points: np.ndarray, size: int) -> SourcePortrait:
    return SourcePortrait(crop=image, landmarks=Landmarks(points, (size, size)), size=size, image=image,
                          crop_to_image=np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--weights", required=True)
    p.add_argument("--val-fraction", type=float, default=0.15)
    p.add_argument("--frames", type=int, default=48)
    p.add_argument("--min-side", type=float, default=384.0)
    args = p.parse_args()
    entries = read_manifest(args.data)["clips"]
    _, val = split_clips(entries, args.val_fraction)
    shipped = load_checkpoint(args.weights)
    plain = load_checkpoint(args.weights)
    plain.enhancer = TemporalEnhancer(**plain.config["enhancer"])  # untrained: returns its base exactly
    rows = {}
    for key in val:
        folder = args.data / "clips" / key
        meta = clip_meta_of(folder)
        if meta["crop"]["side"] < args.min_side:
            continue
        lm = np.load(folder / "landmarks.npy")
        valid = np.flatnonzero(np.load(folder / "valid.npy"))
        src, drive = int(valid[0]), [int(i) for i in valid[1:args.frames + 1]]
        mask = clip_frame_mask(meta, 512)
        identity = np.load(folder / "identity.npy")

        def img(i, s):
            return read_image_file(folder / str(s) / frame_name(i))

        outs = {}
        for name, model, size in (("enhancer", shipped, 512), ("no enhancer", plain, 512), ("256", shipped, 256)):
            anim = NeuralAnimator(portrait(img(src, size), points_for_size(lm[src], size), size), model=model,
                                  identity=identity, backend="torch-cpu")
            outs[name] = [anim.animate(Landmarks(points_for_size(lm[i], size), (size, size))) for i in drive]
        outs["bicubic"] = [cv2.resize(o, (512, 512), interpolation=cv2.INTER_CUBIC) for o in outs.pop("256")]
        gt = [img(i, 512) for i in drive]
        rows[key] = {name: {"psnr": float(np.mean([psnr(o, g, mask) for o, g in zip(o_, gt)])),
                            "jitter": float(temporal_jitter(o_, gt))} for name, o_ in outs.items()}
        print(key, json.dumps(rows[key]), flush=True)
    names = ("enhancer", "no enhancer", "bicubic")
    print(f"\n{'512 output':<14}{'PSNR (dB)':>10}{'jitter excess':>15}   ({len(rows)} validation clips x "
          f"{args.frames} frames)")
    for n in names:
        print(f"{n:<14}{np.mean([r[n]['psnr'] for r in rows.values()]):>10.2f}"
              f"{np.mean([r[n]['jitter'] for r in rows.values()]):>15.2f}")


if __name__ == "__main__":
    main()
