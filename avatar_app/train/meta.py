"""Meta-learning (Reptile, first-order) over identities: an initialisation that adapts fast.

Each outer step picks one identity (a task), copies the model, takes ``inner_steps``
optimiser steps on that identity's self-reenactment pairs (the warp network at
``warp_lr_scale`` × the inner rate, as MetaPortrait does), and moves the meta-weights
part of the way towards the adapted weights:

    θ ← θ + ε · (θ_adapted − θ),   ε = meta_lr × schedule

With several ranks each takes its own task and the moves are averaged across ranks
(``all_reduce``), i.e. a batch of tasks per outer step.

With ``inner_plan`` (a name of :data:`~.adapt_cached.PLANS`) the inner loop is that cached plan as
personalization runs it on a CPU (its cosine squeezed into the ``inner_steps``, where the app's spans the
~100 steps its budget buys): a recording of one training person (:mod:`.meta_tasks`), its first or rest
frame (``inner_reference``) the source for the whole loop, only the plan's parameters adapted (its optimiser,
rate, schedule over the inner loop, batch and loss weights), and only those moved by the outer step — the
weights learn to adapt the way they will be adapted.  With a name of :data:`~.adapt_cached.FULL_PLANS`
(``"full"``) it is the GPU's plan on such a recording: every warp and generator weight on random pairs of
its frames (those a cached plan would cache), as personalization draws them.
"""

from __future__ import annotations

import copy
import logging
from collections import defaultdict
from dataclasses import replace

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from ..errors import InputFileError
from ..models.portrait import PortraitModel
from .adapt_cached import (ALL_ADAPTED, FULL_PLANS, PLANS, FrameCache, Plan, adapted_parameters, cached_steps,
                           full_steps, inner_optimizer)
from .fit_clock import FitClock
from .recording_pairs import ResidentPairs
from .trainer import Trainer

log = logging.getLogger(__name__)


def plan_config(cfg, plan: Plan):
    """``cfg`` with the inner-loop settings ``plan`` fixes (as personalization sets them): batch, rate, the warp
    network's rate scale, the loss weights; no discriminator."""
    return replace(cfg, batch_size=plan.batch_size, inner_lr=plan.lr, warp_lr_scale=plan.warp_lr_scale,
                   w_warped=plan.w_warped, w_ssim=plan.w_ssim, w_gan=0.0)


