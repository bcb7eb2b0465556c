"""Personalization: adapt the (meta-learned) model to one person in a wall-clock budget.

From a clip of the person: track every frame, take one aligned crop for the clip, hold
out every 10th frame, and fine-tune the warp network and the generator on
self-reenactment pairs (the source is the clip's reference frame or another frame, the
driver a training frame) until the budget runs out or the caller cancels.  Before and
after, the model animates the reference frame with each held-out frame's landmarks and
is scored against that frame (PSNR, L1).
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..capture.base import FrameSource
from ..errors import NoFaceError
from ..face.align import face_crop_box, transform_points, warp_to_crop
from ..face.tracker import FaceTracker
from ..imaging import bgr_to_rgb_chw
from ..models.portrait import NET_SIZE, PortraitModel
from ..types import Landmarks
from .config import TrainConfig
from .meta import inner_optimizer
from .inputs import FrameFlowInputs
from .trainer import Trainer


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

    def metrics(self) -> dict:
        """Held-out PSNR and L1 before and after, steps and seconds (what a profile records)."""
        return {"psnr": {"before": self.before["psnr"], "after": self.after["psnr"]},
                "l1": {"before": self.before["l1"], "after": self.after["l1"]},
                "steps": self.steps, "seconds": self.seconds}


def held_out_indices(n: int, reference: int = 0, every: int = 10) -> list[int]:
    """The clip frames personalization never trains on (every ``every``-th, never the reference)."""
    return [i for i in range(n) if i % every == every - 1 and i != reference]


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
    crops = [warp_to_crop(im, affine, NET_SIZE) for im in images]
    points = [transform_points(p, affine) for p in found]
    h, w = images[0].shape[:2]
    return ClipFrames(crops, points, reference=0, neutral=Landmarks(found[0], (w, h)))


class _FramePairs(torch.utils.data.Dataset):
    """Self-reenactment pairs from in-memory frames: random pairs over ``indices`` (the
    reference frame is the source half the time), or the fixed ``pairs`` given."""

    def __init__(self, clip: ClipFrames, indices: list[int], identity: np.ndarray, seed: int = 0,
                 pairs: list[tuple[int, int]] | None = None):
        self.clip, self.indices, self.seed, self.pairs = clip, indices, seed, pairs
        self.identity = torch.from_numpy(np.asarray(identity, np.float32))
        self._rgb = {i: torch.from_numpy(bgr_to_rgb_chw(clip.crops[i])) for i in set(indices) | {clip.reference}}

    def __len__(self) -> int:
        return len(self.pairs) if self.pairs is not None else 10**9

    def __getitem__(self, i: int) -> dict:
        if self.pairs is not None:
            source, driving = self.pairs[i]
        else:
            rng = np.random.default_rng((self.seed, i))
            source = self.clip.reference if rng.random() < 0.5 else int(rng.choice(self.indices))
            driving = int(rng.choice(self.indices))
        return {"source": self._rgb[source], "driving": self._rgb[driving],
                "source_frame": source, "driving_frame": driving,
                "source_points": torch.from_numpy(self.clip.points[source].astype(np.float32)),
                "driving_points": torch.from_numpy(self.clip.points[driving].astype(np.float32)),
                "identity": self.identity, "clip": torch.tensor(0)}


def personalize(clip: ClipFrames, base: PortraitModel, identity: np.ndarray, budget_s: float = 30.0,
                batch_size: int = 4, lr: float = 1e-4, warp_lr_scale: float = 0.1, holdout_every: int = 10,
                progress: Callable[[dict], None] | None = None, cancel: CancelToken | None = None,
                device: str = "cpu", seed: int = 0, curve_every_s: float | None = None,
                also_score: dict[str, list[dict]] | None = None) -> PersonalizeResult:
    """Fine-tune a copy of ``base`` on ``clip`` for at most ``budget_s`` seconds of training.

    ``progress`` receives ``{"step", "elapsed", "eta", "loss"}`` after every step; ``cancel``
    stops at the next step.  ``curve_every_s`` also scores the held-out frames every so many
    training seconds (evaluation time is not counted against the budget), and each set of
    :func:`frame_items` in ``also_score`` beside them (keys ``<name>_psnr``, ``<name>_l1``).
    """
    n = len(clip.crops)
    held = held_out_indices(n, clip.reference, holdout_every)
    train_idx = [i for i in range(n) if i not in held]
    if not held or len(train_idx) < 2:
        raise NoFaceError(f"The clip has too few usable frames ({n}) to personalize; record at least 10 s.")
    cfg = TrainConfig(stage="meta", batch_size=batch_size, num_workers=0, w_gan=0.0, amp=False, seed=seed)
    model = copy.deepcopy(base)
    pairs = FrameFlowInputs(_FramePairs(clip, train_idx, identity, seed))
    held_items = frame_items(clip, [(clip.reference, i) for i in held], identity)
    trainer = Trainer(cfg, None, train_set=pairs, device=device, model=model)
    def scores() -> dict:
        out = _score(trainer, model, held_items)
        for name, items in (also_score or {}).items():
            out.update({f"{name}_{k}": v for k, v in _score(trainer, model, items).items()})
        return out

    before = scores()
    opt = inner_optimizer(model, lr, warp_lr_scale)
    params = [p for g in opt.param_groups for p in g["params"]]
    curve = [{"seconds": 0.0, "step": 0, **before}] if curve_every_s else []
    step, trained_s, next_curve = 0, 0.0, curve_every_s or float("inf")
    cancelled = False
    while trained_s < budget_s:
        if cancel is not None and cancel.cancelled:
            cancelled = True
            break
        t0 = time.perf_counter()
        batch = torch.utils.data.default_collate([pairs[step * batch_size + k] for k in range(batch_size)])
        opt.zero_grad(set_to_none=True)
        loss, _ = trainer.compute_losses(batch, model=model)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        trained_s += time.perf_counter() - t0
        if progress is not None:
            progress({"step": step, "elapsed": trained_s, "eta": max(0.0, budget_s - trained_s),
                      "loss": float(loss.detach())})
        if trained_s >= next_curve:
            curve.append({"seconds": trained_s, "step": step, **scores()})
            next_curve += curve_every_s
    after = scores()
    return PersonalizeResult(model.eval(), step, trained_s, before, after, cancelled, curve)


def frame_items(clip: ClipFrames, pairs: list[tuple[int, int]], identity: np.ndarray) -> list[dict]:
    """Scoring samples: each ``(source, driver)`` index pair of ``clip``, with its conditioning."""
    items = FrameFlowInputs(_FramePairs(clip, sorted({i for p in pairs for i in p}), identity, pairs=pairs))
    return [items[k] for k in range(len(items))]


@torch.no_grad()
def _score(trainer: Trainer, model: PortraitModel, items: list[dict]) -> dict:
    """Held-out PSNR (dB) and L1 of ``model`` animating the reference frame."""
    model.eval()
    psnrs, l1s = [], []
    for k in range(0, len(items), 8):
        b = trainer._to_device(torch.utils.data.default_collate(items[k:k + 8]))
        out = trainer._frame(model, b)["image"].clamp(0, 1)
        mse = ((out - b["driving"]) ** 2).flatten(1).mean(1)
        psnrs += (10 * torch.log10(1 / mse.clamp(min=1e-10))).tolist()
        l1s += (out - b["driving"]).abs().flatten(1).mean(1).tolist()
    model.train()
    return {"psnr": float(np.mean(psnrs)), "l1": float(np.mean(l1s))}
