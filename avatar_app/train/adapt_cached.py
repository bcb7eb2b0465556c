"""Cheap personalization: adapt part of the generator over inputs computed once.

The app always animates the recording's reference frame, so in the pairs personalization
trains on only the driving frame changes.  With the warp network, the generator's encoder
and the decoder stages before ``plan.start`` frozen, everything up to that point is a fixed
function of the driving frame: it is computed once per training frame (:class:`FrameCache`:
the analytic flow, the warp network's grid, occlusion and warped source, the warped source
features, the frozen stages' output, the landmark image) and each step runs only the adapted
stages forward and backward.  Which parameters pay most per second on a CPU was measured
(docs/PERSONALIZATION.md); :data:`PLANS` holds the candidates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..models.flow import AnalyticFlow
from ..models.portrait import NET_SIZE, PortraitModel
from .losses import grow_regions, pyramid_l1
from .recording_pairs import FramePairs


MIN_WINDOW = 32  # px: the decoder's first stage works at 1/8 of it, and its instance norms need more than one pixel


@dataclass(frozen=True)
class Plan:
    """What a cached adaptation adapts.

    ``start``: the decoder stage whose output is cached (0: only the warped features; see
    :meth:`~avatar_app.models.generator.Generator.decode`; -1: only the analytic flow, so the warp
    network runs each step); ``params``: ``"decoder"`` (every weight of the stages after ``start``,
    the top and the head; with ``start = -1`` also the warp network's, at ``warp_lr_scale`` × the
    rate, as MetaPortrait adapts it) or ``"modulation"`` (only the identity modulation, the AdaIN
    layers of the stages after ``start``) or ``"warp"`` (the warp network alone, ``start = -1``) or ``"all"``
    (:data:`FULL_PLANS`: not cached; every weight of the warp network and the generator on random pairs);
    ``lr``: Adam's rate; ``decay``: lower it along a cosine to 0 at the last step the budget buys;
    ``w_warped``: weight of the warped source's pyramid L1 in the loss (the trainer's ``w_warped``), so the
    warp network keeps doing the moving; ``w_ssim``: weight of multi-scale SSIM (the trainer's ``w_ssim``);
    ``frozen``: parts of parameter names the plan leaves as they are, although ``params`` would adapt them
    (cached plans: an ``"all"`` plan's optimiser takes every weight, so it refuses a ``frozen``); ``decode``: ``False``
    scores the warped source alone (its pyramid L1), so the decoder never runs (a ``"warp"`` plan's only);
    ``window``: px of a random square (8-px aligned) of the frame the decoder decodes and is scored on in a step
    (0: the whole frame; a cached plan from the analytic flow only): the warp network still moves the whole
    frame, and the warped source's loss covers all of it.
    """

    name: str
    start: int
    params: str
    lr: float
    batch_size: int = 4
    warp_lr_scale: float = 0.1
    decay: bool = False  # the rate falls (cosine) to 0 over the steps the budget buys (known after the probe)
    w_warped: float = 0.0
    w_ssim: float = 0.0
    frozen: tuple[str, ...] = ()
    decode: bool = True
    window: int = 0

    def __post_init__(self) -> None:
        if self.params == "all" and self.frozen:
            raise ValueError(f"plan {self.name!r} adapts every weight (params 'all'); frozen applies to cached plans")
        if not self.decode and (self.params != "warp" or self.start != -1):
            raise ValueError(f"plan {self.name!r}: only a 'warp' plan from the analytic flow (start -1) can leave "
                             "the decoder out (decode False)")
        if self.window and (self.start != -1 or not self.decode or self.params == "all" or self.window % 8
                            or not MIN_WINDOW <= self.window < NET_SIZE):
            raise ValueError(f"plan {self.name!r}: a window (here {self.window} px) is for a cached plan from the "
                             f"analytic flow that decodes, a multiple of 8 from {MIN_WINDOW} to {NET_SIZE - 8}")


PLANS = {
    # batch 1 at 6e-4, decaying: the most later-segment gain per CPU second of those measured (batch 2 until the
    # thirty-sixth session: batch 1 buys about 1.7x the steps, ahead at equal time on 12 of 17 training and 9 of 13
    # validation people); the warped source's L1 at 16 (the lite training's 0.5 before), so the warp network learns
    # mostly from where the source lands: ahead on 14 of 17 training people and 11 of 13 validation people, +0.23 dB
    # on average (docs/PERSONALIZATION_WARP_LOSS.md).  The decoder's SPADE branch (the condition
    # encoder and the per-pixel scale and shift it makes from the landmark image) stays as it is: not adapting it
    # makes a step 12-21 % cheaper (its convolutions at 128 px need no backward) and gained as much per step
    # (docs/PERSONALIZATION_ROUNDS.md, *The SPADE branch left as it is*).  The decoder decodes a random 160 px
    # window of the 256 frame (thirty-seventh session): a step costs ~0.6x, and at equal CPU time (400 window steps
    # against 245 whole) ahead on 13 of 17 training people (+0.10 dB on average) and 9 of 13 validation people
    # (+0.11) (docs/PERSONALIZATION_WARP_LOSS.md, *A decoded window*)
    "warp+decoder": Plan("warp+decoder", -1, "decoder", 6e-4, batch_size=1, decay=True, w_warped=16.0,
                         frozen=(".shared.", ".spade."), window=160),
    "warp": Plan("warp", -1, "warp", 3e-4, warp_lr_scale=1.0),
    # the warp network alone, scored on the warped source only: no decoder forward or backward, so a 2-core step
    # of 4 frames costs about half of warp+decoder's of 2; not auto's: two validation people of 13 lose 1.1-1.7 dB
    # (docs/PERSONALIZATION_WARP_LOSS.md)
    "warp-alone": Plan("warp-alone", -1, "warp", 3e-4, warp_lr_scale=1.0, decay=True, decode=False),
    "decoder": Plan("decoder", 0, "decoder", 3e-4),
    "late": Plan("late", 2, "decoder", 5e-4),
    "head": Plan("head", 3, "decoder", 1e-3),
    "modulation": Plan("modulation", 0, "modulation", 1e-3),
}


FULL_PLANS = {
    # every weight of the warp network (at 0.1x) and the generator on random pairs of the recording: the GPU's plan
    # (docs/PERSONALIZATION_REAL_FACES.md, *Personalization within 10 s on a GPU*)
    "full": Plan("full", -1, "all", 1e-4, batch_size=4),
}


def cosine_rates(opt: torch.optim.Optimizer, rates: list[float], done: int, horizon: int | None) -> None:
    """Set ``opt``'s group rates to ``rates`` times a cosine falling from 1 at step 0 to 0 at ``horizon`` (the steps
    the budget buys in all; ``None``: not known yet, the full rates)."""
    if horizon:
        scale = 0.5 * (1.0 + math.cos(math.pi * min(1.0, done / horizon)))
        for g, rate in zip(opt.param_groups, rates):
            g["lr"] = rate * scale


CACHE_FRAMES = 48  # training frames a cached plan computes inputs for, spread over the recording


def cache_picks(train_idx: list[int], frames: int = CACHE_FRAMES) -> list[int]:
    """The (at most ``frames``) training frames of ``train_idx`` a cached plan caches, spread evenly over it."""
    picks = np.linspace(0, len(train_idx) - 1, min(frames, len(train_idx))).round().astype(int)
    return [train_idx[i] for i in np.unique(picks)]


def inner_optimizer(model: PortraitModel, lr: float, warp_lr_scale: float) -> torch.optim.Optimizer:
    """The ``full`` plan's optimiser (personalization on a GPU, and Reptile's default inner loop): Adam over the
    warp network (at ``warp_lr_scale`` × ``lr``) and the generator."""
    return torch.optim.Adam([
        {"params": model.warp.parameters(), "lr": lr * warp_lr_scale},
        {"params": model.generator.parameters(), "lr": lr},
    ], betas=(0.9, 0.999))


ALL_ADAPTED = ("warp.", "generator.")  # what a FULL_PLANS plan adapts (and Reptile's default inner loop)


def adapted_parameters(model: PortraitModel, plan: Plan) -> dict[str, torch.nn.Parameter]:
    """The parameters ``plan`` adapts, by their names in ``model``."""
    if plan.params == "all":
        return {n: p for n, p in model.named_parameters() if n.startswith(ALL_ADAPTED)}
    g = model.generator
    stages = [name for k, name in enumerate(("dec32", "dec64", "dec128"), start=1) if k > plan.start]
    prefixes = tuple(f"generator.{n}." for n in stages + (["to_top", "top", "head"] if plan.params == "decoder"
                                                          else (["top"] if g.top is not None else [])))
    if plan.params == "warp":
        prefixes = ()
    if plan.start < 0:  # the warp network too, but not its source code (computed once per source)
        prefixes += ("warp.",)
    chosen = {n: p for n, p in model.named_parameters()
              if n.startswith(prefixes) and not n.startswith(("warp.code_net.", "warp.code_fc."))}
    if plan.params == "modulation":
        chosen = {n: p for n, p in chosen.items() if ".adain." in n}
    chosen = {n: p for n, p in chosen.items() if not any(part in n for part in plan.frozen)}
    if not chosen:
        raise ValueError(f"plan {plan.name!r} adapts nothing in this model")
    return chosen


def pair_items(clip, indices: list[int], identity: np.ndarray):
    """The samples animating ``clip``'s reference frame into each frame of ``indices`` (the
    :class:`~.inputs.FrameFlowInputs` a :class:`FrameCache` is built from; each frame's landmark image and
    triangle map drawn once, on first use)."""
    from .inputs import FrameFlowInputs
    return FrameFlowInputs(FramePairs(clip, sorted(set(indices) | {clip.reference}), identity,
                                      pairs=[(clip.reference, i) for i in indices]))


class FrameCache:
    """What the frozen part of ``model`` computes for each training frame, animating ``clip``'s
    reference frame: per frame ``warped_source (3, S, S)``, ``driving (3, S, S)`` and the landmark image
    ``cond (6, S, S)`` with its eye and mouth masks dilated for the loss, ``regions (2, S, S)`` (these three uint8:
    about 0.7 MB a frame), and the decoder's
    inputs from ``plan.start`` on (``h`` and the warped features the adapted stages read).  Built in chunks of
    ``chunk`` frames without gradients.  ``items``: :func:`pair_items` of the same arguments, made beforehand
    (e.g. in a loader's worker)."""

    def __init__(self, model: PortraitModel, clip, indices: list[int], identity: np.ndarray, start: int,
                 device: str | torch.device = "cpu", chunk: int = 8, items=None):
        self.start, self.device = start, torch.device(device)
        items = items if items is not None else pair_items(clip, indices, identity)
        flow = AnalyticFlow(NET_SIZE).to(self.device)
        parts: dict[str, list[torch.Tensor]] = {}
        was_training = model.training
        model.eval()
        with torch.no_grad():
            src = None
            for k in range(0, len(indices), chunk):
                b = torch.utils.data.default_collate([items[j] for j in range(k, min(k + chunk, len(indices)))])
                b = {key: v.to(self.device) if torch.is_tensor(v) else v for key, v in b.items()}
                n = b["driving"].shape[0]
                if src is None:  # the reference frame, encoded once
                    src = model.encode_source(b["source"][:1], b["source_cond"][:1], b["identity"][:1])
                grid, mouth, coord, big = flow.for_networks(b["source_points"][..., :2], b["driving_points"][..., :2],
                                                            b["tri_ids"])
                s = _expand(src, n)
                cond = (b["driving_cond"] * 255.0 + 0.5).to(torch.uint8)
                keep = {"driving": (b["driving"] * 255.0 + 0.5).to(torch.uint8),  # the frames' own uint8 values
                        "cond": cond,  # and the eye and mouth masks dilated for the loss, once (a max: exact)
                        "regions": grow_regions(cond[:, 3:5].float()).to(torch.uint8)}
                if start < 0:  # the warp network runs in each step: keep its inputs
                    keep |= {"grid": grid, "mouth": mouth, "coord": coord, "mouth_amount": b["mouth_amount"], "big": big}
                else:
                    keep |= self._frozen_part(model, s, b, grid, mouth, coord, big, start)
                for key, v in keep.items():
                    parts.setdefault(key, []).append(v.contiguous())
        model.train(was_training)
        self.tensors = {k: torch.cat(v) for k, v in parts.items()}
        self.identity = src.identity
        self.source = src
        self.size = len(indices)

    @staticmethod
    def _frozen_part(model: PortraitModel, s, b: dict, grid, mouth, coord, big, start: int) -> dict:
        """The warp network's warped source and the decoder's inputs from stage ``start`` on."""
        gen = model.generator
        out = model.warp_frame(s, b["driving_cond"], grid, mouth, coord, b["mouth_amount"], big)
        warped = gen.warp_features(s.features, out["grid"], out["occlusion"])
        h = None
        for stage in range(1, start + 1):
            h = gen.stage(stage, h, warped, b["driving_cond"], s.identity)
        keep = {"warped_source": out["warped"], **{f"f{i}": warped[i] for i in range(3) if _reads(start, i)}}
        return keep | ({"h": h} if h is not None else {})

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def batch(self, picks: list[int]) -> dict:
        """The cached inputs of frames ``picks`` (positions in the cache) as a batch."""
        idx = torch.as_tensor(picks, device=self.device)
        b = {k: t.index_select(0, idx) for k, t in self.tensors.items()}
        b["cond"] = b["cond"].float() / 255.0
        b["regions"] = b["regions"].float() / 255.0
        b["driving"] = b["driving"].float() / 255.0  # exactly the float frame (uint8 / 255 in float32)
        b["warped"] = [b.pop(f"f{i}", None) for i in range(3)]
        b["identity"] = self.identity.expand(len(picks), -1)
        b["source"] = _expand(self.source, len(picks))
        return b


def plan_optimizer(model: PortraitModel, plan: Plan, lr: float | None = None) -> tuple[torch.optim.Optimizer, list]:
    """Adam over ``plan``'s parameters (the warp network's at ``plan.warp_lr_scale`` × the rate);
    every other parameter of ``model`` stops taking gradients.  Returns the optimiser and the parameters."""
    lr = lr or plan.lr
    chosen = adapted_parameters(model, plan)
    model.requires_grad_(False)
    for p in chosen.values():
        p.requires_grad_(True)
    warp = [p for n, p in chosen.items() if n.startswith("warp.")]
    rest = [p for n, p in chosen.items() if not n.startswith("warp.")]
    groups = [{"params": rest, "lr": lr}] + ([{"params": warp, "lr": lr * plan.warp_lr_scale}] if warp else [])
    # fused: one kernel over all the tensors instead of a loop of small ops per tensor (CPU and CUDA): on two CPU threads
    # the plan's 92 tensors update in 0.75 ms instead of 2.8, a 160 px window step 0.055 s instead of 0.060 (medians,
    # interleaved in one process); the same update
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype == torch.float32 for p in chosen.values())
    return torch.optim.Adam(groups, betas=(0.9, 0.999), fused=fused), warp + rest


