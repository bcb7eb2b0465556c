"""Pairs of frames of one recording, for personalization: drawn at random or given, collated on the CPU
(:class:`FramePairs`) or gathered from tensors held on a GPU (:class:`ResidentPairs`)."""

from __future__ import annotations

import numpy as np
import torch

from ..face.mesh import mouth_fill_amount
from ..imaging import bgr_to_rgb_chw
from ..models.portrait import NET_SIZE


class FramePairs(torch.utils.data.Dataset):
    """Self-reenactment pairs from in-memory frames: random pairs over ``indices`` (the
    reference frame is the source half the time), or the fixed ``pairs`` given.  ``clip``: a
    :class:`~avatar_app.train.personalize.ClipFrames`."""

    def __init__(self, clip, indices: list[int], identity: np.ndarray, seed: int = 0,
                 pairs: list[tuple[int, int]] | None = None):
        self.clip, self.indices, self.seed, self.pairs = clip, indices, seed, pairs
        self.identity = torch.from_numpy(np.asarray(identity, np.float32))
        self._rgb = {i: torch.from_numpy(bgr_to_rgb_chw(clip.crops[i])) for i in set(indices) | {clip.reference}}

    def __len__(self) -> int:
        return len(self.pairs) if self.pairs is not None else 10**9

    def draw(self, rng: np.random.Generator) -> tuple[int, int]:
        """A random ``(source, driving)`` pair: the source is the reference frame half the time."""
        source = self.clip.reference if rng.random() < 0.5 else int(rng.choice(self.indices))
        return source, int(rng.choice(self.indices))

    def __getitem__(self, i: int) -> dict:
        if self.pairs is not None:
            source, driving = self.pairs[i]
        else:
            source, driving = self.draw(np.random.default_rng((self.seed, i)))
        return {"source": self._rgb[source], "driving": self._rgb[driving],
                "source_frame": source, "driving_frame": driving,
                "source_points": torch.from_numpy(self.clip.points[source].astype(np.float32)),
                "driving_points": torch.from_numpy(self.clip.points[driving].astype(np.float32)),
                "identity": self.identity, "clip": torch.tensor(0)}


class ResidentPairs:
    """:class:`FramePairs`' random pairs drawn from tensors held on ``device`` (a GPU): every
    training frame's image, landmarks, landmark image and triangle map is moved there once, so a
    step of the ``full`` plan gathers its batch on the device instead of collating it on the CPU
    (which bound that plan at ~14 steps/s on an H200).  ``items``: a
    :class:`~avatar_app.train.inputs.FrameFlowInputs` over ``FramePairs(clip, indices, ...)``."""

    def __init__(self, items, device: str | torch.device, seed: int = 0):
        pairs = items.base
        self.draw = pairs.draw
        self.clip, self.indices = pairs.clip, list(pairs.indices)
        frames = sorted(set(self.indices) | {self.clip.reference})
        self.row = {f: k for k, f in enumerate(frames)}
        per = [items._frame(f, self.clip.points[f]) for f in frames]  # (cond uint8, tri int16, mouth gap)
        dev = torch.device(device)
        self.image = torch.stack([pairs._rgb[f] for f in frames]).to(dev)
        self.points = torch.from_numpy(np.stack([self.clip.points[f] for f in frames]).astype(np.float32)).to(dev)
        self.cond = torch.stack([c for c, _, _ in per]).to(dev)
        self.tri = torch.stack([t for _, t, _ in per]).to(dev)
        self.gap = [g for _, _, g in per]
        self.identity = pairs.identity.to(dev)
        self.rng = np.random.default_rng(seed)

    def batch(self, n: int) -> dict:
        """``n`` random pairs: the source is the reference frame half the time, else a training frame."""
        drawn = [self.draw(self.rng) for _ in range(n)]
        return self.pairs([a for a, _ in drawn], [b for _, b in drawn])

    def pairs(self, sources: list[int], drivers: list[int]) -> dict:
        """The batch animating clip frame ``sources[k]`` to ``drivers[k]`` (what FrameFlowInputs' items collate to)."""
        dev = self.image.device
        s, d = (torch.as_tensor([self.row[f] for f in v], device=dev) for v in (sources, drivers))
        return {"source": self.image[s], "driving": self.image[d], "source_points": self.points[s],
                "driving_points": self.points[d], "identity": self.identity.expand(len(sources), -1),
                "tri_ids": self.tri[d].long(), "source_cond": self.cond[s].float() / 255.0,
                "driving_cond": self.cond[d].float() / 255.0,
                "mouth_amount": torch.tensor([mouth_fill_amount(self.gap[self.row[a]], self.gap[self.row[b]], NET_SIZE)
                                              for a, b in zip(sources, drivers)], device=dev)}
