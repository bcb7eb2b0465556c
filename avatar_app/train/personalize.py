"""Personalization: adapt the (meta-learned) model to one person in a wall-clock budget.

From a clip of the person: track every frame, take one aligned crop for the clip, hold
out every 10th frame, take the frame nearest the clip's rest expression as the reference (the
portrait and the neutral a profile keeps: not a first frame caught mid-word or in a blink), and
fine-tune on self-reenactment pairs until the wall-clock budget runs out or the caller cancels.  What is fine-tuned depends on the device (:func:`auto_plan`):
on a GPU the warp network and the generator on random pairs (the source is the reference
frame or another frame); on a CPU the warp network and the generator's decoder animating the
reference frame, with each frame's analytic flow and landmark image computed once
(:mod:`.adapt_cached`).  A probe measures what the budget buys first (:mod:`.budget`).  Before
and after, the model animates the reference frame with each held-out frame's landmarks and is
scored against that frame (PSNR, L1).
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ..capture.base import FrameSource
from ..errors import NoFaceError
from ..face.align import face_crop_box, transform_points, warp_to_crop
from ..face.retarget import rest_frame
from ..face.tracker import FaceTracker
from ..models.portrait import NET_SIZE, PortraitModel
from ..types import Landmarks
from .adapt_cached import CACHE_FRAMES, FULL_PLANS, PLANS, FrameCache, Plan, cache_picks, cached_steps, full_steps
from .budget import Estimate, Timing, expected_gain, probe
from .config import TrainConfig
from .inputs import FrameFlowInputs
from .recording_pairs import FramePairs, ResidentPairs
from .trainer import Trainer


class _Cancelled(Exception):
    """Raised inside :func:`personalize` when its :class:`CancelToken` is set."""


class CancelToken:
    """Set from any thread to stop personalization at the next step."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


@dataclass
class ClipFrames:
    """A person's frames as aligned 256 crops (BGR) with landmarks in crop px."""

    crops: list[np.ndarray]
    points: list[np.ndarray]
    reference: int = 0
    neutral: Landmarks | None = None  # the reference frame's landmarks in camera px (the user's neutral face)


@dataclass
class PersonalizeResult:
    model: PortraitModel
    steps: int
    seconds: float
    before: dict
    after: dict
    cancelled: bool
    curve: list[dict] = field(default_factory=list)  # {"seconds", "step", "psnr", "l1"} on held-out frames
    plan: str = "full"
    estimate: Estimate | None = None  # what the probe said the budget would buy
    adapted: list[str] | None = None  # names of the parameters adapted (what a profile stores)

    def metrics(self) -> dict:
        """Held-out PSNR and L1 before and after, steps and seconds (what a profile records)."""
        return {"psnr": {"before": self.before["psnr"], "after": self.after["psnr"]},
                "l1": {"before": self.before["l1"], "after": self.after["l1"]},
                "steps": self.steps, "seconds": self.seconds, "plan": self.plan,
                **({"estimated_steps": self.estimate.steps, "threads": self.estimate.timing.threads,
                    "cpu_share": round(self.estimate.timing.cpu_share, 3)} if self.estimate else {})}


def held_out_indices(n: int, reference: int = 0, every: int = 10) -> list[int]:
    """The clip frames personalization never trains on (every ``every``-th, never the reference)."""
    return [i for i in range(n) if i % every == every - 1 and i != reference]


def training_indices(n: int, reference: int = 0, every: int = 10) -> list[int]:
    """The clip frames personalization may train on: all but :func:`held_out_indices`."""
    held = set(held_out_indices(n, reference, every))
    return [i for i in range(n) if i not in held]