def cached_steps(trainer, model: PortraitModel, cache: FrameCache, plan: Plan, batch_size: int, lr: float,
                 seed: int):
    """The step function of a cached plan over ``cache`` (personalization's, and Reptile's inner loop with
    ``inner_plan``): ``step(done, horizon) -> loss`` takes one Adam step (:func:`plan_optimizer`) on ``batch_size``
    random cached frames; with ``plan.decay`` the rate falls along a cosine to 0 at step ``horizon`` (the steps
    the budget buys in all; ``None``: not known yet, the full rate).  Returns it and the adapted parameters' names."""
    opt, params = plan_optimizer(model, plan, lr)
    rng = np.random.default_rng(seed)
    take = min(batch_size, cache.size)
    rates = [g["lr"] for g in opt.param_groups]

    def step(done: int, horizon: int | None) -> float:
        """One step after ``done``; ``horizon``: the steps the budget buys in all (``None``: not yet known)."""
        if plan.decay:
            cosine_rates(opt, rates, done, horizon)
        opt.zero_grad(set_to_none=True)
        with torch.autocast(trainer.device.type, dtype=trainer.amp_dtype, enabled=trainer.use_amp):
            picks = rng.choice(cache.size, take, replace=False).tolist()
            loss = cached_loss(trainer, model, cache, picks, plan.decode, window_at(plan.window, rng))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return float(loss.detach())

    return step, sorted(adapted_parameters(model, plan))


