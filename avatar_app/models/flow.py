"""Analytic dense flow from two landmark meshes, and warping with it.

The geometric animator and the neural warp network's prior (MetaPortrait's
"geometry-aware flow" from dense landmarks).  For every pixel of the *target*
(output) crop we compute where to sample the *source* crop (backward flow):

* **inside the face mesh**: piecewise-affine — the pixel's barycentric coordinates
  in its target triangle, applied to the same triangle in the source;
* **outside** (hair, ears, neck, background): the displacements of the face
  outline, interpolated by inverse-distance weighting and faded out with distance
  from the face, so hair and neck follow the head and the far background stays
  still;
* **inside an opened mouth**: flagged, with a coordinate running from the upper
  to the lower inner lip, so :func:`fill_mouth_interior` paints a mouth cavity
  instead of stretching lip texture;
* **around each eye**: the eyeball stays put while the lids slide over it and the iris
  turns by the target's gaze (:mod:`.eye_flow`), re-mapped from the piecewise-affine map.

Which triangle covers which pixel is found by :func:`rasterize_triangles` (OpenCV,
CPU, nearest triangle wins).  Everything after that is plain torch in
:class:`AnalyticFlow` (batched, differentiable with respect to the landmarks,
ONNX-exportable with the triangle-id map as an input).

Conventions: crop px with pixel ``j``'s centre at ``x = j``; grids are
``(B, H, W, 2)`` in ``norm [-1, 1]`` as ``torch.nn.functional.grid_sample`` with
``align_corners=False`` expects.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..face.mesh import REGION_MOUTH, MeshTopology, eye_region_triangles, topology
from .eye_flow import KNOT_SPAN, KNOTS, can_compact, eye_flow, eye_parts, eye_remap
from .head_motion import HeadMotion

_SHIFT = 4  # fixed-point fraction bits for cv2.fillPoly


def rasterize_triangles(points: np.ndarray, triangles: np.ndarray, size: int, resolution: int | None = None) -> np.ndarray:
    """Which triangle covers each pixel of the target crop.

    Triangles are painted far to near (by mean z), so where the mesh folds over
    itself (a turned head) the nearer surface wins.

    Args:
        points: ``(V, 3)`` crop px of a ``size``×``size`` crop (x, y, z; smaller z = nearer).
        triangles: ``(F, 3)`` vertex indices.
        size: the crop side the points refer to.
        resolution: side of the returned map (defaults to ``size``); the flow is
            computed at this resolution.

    Returns:
        ``(resolution, resolution) int64`` triangle index per pixel, ``-1`` where uncovered.
    """
    res = size if resolution is None else resolution
    xy = (points[:, :2] + 0.5) * (res / size) - 0.5
    fixed = np.round(xy * (1 << _SHIFT)).astype(np.int32)
    depth = points[triangles, 2].mean(axis=1)
    order = np.argsort(-depth, kind="stable")
    ids = np.full((res, res), -1, dtype=np.int32)
    polys = fixed[triangles]
    for f in order:
        cv2.fillConvexPoly(ids, polys[f], int(f), lineType=cv2.LINE_8, shift=_SHIFT)
    return ids.astype(np.int64)


def pixel_grid(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """``(H, W, 2)`` pixel-centre coordinates ``(x, y)`` in px."""
    ys = torch.arange(height, device=device, dtype=dtype)
    xs = torch.arange(width, device=device, dtype=dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1)


def px_to_norm(xy: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Crop px -> ``norm [-1, 1]`` (align_corners=False)."""
    scale = torch.tensor([2.0 / width, 2.0 / height], dtype=xy.dtype, device=xy.device)
    return (xy + 0.5) * scale - 1.0


