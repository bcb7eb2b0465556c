"""What the networks need beside the images, computed per sample in DataLoader workers.

:class:`FlowInputs` serves self-reenactment pairs (warp, full and meta stages, personalization);
:class:`WindowFlowInputs` serves the enhancer's windows on the app's own 512 path
(:mod:`.enhancer_path`).  Both rasterise with the same code inference uses.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from ..face.mesh import mouth_fill_amount, mouth_opening, topology
from ..models.conditioning import landmark_image
from ..models.flow import rasterize_triangles
from ..models.portrait import NET_SIZE


class FlowInputs(Dataset):
    """Adds what the analytic flow and the networks need to each self-reenactment pair,
    computed in the loader's workers: ``tri_ids (S, S)``, ``source_cond``/``driving_cond``
    ``(6, S, S)`` and ``mouth_amount`` (how much of the mouth to paint)."""

    def __init__(self, base: Dataset):
        self.base = base
        self._tri = topology().triangles

    def __len__(self) -> int:
        return len(self.base)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)

    def __getitem__(self, i: int) -> dict:
        item = dict(self.base[i])
        sp = item["source_points"].numpy()
        dp = item["driving_points"].numpy()
        item["tri_ids"] = torch.from_numpy(rasterize_triangles(dp, self._tri, NET_SIZE))
        item["source_cond"] = torch.from_numpy(landmark_image(sp, NET_SIZE))
        item["driving_cond"] = torch.from_numpy(landmark_image(dp, NET_SIZE))
        item["mouth_amount"] = torch.tensor(mouth_fill_amount(mouth_opening(sp), mouth_opening(dp), NET_SIZE))
        return item


class FrameFlowInputs(FlowInputs):
    """:class:`FlowInputs` over a fixed set of frames (personalization): the base's items also
    carry ``source_frame`` and ``driving_frame`` (frame indices), and each frame's landmark image
    and triangle map is rasterised once (kept as uint8 / int16: the landmark image is drawn in
    1/255 steps and there are < 32k triangles) and reused by every pair it is part of."""

    def __init__(self, base: Dataset):
        super().__init__(base)
        self._frames: dict[int, tuple[torch.Tensor, torch.Tensor, float]] = {}

    def _frame(self, index: int, points) -> tuple[torch.Tensor, torch.Tensor, float]:
        if index not in self._frames:
            cond = torch.from_numpy(landmark_image(points, NET_SIZE) * 255.0 + 0.5).to(torch.uint8)
            tri = torch.from_numpy(rasterize_triangles(points, self._tri, NET_SIZE).astype("int16"))
            self._frames[index] = (cond, tri, mouth_opening(points))
        return self._frames[index]

    def __getitem__(self, i: int) -> dict:
        item = dict(self.base[i])
        s_cond, _, s_mouth = self._frame(int(item.pop("source_frame")), item["source_points"].numpy())
        d_cond, d_tri, d_mouth = self._frame(int(item.pop("driving_frame")), item["driving_points"].numpy())
        item["tri_ids"] = d_tri.long()
        item["source_cond"] = s_cond.float() / 255.0
        item["driving_cond"] = d_cond.float() / 255.0
        item["mouth_amount"] = torch.tensor(mouth_fill_amount(s_mouth, d_mouth, NET_SIZE))
        return item


class WindowFlowInputs(FlowInputs):
    """Adds to window samples (``PreparedDataset(mode="window", window_source=True)``) what the
    frozen networks need, computed in the loader's workers: ``source_cond (6, S, S)``,
    ``driving_cond (T, 6, S, S)``, ``tri_ids (T, S, S)`` and ``mouth_amount (T,)``."""

    def __getitem__(self, i: int) -> dict:
        item = dict(self.base[i])
        sp = item["source_points"].numpy()
        pts = item["points_256"].numpy()
        item["source_cond"] = torch.from_numpy(landmark_image(sp, NET_SIZE))
        item["driving_cond"] = torch.stack([torch.from_numpy(landmark_image(p, NET_SIZE)) for p in pts])
        item["tri_ids"] = torch.stack([torch.from_numpy(rasterize_triangles(p, self._tri, NET_SIZE)) for p in pts])
        gap = mouth_opening(sp)
        item["mouth_amount"] = torch.tensor([mouth_fill_amount(gap, mouth_opening(p), NET_SIZE) for p in pts],
                                            dtype=torch.float32)
        return item