def clip_frames(source: FrameSource, tracker: FaceTracker | None = None, max_frames: int = 300,
                min_frames: int = 10) -> ClipFrames:
    """Track a clip and cut one aligned crop for all of it (the median face box)."""
    from .prepare import median_crop_box

    own = tracker is None
    tracker = tracker or FaceTracker()
    images, found = [], []
    try:
        with source:
            for frame in source:
                result = tracker.track(frame)
                if result.found:
                    images.append(frame.image)
                    found.append(result.landmarks.points)
                if len(images) >= max_frames:
                    break
    finally:
        if own:
            tracker.close()
    if len(images) < min_frames:
        raise NoFaceError(f"Only {len(images)} frames of the clip show a face (at least {min_frames} are needed); "
                          "record again facing the camera in good light.")
    box = median_crop_box([face_crop_box(p) for p in found])
    affine = box.image_to_crop(NET_SIZE)
    crops = [warp_to_crop(im, affine, NET_SIZE, antialias=True) for im in images]  # a 1080p camera: averaged
    points = [transform_points(p, affine) for p in found]
    h, w = images[0].shape[:2]
    ref = rest_frame(found)  # the portrait and the neutral: the recording's rest, not its first frame
    return ClipFrames(crops, points, reference=ref, neutral=Landmarks(found[ref], (w, h)))


CPU_PLAN = "warp+decoder"  # measured against the others in docs/PERSONALIZATION.md


def auto_plan(device: str | torch.device) -> str:
    """The adaptation plan for ``device``: on a GPU every weight of warp network and generator on random
    pairs (``full``, as measured on the H200); on a CPU the warp network and the generator's decoder
    animating the reference frame over each frame's analytic flow computed once (:data:`CPU_PLAN`)."""
    return "full" if torch.device(device).type == "cuda" else CPU_PLAN


