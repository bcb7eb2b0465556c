"""Personalization's cached loss (issue 14): the trainer's own loss on the same pairs, computed once; the warp
network adapted alone, the decoder left out of the loss; and a window of the frame decoded (the CPU plan's step)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avatar_app.train.adapt_cached import PLANS, FrameCache, Plan, cached_loss, cached_steps, window_at
from avatar_app.train.config import TrainConfig
from avatar_app.train.inputs import FrameFlowInputs
from avatar_app.train.losses import pyramid_l1
from avatar_app.train.recording_pairs import FramePairs
from avatar_app.train.trainer import Trainer

from test_meta import _cast_clip
from test_personalize_fast import _trained_like

torch.set_num_threads(1)


def _pairs(clip, model, ident, frames: list[int], start: int, w_warped: float):
    """A cache of ``frames`` from ``start``, a trainer with that warped-source weight, and the same (reference,
    frame) pairs as the trainer's batch."""
    cache = FrameCache(model, clip, frames, ident, start, chunk=2)
    trainer = Trainer(TrainConfig(stage="meta", batch_size=3, num_workers=0, w_gan=0.0, amp=False, w_warped=w_warped),
                      None, train_set=[], model=model)
    items = FrameFlowInputs(FramePairs(clip, frames + [0], ident, pairs=[(0, f) for f in frames]))
    return cache, trainer, torch.utils.data.default_collate([items[k] for k in range(len(frames))])


@pytest.mark.parametrize("w_warped", [0.0, PLANS["warp+decoder"].w_warped])  # the image losses alone; the CPU plan's
@pytest.mark.parametrize("plan", sorted(PLANS))
def test_cached_loss_is_the_trainers_loss_on_the_same_pairs(astronaut_source, plan, w_warped):
    """What the cache holds, run through the adapted stages, gives exactly the loss the trainer computes
    from scratch on the same (reference, frame) pairs: nothing is lost by computing it once.  A plan that leaves
    the decoder out: exactly the trainer's warped-source term, unweighted."""
    model, ident = _trained_like(), np.linspace(-1, 1, 128).astype(np.float32)
    decode = PLANS[plan].decode
    weight = w_warped if decode else (w_warped or 1.0)  # without the decoder: the trainer's warped term to compare
    cache, trainer, batch = _pairs(_cast_clip(astronaut_source), model, ident, [3, 7, 11], PLANS[plan].start, weight)
    model.eval()
    with torch.no_grad():
        want, parts = trainer.compute_losses(batch, model=model)
        got = cached_loss(trainer, model, cache, [0, 1, 2], decode)
    if not decode:
        want = parts["warped"] / trainer.cfg.w_warped
    assert got.item() == pytest.approx(want.item(), rel=1e-4, abs=1e-6)
    assert cache.size == 3 and cache.nbytes() > 0


def test_the_loss_without_the_decoder_differs_from_the_whole(astronaut_source):
    model = _trained_like()
    cache, trainer, _ = _pairs(_cast_clip(astronaut_source), model, np.zeros(128, np.float32), [3, 7, 11], -1, 0.5)
    model.eval()
    with torch.no_grad():
        whole, alone = (cached_loss(trainer, model, cache, [0, 1, 2], decode) for decode in (True, False))
    assert alone.item() > 0 and abs(whole.item() - alone.item()) > 1e-3


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


