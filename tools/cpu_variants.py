"""Exploration (issue 14): CPU adaptation variants of the cached warp+decoder plan, same cache, fixed steps.

Per clip: the recording (the first 10 s; every 10th frame held out), 48 training frames cached as
personalize caches them, the later segment (24 frames) and the held-out frames cached for scoring.
Each variant runs --steps steps (or its own ``steps``) from the same weights with the same random
batches and scores the later and the interleaved frames after a quarter, half, three quarters and all
of them, with the CPU seconds (``--threads``, process_time) spent in steps.  Scoring runs the whole
frame through the model (the cached inputs are the app's, exactly; tests/test_personalize_fast.py).

    python tools/cpu_variants.py --data /work/data/real --weights assets/weights/lite-real.safetensors \
        --clips williamyang1991__VToonify__529 --variants base w3 crop128x --steps 120 --out v.json

Its ``base`` is the plan of the third round (docs/PERSONALIZATION_ROUNDS.md), which the tables there measured: the
plan as it ships since adapts without the SPADE branch (``frozen``) and weighs the warped source's L1 (``w_warped``
0.5, the variant ``wrp``; 16 since 2026-12-05, docs/PERSONALIZATION_WARP_LOSS.md), and the app animates the recording's rest frame, where this tool animates its first.
For the plan as it ships, use ``tools/personalize_curve.py`` (``--variant`` changes its fields; ``--reference``).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from avatar_app.models.layers import resize_grid  # noqa: E402
from avatar_app.models.portrait import load_checkpoint  # noqa: E402
from avatar_app.train.adapt_cached import PLANS, FrameCache, _expand, cache_picks, plan_optimizer  # noqa: E402
from avatar_app.train.config import TrainConfig  # noqa: E402
from avatar_app.train.manifest import read_manifest  # noqa: E402
from avatar_app.train.split import split_clips  # noqa: E402
from avatar_app.train.eval_clips import load_clip  # noqa: E402
from avatar_app.train.losses import pyramid_l1  # noqa: E402
from avatar_app.train.personalize import ClipFrames, held_out_indices, training_indices  # noqa: E402
from avatar_app.train.trainer import Trainer  # noqa: E402
from personalize_curve import segments  # noqa: E402

# name -> options changed from DEFAULT (the CPU default: batch 2, 6e-4 falling along a cosine to 0 at the last
# step, the warp network at 0.1x the rate).  batch; lr; warp: the warp network's rate scale; decay: cosine to 0;
# crop: px of a random window (8-px aligned) the generator decodes in a step (0: the whole 256 frame); ema: beta
# of an average of the adapted weights, scored instead of them (0: off); aug: scale-shifted copies of each cached
# frame (scale 0.9-1.1, shift +-24 px, landmarks moved with them); enc: adapt the generator's encoder and the warp
# network's source code too (the reference re-encoded each step); src: sources (the reference and src-1 training
# frames spread over the recording, each animating the cached frames; the reference half the time); wise: also
# score base + a * (adapted - base) for a in 0.5, 0.75, 1.25, 1.5; steps: this variant's step count; warped: weight of
# the warped source's pyramid L1 (what the lite model was trained with: 0.5); ssim: weight of multi-scale SSIM (the
# lite training's 1.0); frames: training frames cached (spread over the recording).
VARIANTS = {
    "base": {},
    "basew": {"wise": 1},
    "crop128x": {"crop": 128, "steps": 300},
    "crop128xw": {"crop": 128, "steps": 300, "wise": 1},
    "crop128xaug": {"crop": 128, "steps": 300, "aug": 1},
    "crop128xw3": {"crop": 128, "warp": 0.3, "steps": 300, "wise": 1},
    "aug": {"aug": 1},
    "ema": {"ema": 0.98},
    "w3": {"warp": 0.3},
    "w3w": {"warp": 0.3, "wise": 1},
    "w1": {"warp": 1.0},
    "lr1": {"lr": 1e-3},
    "enc": {"enc": 1},
    "src4": {"src": 4, "wise": 1},
    "wrp": {"warped": 0.5},
    "train": {"warped": 0.5, "ssim": 1.0},
    "train99": {"warped": 0.5, "ssim": 1.0, "steps": 99},
    "all": {"frames": 1000},
    "crop280": {"crop": 128, "steps": 280},
}
DEFAULT = {"batch": 2, "lr": 6e-4, "warp": 0.1, "crop": 0, "ema": 0.0, "aug": 0, "decay": 1, "enc": 0, "src": 1,
           "warped": 0.0, "ssim": 0.0, "frames": 48}


def augmented(clip: ClipFrames, idx: list[int], rng: np.random.Generator, copies: int,
              shift: float = 24.0) -> tuple[ClipFrames, list[int]]:
    """``clip`` with ``copies`` scale-shifted copies of frames ``idx`` appended (landmarks moved with them)."""
    import cv2

    crops, points, extra = list(clip.crops), list(clip.points), []
    for _ in range(copies):
        for i in idx:
            s = rng.uniform(0.9, 1.1)
            dx, dy = rng.uniform(-shift, shift, 2)
            c = 127.5
            m = np.array([[s, 0, c - s * c + dx], [0, s, c - s * c + dy]], np.float32)
            crops.append(cv2.warpAffine(clip.crops[i], m, (256, 256), flags=cv2.INTER_LINEAR,
                                        borderMode=cv2.BORDER_REPLICATE))
            p = clip.points[i].copy()
            p[:, :2] = p[:, :2] * s + np.array([c - s * c + dx, c - s * c + dy])
            points.append(p.astype(clip.points[i].dtype))
            extra.append(len(crops) - 1)
    return ClipFrames(crops, points, clip.reference), extra


def window(size: int, rng: np.random.Generator) -> tuple[int, int]:
    """The top left corner of a random ``size`` window (8-px aligned) in the 256 frame."""
    hi = 256 - size
    return int(rng.integers(0, hi // 8 + 1)) * 8, int(rng.integers(0, hi // 8 + 1)) * 8


def image_of(model, b: dict, crop: tuple[int, int, int] | None = None, warped_too: bool = False):
    """The adapted model's frame for cached batch ``b`` (whole, or the window ``(y, x, size)``); with
    ``warped_too`` also the warped source image (the same window)."""
    src = b["source"]
    out = model.warp_frame(src, b["cond"], b["grid"], b["mouth"], b["coord"], b["mouth_amount"], b["big"])
    gen = model.generator
    if crop is None:
        image, _ = gen(src.features, out["grid"], out["occlusion"], b["cond"], src.identity, out["warped"])
        return (image, out["warped"]) if warped_too else image
    y, x, s = crop
    cut = lambda t: t[:, :, y:y + s, x:x + s]  # noqa: E731
    grid = out["grid"][:, y:y + s, x:x + s]
    occ = cut(out["occlusion"])
    warped = []
    for f, d in zip(src.features, (2, 4, 8)):
        size = (s // d, s // d)
        o = F.interpolate(occ, size=size, mode="bilinear", align_corners=False)
        warped.append(F.grid_sample(f, resize_grid(grid, size), mode="bilinear", padding_mode="border",
                                    align_corners=False) * o)
    image, _ = gen.decode(warped, cut(b["cond"]), src.identity, cut(out["warped"]))
    return (image, cut(out["warped"])) if warped_too else image


@torch.no_grad()
def psnr(model, cache: FrameCache) -> float:
    model.eval()
    vals = []
    for k in range(0, cache.size, 8):
        b = cache.batch(list(range(k, min(k + 8, cache.size))))
        s0 = cache.source  # encoded by the model being scored (the encoder may be adapted)
        b["source"] = _expand(model.encode_source(s0.image, s0.cond, s0.identity), len(b["cond"]))
        img = image_of(model, b).clamp(0, 1)
        mse = ((img - b["driving"]) ** 2).flatten(1).mean(1)
        vals += (10 * torch.log10(1 / mse.clamp(min=1e-10))).tolist()
    model.train()
    return float(np.mean(vals))


@torch.no_grad()
def where_wrong(model, clip: ClipFrames, cache: FrameCache, indices: list[int]) -> dict:
    """Where ``model``'s error on cached frames ``indices`` of ``clip`` lies: the PSNR, the share of the
    squared error inside the face's landmark hull (grown by 7 px) and the hull's area, and the PSNR after
    fitting each output's colour to its frame (gain and offset per channel)."""
    import cv2

    b = cache.batch(list(range(cache.size)))
    out, gt = image_of(model.eval(), b).clamp(0, 1), b["driving"]
    err = ((out - gt) ** 2).mean(1)
    hull = np.zeros(err.shape, bool)
    for k, i in enumerate(indices):
        m = np.zeros(err.shape[1:], np.uint8)
        cv2.fillConvexPoly(m, cv2.convexHull(clip.points[i][:, :2].astype(np.float32)).astype(np.int32), 1)
        hull[k] = cv2.dilate(m, np.ones((15, 15), np.uint8)) > 0
    inside = torch.from_numpy(hull)
    fitted = []
    for o, g in zip(out.flatten(2), gt.flatten(2)):
        a = torch.stack([o, torch.ones_like(o)], -1)  # (3, N, 2): per channel gain and offset
        fit = (a @ torch.linalg.lstsq(a, g.unsqueeze(-1)).solution).squeeze(-1)
        fitted.append(((fit - g) ** 2).mean())
    db = lambda mse: float((10 * torch.log10(1 / mse)).mean())  # noqa: E731
    return {"psnr": db(err.flatten(1).mean(1)), "colour_fit_psnr": db(torch.stack(fitted)),
            "hull_area": float(inside.float().mean()),
            "hull_error_share": float(((err * inside).flatten(1).sum(1) / err.flatten(1).sum(1)).mean())}


