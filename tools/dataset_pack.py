"""Carry a prepared dataset to another machine as its source videos plus what tracking found.

A prepared dataset of real video is mostly JPEG crops (the 114-clip corpus: 1.4 GB);
the videos it came from are 35 MB.  ``pack`` keeps the videos, each clip's crop box,
valid flags and identity embedding, and the landmarks (by default 1/4 px for x and y, 1 px
for depth: well below mediapipe's own frame-to-frame jitter; delta-coded along time,
xz-compressed: about 8 MB for 23k frames; pack.json records the steps).  ``unpack``
decodes the videos again and writes the same crops (same affine, same code path as
``avatar-app prepare``), so the GPU machine needs neither mediapipe nor dlib.  ``--split val`` packs only the
validation people's clips (``split_clips``'s rule; the packed manifest lists only those, so name clips explicitly on
the other side: a split of a split is not the same split).

    python tools/dataset_pack.py pack PREPARED SRC_VIDEOS PACK [--steps 4 4 1] [--split val|train [--val-fraction 0.15]]
        [--clips KEY ...]
    python tools/dataset_pack.py unpack PACK OUT [--workers N]
"""

from __future__ import annotations

import argparse
import json
import lzma
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avatar_app.face.align import CropBox, warp_to_crop  # noqa: E402
from avatar_app.train.clipio import BASE_SIZE, ClipWriter, size_affine  # noqa: E402
from avatar_app.train.split import split_clips  # noqa: E402
from avatar_app.types import NUM_LANDMARKS  # noqa: E402

STEPS = (4.0, 4.0, 1.0)  # quantisation steps per px of x, y, z
OLD_STEPS = (16.0, 16.0, 4.0)  # packs written before pack.json recorded its steps


def pack(prepared: Path, videos: Path, out: Path, steps=STEPS, split: str = "all", val_fraction: float = 0.15,
         keys: list[str] | None = None) -> None:
    """``keys``: only those clips (of the split's side), each of which must be there."""
    quant = np.asarray(steps, np.float32)
    manifest = json.loads((prepared / "manifest.json").read_text())
    if split != "all":
        train, val = split_clips(manifest["clips"], val_fraction)
        keep = set(val if split == "val" else train)
        manifest = {**manifest, "clips": [c for c in manifest["clips"] if c["key"] in keep]}
    if keys:
        wanted = set(keys)
        missing = sorted(wanted - {c["key"] for c in manifest["clips"]})
        if missing:
            raise SystemExit(f"not among {prepared}'s {split} clips: {' '.join(missing)}")
        manifest = {**manifest, "clips": [c for c in manifest["clips"] if c["key"] in wanted]}
    out.mkdir(parents=True, exist_ok=True)
    (out / "videos").mkdir(exist_ok=True)
    clips, deltas, idents = [], [], []
    for entry in manifest["clips"]:
        folder = prepared / "clips" / entry["key"]
        meta = json.loads((folder / "meta.json").read_text())
        (out / "videos" / meta["source"]).parent.mkdir(parents=True, exist_ok=True)  # the path below SRC: unique
        shutil.copyfile(videos / meta["source"], out / "videos" / meta["source"])
        q = np.rint(np.load(folder / "landmarks.npy") * quant).astype(np.int32)
        deltas.append(np.concatenate([q[:1], np.diff(q, axis=0)]))
        emb = folder / "identity.npy"
        idents.append(np.load(emb).astype(np.float32) if emb.is_file() else np.zeros(128, np.float32))
        clips.append({"meta": meta, "valid": np.load(folder / "valid.npy").astype(int).tolist(),
                      "has_identity": emb.is_file()})
    stream = np.ascontiguousarray(np.concatenate(deltas).astype(np.int16).transpose(2, 1, 0))
    (out / "landmarks.xz").write_bytes(lzma.compress(stream.tobytes(), preset=6))
    np.save(out / "identity.npy", np.stack(idents))
    (out / "pack.json").write_text(json.dumps({"manifest": manifest, "clips": clips, "split": split,
                                               "frames": int(stream.shape[2]),
                                               "steps": [float(v) for v in quant]}))
    print(f"packed {len(clips)} clips, {stream.shape[2]} frames into {out}")


def _unpack_clip(args) -> str:
    pack_dir, out, clip, points, identity = args
    import cv2

    meta = clip["meta"]
    sizes = tuple(meta["sizes"])
    box = CropBox(tuple(meta["crop"]["center"]), float(meta["crop"]["side"]), float(meta["crop"]["angle"]))
    affines = {s: size_affine(box.image_to_crop(BASE_SIZE), s) for s in sizes}
    writer = ClipWriter(Path(out) / "clips" / meta["key"], sizes)
    cap = cv2.VideoCapture(str(Path(pack_dir) / "videos" / meta["source"]))
    for index in range(meta["frames"]):
        ok, image = cap.read()
        if not ok:
            raise RuntimeError(f"{meta['source']}: only {index} of {meta['frames']} frames decoded")
        for s in sizes:
            writer.frame(index, s, warp_to_crop(image, affines[s], s))
    cap.release()
    writer.finish(points, np.asarray(clip["valid"], bool), identity if clip["has_identity"] else None, meta)
    return meta["key"]


def unpack(pack_dir: Path, out: Path, workers: int) -> None:
    t0 = time.perf_counter()
    info = json.loads((pack_dir / "pack.json").read_text())
    n = info["frames"]
    stream = np.frombuffer(lzma.decompress((pack_dir / "landmarks.xz").read_bytes()), np.int16)
    deltas = stream.reshape(3, NUM_LANDMARKS, n).transpose(2, 1, 0).astype(np.int32)
    idents = np.load(pack_dir / "identity.npy")
    quant = np.asarray(info.get("steps", OLD_STEPS), np.float32)
    jobs, lo = [], 0
    for k, clip in enumerate(info["clips"]):
        f = clip["meta"]["frames"]
        points = (np.cumsum(deltas[lo:lo + f], axis=0) / quant).astype(np.float32)
        jobs.append((str(pack_dir), str(out), clip, points, idents[k]))
        lo += f
    out.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(workers) as pool:
        done = list(pool.map(_unpack_clip, jobs))
    (out / "manifest.json").write_text(json.dumps(info["manifest"], indent=1))
    print(f"unpacked {len(done)} clips, {n} frames into {out} in {time.perf_counter() - t0:.1f} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pack")
    a.add_argument("prepared", type=Path)
    a.add_argument("videos", type=Path)
    a.add_argument("out", type=Path)
    a.add_argument("--steps", type=float, nargs=3, default=STEPS, metavar=("X", "Y", "Z"),
                   help="landmark quantisation steps per pixel (default %(default)s)")
    a.add_argument("--split", choices=("all", "val", "train"), default="all",
                   help="only the validation (or training) people's clips")
    a.add_argument("--val-fraction", type=float, default=0.15)
    a.add_argument("--clips", nargs="+", metavar="KEY", help="only these clips (keys of the prepared manifest)")
    b = sub.add_parser("unpack")
    b.add_argument("pack", type=Path)
    b.add_argument("out", type=Path)
    b.add_argument("--workers", type=int, default=8)
    args = p.parse_args()
    if args.cmd == "pack":
        pack(args.prepared, args.videos, args.out, args.steps, args.split, args.val_fraction, args.clips)
    else:
        unpack(args.pack, args.out, args.workers)


if __name__ == "__main__":
    main()
