"""A driving frame's network inputs drawn from its landmarks, on the networks' device.

:class:`FrameInputs` is the torch twin of the neural animator's CPU preparation —
:func:`~avatar_app.models.conditioning.landmark_image` and
:func:`~avatar_app.models.flow.rasterize_triangles` at the networks' 256 px — so a
GPU chain receives 478 points (6 KB) per frame instead of two images drawn on the
CPU.  Fixed shapes, no host synchronisation: it compiles and captures in a CUDA graph
like the networks (see :mod:`.gpu_raster`).
"""

from __future__ import annotations

import torch
from torch import nn

from ..face.mesh import topology
from .gpu_conditioning import LandmarkImage
from .gpu_raster import TriangleRaster
from .portrait import NET_SIZE


class FrameInputs(nn.Module):
    """``points (B, 478, 3)`` crop px at ``size`` (x, y, z) -> ``(target_cond (B, 6, S, S)
    float32 [0, 1], tri_ids (B, S, S) int32)``, as the CPU drawing makes them."""

    def __init__(self, size: int = NET_SIZE):
        super().__init__()
        self.size = size
        self.cond = LandmarkImage(size)
        self.raster = TriangleRaster(topology().triangles, size)

    def forward(self, points: torch.Tensor):
        return self.cond(points), self.raster(points).to(torch.int32)
