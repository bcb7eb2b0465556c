"""The landmark conditioning image (:mod:`.conditioning`) drawn in torch, on any device.

:class:`LandmarkImage` produces what :func:`~avatar_app.models.conditioning.landmark_image`
draws with OpenCV — the same ``(6, S, S)`` planes, lines, fills and gaze blobs —
from a tensor of landmarks, with OpenCV's rules redone in integer arithmetic
(:mod:`.gpu_raster`):

* **anti-aliased lines** (``cv2.LINE_AA``, 1 px): OpenCV's ``LineAA`` steps, its
  3-pixel filter table and end-point corrections, each line a fixed number of steps
  (the image side, enough for any line inside it; unused steps weigh nothing);
* **blending**: OpenCV blends every line into the image in drawing order
  (``p += (c - p) * a / 256``, twice per pixel and step).  Lines of one colour commute,
  so each colour layer (the mesh, then every part) is applied at once from the
  product of its lines' ``1 - a / 256``; the order between layers is kept.  Only the
  integer rounding of each step is not reproduced (a level here and there where lines
  cross);
* **filled polygons** (eye and mouth openings): OpenCV's even-odd edge table, the
  anti-aliased outline drawn with rows rounded as ``cv2.fillPoly`` does;
* **gaze**: the same float32 Gaussian blobs, masked and rounded.

Only 1 px lines are drawn this way, i.e. images narrower than 384 px (the networks'
256 px input); wider images draw thick lines and stay with OpenCV.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..types import NUM_LANDMARKS
from .conditioning import _GAP_OPEN, _GAP_SHUT, _MESH_GREY, _line_width, _plan
from .gpu_raster import HALF, SUBPIXEL_BITS, XY_ONE, XY_SHIFT, clip_line, nonzero, tdiv, to_fixed

# OpenCV's LineAA constants (modules/imgproc/src/drawing.cpp): slope correction and the filter
# profile across a 1 px line; needed as they are for the same pixels.
_SLOPE_CORR = (181, 181, 181, 182, 182, 183, 184, 185, 187, 188, 190, 192, 194, 196, 198, 201,
               203, 206, 209, 211, 214, 218, 221, 224, 227, 231, 235, 238, 242, 246, 250, 254)
_FILTER = (168, 177, 185, 194, 202, 210, 218, 224, 231, 236, 241, 246, 249, 252, 254, 254,
           254, 254, 252, 249, 246, 241, 236, 231, 224, 218, 210, 202, 194, 185, 177, 168,
           158, 149, 140, 131, 122, 114, 105, 97, 89, 82, 75, 68, 62, 56, 50, 45,
           40, 36, 32, 28, 25, 22, 19, 16, 14, 12, 11, 9, 8, 7, 5, 5)


def _end_index(count: torch.Tensor) -> torch.Tensor:
    """OpenCV's end-point table row/column: 0, 1, then 2 for counts of 2 and more."""
    return count.clamp(max=2)