def test_a_window_of_the_frame_samples_the_same_features_as_the_whole_frame(astronaut_source):
    """The decoder's inputs for a window are exactly that square of the whole frame's (windows are 8-px aligned, so
    each feature level's window starts on a whole pixel of it).  (Its output is not the whole frame's cropped: the
    instance norms see the window's statistics and the convolutions pad at its edges.)"""
    model = _trained_like()
    cache = FrameCache(model, _cast_clip(astronaut_source), [3, 7], np.zeros(128, np.float32), -1, chunk=2)
    b = cache.batch([0, 1])
    gen = model.generator
    with torch.no_grad():
        out = model.warp_frame(b["source"], b["cond"], b["grid"], b["mouth"], b["coord"], b["mouth_amount"], b["big"])
        whole = gen.warp_features(b["source"].features, out["grid"], out["occlusion"])
        for y, x, n in [(0, 0, 160), (96, 40, 160), (128, 128, 128), (8, 200, 56)]:
            part = gen.warp_features(b["source"].features, out["grid"][:, y:y + n, x:x + n],
                                     out["occlusion"][:, :, y:y + n, x:x + n], n)
            for level, d in zip(range(3), (2, 4, 8)):
                assert part[level].shape[-2:] == (n // d, n // d)
                want = whole[level][:, :, y // d:(y + n) // d, x // d:(x + n) // d]
                assert torch.allclose(part[level], want, atol=1e-5), (y, x, n, d)


def test_a_window_step_decodes_only_the_window_and_adapts(astronaut_source):
    model = _trained_like()
    cache = FrameCache(model, _cast_clip(astronaut_source), [3, 7, 11], np.zeros(128, np.float32), -1, chunk=2)
    trainer = Trainer(TrainConfig(stage="meta", num_workers=0, w_gan=0.0, amp=False, w_warped=16.0), None,
                      train_set=[], model=model)
    plan = Plan("w", -1, "decoder", 1e-3, batch_size=1, w_warped=16.0, window=96)
    sizes = []
    hook = model.generator.head.register_forward_pre_hook(lambda _, args: sizes.append(tuple(args[0].shape[-2:])))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    step, adapted = cached_steps(trainer, model, cache, plan, 1, plan.lr, seed=0)
    try:
        losses = [step(k, 12) for k in range(12)]
    finally:
        hook.remove()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert set(sizes) == {(96, 96)}
    assert any(n.startswith("warp.") for n in changed) and any(n.startswith("generator.") for n in changed)
    assert changed <= set(adapted) and all(np.isfinite(losses))
    model.eval()
    with torch.no_grad():  # the window's loss is not the whole frame's
        whole = cached_loss(trainer, model, cache, [0])
        part = cached_loss(trainer, model, cache, [0], window=(64, 64, 96))
    assert abs(whole.item() - part.item()) > 1e-4


def test_windows_are_aligned_inside_the_frame_and_reach_its_edges():
    rng = np.random.default_rng(0)
    assert window_at(0, rng) is None
    drawn = [window_at(160, rng) for _ in range(400)]
    assert all(n == 160 and y % 8 == 0 and x % 8 == 0 and 0 <= y <= 96 and 0 <= x <= 96 for y, x, n in drawn)
    assert {0, 96} <= {y for y, _, _ in drawn} and {0, 96} <= {x for _, x, _ in drawn}


@pytest.mark.parametrize("start,params,window,decode", [(0, "decoder", 160, True), (-1, "warp", 160, False),
                                                        (-1, "decoder", 100, True), (-1, "decoder", 256, True),
                                                        (-1, "decoder", 8, True),
                                                        (-1, "all", 128, True)])
def test_only_a_decoding_plan_from_the_analytic_flow_takes_an_aligned_window(start, params, window, decode):
    with pytest.raises(ValueError, match="window"):
        Plan("p", start, params, 1e-3, window=window, decode=decode)


def test_a_window_needs_a_cache_from_the_analytic_flow(astronaut_source):
    model = _trained_like()
    cache, trainer, _ = _pairs(_cast_clip(astronaut_source), model, np.zeros(128, np.float32), [3, 7], 0, 0.0)
    with pytest.raises(ValueError, match="analytic flow"):
        cached_loss(trainer, model, cache, [0], window=(0, 0, 128))


def test_a_window_loss_scores_that_square_of_every_input_and_the_whole_warped_source(astronaut_source):
    """Against a reference built by hand for an off-diagonal window (y != x, so swapping them would show): the grid,
    occlusion, landmark image, regions and frame cut at the same square, the warped source's L1 over the whole
    frame."""
    model = _trained_like()
    with torch.no_grad():  # the generator's own colours half the image, so the warped features count in the loss
        model.generator.head.bias[3].zero_()
    cache, trainer, _ = _pairs(_cast_clip(astronaut_source), model, np.zeros(128, np.float32), [3, 7], -1, 16.0)
    y, x, n = 16, 72, 96
    model.eval()
    with torch.no_grad():
        got = cached_loss(trainer, model, cache, [1], window=(y, x, n))
        swapped = cached_loss(trainer, model, cache, [1], window=(x, y, n))
        b = cache.batch([1])
        out = model.warp_frame(b["source"], b["cond"], b["grid"], b["mouth"], b["coord"], b["mouth_amount"], b["big"])
        gen = model.generator
        feats = gen.warp_features(b["source"].features, out["grid"][:, y:y + n, x:x + n],
                                  out["occlusion"][:, :, y:y + n, x:x + n], n)
        image, _ = gen.decode(feats, b["cond"][:, :, y:y + n, x:x + n], b["identity"],
                              out["warped"][:, :, y:y + n, x:x + n])
        parts = trainer._image_losses(image, b["driving"][:, :, y:y + n, x:x + n], b["cond"][:, :, y:y + n, x:x + n],
                                      regions=b["regions"][:, :, y:y + n, x:x + n])
        want = sum(parts.values()) + 16.0 * pyramid_l1(out["warped"], b["driving"])
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    assert abs(swapped.item() - want.item()) > 1e-4  # the check could fail