def full_steps(trainer, model: PortraitModel, draw, batch_size: int, lr: float, warp_lr_scale: float,
               decay: bool = False):
    """The step function of a :data:`FULL_PLANS` plan (personalization's on a GPU, and Reptile's inner loop with
    that ``inner_plan``): ``step(done, horizon) -> loss`` takes one Adam step (:func:`inner_optimizer`) over every
    weight of the warp network and the generator on the batch ``draw(batch_size)`` returns; with ``decay`` the rate
    falls along a cosine to 0 at step ``horizon``.  Returns it and the adapted parameters' names."""
    opt = inner_optimizer(model, lr, warp_lr_scale)
    params = [p for g in opt.param_groups for p in g["params"]]
    rates = [g["lr"] for g in opt.param_groups]

    def step(done: int, horizon: int | None) -> float:
        if decay:
            cosine_rates(opt, rates, done, horizon)
        batch = draw(batch_size)
        opt.zero_grad(set_to_none=True)
        loss, _ = trainer.compute_losses(batch, model=model)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return float(loss.detach())

    return step, sorted(n for n, _ in model.named_parameters() if n.startswith(ALL_ADAPTED))


def _reads(start: int, level: int) -> bool:
    """Whether the stages after ``start`` read warped feature ``level`` (0: S/2, 1: S/4, 2: S/8)."""
    return start < 3 - level