def line_aa_pixels(p1: torch.Tensor, p2: torch.Tensor, size: int, steps: int, slope_corr: torch.Tensor,
                   filt: torch.Tensor):
    """The pixels and weights OpenCV's ``LineAA`` blends for each line.

    Args:
        p1, p2: ``(L, 2)`` int64 end points, ``XY_SHIFT`` fixed point.
        size: image side.
        steps: steps per line (lines longer than that are cut; the image side is enough).
        slope_corr, filt: OpenCV's tables as int64 tensors.

    Returns:
        ``(index, alpha)``: ``(L, steps, 3)`` flat pixel indices (``y * size + x``) and
        blend weights 0..255 (0 for steps past a line's end or pixels outside).
    """
    lim = size << XY_SHIFT
    x1, y1, x2, y2, inside = clip_line(p1[:, 0], p1[:, 1], p2[:, 0], p2[:, 1], lim, lim)
    dx, dy = x2 - x1, y2 - y1
    xmaj = dx.abs() > dy.abs()
    swap = torch.where(xmaj, dx < 0, dy < 0)
    x1, x2 = torch.where(swap, x2, x1), torch.where(swap, x1, x2)
    y1, y2 = torch.where(swap, y2, y1), torch.where(swap, y1, y2)
    # work in (major, minor) coordinates
    m1, m2 = torch.where(xmaj, x1, y1), torch.where(xmaj, x2, y2)
    n1, n2 = torch.where(xmaj, y1, x1), torch.where(xmaj, y2, x2)
    step = tdiv((n2 - n1) * XY_ONE, (m2 - m1) | 1)
    m2 = m2 + XY_ONE
    ecount = (m2 >> XY_SHIFT) - (m1 >> XY_SHIFT)
    n1 = n1 + ((step * -(m1 & (XY_ONE - 1))) >> XY_SHIFT) + HALF
    slope = (step >> (XY_SHIFT - 5)) & 0x3F
    slope = torch.where(step < 0, slope ^ 0x3F, slope)
    slope = torch.where((slope & 0x20) != 0, torch.full_like(slope, 0x100), slope_corr[slope & 0x1F])
    i, j = (m1 >> (XY_SHIFT - 7)) & 0x78, (m2 >> (XY_SHIFT - 7)) & 0x78
    t0, t1, t2 = slope << 7, ((0x78 - i) | 4) * slope, (j | 4) * slope
    e13 = (((((j - i) & 0x78) | 4) * slope) >> 8) & 0x1FF
    ep = torch.stack([torch.zeros_like(slope), e13, (t1 >> 8) & 0x1FF, e13,
                      (((((j - i) + 0x80) | 4) * slope) >> 8) & 0x1FF, ((t1 + t0) >> 8) & 0x1FF,
                      (t2 >> 8) & 0x1FF, ((t2 + t0) >> 8) & 0x1FF, slope], 1)  # (L, 9)

    k = torch.arange(steps, device=p1.device).view(1, -1)
    ex = lambda t: t.view(-1, 1)  # noqa: E731
    left = ex(ecount) - k  # OpenCV's ecount at this step
    live = ex(inside) & (left >= 0)
    corr = torch.gather(ep, 1, _end_index(k.expand_as(left)) * 3 + _end_index(left.clamp(min=0)))
    minor = ex(n1) + ex(step) * k
    dist = (minor >> (XY_SHIFT - 5)) & 31
    taps = torch.stack([filt[dist + 32], filt[dist], filt[63 - dist]], -1)  # (L, steps, 3)
    alpha = (corr.unsqueeze(-1) * taps >> 8) & 0xFF
    major = (ex(m1) >> XY_SHIFT) + k
    minors = ((minor >> XY_SHIFT) - 1).unsqueeze(-1) + torch.arange(3, device=p1.device)
    major = major.unsqueeze(-1).expand_as(minors)
    xs, ys = torch.where(ex(xmaj).unsqueeze(-1), major, minors), torch.where(ex(xmaj).unsqueeze(-1), minors, major)
    ok = live.unsqueeze(-1) & (xs >= 0) & (xs < size) & (ys >= 0) & (ys < size)
    index = torch.where(ok, ys * size + xs, 0)
    return index, torch.where(ok, alpha, 0)


def _transmittance(index, alpha, layer, n_layers: int, pixels: int) -> torch.Tensor:
    """Per layer and pixel, the fraction of the old value left after all its lines blend in:
    ``prod (1 - a/256)^2`` (OpenCV blends each pixel of a step twice)."""
    log_keep = 2.0 * torch.log1p(-alpha.to(torch.float32) / 256.0)
    flat = (layer.view(-1, 1, 1) * pixels + index).reshape(-1)
    acc = torch.zeros(n_layers * pixels, dtype=torch.float32, device=index.device)
    acc.index_add_(0, flat, log_keep.reshape(-1))
    return torch.exp(acc).view(n_layers, pixels)


