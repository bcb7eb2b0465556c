"""OpenCV's integer rasterisation rules, vectorised in torch (CPU or CUDA).

The live path's per-frame preparation — which mesh triangle covers each pixel
(:func:`~avatar_app.models.flow.rasterize_triangles`) and the landmark conditioning
image (:mod:`.conditioning`) — is drawn with OpenCV on the CPU.  This module redoes
OpenCV's fixed-point arithmetic (``XY_SHIFT = 16``, C integer division, the same
span and line-stepping rules) on whole tensors, so the same images come out of a
device that never leaves the GPU:

* no Python loop over triangles or lines at run time, only over a fixed handful of
  stages (the segment-tree levels, the drawing layers);
* fixed shapes and no host synchronisation, so it can be captured in a CUDA graph or
  compiled with ``torch.compile`` together with the networks.

Which triangle wins a pixel is OpenCV's painter's rule (far to near, the last painted
wins); here every triangle contributes the row intervals it would paint, and a
per-row segment tree keeps the latest painter per pixel (:func:`row_interval_max`).

Coordinates: int64 fixed point, ``XY_SHIFT`` fraction bits unless said otherwise;
pixel ``j``'s centre at ``x = j`` as everywhere in the project.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

XY_SHIFT = 16
XY_ONE = 1 << XY_SHIFT
HALF = XY_ONE >> 1
SUBPIXEL_BITS = 4  # the project draws with 4 sub-pixel bits (cv2 ``shift=4``)


def tdiv(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """C integer division (truncates towards zero)."""
    return torch.div(a, b, rounding_mode="trunc")


def nonzero(b: torch.Tensor) -> torch.Tensor:
    """``b`` with zeros replaced by 1 (a divisor for lanes whose result is discarded)."""
    return torch.where(b == 0, torch.ones_like(b), b)


def to_fixed(xy: torch.Tensor, size: int) -> torch.Tensor:
    """Float px ``(..., 2)`` -> int64 with :data:`SUBPIXEL_BITS` fraction bits, as the
    CPU code does (NaN and far-off points clamped like ``conditioning._scaled_xy``)."""
    xy = torch.nan_to_num(xy.to(torch.float64), nan=-4.0 * size).clamp(-4.0 * size, 5.0 * size)
    return torch.round(xy * (1 << SUBPIXEL_BITS)).to(torch.int64)


def _outcode(x, y, right, bottom):
    return (x < 0).long() + (x > right).long() * 2 + (y < 0).long() * 4 + (y > bottom).long() * 8


def clip_line(x1, y1, x2, y2, width: int, height: int):
    """OpenCV's ``clipLine`` on int64 tensors of one shape (lanes are independent).

    Returns the clipped ``(x1, y1, x2, y2)`` and a bool tensor: some part is inside
    ``[0, width - 1] x [0, height - 1]``.
    """
    right, bottom = width - 1, height - 1
    c1, c2 = _outcode(x1, y1, right, bottom), _outcode(x2, y2, right, bottom)
    need = ((c1 & c2) == 0) & ((c1 | c2) != 0)
    zero, bot, rig = torch.zeros_like(x1), torch.full_like(x1, bottom), torch.full_like(x1, right)
    m = need & ((c1 & 12) != 0)
    a = torch.where(c1 < 8, zero, bot)
    x1 = torch.where(m, x1 + tdiv((a - y1) * (x2 - x1), nonzero(y2 - y1)), x1)
    y1 = torch.where(m, a, y1)
    c1 = torch.where(m, (x1 < 0).long() + (x1 > right).long() * 2, c1)
    m = need & ((c2 & 12) != 0)
    a = torch.where(c2 < 8, zero, bot)
    x2 = torch.where(m, x2 + tdiv((a - y2) * (x2 - x1), nonzero(y2 - y1)), x2)
    y2 = torch.where(m, a, y2)
    c2 = torch.where(m, (x2 < 0).long() + (x2 > right).long() * 2, c2)
    need = need & ((c1 & c2) == 0) & ((c1 | c2) != 0)
    m = need & (c1 != 0)
    a = torch.where(c1 == 1, zero, rig)
    y1 = torch.where(m, y1 + tdiv((a - x1) * (y2 - y1), nonzero(x2 - x1)), y1)
    x1 = torch.where(m, a, x1)
    c1 = torch.where(m, zero, c1)
    m = need & (c2 != 0)
    a = torch.where(c2 == 1, zero, rig)
    y2 = torch.where(m, y2 + tdiv((a - x2) * (y2 - y1), nonzero(x2 - x1)), y2)
    x2 = torch.where(m, a, x2)
    c2 = torch.where(m, zero, c2)
    return x1, y1, x2, y2, (c1 | c2) == 0


def _ceil_div(a, b):
    return -torch.div(-a, b, rounding_mode="floor")


def line_row_spans(p1: torch.Tensor, p2: torch.Tensor, width: int, height: int, rows: torch.Tensor):
    """The pixels OpenCV's 8-connected sub-pixel line (``Line2``) sets, as row intervals.

    Args:
        p1, p2: ``(..., 2)`` int64 end points, ``XY_SHIFT`` fixed point.
        rows: ``(R,)`` row indices to report.

    Returns:
        ``(lo, hi)``: ``(..., R)`` inclusive column range per row (``lo > hi``: none),
        clipped to the image; the line's end pixel included.
    """
    x1, y1, x2, y2, inside = clip_line(p1[..., 0], p1[..., 1], p2[..., 0], p2[..., 1],
                                       width << XY_SHIFT, height << XY_SHIFT)
    dx, dy = x2 - x1, y2 - y1
    xmaj = dx.abs() > dy.abs()
    swap = torch.where(xmaj, dx < 0, dy < 0)
    x1, x2 = torch.where(swap, x2, x1), torch.where(swap, x1, x2)
    y1, y2 = torch.where(swap, y2, y1), torch.where(swap, y1, y2)
    dx, dy = x2 - x1, y2 - y1
    step = torch.where(xmaj, tdiv(dy * XY_ONE, dx.abs() | 1), tdiv(dx * XY_ONE, dy.abs() | 1))
    ecount = torch.where(xmaj, dx, dy) >> XY_SHIFT
    major0 = (torch.where(xmaj, x1, y1) + HALF) >> XY_SHIFT  # first pixel along the major axis
    minor0 = torch.where(xmaj, y1, x1) + HALF  # minor coordinate there, fixed point
    end_x, end_y = (x2 + HALF) >> XY_SHIFT, (y2 + HALF) >> XY_SHIFT

    r = rows.view(*([1] * x1.dim()), -1)
    ex = lambda t: t.unsqueeze(-1)  # noqa: E731 - lanes against rows
    xmaj, step, ecount, major0, minor0, inside = map(ex, (xmaj, step, ecount, major0, minor0, inside))
    # y-major: one pixel per row
    k = r - major0
    col = (minor0 + step * k) >> XY_SHIFT
    ymaj_ok = (k >= 0) & (k <= ecount)
    # x-major: the run of steps whose row is r
    lo_f, hi_f = r * XY_ONE - minor0, r * XY_ONE + (XY_ONE - 1) - minor0
    s = nonzero(step)
    k_lo = torch.where(step > 0, _ceil_div(lo_f, s), _ceil_div(hi_f, s))
    k_hi = torch.where(step > 0, torch.div(hi_f, s, rounding_mode="floor"), torch.div(lo_f, s, rounding_mode="floor"))
    flat = (minor0 >> XY_SHIFT) == r
    k_lo = torch.where(step == 0, torch.where(flat, 0, 1), k_lo).clamp(min=0)
    k_hi = torch.minimum(torch.where(step == 0, torch.where(flat, ecount, 0), k_hi), ecount)
    lo = torch.where(xmaj, major0 + k_lo, col)
    hi = torch.where(xmaj, major0 + k_hi, col)
    ok = inside & torch.where(xmaj, k_lo <= k_hi, ymaj_ok)
    end = inside & (ex(end_y) == r)
    big = torch.full_like(lo, 1 << 40)
    lo = torch.minimum(torch.where(ok, lo, big), torch.where(end, ex(end_x), big))
    hi = torch.maximum(torch.where(ok, hi, -big), torch.where(end, ex(end_x), -big))
    return lo.clamp(min=0), hi.clamp(max=width - 1)


def convex_fill_spans(v: torch.Tensor, width: int, height: int, rows: torch.Tensor, shift: int = SUBPIXEL_BITS):
    """The row spans ``cv2.fillConvexPoly`` (``LINE_8``) scans for triangles, outline excluded.

    Args:
        v: ``(F, 3, 2)`` int64 corners with ``shift`` fraction bits.
        rows: ``(R,)`` row indices.

    Returns:
        ``(lo, hi)``: ``(F, R)`` inclusive column ranges (``lo > hi``: none).
    """
    delta = (1 << shift) >> 1
    x, y = v[..., 0], v[..., 1]
    ty = (y + delta) >> shift
    X = x << (XY_SHIFT - shift)
    imin = torch.argmin(y, dim=1, keepdim=True)  # the first of equal minima, as OpenCV
    i1, i2 = (imin + 1) % 3, (imin + 2) % 3
    g = lambda t, i: torch.gather(t, 1, i)  # noqa: E731
    y0, y1, y2 = g(ty, imin), g(ty, i1), g(ty, i2)
    x0, x1, x2 = g(X, imin), g(X, i1), g(X, i2)
    ymax = ty.max(1, keepdim=True).values
    xmin, xmax = (x.min(1, keepdim=True).values + delta) >> shift, (x.max(1, keepdim=True).values + delta) >> shift

    def slope(xs, xe, ys, ye):  # OpenCV's rounded per-row step of an edge activated at row ys
        d = nonzero(ye - ys)
        return tdiv((xe - xs) * 2 + d, 2 * d)

    r = rows.view(1, -1)
    side0 = torch.where(r < y1, x0 + slope(x0, x1, y0, y1) * (r - y0), x1 + slope(x1, x2, y1, y2) * (r - y1))
    side1 = torch.where(r < y2, x0 + slope(x0, x2, y0, y2) * (r - y0), x2 + slope(x2, x1, y2, y1) * (r - y2))
    lo = (torch.minimum(side0, side1) + HALF) >> XY_SHIFT
    hi = (torch.maximum(side0, side1) + HALF) >> XY_SHIFT
    seen = (xmax >= 0) & (ymax >= 0) & (xmin < width) & (y0 < height)
    ok = seen & (r >= y0) & (r <= torch.clamp(ymax - 1, max=height - 1)) & (hi >= 0) & (lo < width)
    return torch.where(ok, lo.clamp(min=0), width), torch.where(ok, hi.clamp(max=width - 1), -1)


def row_interval_max(lo: torch.Tensor, hi: torch.Tensor, value: torch.Tensor, width: int) -> torch.Tensor:
    """Per pixel, the largest ``value`` among the row intervals that cover it.

    Args:
        lo, hi: ``(N, R)`` inclusive column intervals, one per item and row (``lo > hi``: empty).
        value: ``(N,)`` int64 > 0.

    Returns:
        ``(R, width)`` int64, 0 where nothing covers a pixel.

    A segment tree per row: each interval is split into its O(log W) canonical nodes
    (a fixed number of vectorised steps), every node keeps the maximum written to it,
    and a pixel's answer is the maximum over its leaf's ancestors.
    """
    n_items, n_rows = lo.shape
    n = 1 << max(width - 1, 1).bit_length()
    levels = n.bit_length()  # log2(n) + 1
    row = torch.arange(n_rows, device=lo.device).view(1, -1) * (2 * n)
    val = value.view(-1, 1).expand(n_items, n_rows)
    l, r = lo + n, hi + 1 + n  # half-open, in leaf numbering
    empty = lo > hi
    l = torch.where(empty, r, l)
    nodes, vals = [], []
    for _ in range(levels):
        take = (l < r) & ((l & 1) == 1)
        nodes.append(torch.where(take, l, 0) + row)
        vals.append(torch.where(take, val, 0))
        l = l + take.long()
        take = (l < r) & ((r & 1) == 1)
        r = r - take.long()
        nodes.append(torch.where(take, r, 0) + row)
        vals.append(torch.where(take, val, 0))
        l, r = l >> 1, r >> 1
    table = torch.zeros(n_rows * 2 * n, dtype=value.dtype, device=lo.device)
    table.scatter_reduce_(0, torch.stack(nodes).reshape(-1), torch.stack(vals).reshape(-1), "amax")
    table = table.view(n_rows, 2 * n)
    leaf = torch.arange(width, device=lo.device) + n
    ancestors = torch.stack([leaf >> k for k in range(levels)], 1)  # (W, levels)
    return table[:, ancestors.reshape(-1)].view(n_rows, width, levels).amax(-1)


class TriangleRaster(nn.Module):
    """:func:`~avatar_app.models.flow.rasterize_triangles` in torch (batched, capture-friendly).

    Args:
        triangles: ``(F, 3)`` vertex indices.
        size: the crop side the points refer to.
        resolution: side of the returned map (defaults to ``size``).
    """

    def __init__(self, triangles, size: int, resolution: int | None = None):
        super().__init__()
        self.size, self.resolution = size, size if resolution is None else resolution
        self.register_buffer("triangles", torch.tensor(np.asarray(triangles), dtype=torch.long), persistent=False)
        self.register_buffer("rows", torch.arange(self.resolution), persistent=False)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """``(B, V, 3)`` crop px (x, y, z; smaller z = nearer) -> ``(B, R, R) int64``
        triangle index per pixel, ``-1`` where uncovered."""
        return torch.stack([self._one(p) for p in points])  # B is fixed (1 in the live path)

    def _one(self, points: torch.Tensor) -> torch.Tensor:
        res = self.resolution
        # in the points' own precision, as numpy does it (float32 in the live path)
        xy = (points[:, :2] + 0.5) * (res / self.size) - 0.5
        fixed = torch.round(xy * (1 << SUBPIXEL_BITS)).to(torch.int64)
        corners = fixed[self.triangles]  # (F, 3, 2)
        z = points[self.triangles, 2]
        depth = (z[:, 0] + z[:, 1] + z[:, 2]) / 3  # numpy's mean: mirrored triangles can tie or not by a bit
        order = torch.argsort(-depth, stable=True)  # painted first .. last
        nf = order.shape[0]
        rank = torch.empty_like(order).scatter_(0, order, torch.arange(nf, device=order.device))
        fill_lo, fill_hi = convex_fill_spans(corners, res, res, self.rows)
        # each triangle's outline: edges (2, 0), (0, 1), (1, 2) drawn with Line2
        wide = corners << (XY_SHIFT - SUBPIXEL_BITS)
        prev = torch.roll(wide, 1, dims=1)  # (2, 0, 1); no index list: a CUDA graph may capture this
        line_lo, line_hi = line_row_spans(prev, wide, res, res, self.rows)  # (F, 3, R)
        lo = torch.minimum(fill_lo, line_lo.min(1).values)
        hi = torch.maximum(fill_hi, line_hi.max(1).values)
        best = row_interval_max(lo, hi, rank + 1, res)
        return torch.where(best > 0, order[(best - 1).clamp(min=0)], -1)
