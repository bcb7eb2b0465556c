"""Validation of a training run: the EMA model on fixed held-out batches, beside a baseline.

Pairs stages report masked PSNR and L1 and ``psnr_geometric`` (the analytic warp, what users
get without weights, on the same pairs); the enhancer stage on the app's 512 path reports
``psnr_base`` (no enhancer: its base).  Functions of a :class:`~.trainer.Trainer`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ..models.enhancer import TemporalEnhancer
from ..models.portrait import PortraitModel
from ..inference.networks import EnhancerStage
from .enhancer_path import enhanced_window
from .losses import masked_mean


def masked_psnr(out: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``(B,)`` PSNR (dB) of images in [0, 1], over the pixels where ``mask (B, 1, H, W)`` is 1."""
    err = (out.float().clamp(0, 1) - gt.float()) ** 2
    if mask is None:
        mse = err.flatten(1).mean(1)
    else:
        mse = (err * mask).flatten(1).sum(1) / (mask.flatten(1).sum(1) * err.shape[1]).clamp(min=1)
    return 10 * torch.log10(1.0 / mse.clamp(min=1e-10))


def _val_batches(trainer):
    """The first ``val_batches`` validation batches, on the device (the same ones every time)."""
    if trainer.resident:
        rng = np.random.default_rng((trainer.cfg.seed, 1))  # val: no augmentation, fixed draws
        for _ in range(trainer.cfg.val_batches):
            yield trainer.val_set.batch(trainer.cfg.batch_size, rng)
        return
    loader = DataLoader(trainer.val_set, batch_size=trainer.cfg.batch_size, shuffle=False, num_workers=0)
    for i, batch in enumerate(loader):
        if i >= trainer.cfg.val_batches:
            break
        yield trainer._to_device(batch)


@torch.no_grad()
def validate(trainer) -> dict[str, float]:
    """L1 and PSNR of the EMA model on the first ``val_batches`` validation batches, inside
    each frame's ``mask`` where the batch has one; pairs stages also report
    ``psnr_geometric``, the analytic warp (what users get without weights) on the same pairs."""
    l1s, psnrs, geo = [], [], []
    # the validation batches are the same every time, and so is the baseline on them (the geometric avatar;
    # for the enhancer, its base from the frozen warp network and generator): scored once per run
    baseline = getattr(trainer, "_val_baseline", None)
    geometric = None
    if trainer.cfg.stage != "enhancer" and baseline is None:
        with torch.random.fork_rng(devices=[]):  # training's random stream stays as it was (exact resume)
            geometric = PortraitModel(config=trainer.model.config).to(trainer.device).eval()  # zero residual
    for b in _val_batches(trainer):
        mask = b.get("mask", b.get("mask_512"))
        if trainer.cfg.stage == "enhancer" and "source_512" in b:  # last frame of the window, history built up
            stage = EnhancerStage(trainer.ema, 512)
            out = enhanced_window(trainer.ema, trainer.flow, stage, b)[:, -1]
            gt = b["frames_512"][:, -1]
            if baseline is None:
                stage.enhancer = TemporalEnhancer(**trainer.ema.config["enhancer"]).to(trainer.device)  # its base
                geo += masked_psnr(enhanced_window(trainer.ema, trainer.flow, stage, b)[:, -1], gt, mask).tolist()
        elif trainer.cfg.stage == "enhancer":
            first = b["frames_256"][:, 0]
            base = F.interpolate(first, scale_factor=2.0, mode="bilinear", align_corners=False)
            out, _ = trainer.ema.enhancer(first, base, trainer.ema.enhancer.start_history(first, base))
            gt = b["frames_512"][:, 0]
        else:
            res = trainer._frame(trainer.ema, b)
            out = res["warped"] if trainer.cfg.stage == "warp" else res["image"]
            gt = b["driving"]
            if geometric is not None:
                geo += masked_psnr(trainer._frame(geometric, b)["warped"], gt, mask).tolist()
        psnrs += masked_psnr(out, gt, mask).tolist()
        l1s.append(float(masked_mean((out - gt).abs(), mask)))
    result = {"l1": float(np.mean(l1s)) if l1s else float("nan"),
              "psnr": float(np.mean(psnrs)) if psnrs else float("nan")}
    if geo:
        trainer._val_baseline = baseline = float(np.mean(geo))
    if baseline is not None:  # the enhancer stage compares with no enhancer (its base), the others with the warp
        result["psnr_base" if trainer.cfg.stage == "enhancer" else "psnr_geometric"] = baseline
    return result
