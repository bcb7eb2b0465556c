"""Where each eye's re-map (:mod:`.eye_flow`) runs: one fixed-size window per eye, gathered from and
scattered back into the flow's field (so the cost does not grow with the crop), and on the CPU only
the box around each eye's region inside it; and how a fine grid's pixels read a coarser field.

All in torch on ``(B, 2, …)`` batches (per eye); shapes are static except :func:`box_window`'s (eager
CPU only, :func:`can_compact`)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

WINDOW = (0.15, 0.21)  # per-eye window (height, width) as fractions of the flow's side (an eye up to
#   0.16 of it wide, 40 px at 256: prepared crops' eyes are 18-35 px wide at 256)


def _origin(cx: torch.Tensor, cy: torch.Tensor, h: int, w: int, size: tuple[int, int]):
    """The top-left px ``(x0, y0)`` of each eye's window of ``size = (wh, ww)`` centred on ``cx, cy
    (B, 2, 1)`` and kept inside the ``h``×``w`` grid."""
    wh, ww = size
    return (cx - (ww - 1) / 2).round().clamp(0, w - ww), (cy - (wh - 1) / 2).round().clamp(0, h - wh)


def _block(x0, y0, bx0, by0, bh: int, bw: int, w: int, size: tuple[int, int]):
    """The ``bh``×``bw`` px from ``(bx0, by0)`` of the windows at ``(x0, y0)`` (:func:`_origin`): flat
    indices into a ``w``-wide grid, ``x``, ``y`` (px) and the window's taper, each ``(B, 2, bh·bw)``."""
    wh, ww = size
    dy = torch.arange(bh, device=x0.device, dtype=x0.dtype).view(bh, 1).expand(bh, bw).reshape(-1)
    dx = torch.arange(bw, device=x0.device, dtype=x0.dtype).view(1, bw).expand(bh, bw).reshape(-1)
    x, y = bx0 + dx, by0 + dy
    edge = torch.minimum(torch.minimum(x - x0, x0 + ww - 1 - x), torch.minimum(y - y0, y0 + wh - 1 - y))
    return (y * w + x).long(), x, y, (edge / 3.0).clamp(max=1.0)


def window(cx: torch.Tensor, cy: torch.Tensor, h: int, w: int, size: tuple[int, int]):
    """Each eye's window of ``size = (wh, ww)`` px on an ``h``×``w`` grid, centred on ``cx, cy (B, 2, 1)``
    px and kept inside the grid: flat pixel indices ``(B, 2, wh·ww)``, their ``x`` and ``y`` (px), and
    a taper from 1 inside to 0 at the window's edge (so an eye larger than its window shows no seam)."""
    x0, y0 = _origin(cx, cy, h, w, size)
    return _block(x0, y0, x0, y0, size[0], size[1], w, size)


def box_window(cx: torch.Tensor, cy: torch.Tensor, region: torch.Tensor, h: int, w: int, size: tuple[int, int],
               margin: int):
    """:func:`window`'s pixels (same indices, ``x``, ``y`` and taper) inside the bounding box of each eye's
    ``region (B, 2, P, 2)`` points (px) widened by ``margin`` px: one box size for both eyes (the larger),
    so the shapes depend on the data (eager only)."""
    wh, ww = size
    x0, y0 = _origin(cx, cy, h, w, size)
    start = torch.cat([x0, y0], -1)  # (B, 2, 2): x, y
    lo = torch.maximum((region.amin(2) - margin).floor(), start)
    hi = torch.minimum((region.amax(2) + margin).ceil(), start + torch.tensor([ww - 1.0, wh - 1.0]))
    bw, bh = ((hi - lo).amax((0, 1)) + 1).clamp(min=1).tolist()
    bw, bh = min(int(bw), ww), min(int(bh), wh)
    bx0 = torch.minimum(lo[..., :1], x0 + ww - bw)  # the common box size kept inside each window
    by0 = torch.minimum(lo[..., 1:], y0 + wh - bh)
    return _block(x0, y0, bx0, by0, bh, bw, w, size)


def window_size(h: int, w: int) -> tuple[int, int]:
    """The per-eye window for an ``h``×``w`` flow grid (:data:`WINDOW`)."""
    return min(h, math.ceil(WINDOW[0] * h)), min(w, math.ceil(WINDOW[1] * w))


def eager_on_cpu(t: torch.Tensor) -> bool:
    """Whether ``t`` is on the CPU and torch runs eagerly (not exporting to ONNX, tracing or compiling):
    where the flow may take its CPU-only fast paths (data-dependent shapes, OpenCV)."""
    return (t.device.type == "cpu" and not torch.onnx.is_in_onnx_export() and not torch.jit.is_tracing()
            and not torch.compiler.is_compiling())


def can_compact(field: torch.Tensor) -> bool:
    """Whether :func:`.eye_flow.eye_remap` may ``compact``: eager on the CPU (a GPU would wait for the count,
    and exported and compiled graphs need static shapes)."""
    return eager_on_cpu(field)


def grid_of(x: torch.Tensor, y: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """px ``x, y (B, 2, N)`` of an ``h``×``w`` grid as a ``grid_sample`` grid ``(B, 1, 2·N, 2)`` (norm [-1, 1]:
    the same on any grid over the same square, so a fine grid's px sample a coarse field)."""
    return torch.stack([(x.flatten(1) + 0.5) * (2.0 / w) - 1.0, (y.flatten(1) + 0.5) * (2.0 / h) - 1.0], -1).unsqueeze(1)


def sample_at(field: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """``field (B, C, h, w)`` bilinearly at :func:`grid_of` points (clamped to the grid): ``(B, C, N)``.
    ``grid_sample`` (opset 16 to export): only the fine re-map of :func:`eye_remap` uses it, and
    exported flows are computed at their output's size."""
    return F.grid_sample(field, grid, mode="bilinear", padding_mode="border", align_corners=False)[:, :, 0]