def personalize(clip: ClipFrames, base: PortraitModel, identity: np.ndarray, budget_s: float = 30.0,
                batch_size: int | None = None, lr: float | None = None, warp_lr_scale: float | None = None,
                holdout_every: int = 10, progress: Callable[[dict], None] | None = None,
                cancel: CancelToken | None = None, device: str = "cpu", seed: int = 0,
                curve_every_s: float | None = None, also_score: dict[str, list[dict]] | None = None,
                plan: str = "auto", on_estimate: Callable[[Estimate], None] | None = None,
                cache_frames: int = CACHE_FRAMES, max_steps: int | None = None,
                curve_every_steps: int | None = None, amp: bool = False,
                start: PortraitModel | None = None) -> PersonalizeResult:
    """Adapt a copy of ``base`` (or of ``start``) to ``clip`` within ``budget_s`` wall-clock seconds.

    ``start``: weights to adapt from that differ from ``base`` (the shipped meta-learned start,
    :func:`~avatar_app.models.shipped.personalization_start`); ``base`` is then only what the "before"
    scores (and a curve's first point) measure: the model the app animates with, unpersonalized.

    ``plan``: ``"full"`` fine-tunes warp network (at ``warp_lr_scale`` × the rate; default the plan's) and generator on
    random pairs; a name in :data:`~.adapt_cached.PLANS` adapts a part of the model animating the
    reference frame over inputs computed once for up to ``cache_frames`` training frames (the
    computing counts against the budget); ``"auto"``: :func:`auto_plan`.  Before most of the budget
    is spent a probe times real steps (:func:`~.budget.probe`) and ``on_estimate`` hears what the
    rest of the budget buys (:class:`~.budget.Estimate`, with the gain measured for that many steps).  ``progress`` receives ``{"step",
    "elapsed", "eta", "loss", "expected_steps"}`` after every step; ``cancel`` stops at the next step.
    ``curve_every_s`` also scores the held-out frames every so many seconds of the budget (scoring
    time is not counted), and each set of :func:`frame_items` in ``also_score`` beside them (keys
    ``<name>_psnr``, ``<name>_l1``); ``curve_every_steps`` scores every so many steps instead.
    ``max_steps`` also stops after that many steps (measurements that must not depend on the load).
    ``amp``: bf16 autocast (GPU only).
    """
    n = len(clip.crops)
    held = held_out_indices(n, clip.reference, holdout_every)
    train_idx = training_indices(n, clip.reference, holdout_every)
    if not held or len(train_idx) < 2:
        raise NoFaceError(f"The clip has too few usable frames ({n}) to personalize; record at least 10 s.")
    plan = auto_plan(device) if plan == "auto" else plan
    cached, whole = PLANS.get(plan), FULL_PLANS.get(plan)
    if cached is None and whole is None:
        raise ValueError(f"unknown personalization plan {plan!r}; choose auto, "
                         f"{', '.join(sorted(FULL_PLANS) + sorted(PLANS))}")
    chosen = cached or whole
    batch_size = batch_size or chosen.batch_size
    cfg = TrainConfig(stage="meta", batch_size=batch_size, num_workers=0, w_gan=0.0, amp=amp, amp_dtype="bf16",
                      seed=seed, w_warped=chosen.w_warped, w_ssim=chosen.w_ssim)
    model = copy.deepcopy(base if start is None else start)
    pairs = FrameFlowInputs(FramePairs(clip, train_idx, identity, seed))
    held_items = frame_items(clip, [(clip.reference, i) for i in held], identity)
    trainer = Trainer(cfg, None, train_set=pairs, device=device, model=model)

    def scores(m: PortraitModel = model) -> dict:
        out = _score(trainer, m, held_items)
        for name, items in (also_score or {}).items():
            out.update({f"{name}_{k}": v for k, v in _score(trainer, m, items).items()})
        return out

    before = scores() if start is None else scores(copy.deepcopy(base).to(trainer.device))
    curving = bool(curve_every_s or curve_every_steps)
    curve = [{"seconds": 0.0, "cpu_seconds": 0.0, "step": 0, **before}] if curving else []
    t_start, cpu_start = time.perf_counter(), time.process_time()
    if cached is None:
        step_fn, params = _full_steps(trainer, model, pairs, batch_size, lr or whole.lr,
                                      whole.warp_lr_scale if warp_lr_scale is None else warp_lr_scale, whole.decay)
    else:
        step_fn, params = _cached_steps(trainer, model, clip, train_idx, identity, cached, batch_size,
                                        lr or cached.lr, cache_frames, device, seed)
    threads = torch.get_num_threads()
    run = {"step": 0, "loss": float("nan"), "expected": None, "scoring": 0.0, "scoring_cpu": 0.0, "since": None}

    def elapsed() -> float:  # wall seconds of the budget spent (scoring a curve point is not counted)
        return time.perf_counter() - t_start - run["scoring"]

    def record() -> None:
        if cancel is not None and cancel.cancelled:
            raise _Cancelled
        run["loss"] = step_fn(run["step"], horizon())
        run["step"] += 1
        if progress is not None:
            spent = elapsed()
            progress({"step": run["step"], "elapsed": spent, "eta": max(0.0, budget_s - spent), "loss": run["loss"],
                      "expected_steps": run["expected"]})

    def horizon() -> int | None:
        """The steps the budget buys in all, from the pace since the estimate (``None`` before it): a
        rate that decays reaches its end with the budget, even when the machine's load changes."""
        if run["since"] is None:
            return None
        t0, s0, step_s = run["since"]
        if run["step"] > s0:
            step_s = (elapsed() - t0) / (run["step"] - s0)
        steps = run["step"] + max(1, math.floor((budget_s - elapsed()) / step_s))  # (this step runs)
        return min(steps, max_steps) if max_steps is not None else steps

    def curve_point(point: dict | None = None) -> None:
        t0, c0 = time.perf_counter(), time.process_time()
        cpu = time.process_time() - cpu_start - run["scoring_cpu"]
        curve.append({"seconds": elapsed(), "cpu_seconds": cpu, "step": run["step"], **(point or scores())})
        run["scoring"] += time.perf_counter() - t0
        run["scoring_cpu"] += time.process_time() - c0

    estimate, cancelled = None, False
    next_curve, next_step = curve_every_s or float("inf"), curve_every_steps or 10**12
    try:
        if torch.device(device).type == "cpu":
            timing, _ = probe(record, over=lambda: elapsed() >= budget_s or (max_steps is not None
                                                                             and run["step"] >= max_steps))
        else:  # a GPU: one warm-up step, then three timed
            record()
            wall = time.perf_counter()
            for _ in range(3):
                record()
            torch.cuda.synchronize(device)
            timing = Timing(0, (time.perf_counter() - wall) / 3, 1.0)
        estimate = Estimate(budget_s, elapsed(), run["step"], timing, torch.device(device).type)
        estimate = replace(estimate, gain=expected_gain(base.preset, plan, estimate.steps, meta=start is not None))
        run["expected"] = estimate.steps
        run["since"] = (elapsed(), run["step"], timing.step_s)
        if on_estimate is not None:
            on_estimate(estimate)
        torch.set_num_threads(timing.threads or threads)
        while elapsed() < budget_s and (max_steps is None or run["step"] < max_steps):
            record()
            if elapsed() >= next_curve or run["step"] >= next_step:
                next_curve += curve_every_s if elapsed() >= next_curve else 0.0
                next_step += curve_every_steps if run["step"] >= next_step else 0
                curve_point()
    except _Cancelled:
        cancelled = True
    finally:
        torch.set_num_threads(threads)
        for p in model.parameters():
            p.requires_grad_(True)
    step, trained_s = run["step"], elapsed()
    after = scores()
    if curving and curve[-1]["step"] != step:
        curve_point(after)
    return PersonalizeResult(model.eval(), step, trained_s, before, after, cancelled, curve, plan, estimate, params)