def _expand(src, n: int):
    """The once-encoded source repeated for a chunk of ``n`` frames."""
    from ..models.portrait import SourceCode

    rep = (lambda t: t.expand(n, *t.shape[1:]))
    return SourceCode(rep(src.image), rep(src.cond), rep(src.identity), rep(src.code), [rep(f) for f in src.features])


def window_at(size: int, rng: np.random.Generator, frame: int = NET_SIZE) -> tuple[int, int, int] | None:
    """A random ``size`` px window ``(y, x, size)`` of the ``frame`` px frame, 8-px aligned (``None`` for 0)."""
    if not size:
        return None
    y, x = rng.integers(0, (frame - size) // 8 + 1, size=2) * 8
    return int(y), int(x), size


def cached_loss(trainer, model: PortraitModel, cache: FrameCache, picks: list[int],
                decode: bool = True, window: tuple[int, int, int] | None = None) -> torch.Tensor:
    """Personalization's loss (the trainer's image losses, and its warped-source L1 where ``w_warped`` is set) of
    the adapted stages on cached frames; ``decode=False`` (a cache from the analytic flow): the warped source's
    pyramid L1 alone, the decoder not run; ``window`` (:func:`window_at`; a cache from the analytic flow): the decoder
    decodes, and the image losses score, only that square of the frame (the warped source's L1 still all of it)."""
    b = cache.batch(picks)
    if not decode:
        if cache.start >= 0:
            raise ValueError("a loss without the decoder needs a cache from the analytic flow (start -1)")
        out = model.warp_frame(b["source"], b["cond"], b["grid"], b["mouth"], b["coord"], b["mouth_amount"], b["big"])
        return pyramid_l1(out["warped"], b["driving"])
    truth, cond, regions = b["driving"], b["cond"], b["regions"]
    if cache.start < 0:
        out = model.warp_frame(b["source"], cond, b["grid"], b["mouth"], b["coord"], b["mouth_amount"], b["big"])
        warped = out["warped"]  # scored whole: the warp network moves the whole frame
        y, x, n = window or (0, 0, warped.shape[-1])
        cut = (lambda t: t[:, :, y:y + n, x:x + n])  # noqa: E731
        gen = model.generator
        feats = gen.warp_features(b["source"].features, out["grid"][:, y:y + n, x:x + n], cut(out["occlusion"]), n)
        image, _ = gen.decode(feats, cut(cond), b["identity"], cut(warped))
        truth, cond, regions = cut(truth), cut(cond), cut(regions)
    elif window is not None:
        raise ValueError("a decoded window needs a cache from the analytic flow (start -1)")
    else:
        image, _ = model.generator.decode(b["warped"], cond, b["identity"], b["warped_source"], cache.start, b.get("h"))
        warped = b["warped_source"]
    parts = trainer._image_losses(image, truth, cond, regions=regions)
    if trainer.cfg.w_warped:
        parts["warped"] = trainer.cfg.w_warped * pyramid_l1(warped, b["driving"])
    return sum(parts.values())