def poly_fill(y_rows: torch.Tensor, x_fixed: torch.Tensor, edge_from: torch.Tensor, edge_to: torch.Tensor,
              group: torch.Tensor, n_groups: int, size: int) -> torch.Tensor:
    """``cv2.fillPoly``'s interior (even-odd edge table, outline excluded), one mask per call.

    Args:
        y_rows: ``(V,)`` int64 vertex rows (rounded as ``CollectPolyEdges`` does).
        x_fixed: ``(V,)`` int64 vertex x, ``XY_SHIFT`` fixed point.
        edge_from, edge_to: ``(E,)`` vertex indices of each polygon edge.
        group: ``(E,)`` which ``cv2.fillPoly`` call (mask) each edge belongs to.

    Returns:
        ``(n_groups, size, size)`` bool.
    """
    ya, yb = y_rows[edge_from], y_rows[edge_to]
    xa, xb = x_fixed[edge_from], x_fixed[edge_to]
    y0, y1 = torch.minimum(ya, yb), torch.maximum(ya, yb)
    x0 = torch.where(ya < yb, xa, xb)
    dx = tdiv(xb - xa, nonzero(yb - ya))
    live = ya != yb
    far = 1 << 60
    x_end = x0 + (y1 - y0) * dx
    r = torch.arange(size, device=y_rows.device).view(-1, 1)  # (R, 1)
    active = live & (r >= y0) & (r < y1)  # (R, E)
    xr = (x0 + dx * (r - y0)).unsqueeze(1)  # (R, 1, E)
    px = (torch.arange(size, device=y_rows.device) << XY_SHIFT).view(1, -1, 1)  # (1, W, 1)
    act = active.unsqueeze(1)
    below, at_or_below = act & (xr < px), act & (xr <= px)  # (R, W, E)
    masks = []
    for g in range(n_groups):  # a fixed handful (the eye and mouth masks)
        mine = live & (group == g)
        # OpenCV skips a fill whose polygons lie entirely off the image
        x_hi = torch.maximum(torch.where(mine, x0, -far), torch.where(mine, x_end, -far)).amax()
        x_lo = torch.minimum(torch.where(mine, x0, far), torch.where(mine, x_end, far)).amin()
        seen = ((torch.where(mine, y1, -far).amax() >= 0) & (torch.where(mine, y0, far).amin() < size)
                & (x_hi >= 0) & (x_lo < (size << XY_SHIFT)) & (mine.sum() >= 2))
        lt, le = (below & mine).sum(-1), (at_or_below & mine).sum(-1)
        masks.append(seen & (((lt % 2) == 1) | (le > lt)))  # inside a span, or on one of its (closed) ends
    return torch.stack(masks)


