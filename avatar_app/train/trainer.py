"""Training the warp network, the full model (warp + generator + GAN) and the enhancer.

Self-reenactment: a source and a driving frame of the same clip; the model animates
the source with the driving frame's landmarks and is compared with the driving frame.

Multi-GPU: run under ``torchrun --nproc_per_node N``; each rank takes every N-th
sample of a seeded permutation, and gradients are averaged across ranks after each
backward pass (``torch.distributed.all_reduce``, NCCL on GPUs, gloo on CPUs) — the same
arithmetic as DistributedDataParallel, applied to whichever sub-networks the stage
trains.  Only rank 0 writes checkpoints and logs.
"""

from __future__ import annotations

import copy
import logging
import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from ..models.discriminator import MultiScaleDiscriminator
from ..models.flow import AnalyticFlow
from ..models.portrait import NET_SIZE, PortraitModel, SourceCode, load_checkpoint
from ..inference.networks import EnhancerStage
from .config import TrainConfig
from .cross_pairs import identity_target, self_rows
from .enhancer_path import enhanced_window
from .fit_clock import FitClock
from .inputs import FlowInputs, WindowFlowInputs
from .losses import (IdentityLoss, PerceptualLoss, feature_matching, gan_d_loss, gan_g_loss, grow_regions,
                     ms_ssim_loss, pyramid_l1, region_l1, temporal_l1)
from .run_log import RunLog
from .run_files import resume_run, save_run
from .validation import validate

log = logging.getLogger(__name__)


def build_model(cfg: TrainConfig) -> PortraitModel:
    if cfg.init_weights:
        return load_checkpoint(cfg.init_weights)
    if cfg.model:
        return PortraitModel(config={"preset": "custom", **cfg.model})
    return PortraitModel(cfg.preset)