class AnalyticFlow(nn.Module):
    """Backward flow target -> source from landmark meshes (see module docstring).

    The flow is computed at ``resolution`` (at most 256 by default) and upsampled
    bilinearly to ``size``: inside a triangle the map is affine, which bilinear
    interpolation reproduces exactly, so only triangle edges are approximated.

    Args:
        size: crop side in px (landmarks are in px of this crop; outputs have this size).
        topo: mesh topology (defaults to the project's).
        resolution: side at which the flow is computed (the ``tri_ids`` map's side).
        coarse: resolution at which the smooth outside-the-face field is computed.
        upsample: return outputs at ``size``; ``False`` returns them at ``resolution``
            (callers that resample more cheaply themselves, e.g. OpenCV on the CPU).
        falloff: ``(inner, outer)`` distances from the face outline, in units of the
            face height (forehead top to chin), over which outside motion fades to 0 —
            the narrowest band; a large motion widens it (``fold_margin``).
        big_motion: ``(lo, hi)``: how far the head's similarity moves the outline (face
            heights) where the outside map starts / ends turning rigid (:mod:`.head_motion`).
        fold_margin: the band widens with the head's motion so the outside map's slope
            stays under this (< 1: no fold, so no second copy of the face).
        max_band: the band's widest, in face heights.
        math_dtype: precision of the per-triangle maps; float64 (default) keeps thin
            triangles exact, float32 is for exported engines (TensorRT has no float64).
    """

    def __init__(self, size: int, topo: MeshTopology | None = None, resolution: int | None = None, coarse: int = 32,
                 falloff=(0.1, 0.65), big_motion=(0.3, 0.45), fold_margin: float = 0.6, max_band: float = 3.0,
                 upsample: bool = True, math_dtype: torch.dtype = torch.float64):
        super().__init__()
        self.upsample = upsample
        self.math_dtype = math_dtype
        topo = topo or topology()
        self.size = size
        self.resolution = res = min(size, 256) if resolution is None else resolution
        self.coarse = min(coarse, res)
        self.register_buffer("triangles", torch.tensor(topo.triangles, dtype=torch.long), persistent=False)
        self.register_buffer(
            "is_mouth", torch.as_tensor(topo.triangle_region == REGION_MOUTH, dtype=torch.float32), persistent=False
        )
        self.register_buffer("is_eye", torch.from_numpy(eye_region_triangles(topo)), persistent=False)  # (F, 2)
        parts = eye_parts(topo)
        self._eye_parts = tuple(parts)
        for name, index in parts.items():
            self.register_buffer(f"eye_{name}", index, persistent=False)
        self.register_buffer("eye_knots", torch.linspace(-KNOT_SPAN, KNOT_SPAN, KNOTS), persistent=False)
        lip_coord = torch.zeros(topo.neutral.shape[0])
        lip_coord[torch.tensor(topo.lips_inner_lower, dtype=torch.long)] = 1.0
        lip_coord[torch.tensor(topo.lips_inner_upper[[0, -1]], dtype=torch.long)] = 0.5  # corners
        self.register_buffer("lip_coord", lip_coord, persistent=False)
        self.register_buffer("pixels", pixel_grid(res, res).permute(2, 0, 1).contiguous(), persistent=False)  # (2, R, R)
        step = res / self.coarse
        coarse_px = pixel_grid(self.coarse, self.coarse) * step + (step - 1) / 2
        self.head = HeadMotion(topo.face_oval, coarse_px, falloff, big_motion, fold_margin, max_band)

    def forward(self, src_xy: torch.Tensor, tgt_xy: torch.Tensor, tri_ids: torch.Tensor, fine_eyes: bool = False,
                lid_lift: torch.Tensor | None = None):
        """Compute the flow.

        Args:
            src_xy: ``(B, V, 2)`` source landmarks, crop px.
            tgt_xy: ``(B, V, 2)`` target landmarks, crop px.
            tri_ids: ``(B, R, R) int64`` from :func:`rasterize_triangles` on the target,
                ``R`` = ``self.resolution``.
            fine_eyes: without ``upsample`` and with ``resolution < size``: leave the eyes
                out of the returned grid and return their re-map at ``size`` as well, for the
                caller to add once it has upsampled the grid (:func:`.eye_flow.eye_remap`).
                With ``upsample`` the eyes are always re-mapped at ``size``: upsampling a
                closed lid line blurs a line of eyeball into it.
            lid_lift: ``(B, 2, 1)``, :func:`.eye_lids.closed_lid_lift` of the source (``None``: 0).

        Returns:
            ``(grid, mouth, mouth_coord)`` at ``size`` (or ``resolution`` without
            ``upsample``): ``grid (B, S, S, 2)`` norm [-1, 1] source
            sampling positions; ``mouth (B, 1, H, W)`` 1 inside the target's inner
            lips; ``mouth_coord (B, 1, H, W)`` 0 at the upper inner lip .. 1 at the lower.
            With ``fine_eyes`` a fourth item, ``(idx, delta)``: add ``delta (B, 2, N)`` (px of
            ``size``) to the upsampled source positions (px, channel first) at flat pixel
            indices ``idx (B, 2, N)``; ``None`` when the flow is computed at ``size``.
        """
        grid, mouth, mouth_coord, remap, _ = self._flow(src_xy, tgt_xy, tri_ids, fine_eyes, lid_lift)
        return (grid, mouth, mouth_coord, remap) if fine_eyes else (grid, mouth, mouth_coord)

    def for_networks(self, src_xy: torch.Tensor, tgt_xy: torch.Tensor, tri_ids: torch.Tensor,
                     lid_lift: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """What the warp network takes from the flow: :meth:`forward`'s ``(grid, mouth, mouth_coord)``
        and ``large_motion (B,)``: 0 while the head moved little, 1 where the outside map moves it
        rigidly (:class:`.head_motion.HeadMotion`, which measures it for that map)."""
        grid, mouth, mouth_coord, _, large = self._flow(src_xy, tgt_xy, tri_ids, False, lid_lift)
        return grid, mouth, mouth_coord, large

    def _flow(self, src_xy: torch.Tensor, tgt_xy: torch.Tensor, tri_ids: torch.Tensor, fine_eyes: bool,
              lid_lift: torch.Tensor | None):
        """:meth:`forward`'s ``(grid, mouth, mouth_coord, remap)`` and the head's ``large_motion``."""
        b, h, w = tri_ids.shape
        nf = self.triangles.shape[0]
        src_full, tgt_full = src_xy, tgt_xy
        if h != self.size:  # landmarks into flow-resolution px
            k = h / self.size
            src_xy = (src_xy + 0.5) * k - 0.5
            tgt_xy = (tgt_xy + 0.5) * k - 0.5
        # Per-triangle maps are few (F ~ 900): build them in float64 for thin triangles.
        src_tri = src_xy[:, self.triangles].to(self.math_dtype)  # (B, F, 3, 2)
        tgt_tri = tgt_xy[:, self.triangles].to(self.math_dtype)
        # Barycentrics relative to each triangle's centre: no cancellation between
        # products of large px values, so float32 stays within ~1e-3 px of float64.
        centre = tgt_tri.mean(2)  # (B, F, 2)
        bary_mat, degenerate = _barycentric_matrices(tgt_tri - centre[:, :, None])  # (B, F, 3, 3), (B, F)
        # Per triangle, one affine map target px -> (source x, source y, lip coordinate).
        lip = self.lip_coord[self.triangles].to(self.math_dtype).expand(b, nf, 3)[:, :, None]
        attrs = torch.cat([src_tri.transpose(-1, -2), lip], -2)
        affine = attrs @ bary_mat  # (B, F, 3, 3), of (target px - centre)
        offset = affine[..., 2] - affine[..., 0] * centre[..., :1] - affine[..., 1] * centre[..., 1:]
        affine = torch.cat([affine[..., :2], offset[..., None]], -1)
        # A collapsed target triangle covers (almost) no pixels; those it gets are moved
        # by the triangle's mean displacement instead of an ill-conditioned map.
        shift = (src_tri - tgt_tri).mean(2)  # (B, F, 2)
        eye = torch.eye(3, dtype=affine.dtype, device=affine.device)[:2]
        translate = torch.cat([eye.expand(b, nf, 2, 3)[..., :2], shift[..., None]], -1)
        translate = torch.cat([translate, torch.zeros_like(affine[:, :, 2:])], -2)
        translate[:, :, 2, 2] = 0.5
        affine = torch.where(degenerate[..., None, None], translate, affine)
        # Channel-first table (12, B*F) so each per-pixel gather lands contiguous: the source x / y maps'
        # coefficients of x, of y and offsets as pairs (so both channels come in three ops), the lip map's
        # three, the mouth flag, the two eye flags.
        table = torch.cat([affine[..., :2, :].transpose(-1, -2).reshape(b, nf, 6), affine[..., 2, :]], -1)
        table = torch.cat([table.to(src_xy.dtype), self.is_mouth.expand(b, nf)[..., None],
                           self.is_eye.expand(b, nf, 2)], -1)
        table = table.reshape(b * nf, 12).t()

        covered = (tri_ids >= 0).to(src_xy.dtype).unsqueeze(1)  # (B, 1, H, W)
        flat = tri_ids.clamp(min=0) + (torch.arange(b, device=tri_ids.device) * nf).view(b, 1, 1)
        g = table.index_select(1, flat.reshape(-1)).reshape(12, b, h, w)
        x, y = self.pixels[0, :h, :w], self.pixels[1, :h, :w]
        inside = (g[0:2] * x + g[2:4] * y + g[4:6]).transpose(0, 1)  # (B, 2, H, W)
        eyes = g[10:12].transpose(0, 1) * covered  # (B, 2, H, W)
        parts = {name: getattr(self, f"eye_{name}") for name in self._eye_parts}
        at_size = h != self.size and (self.upsample or fine_eyes)  # the eyes are re-mapped at `size` (below)
        pre_eyes = inside
        if not at_size:
            inside = eye_flow(src_xy, tgt_xy, inside, eyes, parts, self.eye_knots, lid_lift)
        lip = (g[6] * x + g[7] * y + g[8]).unsqueeze(1)

        moved, large = self.head(src_xy, tgt_xy, h, w)
        outside = self.pixels[:, :h, :w].unsqueeze(0) + moved  # (B, 2, H, W)
        # inside the mesh: piecewise affine; outside: the smooth field; a soft seam between
        blend = _soften(covered) * covered
        src_pos = outside + (inside - outside) * blend
        grid = (src_pos + 0.5) * (2.0 / w) - 1.0  # (square: h == w)
        mouth = g[9].unsqueeze(1) * covered
        mouth_coord = lip.clamp(0, 1)
        # the eye regions lie inside the mesh (blend 1), so their re-map adds after the blend
        remap = eye_remap(src_full, tgt_full, pre_eyes, eyes, parts, self.eye_knots, (self.size, self.size),
                          compact=can_compact(pre_eyes), lid_lift=lid_lift) if at_size else None
        if h != self.size and self.upsample:
            up = F.interpolate(torch.cat([grid, mouth, mouth_coord], 1), size=(self.size, self.size),
                               mode="bilinear", align_corners=False)
            grid, mouth, mouth_coord = up[:, :2], up[:, 2:3], up[:, 3:4]
            idx, delta = remap
            grid = grid.reshape(b, 2, -1).scatter_add(2, idx, delta * (2.0 / self.size)).reshape(grid.shape)
            remap = None
        return grid.permute(0, 2, 3, 1), mouth, mouth_coord, remap, large


def _barycentric_matrices(tri: torch.Tensor, min_area2: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of ``[[x0 x1 x2], [y0 y1 y2], [1 1 1]]`` per triangle.

    Args:
        tri: ``(..., 3, 2)`` triangle corners in px.
        min_area2: twice the area (px²) under which a triangle counts as collapsed.

    Returns:
        ``(..., 3, 3)`` matrices (finite even for collapsed triangles, whose
        determinant is clamped) and a ``(...)`` bool mask of collapsed triangles.
    """
    x0, y0 = tri[..., 0, 0], tri[..., 0, 1]
    x1, y1 = tri[..., 1, 0], tri[..., 1, 1]
    x2, y2 = tri[..., 2, 0], tri[..., 2, 1]
    det = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    degenerate = det.abs() < min_area2
    det = torch.where(degenerate, torch.full_like(det, min_area2), det)
    rows = [
        torch.stack([y1 - y2, x2 - x1, x1 * y2 - x2 * y1], -1),
        torch.stack([y2 - y0, x0 - x2, x2 * y0 - x0 * y2], -1),
        torch.stack([y0 - y1, x1 - x0, x0 * y1 - x1 * y0], -1),
    ]
    return torch.stack(rows, -2) / det[..., None, None], degenerate


def _soften(mask: torch.Tensor, k: int = 5) -> torch.Tensor:
    """Box-blur a ``(B, 1, H, W)`` mask (keeps edges soft where two flows meet; zero padding).

    On the CPU, outside an export, as differences of a summed-area table: the same values
    (exact for a 0/1 mask) at a fifth of ``avg_pool2d``'s time, which matters on the live path.
    Exported graphs keep ``avg_pool2d`` (a running sum over a whole frame is no fp16 op)."""
    if mask.device.type != "cpu" or torch.onnx.is_in_onnx_export():
        return F.avg_pool2d(mask, k, stride=1, padding=k // 2)
    r = k // 2
    table = F.pad(mask, (r + 1, r, r + 1, r)).cumsum(2).cumsum(3)
    box = table[..., k:, k:] - table[..., :-k, k:] - table[..., k:, :-k] + table[..., :-k, :-k]
    return box * (1.0 / (k * k))


def warp_image(image: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Sample ``image (B, C, Hs, Ws)`` at ``grid (B, H, W, 2)`` (bilinear, edge padding)."""
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)


# Mouth palette in BGR, [0, 1].
_TEETH = (0.80, 0.83, 0.86)
_CAVITY = (0.10, 0.08, 0.22)
_THROAT = (0.03, 0.02, 0.07)


@functools.lru_cache(maxsize=16)
def _palette(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """The mouth colours as ``(1, 3, 1, 1)`` tensors, made once per device and dtype
    (no host-to-device copy per frame, so CUDA graphs can capture the fill)."""
    return tuple(torch.tensor(c, dtype=dtype).view(1, 3, 1, 1).to(device) for c in (_TEETH, _CAVITY, _THROAT))


def fill_mouth_interior(
    warped: torch.Tensor, mouth: torch.Tensor, mouth_coord: torch.Tensor, amount: torch.Tensor | float, teeth: float = 0.22
) -> torch.Tensor:
    """Paint a mouth cavity (upper teeth, dark throat) where the target mouth opened.

    Args:
        warped: ``(B, 3, H, W)`` BGR in [0, 1].
        mouth: ``(B, 1, H, W)`` inside-inner-lips mask from :class:`AnalyticFlow`.
        mouth_coord: ``(B, 1, H, W)`` 0 at upper inner lip .. 1 at lower.
        amount: 0..1 per batch item (``(B,)``) or scalar: how much of the opening is
            new (1 when the source mouth is closed; 0 leaves the warp untouched).
        teeth: fraction of the opening, from the upper lip, showing teeth.
    """
    dev, dt = warped.device, warped.dtype
    teeth_c, cavity, throat = _palette(dev, dt)
    t = mouth_coord
    is_teeth = ((teeth - t) / 0.06).clamp(0, 1)
    depth = (1 - (2 * t - 1) ** 2).clamp(0, 1)  # darkest mid-way between the lips
    inner = cavity * (1 - depth) + throat * depth
    colour = teeth_c * is_teeth + inner * (1 - is_teeth)
    if not isinstance(amount, torch.Tensor):
        amount = torch.full((1,), float(amount), device=dev, dtype=dt)  # no host copy (CUDA-graph safe)
    amount = amount.to(dt).reshape(-1, 1, 1, 1)
    alpha = _soften(mouth, 3) * mouth * amount
    return warped * (1 - alpha) + colour * alpha
