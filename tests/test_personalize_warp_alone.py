"""Personalization of the warp network alone, the decoder left out of the loss (issue 14)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avatar_app.train.adapt_cached import PLANS, FrameCache, FramePairs, Plan, cached_loss, cached_steps
from avatar_app.train.config import TrainConfig
from avatar_app.train.inputs import FrameFlowInputs
from avatar_app.train.trainer import Trainer

from test_meta import _cast_clip
from test_personalize_fast import _trained_like

torch.set_num_threads(1)


def test_the_loss_without_the_decoder_is_the_trainers_warped_source_term(astronaut_source):
    """On the same pairs, the decoder-free loss is the trainer's own warped-source L1 (computed from scratch),
    without its weight, and differs from the whole loss."""
    clip, model = _cast_clip(astronaut_source), _trained_like()
    ident, frames = np.linspace(-1, 1, 128).astype(np.float32), [3, 7, 11]
    cache = FrameCache(model, clip, frames, ident, -1, chunk=2)
    trainer = Trainer(TrainConfig(stage="meta", batch_size=3, num_workers=0, w_gan=0.0, amp=False, w_warped=0.5), None,
                      train_set=[], model=model)
    items = FrameFlowInputs(FramePairs(clip, frames + [0], ident, pairs=[(0, f) for f in frames]))
    batch = torch.utils.data.default_collate([items[k] for k in range(3)])
    model.eval()
    with torch.no_grad():
        total, parts = trainer.compute_losses(batch, model=model)
        alone = cached_loss(trainer, model, cache, [0, 1, 2], decode=False)
    assert alone.item() == pytest.approx(parts["warped"].item() / 0.5, rel=1e-4, abs=1e-6)
    assert alone.item() > 0 and abs(total.item() - alone.item()) > 1e-3


def test_a_warp_alone_step_never_runs_the_decoder_and_moves_only_the_warp_network(astronaut_source):
    model = _trained_like()
    cache = FrameCache(model, _cast_clip(astronaut_source), [3, 7, 11], np.zeros(128, np.float32), -1, chunk=2)
    trainer = Trainer(TrainConfig(stage="meta", num_workers=0, w_gan=0.0, amp=False), None, train_set=[], model=model)
    plan = PLANS["warp-alone"]
    calls = []
    hooks = [m.register_forward_pre_hook(lambda *_: calls.append(1)) for m in model.generator.modules()]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    step, adapted = cached_steps(trainer, model, cache, plan, plan.batch_size, 1e-2, seed=0)
    try:
        losses = [step(k, 6) for k in range(6)]
    finally:
        for hook in hooks:
            hook.remove()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert not calls, "the decoder ran"
    assert changed and changed <= set(adapted) and all(n.startswith("warp.") for n in adapted)
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


@pytest.mark.parametrize("params,start", [("decoder", -1), ("warp", 0), ("modulation", 0)])
def test_only_a_warp_plan_from_the_analytic_flow_can_leave_the_decoder_out(params, start):
    with pytest.raises(ValueError, match="decode False"):
        Plan("p", start, params, 1e-3, decode=False)