def _full_steps(trainer: Trainer, model: PortraitModel, pairs, batch_size: int, lr: float, warp_lr_scale: float,
                decay: bool = False):
    """Steps of a :data:`~.adapt_cached.FULL_PLANS` plan (:func:`~.adapt_cached.full_steps`) on random pairs of the
    clip: on a GPU drawn from frames held there (:class:`~.recording_pairs.ResidentPairs`), on a CPU collated."""
    if trainer.device.type == "cuda":
        draw = ResidentPairs(pairs, trainer.device, pairs.base.seed).batch
    else:
        counter = iter(range(10**12))

        def draw(n: int) -> dict:
            k = next(counter)
            return torch.utils.data.default_collate([pairs[k * n + j] for j in range(n)])

    return full_steps(trainer, model, draw, batch_size, lr, warp_lr_scale, decay)


def _cached_steps(trainer: Trainer, model: PortraitModel, clip: ClipFrames, train_idx: list[int], identity,
                  plan: Plan, batch_size: int, lr: float, cache_frames: int, device: str, seed: int):
    """Steps of a cached plan over up to ``cache_frames`` training frames spread over the clip."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # before the probe: on a machine with one core busy, two threads took 15x longer
    try:
        cache = FrameCache(model, clip, cache_picks(train_idx, cache_frames), identity, plan.start, device)
    finally:
        torch.set_num_threads(threads)
    return cached_steps(trainer, model, cache, plan, batch_size, lr, seed)


def frame_items(clip: ClipFrames, pairs: list[tuple[int, int]], identity: np.ndarray) -> list[dict]:
    """Scoring samples: each ``(source, driver)`` index pair of ``clip``, with its conditioning."""
    items = FrameFlowInputs(FramePairs(clip, sorted({i for p in pairs for i in p}), identity, pairs=pairs))
    return [items[k] for k in range(len(items))]


def scored_frames(trainer: Trainer, model: PortraitModel, items: list[dict], chunk: int = 8):
    """``model`` animating each of ``items`` (:func:`frame_items`) as personalization scores it: yields
    ``(output, driving)``, ``(n, 3, S, S)`` in [0, 1], ``chunk`` items at a time, the model in eval mode meanwhile
    (then back in the mode it was in)."""
    was_training = model.training
    model.eval()
    try:
        for k in range(0, len(items), chunk):
            with torch.no_grad():
                b = trainer._to_device(torch.utils.data.default_collate(items[k:k + chunk]))
                out = trainer._frame(model, b)["image"].clamp(0, 1)
            yield out, b["driving"]
    finally:
        model.train(was_training)


def frame_psnr(out: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """PSNR (dB) of each image of ``out`` against ``truth`` (both ``(N, 3, S, S)`` in [0, 1])."""
    mse = ((out - truth) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(1 / mse.clamp(min=1e-10))


def _score(trainer: Trainer, model: PortraitModel, items: list[dict]) -> dict:
    """Held-out PSNR (dB) and L1 of ``model`` animating the reference frame."""
    psnrs, l1s = [], []
    for out, truth in scored_frames(trainer, model, items):
        psnrs += frame_psnr(out, truth).tolist()
        l1s += (out - truth).abs().flatten(1).mean(1).tolist()
    return {"psnr": float(np.mean(psnrs)), "l1": float(np.mean(l1s))}