class MetaTrainer(Trainer):
    """Reptile over the identities of a prepared dataset (``stage = "meta"``)."""

    def __init__(self, cfg, run_dir, train_set=None, val_set=None, data=None, device: str = "cpu", recordings=None):
        if cfg.stage != "meta":
            raise ValueError("MetaTrainer runs the 'meta' stage")
        self.plan = None
        if cfg.inner_plan:
            self.plan = PLANS.get(cfg.inner_plan) or FULL_PLANS.get(cfg.inner_plan)
            if self.plan is None:
                raise InputFileError(f"inner_plan '{cfg.inner_plan}' is not a personalization plan; choose one of "
                                     f"{', '.join(sorted(FULL_PLANS) + sorted(PLANS))} (or \"\" for every warp and "
                                     f"generator weight on pairs of a person's clips).")
            cfg = plan_config(cfg, self.plan)
            log.info("inner loop: plan %s (batch %d, lr %g, warp x%g, w_warped %g, w_ssim %g, decay %s, decoder %s)",
                     self.plan.name, cfg.batch_size, cfg.inner_lr, cfg.warp_lr_scale, cfg.w_warped, cfg.w_ssim,
                     self.plan.decay, "in the loss" if self.plan.decode else "left out")
        super().__init__(cfg, run_dir, train_set=train_set, val_set=val_set, data=data, device=device)
        if self.plan is not None:
            from .meta_tasks import RecordingTasks

            self.recordings = (recordings if recordings is not None else
                               RecordingTasks.from_prepared(data, cfg.val_fraction, cfg.inner_record_s, cfg.seed,
                                                            reference=cfg.inner_reference))
            self.adapted = sorted(adapted_parameters(self.model, self.plan))
        else:
            self.tasks = self._group_by_identity()
            self.adapted = [n for n, _ in self.model.named_parameters() if n.startswith(ALL_ADAPTED)]

    def _group_by_identity(self) -> list[list[int]]:
        ds = getattr(self.train_set, "base", self.train_set)
        per_clip = getattr(ds, "clip_identities", None)
        if per_clip is None:  # a plain dataset: one task per distinct "clip" value
            groups = defaultdict(list)
            for i in range(len(self.train_set)):
                groups[int(self.train_set[i]["clip"])].append(i)
            return [groups[k] for k in sorted(groups)]
        groups = defaultdict(list)
        for i in range(len(self.train_set)):
            groups[per_clip[i % len(per_clip)]].append(i)
        return [groups[k] for k in sorted(groups)]

    def task_indices(self, step: int) -> list[list[int]]:
        """The sample indices of this rank's inner-loop batches at ``step`` (a pure function of seed,
        step and rank): one identity, ``inner_steps`` batches of its samples."""
        rng = np.random.default_rng((self.cfg.seed, step, self.rank))
        task = self.tasks[int(rng.integers(len(self.tasks)))]
        return [rng.choice(task, size=self.cfg.batch_size, replace=len(task) < self.cfg.batch_size).tolist()
                for _ in range(self.cfg.inner_steps)]

    def task_batches(self, step: int) -> list[dict]:
        """The inner-loop batches of this rank's task at ``step``, loaded here (deterministic)."""
        return [torch.utils.data.default_collate([self.train_set[int(i)] for i in idx])
                for idx in self.task_indices(step)]

    def _task_stream(self, start: int):
        """The batches of steps ``start``, ``start + 1``, … loaded by ``num_workers`` DataLoader
        workers ahead of the training (the same batches as :meth:`task_batches`); with ``inner_plan`` each
        step's ``(recording, inputs)`` instead."""
        if self.plan is not None:
            from .meta_tasks import TaskInputs

            steps = iter(range(start, 10**12))
            return iter(DataLoader(TaskInputs(self.recordings, self.rank), batch_size=None, sampler=steps,
                                   num_workers=self.cfg.num_workers, prefetch_factor=2))
        trainer = self

        class Batches:
            def __iter__(self):
                step = start
                while True:
                    yield from trainer.task_indices(step)
                    step += 1

        return iter(DataLoader(self.train_set, batch_sampler=Batches(), num_workers=self.cfg.num_workers))

    def adapt(self, batches: list[dict], model: PortraitModel | None = None) -> tuple[PortraitModel, list[float]]:
        """A copy of ``model`` (default: the meta-model) after one inner step per batch."""
        clone = copy.deepcopy(model if model is not None else self.model).train()
        opt = inner_optimizer(clone, self.cfg.inner_lr, self.cfg.warp_lr_scale)
        params = [p for g in opt.param_groups for p in g["params"]]
        losses = []
        for batch in batches:
            opt.zero_grad(set_to_none=True)
            total, _ = self.compute_losses(batch, model=clone)
            total.backward()
            if self.cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
            opt.step()
            losses.append(float(total.detach()))
        return clone, losses

    def adapt_plan(self, task, items=None, model: PortraitModel | None = None) -> tuple[PortraitModel, list[float]]:
        """A copy of ``model`` (default: the meta-model) after ``inner_steps`` steps of the inner plan on the
        recording ``task`` (a :class:`~.meta_tasks.Recording`; ``items``: its inputs, loaded beforehand): the
        source is the recording's reference frame throughout (a cached plan) or random pairs of its frames, the
        reference the source half the time (a :data:`~.adapt_cached.FULL_PLANS` plan, as personalization draws
        them), and the rate decays (if the plan's does) over the loop."""
        clone = copy.deepcopy(model if model is not None else self.model).train()
        rec = self.recordings
        items = items if items is not None else rec.inputs(task)
        seed = int(np.random.default_rng((self.cfg.seed, self.step, self.rank, 1)).integers(2**31))
        if self.plan.params == "all":
            draw = ResidentPairs(items, self.device, seed).batch
            step, _ = full_steps(self, clone, draw, self.cfg.batch_size, self.cfg.inner_lr, self.cfg.warp_lr_scale,
                                 self.plan.decay)
        else:
            cache = FrameCache(clone, rec.clip_frames(task), task.train, rec.identity(task), self.plan.start,
                               self.device, items=items)
            step, _ = cached_steps(self, clone, cache, self.plan, self.cfg.batch_size, self.cfg.inner_lr, seed)
        losses = [step(k, self.cfg.inner_steps) for k in range(self.cfg.inner_steps)]
        clone.requires_grad_(True)
        return clone, losses

    def reptile_step(self, batches: list[dict] | None = None, task=None, items=None) -> dict[str, float]:
        """One outer step over the inner batches (the ``full`` plan) or the recording ``task`` (``inner_plan``);
        returns the inner losses (first and last)."""
        adapted, losses = self.adapt(batches) if self.plan is None else self.adapt_plan(task, items)
        eps = self.cfg.meta_lr * self._lr_factor(self.step)
        new = dict(adapted.named_parameters())
        moved = set(self.adapted)
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                if name not in moved:
                    continue
                delta = new[name].detach() - p
                if self.world > 1:
                    dist.all_reduce(delta, op=dist.ReduceOp.SUM)
                    delta /= self.world
                p.add_(delta, alpha=eps)
        self._update_ema()
        self.step += 1
        return {"inner_first": losses[0], "inner_last": losses[-1], "total": losses[-1], "meta_rate": eps}

    def fit(self, steps: int | None = None, progress: bool = True, stop_after_s: float = 0.0) -> None:
        """Outer steps until ``steps`` (default ``cfg.steps``); ``stop_after_s`` as :meth:`Trainer.fit`'s."""
        from tqdm import tqdm

        target = steps if steps is not None else self.cfg.steps
        bar = tqdm(total=target, initial=self.step, unit="task", desc="meta", disable=not progress or self.rank != 0)
        clock, stop = FitClock(self.step, self.device, self.world), target
        stream = self._task_stream(self.step) if self.cfg.num_workers > 0 else None
        while self.step < min(target, stop):
            if self.plan is not None:
                task, items = (next(stream) if stream is not None
                               else (self.recordings.recording(self.step, self.rank), None))
                losses = self.reptile_step(task=task, items=items)
            else:
                batches = ([next(stream) for _ in range(self.cfg.inner_steps)] if stream is not None
                           else self.task_batches(self.step))
                losses = self.reptile_step(batches)
            self._bookkeeping(losses, bar, clock, self.cfg.batch_size * self.cfg.inner_steps)
            target, stop = self._lengths(clock, bar, target, stop, steps is None, stop_after_s)
        bar.close()
        self.save()