def distributed_env() -> tuple[int, int]:
    """``(rank, world_size)`` from torchrun's environment (``(0, 1)`` when not distributed)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class Trainer:
    """One training run of one stage.

    Args:
        cfg: the configuration.
        run_dir: where checkpoints, ``config.toml``, ``metrics.jsonl`` and samples go.
        train_set / val_set: datasets (pairs or windows, as the stage needs); built
            from ``data`` when omitted.
        data: a prepared dataset folder.
        device: torch device.
    """

    def __init__(self, cfg: TrainConfig, run_dir: str | Path | None, train_set: Dataset | None = None,
                 val_set: Dataset | None = None, data: str | Path | None = None, device: str = "cpu",
                 model: PortraitModel | None = None):
        self.cfg = cfg
        self.rank, self.world = distributed_env()
        self.device = torch.device(device)
        self.run_dir = Path(run_dir) if run_dir is not None else None  # None: write nothing (personalization)
        torch.manual_seed(cfg.seed)
        self.model = (model if model is not None else build_model(cfg)).to(self.device).train()
        self.flow = AnalyticFlow(NET_SIZE).to(self.device)
        trained = {"warp": [self.model.warp], "full": [self.model.warp, self.model.generator],
                   "meta": [self.model.warp, self.model.generator], "enhancer": [self.model.enhancer]}[cfg.stage]
        self.params = [p for m in trained for p in m.parameters()]
        fused = {"fused": True} if self.device.type == "cuda" else {}
        self.opt = torch.optim.Adam(self.params, lr=cfg.lr, betas=cfg.betas, **fused)
        self.disc = self.opt_d = None
        if cfg.stage == "full" and cfg.w_gan > 0:
            width = cfg.d_channels or (64 if self.model.preset == "full" else 32)
            self.disc = MultiScaleDiscriminator(3, cond_channels=6, scales=2, channels=width).to(self.device)
            self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=cfg.d_lr, betas=cfg.betas, **fused)
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.perceptual = PerceptualLoss(cfg.perceptual_weights).to(self.device)
        self.identity = IdentityLoss(cfg.identity_model).to(self.device) if cfg.w_id else None
        self.use_amp = cfg.amp and self.device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if cfg.amp_dtype == "bf16" else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)
        self.step = 0
        self._resumed = False
        self._judged = None  # (output, real frame, landmark image) the last generator step showed the discriminator
        self.resident = cfg.resident and cfg.stage in ("warp", "full") and train_set is None
        if (cfg.resident or cfg.hard_pairs or cfg.large_motion or cfg.cross_pairs) and not self.resident:  # resident's
            why = "resident = false" if not cfg.resident else "data given" if train_set is not None else "its stage"
            log.warning("this %s run uses the loader (%s): no resident data, hard_pairs, large_motion or cross_pairs",
                        cfg.stage, why)
        self.train_set = train_set if train_set is not None else self._dataset(data, "train")
        self.val_set = val_set if val_set is not None else (self._dataset(data, "val") if data else None)
        if cfg.compile and self.device.type == "cuda":
            for m in trained + ([self.disc] if self.disc is not None else []):
                m.compile()
        self.run_log = RunLog(self.run_dir, self.rank)
        if self.rank == 0 and self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            cfg.save(self.run_dir / "config.toml")

    # -- data -------------------------------------------------------------------------------
    def _dataset(self, data, split: str) -> Dataset:
        from .data import PreparedDataset

        if self.resident:
            from .resident import ResidentPairs

            return ResidentPairs(data, split, self.cfg.val_fraction, self.device, augment=split == "train",
                                 jitter_target=self.cfg.jitter_target, hard_pairs=self.cfg.hard_pairs,
                                 large_motion=self.cfg.large_motion, cross_pairs=self.cfg.cross_pairs)

        mode = "window" if self.cfg.stage == "enhancer" else "pairs"  # meta: pairs, grouped by identity
        app_path = mode == "window" and self.cfg.enhancer_app_path
        ds = PreparedDataset(data, size=NET_SIZE, split=split, val_fraction=self.cfg.val_fraction, mode=mode,
                             window=self.cfg.window, samples_per_clip=self.cfg.samples_per_clip, seed=self.cfg.seed,
                             augment=split == "train", min_crop_side=self.cfg.enhancer_min_crop_side * (mode == "window"),
                             window_source=app_path)
        if mode == "pairs":
            return FlowInputs(ds)
        return WindowFlowInputs(ds) if app_path else ds

    def _loader(self, epoch: int) -> DataLoader:
        if hasattr(self.train_set, "set_epoch"):
            self.train_set.set_epoch(epoch)
        g = torch.Generator().manual_seed(self.cfg.seed * 100003 + epoch)
        order = torch.randperm(len(self.train_set), generator=g).tolist()[self.rank::self.world]
        return DataLoader(self.train_set, batch_size=self.cfg.batch_size, sampler=order, drop_last=True,
                          num_workers=self.cfg.num_workers, persistent_workers=False)

    def steps_per_epoch(self) -> int:
        return max(1, (len(self.train_set) // self.world) // self.cfg.batch_size)

    def _resident_batch(self, step: int) -> dict:
        """Step ``step``'s batch of this rank, drawn on the device (a pure function of seed, rank, step)."""
        return self.train_set.batch(self.cfg.batch_size, np.random.default_rng((self.cfg.seed, self.rank, step)))

    # -- one step ---------------------------------------------------------------------------
    def _to_device(self, batch: dict) -> dict:
        return {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    def _frame(self, model: PortraitModel, b: dict) -> dict:
        grid, mouth, coord, big = self.flow.for_networks(b["source_points"][..., :2], b["driving_points"][..., :2],
                                                         b["tri_ids"])
        if self.cfg.stage == "warp":  # no generator: skip its source features
            src = SourceCode(b["source"], b["source_cond"], b["identity"], model.warp.code(b["source"], b["source_cond"]), [])
            return model.warp_frame(src, b["driving_cond"], grid, mouth, coord, b["mouth_amount"], big)
        src = model.encode_source(b["source"], b["source_cond"], b["identity"])
        hold = b["cross"] if self.cfg.cross_pairs and not self.cfg.cross_warp and "cross" in b else None
        return model.forward_frame(src, b["driving_cond"], grid, mouth, coord, b["mouth_amount"], big, hold_warp=hold)

    def _image_losses(self, out: torch.Tensor, gt: torch.Tensor, cond: torch.Tensor | None,
                      mask: torch.Tensor | None = None, regions: torch.Tensor | None = None) -> dict:
        """``mask (B, 1, H, W)``: where the ground truth is real (None: everywhere); ``regions (B, 2, H, W)``: the
        eye and mouth masks of ``cond`` already dilated (:func:`~.losses.grow_regions`, once per cached frame)."""
        c = self.cfg
        parts = {"l1": c.w_l1 * pyramid_l1(out, gt, mask=mask)}
        if c.w_ssim:
            parts["ssim"] = c.w_ssim * ms_ssim_loss(out, gt, mask=mask)
        if self.perceptual.active and c.w_perceptual:
            parts["perceptual"] = c.w_perceptual * self.perceptual(out, gt)
        if regions is None and cond is not None:
            regions = grow_regions(cond[:, 3:5])
        if regions is not None:
            parts["eyes"] = c.w_eyes * region_l1(out, gt, regions[:, 0:1], grow=1, valid=mask)
            parts["mouth"] = c.w_mouth * region_l1(out, gt, regions[:, 1:2], grow=1, valid=mask)
        return parts

    def compute_losses(self, batch: dict, model: PortraitModel | None = None) -> tuple[torch.Tensor, dict]:
        """Generator-side loss of a batch (no optimizer step), for ``model`` (default: the trained one)."""
        model = model if model is not None else self.model
        b = self._to_device(batch)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
            if self.cfg.stage == "enhancer":
                parts = self._enhancer_losses(b)
            else:
                out = self._frame(model, b)
                image = out["warped"] if self.cfg.stage == "warp" else out["image"]
                mask = b.get("mask")
                parts = self._image_losses(image, b["driving"], b["driving_cond"], mask)
                if self.identity is not None:  # for a pair driven by another person: the source's identity
                    target, points = identity_target(b)
                    parts["identity"] = self.cfg.w_id * self.identity(image, target, b["driving_points"], points)
                if self.cfg.stage != "warp" and self.cfg.w_warped:
                    parts["warped"] = self.cfg.w_warped * pyramid_l1(out["warped"], b["driving"], mask=mask)
                if self.cfg.stage != "warp" and self.cfg.w_blend:
                    parts["blend"] = self.cfg.w_blend * out["mask"].float().mean()
                self._judged = None
                if self.disc is not None:  # rows with a real frame (not cross pairs), judged where it is real
                    image, gt, cond, mask = self_rows(b, image, b["driving"], b["driving_cond"], mask)
                    if len(image):
                        parts |= self._adversarial(image, gt, cond, mask)
        total = sum(parts.values())
        return total, parts

    def _adversarial(self, image: torch.Tensor, gt: torch.Tensor, cond: torch.Tensor,
                     mask: torch.Tensor | None) -> dict:
        """The generator's adversarial terms on ``image`` (``gt`` where ``mask`` says the ground truth is not real);
        keeps what the discriminator's own step will judge."""
        image = image if mask is None else torch.where(mask > 0.5, image, gt.to(image.dtype))
        fake = self.disc(image, cond)
        with torch.no_grad():
            real = self.disc(gt, cond)
        self._judged = (image.detach(), gt, cond)
        return {"gan": self.cfg.w_gan * gan_g_loss(fake, self.cfg.gan),
                "feature_matching": self.cfg.w_feature_matching * feature_matching(real, fake)}

    def _enhancer_losses(self, b: dict) -> dict:
        frames, gts = b["frames_256"], b["frames_512"]
        t_len = frames.shape[1]
        if "source_512" in b:  # the app's own 512 path (train.enhancer_path)
            outs_t = enhanced_window(self.model, self.flow, EnhancerStage(self.model, 512), b)
            mask = b["mask_512"].repeat_interleave(t_len, 0)
            parts = self._image_losses(outs_t.flatten(0, 1), gts.flatten(0, 1), None, mask)
            parts["temporal"] = self.cfg.w_temporal * temporal_l1(outs_t, gts)
            return parts
        enh = self.model.enhancer
        bases = [F.interpolate(frames[:, t], scale_factor=2.0, mode="bilinear", align_corners=False) for t in range(t_len)]
        history = enh.start_history(frames[:, 0], bases[0])
        outs = []
        for t in range(t_len):
            out, history = enh(frames[:, t], bases[t], history)
            outs.append(out)
        outs_t = torch.stack(outs, 1)
        parts = self._image_losses(outs_t.flatten(0, 1), gts.flatten(0, 1), None)
        parts["temporal"] = self.cfg.w_temporal * temporal_l1(outs_t, gts)
        return parts

    def _lr_factor(self, step: int) -> float:
        c = self.cfg
        if step < c.warmup_steps:
            return (step + 1) / c.warmup_steps
        if c.schedule == "constant":
            return 1.0
        t = min(1.0, (step - c.warmup_steps) / max(1, c.steps - c.warmup_steps))
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t))

    def _average_gradients(self, params) -> None:
        if self.world > 1:
            for p in params:
                if p.grad is not None:
                    dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                    p.grad /= self.world

    def train_step(self, batch: dict) -> dict[str, float]:
        """One optimisation step (generator side, then the discriminator); returns the losses."""
        for group in self.opt.param_groups:
            group["lr"] = self.cfg.lr * self._lr_factor(self.step)
        self.opt.zero_grad(set_to_none=True)
        total, parts = self.compute_losses(batch)
        self.scaler.scale(total).backward()
        self._average_gradients(self.params)
        self.scaler.unscale_(self.opt)
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.scaler.step(self.opt)
        if self._judged is not None:
            parts["d"] = self._disc_step()
        self.scaler.update()
        self._update_ema()
        self.step += 1
        out = {k: float(v.detach()) for k, v in parts.items()}
        out["total"] = float(total.detach())
        return out

    def _disc_step(self) -> torch.Tensor:
        fake, real, cond = self._judged
        self.opt_d.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
            loss = gan_d_loss(self.disc(real, cond), self.disc(fake, cond), self.cfg.gan)
        self.scaler.scale(loss).backward()
        self._average_gradients(self.disc.parameters())
        self.scaler.step(self.opt_d)
        return loss.detach()

    @torch.no_grad()
    def _update_ema(self) -> None:
        d = self.cfg.ema_decay
        for e, p in zip(self.ema.parameters(), self.model.parameters()):
            e.lerp_(p.detach(), 1 - d)

    # -- loop, validation, checkpoints ----------------------------------------------------------------
    def fit(self, steps: int | None = None, progress: bool = True, stop_after_s: float = 0.0) -> None:
        """Train until ``steps`` (default ``cfg.steps``) total steps.  ``stop_after_s`` > 0: this call is a
        share of a longer run: checkpoint and return at the step that ends about that many seconds in
        (timed as the budget is: at the call's step 40 at the earliest); the run's length and schedule
        stay, and :meth:`resume` continues it."""
        from tqdm import tqdm

        target = steps if steps is not None else self.cfg.steps
        spe = self.steps_per_epoch()
        bar = tqdm(total=target, initial=self.step, unit="step", desc=f"train {self.cfg.stage}",
                   disable=not progress or self.rank != 0)
        clock, stop = FitClock(self.step, self.device, self.world), target
        while self.resident and self.step < min(target, stop):
            losses = self.train_step(self._resident_batch(self.step))
            self._bookkeeping(losses, bar, clock, self.cfg.batch_size)
            target, stop = self._lengths(clock, bar, target, stop, steps is None, stop_after_s)
        while self.step < min(target, stop):
            epoch, skip = divmod(self.step, spe)
            for i, batch in enumerate(self._loader(epoch)):
                if i < skip:
                    continue  # resuming mid-epoch: the same batches, in the same order
                losses = self.train_step(batch)
                self._bookkeeping(losses, bar, clock, self.cfg.batch_size)
                target, stop = self._lengths(clock, bar, target, stop, steps is None, stop_after_s)
                if self.step >= min(target, stop):
                    break
        bar.close()
        self.save()

    def _lengths(self, clock: FitClock, bar, target: int, stop: int, budgeted: bool,
                 stop_after_s: float) -> tuple[int, int]:
        """Once the call's speed is known: the run's length from the time budget (when ``budgeted``: no
        ``steps`` given to :meth:`fit`) and the step at which this call stops (``stop_after_s``)."""
        if not clock.timed(self.step):
            return target, stop
        if self.cfg.time_budget_s > 0 and budgeted:
            target = self._fit_budget(clock, bar)
        if stop_after_s > 0:
            stop = clock.step_at(stop_after_s, self.step)
            log.info("this call stops at step %d of %d; --resume continues", min(stop, target), target)
        return target, stop

    def _fit_budget(self, clock: FitClock, bar) -> int:
        """Set ``cfg.steps`` so that the run ends within ``time_budget_s`` of the call's start; the
        learning-rate schedule follows from here on.  A resumed run keeps the steps saved with it."""
        if self._resumed:
            return self.cfg.steps
        self.cfg.steps = clock.step_at(self.cfg.time_budget_s, self.step)
        bar.total = self.cfg.steps
        log.info("time budget %.0f s: training to step %d", self.cfg.time_budget_s, self.cfg.steps)
        if self.rank == 0 and self.run_dir is not None:
            self.cfg.save(self.run_dir / "config.toml")
        return self.cfg.steps

    def _bookkeeping(self, losses: dict, bar, clock: FitClock, samples_per_step: int) -> None:
        """Progress, logging, validation and checkpoints after a step."""
        bar.update(1)
        bar.set_postfix(loss=f"{losses['total']:.4f}")
        clock.tick(self.step)
        if self.rank == 0 and self.step % self.cfg.log_every == 0:
            warm = clock.warm_rate(self.step, samples_per_step * self.world)
            if warm is not None:  # after compilation and warm-up
                self.samples_per_s = warm
            self._log({**{f"train/{k}": v for k, v in losses.items()},
                       "train/samples_per_s": clock.rate(self.step, samples_per_step * self.world),
                       "train/lr": self.opt.param_groups[0]["lr"]})
        if self.val_set is not None and self.step % self.cfg.val_every == 0:
            self._log({f"val/{k}": v for k, v in self.validate().items()})
        if self.step % self.cfg.ckpt_every == 0:
            self.save()

    def validate(self) -> dict[str, float]:
        """The EMA model on the first ``val_batches`` validation batches (:func:`.validation.validate`)."""
        return validate(self)

    def _log(self, values: dict) -> None:
        self.run_log.write(self.step, values)

    def save(self) -> None:
        """Checkpoint (rank 0): ``model.safetensors`` (the EMA weights, loadable by the app),
        ``raw.safetensors`` (non-EMA weights) and ``training_state.safetensors`` (:mod:`.run_files`)."""
        if self.world > 1:
            dist.barrier()
        if self.rank == 0 and self.run_dir is not None:
            save_run(self)

    def resume(self) -> None:
        """Continue from the last checkpoint in ``run_dir`` (weights, optimizers, step, RNG)."""
        resume_run(self)
