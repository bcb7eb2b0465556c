"""How much eye motion do the tracked (driving) landmarks keep?  (issue 16, docs/EYES.md)

For the validation clips of a prepared dataset, re-tracks each clip's source video and
compares eye openness and gaze series against mediapipe's still-image detection on the
prepared 256 crops (what ``avatar-app evaluate`` re-detects on the driver):

* ``prepared``: the landmarks the dataset stores (video mode + the tracker's One-Euro filter);
* ``raw``: video-mode landmarks, no filter;
* ``still``: still-image detection on the full video frame;
* ``euro A,B[,D]``: the raw landmarks through one One-Euro filter (``--euro``; ``1.5,3.0`` is
  the face filter the tracker used alone before issue 16's second pass), offline;
* ``eyes A,B,D``: through :class:`~avatar_app.face.smoothing.LandmarkSmoother` with those eye
  settings (``--eyes``), as :class:`~avatar_app.face.tracker.FaceTracker` filters now.

Per variant: mean per-clip r and slope (clips whose reference varies by >= 0.02 s.d.) on all
frames (or on the frames ``evaluate --spread`` drives with: ``--spread 32``), and the jitter at
rest: the median |x[t] - (x[t-1] + x[t+1]) / 2| of the series. Raw tracks are cached
(``--cache``), so trying filter settings is cheap.

    python tools/eye_tracking.py --data /work/data/real --cache /tmp/tracks --eyes 1.5,10,10 1.5,20,10 1.5,30,10
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avatar_app.face.align import CropBox, transform_points  # noqa: E402
from avatar_app.face.eyes import eye_openness, horizontal_gaze  # noqa: E402
from avatar_app.train.eval_eyes import OPEN_MIN_SD, GAZE_MIN_SD  # noqa: E402


def track_clip(video_file: Path, folder: Path, meta: dict) -> dict:
    """Raw video-mode landmarks (and the tracker's scale per frame), still detections on the frame
    and on the prepared 256 crops; all in px of the 256 crop (NaN where no face)."""
    from avatar_app.capture.video import VideoFileSource
    from avatar_app.face.mesh import eye_centers
    from avatar_app.face.tracker import FaceTracker
    from avatar_app.train.clipio import frame_name, read_image_file
    from avatar_app.types import Frame

    box = CropBox(tuple(meta["crop"]["center"]), float(meta["crop"]["side"]), float(meta["crop"]["angle"]))
    a256 = box.image_to_crop(256)
    n = int(meta["frames"])
    raw = np.full((n, 478, 3), np.nan, np.float32)
    still = raw.copy()
    ref = raw.copy()
    scale = np.full(n, np.nan)
    times = np.arange(n) / float(meta["fps"])
    with FaceTracker(smoothing=None) as video, FaceTracker(max_faces=1) as single:
        with VideoFileSource(str(video_file)) as source:
            for frame in source:
                i = frame.index
                if i >= n:
                    break
                res = video.track(Frame(image=frame.image, timestamp=i / meta["fps"], index=i))
                if res.found:
                    raw[i] = transform_points(res.landmarks.points, a256)
                    eye_r, eye_l = eye_centers(res.landmarks.xy)  # the tracker's scale: inter-ocular px
                    scale[i] = float(np.linalg.norm(eye_l - eye_r))
                faces = single.detect_faces(frame.image)
                if faces:
                    still[i] = transform_points(faces[0].points, a256)
                crop = read_image_file(folder / "256" / frame_name(i))
                faces = single.detect_faces(crop)
                if faces:
                    ref[i] = faces[0].points
    return {"raw": raw, "still": still, "ref": ref, "scale": scale, "times": times}


VIDEOS = Path("/work/shared/data/real_clips")


def euro(raw: np.ndarray, scale: np.ndarray, times: np.ndarray, filt) -> np.ndarray:
    """``raw`` (crop px) through ``filt`` as the tracker runs it (``scale``: the inter-ocular distance
    in the same px); a frame without a face resets it (the tracker's reset on a jump is left out)."""
    out = np.full_like(raw, np.nan)
    filt.reset()
    for i in range(len(raw)):
        if not np.isfinite(raw[i]).all():
            filt.reset()
            continue
        out[i] = filt(raw[i], float(times[i]), scale=float(scale[i]))
    return out


def series(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ok = np.isfinite(points).all(axis=(1, 2))
    o = np.full(len(points), np.nan)
    g = o.copy()
    for i in np.flatnonzero(ok):
        o[i], g[i] = eye_openness(points[i]), horizontal_gaze(points[i])
    return o, g


def follow(ref: np.ndarray, x: np.ndarray, min_sd: float):
    ok = np.isfinite(ref) & np.isfinite(x)
    r, x = ref[ok], x[ok]
    if len(r) < 3 or r.std() < min_sd:
        return None
    return float(np.corrcoef(r, x)[0, 1]), float(np.cov(r, x, bias=True)[0, 1] / r.var())


def rest_jitter(x: np.ndarray) -> float:
    d = np.abs(x[1:-1] - (x[:-2] + x[2:]) / 2)
    d = d[np.isfinite(d)]
    return float(np.median(d)) if len(d) else float("nan")


def main(argv=None) -> None:
    from avatar_app.face.smoothing import LandmarkSmoother, OneEuroFilter
    from avatar_app.train.manifest import read_manifest
    from avatar_app.train.split import split_clips

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("/work/data/real"))
    p.add_argument("--videos", type=Path, default=VIDEOS)
    p.add_argument("--cache", type=Path, required=True)
    p.add_argument("--clips", type=int, default=13)
    p.add_argument("--val-fraction", type=float, default=0.15)
    p.add_argument("--euro", nargs="*", default=["1.5,3.0"], help="one filter's min_cutoff,beta[,d_cutoff] to try")
    p.add_argument("--eyes", nargs="*", default=[], help="LandmarkSmoother eye settings min_cutoff,beta,d_cutoff")
    p.add_argument("--split", choices=("val", "all"), default="val")
    p.add_argument("--spread", type=int, default=0,
                   help="score only the N frames `evaluate --spread --frames N` drives with (default: all frames)")
    p.add_argument("--per-clip", action="store_true")
    args = p.parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)
    entries = read_manifest(args.data)["clips"]
    keys = (sorted(str(e["key"]) for e in entries) if args.split == "all"
            else split_clips(entries, args.val_fraction)[1])[: args.clips]
    rows: dict[str, list] = {}
    for key in keys:
        folder = args.data / "clips" / key
        meta = json.loads((folder / "meta.json").read_text())
        cached = args.cache / f"{key}.npz"
        if not cached.is_file():
            np.savez_compressed(cached, **track_clip(args.videos / meta["source"], folder, meta))
        t = dict(np.load(cached))
        box = CropBox(tuple(meta["crop"]["center"]), float(meta["crop"]["side"]), float(meta["crop"]["angle"]))
        t["scale"] = t["scale"] * float(np.linalg.norm(box.image_to_crop(256)[:, 0]))  # frame px -> crop px
        prepared = np.load(folder / "landmarks.npy").astype(np.float32)
        prepared[~np.load(folder / "valid.npy").astype(bool)] = np.nan
        variants = {"prepared": prepared, "raw": t["raw"], "still": t["still"]}
        for spec in args.euro:
            vals = [float(v) for v in spec.split(",")]
            variants[f"euro {spec}"] = euro(t["raw"], t["scale"], t["times"], OneEuroFilter(*vals))
        for spec in args.eyes:
            vals = [float(v) for v in spec.split(",")]
            variants[f"eyes {spec}"] = euro(t["raw"], t["scale"], t["times"], LandmarkSmoother(eyes=tuple(vals)))
        keep = np.ones(len(t["ref"]), bool)
        if args.spread:  # as evaluate's drive_indices(spread): after the first valid frame, over the whole clip
            valid = np.flatnonzero(np.isfinite(prepared).all(axis=(1, 2)))
            picks = np.unique(np.linspace(1, len(valid) - 1, min(args.spread, len(valid) - 1)).round().astype(int))
            keep[:] = False
            keep[valid[picks]] = True
        o_ref, g_ref = series(np.where(keep[:, None, None], t["ref"], np.nan))
        for name, pts in variants.items():
            o, g = series(np.where(keep[:, None, None], pts, np.nan))
            row = (follow(o_ref, o, OPEN_MIN_SD), follow(g_ref, g, GAZE_MIN_SD), rest_jitter(o), rest_jitter(g))
            rows.setdefault(name, []).append(row)
            if args.per_clip:
                print(f"{key[:40]:40s} {name:18s} open {row[0]} gaze {row[1]} jit {row[2]:.4f} {row[3]:.4f}")
        rows.setdefault("reference (still, crop)", []).append((None, None, rest_jitter(o_ref), rest_jitter(g_ref)))
    print(f"{'variant':24s} {'open r':>7s} {'open amp':>8s} {'gaze r':>7s} {'gaze amp':>8s} {'jit open':>8s} {'jit gaze':>8s}")
    for name, rs in rows.items():
        def mean(vals):
            vals = [v for v in vals if v is not None]
            return float(np.mean(vals)) if vals else float("nan")

        o_r, o_a = mean([r[0][0] if r[0] else None for r in rs]), mean([r[0][1] if r[0] else None for r in rs])
        g_r, g_a = mean([r[1][0] if r[1] else None for r in rs]), mean([r[1][1] if r[1] else None for r in rs])
        print(f"{name:24s} {o_r:7.3f} {o_a:8.3f} {g_r:7.3f} {g_a:8.3f} {mean([r[2] for r in rs]):8.4f} "
              f"{mean([r[3] for r in rs]):8.4f}")


if __name__ == "__main__":
    main()