def run(base, trainer, train: list[FrameCache], scored: dict, opts: dict, steps: int, every: int, seed: int) -> dict:
    model = copy.deepcopy(base)
    plan = PLANS["warp+decoder"].__class__("v", -1, "decoder", opts["lr"], batch_size=opts["batch"],
                                          warp_lr_scale=opts["warp"], decay=bool(opts["decay"]))
    opt, params = plan_optimizer(model, plan)
    if opts["enc"]:  # the generator's encoder (decoder's rate) and the warp network's source code (warp rate)
        enc = list(model.generator.encoder.parameters())
        code = list(model.warp.code_net.parameters()) + list(model.warp.code_fc.parameters())
        for q in enc + code:
            q.requires_grad_(True)
        opt.add_param_group({"params": enc, "lr": opts["lr"]})
        opt.add_param_group({"params": code, "lr": opts["lr"] * opts["warp"]})
        params = params + enc + code
    rates = [g["lr"] for g in opt.param_groups]
    trainer.cfg.w_ssim = opts["ssim"]
    ema = [p.detach().clone() for p in params] if opts["ema"] else None
    rng = np.random.default_rng(seed)
    crop_rng = np.random.default_rng(seed + 1)
    curve, cpu = [], 0.0

    def point(step):
        if ema is not None:
            live = [p.detach().clone() for p in params]
            with torch.no_grad():
                for p, e in zip(params, ema):
                    p.copy_(e)
        curve.append({"step": step, "cpu_s": cpu, **{k: psnr(model, c) for k, c in scored.items()}})
        if ema is not None:
            with torch.no_grad():
                for p, v in zip(params, live):
                    p.copy_(v)

    point(0)
    for step in range(steps):
        c0 = time.process_time()
        if opts["decay"]:
            scale = 0.5 * (1 + math.cos(math.pi * step / steps))
            for g, r in zip(opt.param_groups, rates):
                g["lr"] = r * scale
        cache = train[0] if len(train) == 1 or rng.random() < 0.5 else train[int(rng.integers(1, len(train)))]
        picks = rng.choice(cache.size, min(opts["batch"], cache.size), replace=False).tolist()
        b = cache.batch(picks)
        if opts["enc"]:
            s0 = cache.source
            s1 = model.encode_source(s0.image, s0.cond, s0.identity)
            b["source"] = _expand(s1, len(picks))
        crop = None
        if opts["crop"]:
            y, x = window(opts["crop"], crop_rng)
            crop = (y, x, opts["crop"])
        img, warped = image_of(model, b, crop, warped_too=True)
        gt, cond = b["driving"], b["cond"]
        if crop is not None:
            y, x, s = crop
            gt, cond = gt[:, :, y:y + s, x:x + s], cond[:, :, y:y + s, x:x + s]
        loss = sum(trainer._image_losses(img, gt, cond).values())
        if opts["warped"]:
            loss = loss + opts["warped"] * pyramid_l1(warped, gt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if ema is not None:
            with torch.no_grad():
                beta = min(opts["ema"], (1 + step) / (10 + step))
                for p, e in zip(params, ema):
                    e.mul_(beta).add_(p.detach(), alpha=1 - beta)
        cpu += time.process_time() - c0
        if (step + 1) % every == 0 or step + 1 == steps:
            point(step + 1)
    wise = {}
    if opts.get("wise"):  # the adapted weights interpolated with (or extrapolated from) the start: base + a * change
        start = dict(base.named_parameters())
        with torch.no_grad():
            done = {n: q.detach().clone() for n, q in model.named_parameters()}
            for a in (0.5, 0.75, 1.25, 1.5):
                for n, q in model.named_parameters():
                    q.copy_(start[n] + a * (done[n] - start[n]))
                wise[a] = {k: psnr(model, c) for k, c in scored.items()}
            for n, q in model.named_parameters():
                q.copy_(done[n])
    return {"curve": curve, "cpu_per_step": cpu / steps, "wise": wise}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--clips", nargs="*")
    p.add_argument("--variants", nargs="+", default=["base"])
    p.add_argument("--set", nargs="*", default=[], metavar="NAME=KEY:VAL,...", help="define variants inline")
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    for spec in args.set:
        name, _, rest = spec.partition("=")
        VARIANTS[name] = {k: float(v) for k, v in (kv.split(":") for kv in rest.split(","))}
    manifest = read_manifest(args.data)
    entries = {c["key"]: c for c in manifest["clips"]}
    keys = args.clips or sorted(split_clips(list(entries.values()), 0.15)[1],
                                key=lambda k: -int(entries[k]["frames"]))[:2]
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    base = load_checkpoint(args.weights)
    trainer = Trainer(TrainConfig(stage="meta", batch_size=2, num_workers=0, w_gan=0.0), None, train_set=[],
                      device="cpu", model=copy.deepcopy(base))
    for key in keys:
        clip, why = load_clip(args.data, entries[key])
        record, later = segments(clip, float(entries[key].get("fps") or 25.0), 10.0, 24)
        frames = record + later
        whole = ClipFrames([clip.image(f) for f in frames], [clip.landmarks[f] for f in frames], reference=0)
        n = len(record)
        held, train_idx = held_out_indices(n), training_indices(n)
        chosen = cache_picks(train_idx, 48)
        identity = clip.embedding if clip.embedding is not None else np.zeros(128, np.float32)
        pts = np.stack([p[:, :2] for p in whole.points])
        for name, sel in (("record", list(range(n))), ("later", list(range(n, len(frames))))):
            c, sc = pts[sel].mean(1), pts[sel].std(1).mean(1)
            print(f"{key} {name}: landmarks' centre {c.mean(0).round(1)} +- {c.std(0).round(1)} px, "
                  f"spread {sc.mean():.1f} +- {sc.std():.1f} px")
        scored = {"later": FrameCache(base, whole, list(range(n, len(frames))), identity, -1),
                  "held": FrameCache(base, whole, held, identity, -1)}
        for name, idx in (("later", list(range(n, len(frames)))), ("held", held)):
            where = where_wrong(base, whole, scored[name], idx)
            print(f"{key} {name}, start model: " + ", ".join(f"{k} {v:.2f}" for k, v in where.items()), flush=True)
        caches = {}
        for vname in args.variants:
            opts = {**DEFAULT, **VARIANTS[vname]}
            for k in ("batch", "crop", "aug", "decay", "enc", "src", "frames"):
                opts[k] = int(opts[k])
            aug = (opts["aug"], opts["frames"])
            if opts["src"] > 1 and ("src", opts["src"]) not in caches:
                c0 = time.process_time()
                refs = [chosen[int(round(j))] for j in np.linspace(0, len(chosen) - 1, opts["src"])[1:]]
                caches[("src", opts["src"])] = ([FrameCache(base, whole, chosen, identity, -1)] + [
                    FrameCache(base, ClipFrames(whole.crops, whole.points, r), [c for c in chosen if c != r],
                               identity, -1)
                    for r in refs], time.process_time() - c0)
            if opts["src"] > 1:
                aug = ("src", opts["src"])
            elif aug not in caches:
                c0 = time.process_time()
                frames = cache_picks(train_idx, opts["frames"])
                if opts["aug"]:
                    clip_a, extra = augmented(whole, frames, np.random.default_rng(7), opts["aug"])
                    caches[aug] = ([FrameCache(base, clip_a, frames + extra, identity, -1)], time.process_time() - c0)
                else:
                    caches[aug] = ([FrameCache(base, whole, frames, identity, -1)], time.process_time() - c0)
            cache, build = caches[aug]
            t0 = time.perf_counter()
            steps = int(opts.get("steps", args.steps))
            res = run(base, trainer, cache, scored, opts, steps, max(1, steps // 4), seed=0)
            res |= {"opts": opts, "cache_cpu_s": build, "load": os.getloadavg(), "wall_s": time.perf_counter() - t0}
            results.setdefault(key, {})[vname] = res
            c = res["curve"]
            print(f"{key} {vname}: {res['cpu_per_step']:.3f} CPU s/step (cache {build:.1f} s), load "
                  f"{res['load'][0]:.1f}; later "
                  + " ".join(f"{x['later'] - c[0]['later']:+.2f}@{x['step']}" for x in c[1:])
                  + f"; held {c[-1]['held'] - c[0]['held']:+.2f} (later {c[0]['later']:.2f}, held {c[0]['held']:.2f})"
                  + "".join(f"; x{a}: later {v['later'] - c[0]['later']:+.2f} held {v['held'] - c[0]['held']:+.2f}"
                            for a, v in res["wise"].items()),
                  flush=True)
            args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
