"""A contact sheet of the bundled public-domain portraits driven by a prepared clip's landmarks,
geometric vs neural (docs/real_driver_portraits.jpg). Only the driver's landmarks are drawn, never
its pixels, so a clip of the training corpus can drive it without copying the corpus.

    python tools/driver_sheet.py --clip PREPARED/clips/KEY --weights assets/weights/full-real.safetensors \
        -o docs/real_driver_portraits.jpg
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from avatar_app.face.retarget import Retargeter  # noqa: E402
from avatar_app.face.source import prepare_source, read_image  # noqa: E402
from avatar_app.models.conditioning import landmark_image  # noqa: E402
from avatar_app.runtime.animator import GeometricAnimator, retarget_options  # noqa: E402
from avatar_app.runtime.neural_animator import NeuralAnimator  # noqa: E402
from avatar_app.types import Landmarks  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clip", required=True, type=Path, help="a prepared clip folder (its landmarks.npy drives)")
    p.add_argument("--weights", required=True)
    p.add_argument("--frames", type=int, nargs="+", default=[30, 70, 110, 150, 190, 215])
    p.add_argument("-o", "--out", required=True)
    args = p.parse_args()
    lm = np.load(args.clip / "landmarks.npy")
    label = Path(args.weights).stem
    rows = [("driver (landmarks only)",
             [(landmark_image(lm[i], 256)[:3].transpose(1, 2, 0)[:, :, ::-1] * 255).astype(np.uint8)
              for i in args.frames])]
    for name in ("astronaut.jpg", "grace_hopper.jpg"):
        src = prepare_source(read_image(ROOT / "assets" / "portraits" / name), 256)
        for text, animator in (("geometric", GeometricAnimator(src)),
                               (f"neural {label}", NeuralAnimator(src, weights=args.weights, backend="torch-cpu"))):
            retarget = Retargeter(src.landmarks, retarget_options(animator))  # within each animator's limits
            retarget.calibrate(Landmarks(lm[0], (256, 256)))  # the clip's first frame is its neutral face
            rows.append((text, [animator.animate(retarget(Landmarks(lm[i], (256, 256)))) for i in args.frames]))
    strips = []
    for text, images in rows:
        strip = np.concatenate(images, 1).copy()
        cv2.putText(strip, text, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2, cv2.LINE_AA)
        strips.append(strip)
    sheet = np.concatenate(strips, 0)
    sheet = cv2.resize(sheet, None, fx=0.75, fy=0.75, interpolation=cv2.INTER_AREA)
    cv2.imwrite(args.out, sheet, [cv2.IMWRITE_JPEG_QUALITY, 85])
    print(f"wrote {args.out} ({sheet.shape[1]}x{sheet.shape[0]})")


if __name__ == "__main__":
    main()