class LandmarkImage(nn.Module):
    """The conditioning image of a batch of faces: ``(B, 478, 2|3)`` px ->
    ``(B, 6, size, size) float32`` in ``[0, 1]``, as
    :func:`~avatar_app.models.conditioning.landmark_images` draws it.

    Args:
        size: side of the output image (below 384: 1 px lines).
        src_size: side of the crop the points refer to (default: ``size``).
    """

    def __init__(self, size: int = 256, src_size: int | None = None):
        super().__init__()
        if _line_width(size) != 1:
            raise ValueError(f"the torch landmark image draws 1 px lines (images under 384 px), not {size} px")
        self.size, self.src_size = size, src_size
        plan = _plan()
        v = NUM_LANDMARKS
        starts, ends, layers, colours = [], [], [], [(_MESH_GREY,) * 3]
        for a, b in plan.mesh_splits:  # layer 0: the faint mesh
            path = plan.mesh_order[a:b]
            starts.append(path[:-1]), ends.append(path[1:]), layers.append(np.zeros(len(path) - 1, int))
        for n, part in enumerate(plan.parts, 1):  # then one layer per coloured part, in drawing order
            colours.append(part.color)
            for path in part.paths:
                first = np.roll(path, 1) if part.closed else path[:-1]  # closed: last -> first comes first
                last = path if part.closed else path[1:]
                starts.append(first), ends.append(last), layers.append(np.full(len(last), n))
        self.n_colours = len(colours)
        # the filled masks' outlines: their own layers, end points from the row-rounded copy (+ v)
        fill_from, fill_to, fill_group = [], [], []
        for g, polys in enumerate((plan.eyes, (plan.mouth,))):
            for poly in polys:
                fill_from.append(np.roll(poly, 1)), fill_to.append(poly), fill_group.append(np.full(len(poly), g))
        starts += [f + v for f in fill_from]
        ends += [t + v for t in fill_to]
        layers += [g + self.n_colours for g in fill_group]
        cat = lambda xs: torch.as_tensor(np.concatenate(xs), dtype=torch.long)  # noqa: E731
        self.register_buffer("seg_a", cat(starts), persistent=False)
        self.register_buffer("seg_b", cat(ends), persistent=False)
        self.register_buffer("seg_layer", cat(layers), persistent=False)
        self.register_buffer("fill_from", cat(fill_from), persistent=False)
        self.register_buffer("fill_to", cat(fill_to), persistent=False)
        self.register_buffer("fill_group", cat(fill_group), persistent=False)
        self.register_buffer("colours", torch.tensor(colours, dtype=torch.float32), persistent=False)
        self.register_buffer("irises", torch.as_tensor(np.stack(plan.irises), dtype=torch.long), persistent=False)
        self.register_buffer("lid_upper", torch.as_tensor(np.stack([u for u, _ in plan.lids]), dtype=torch.long),
                             persistent=False)
        self.register_buffer("lid_lower", torch.as_tensor(np.stack([lo for _, lo in plan.lids]), dtype=torch.long),
                             persistent=False)
        self.register_buffer("slope_corr", torch.tensor(_SLOPE_CORR, dtype=torch.long), persistent=False)
        self.register_buffer("filt", torch.tensor(_FILTER, dtype=torch.long), persistent=False)
        self.register_buffer("coords", torch.arange(size, dtype=torch.float32), persistent=False)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return torch.stack([self._one(p) for p in points])  # B is fixed (1 in the live path)

    def _one(self, points: torch.Tensor) -> torch.Tensor:
        s = self.size
        xy = points[:, :2].to(torch.float64)
        if self.src_size is not None and self.src_size != s:
            xy = (xy + 0.5) * (s / float(self.src_size)) - 0.5
        xy = torch.nan_to_num(xy, nan=-4.0 * s).clamp(-4.0 * s, 5.0 * s)
        fixed = to_fixed(xy, s)
        wide = fixed << (XY_SHIFT - SUBPIXEL_BITS)
        # cv2.fillPoly rounds its vertices to whole rows (x keeps its fraction), outline included
        rows = (fixed[:, 1] + ((1 << SUBPIXEL_BITS) >> 1)) >> SUBPIXEL_BITS
        ends = torch.cat([wide, torch.stack([wide[:, 0], rows << XY_SHIFT], 1)])

        index, alpha = line_aa_pixels(ends[self.seg_a], ends[self.seg_b], s, s, self.slope_corr, self.filt)
        keep = _transmittance(index, alpha, self.seg_layer, self.n_colours + 2, s * s)
        lines = torch.zeros(3, s * s, dtype=torch.float32, device=points.device)
        for layer in range(self.n_colours):  # fixed: the mesh, then each part in drawing order
            c = self.colours[layer].view(3, 1)
            lines = torch.round(c + (lines - c) * keep[layer])
        outlines = torch.round(255.0 * (1.0 - keep[self.n_colours:])).view(2, s, s)
        inside = poly_fill(rows, wide[:, 0], self.fill_from, self.fill_to, self.fill_group, 2, s)
        masks = torch.where(inside, torch.full_like(outlines, 255.0), outlines)  # the fill overwrites
        gaze = self._gaze(xy, masks[0])
        planes = torch.cat([lines.view(3, s, s), masks, gaze[None]])
        return planes * float(np.float32(1.0 / 255.0))

    def _gaze(self, xy: torch.Tensor, eye: torch.Tensor) -> torch.Tensor:
        """Channel 5 (0..255 float): a Gaussian per iris, masked by the eye openings."""
        s = self.size
        centre = xy[self.irises[:, 0]]  # (2, 2)
        ring = (xy[self.irises[:, 1:]] - centre[:, None]).norm(dim=-1)  # (2, 4)
        sigma = torch.maximum(torch.maximum(0.5 * (ring[:, 0] + ring[:, 2]), 0.5 * (ring[:, 1] + ring[:, 3])),
                              torch.full_like(ring[:, 0], 0.5))
        gap = (xy[self.lid_upper] - xy[self.lid_lower]).norm(dim=-1).amax(-1) / sigma
        visible = ((gap - _GAP_SHUT) / (_GAP_OPEN - _GAP_SHUT)).clamp(0.0, 1.0).to(torch.float32)
        r = 3.0 * sigma
        lo = torch.floor(centre - r[:, None]).clamp(min=0)  # (2, 2) window start, x then y
        hi = (torch.ceil(centre + r[:, None]) + 1).clamp(max=s)  # exclusive end
        inv = (-0.5 / (sigma * sigma)).to(torch.float32)
        c32 = centre.to(torch.float32)
        g = lambda axis: torch.exp(  # noqa: E731
            (self.coords.view(1, -1) - c32[:, axis:axis + 1]) ** 2 * inv[:, None])
        k = self.coords.view(1, -1).double()
        win = lambda axis: (k >= lo[:, axis:axis + 1]) & (k < hi[:, axis:axis + 1])  # noqa: E731
        gx, gy = g(0) * win(0), g(1) * win(1)  # (2, S)
        blob = gy[:, :, None] * gx[:, None, :]  # (2, S, S)
        blob = torch.round(blob * (eye[None] * visible[:, None, None]))
        return blob.amax(0)
