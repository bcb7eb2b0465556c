"""Eyes inside the analytic flow: the eyeball stays put, the lids slide over it, the iris turns.

The piecewise-affine flow (:mod:`.flow`) moves the eye as skin: the opening's content is
stretched with the lids, and the thin band of lashes above the opening stretches as well,
so a closing eye shows a tall dark band (read as half-open) and a widening one a
stretched iris. Here each eye is treated as three layers, in the eye's own frame (``u``
along the corner line, −½ at the image-left corner .. +½ at the image-right one, ``v``
across it, down positive; both in eye widths, so source and target compare):

* **the eyeball** (inside the target's opening) is rigid in that frame: a target pixel
  samples the source at the same ``(u, v)``, shifted by the gaze (below) and kept inside
  the source's opening. A thin band of shadow under the upper lid (:data:`SHADE`) goes
  with the lid; where the target opens wider than the source, the eyeball's row just
  below that band is continued (never lid skin or lashes);
* **the upper lid's margin** (a band of :data:`LASH` eye widths: lashes, lid line) moves
  rigidly with the target's lid, and the lid skin between it and the next ring of mesh
  points stretches or folds; the lower lid's band stretches between its margin and its
  ring. At those rings the map joins the piecewise-affine one without a seam (a closing lid's
  skin may come from further up, :mod:`.eye_lids`, reached within the band);
* **the iris** moves inside the opening by the driver's gaze relative to the source: the
  target iris centre (clipped to the opening along ``u``: it may hide behind a corner by
  :data:`CORNER_OVERLAP` of its radius) samples the source's iris centre. The shift is
  full over the iris (it keeps its round shape) and fades linearly to 0 at the corners:
  the sclera on the side the iris left is stretched over it. Its vertical part is capped
  at :data:`MAX_VERTICAL` eye widths (the lids carry most of a vertical look).

Lid and iris positions are the target's relative to the source's, times :data:`LID_GAIN` /
:data:`IRIS_GAIN` (docs/EYES.md: how they were measured). Where the source shows little of
its eyeball (closed or half-closed eyes), the lids still open as far as the target's, over
the row of eyeball (or lash line) the source shows next to its lid: the analytic flow cannot
show an eye it never saw, but it does not hold the eyes shut either.

Everything runs on one fixed-size window per eye (:mod:`.eye_window`: gathered from and scattered
back into the flow field; on the CPU only on the pixels of each eye's region inside it), so the cost
does not grow with the crop; all in torch on ``(B, …)`` batches, ONNX-exportable (no data-dependent
shapes or control flow outside the CPU's eager path).
"""

from __future__ import annotations

import numpy as np
import torch

from ..face.mesh import EYE_CURVES, FOREHEAD_TOP, NOSE_BRIDGE, MeshTopology, eye_paths, topology
from .eye_window import box_window, can_compact, grid_of, sample_at, window, window_size

MAX_VERTICAL = 0.08  # most vertical iris shift, in eye widths
CORNER_OVERLAP = 0.2  # how far (in iris radii) the iris may pass behind an eye corner
LASH = 0.06  # height of the upper lid's margin band that moves rigidly, in eye widths
SHADE = 0.05  # most height of the shadow under the upper lid that moves with it, in eye widths
CLOSED_GAP = 0.1  # drawn lid gap (eye widths) below which an eye is drawn as closing (face.source.CLOSED_EYES)
LID_LINE = 0.04  # how far outside the source's lid lines a closed eye's lid lines are drawn from, eye widths
SKIN_UNFOLD = 4.0  # most exponent of a closed eye's stretched lid skin map (see `skin` in eye_remap)
LIFT_RAMP = 0.25  # share of a closing lid's band (from its ring) over which the lid_lift is reached
MIN_SKIN = 0.15  # share of the source's lid skin band left when the target opens wider
LID_GAIN = 1.7  # lid motion rendered per unit of the target's (relative to the source)
IRIS_GAIN = 1.6  # iris motion rendered per unit of the target's (relative to the source)
KNOTS = 13  # common u knots the lid and ring curves are resampled on
KNOT_SPAN = 0.55  # ... evenly over -KNOT_SPAN .. KNOT_SPAN (a little past the corners)
MIN_DET = 1e-6  # px² (px for widths): floor of an eye frame's determinant, so degenerate landmarks stay finite


CURVES = EYE_CURVES


def eye_parts(topo: MeshTopology | None = None) -> dict[str, torch.Tensor]:
    """Landmark indices per eye (rows: subject's right, left), each path ordered from the
    image-left to the image-right end on an upright face: ``corners (2, 2)``, ``iris (2, 5)``
    (centre first), ``upper`` / ``lower`` lid paths ``(2, 9)`` (corners included), and the
    next ring of mesh points above (``ring_up``) and below (``ring_low``) the opening.

    For :func:`eye_flow` they are also packed as ``points (2, 2 + 5 + 4·9)`` (corners, iris, then
    the four :data:`CURVES`, each padded to 9 points by repeating its last one), with ``pad
    (4, 9)`` the small steps in ``u`` that keep a padded curve's knots increasing; ``vertical``
    is two rigid points whose distance scales ``v``, ``ratio`` (0-d) the neutral eye's width over
    that distance (see :class:`_Frame`)."""
    topo = topo or topology()
    n = topo.neutral[:, :2]
    out = eye_paths(topo)
    parts = {k: torch.tensor(v, dtype=torch.long) for k, v in out.items()}
    length = len(out["upper"][0])
    packed, pad = [], torch.zeros(len(CURVES), length)
    for e in range(2):
        row = out["corners"][e] + out["iris"][e]
        for c, name in enumerate(CURVES):
            path = out[name][e]
            extra = length - len(path)
            row += path + [path[-1]] * extra
            pad[c, len(path):] = 0.01 * torch.arange(1, extra + 1)
        packed.append(row)
    parts["points"] = torch.tensor(packed, dtype=torch.long)
    parts["pad"] = pad
    parts["vertical"] = torch.tensor([FOREHEAD_TOP, NOSE_BRIDGE], dtype=torch.long)
    eye_width = np.linalg.norm(n[out["corners"][0][0]] - n[out["corners"][0][1]])
    parts["ratio"] = torch.tensor(float(eye_width / np.linalg.norm(n[FOREHEAD_TOP] - n[NOSE_BRIDGE])))
    return parts


def _lerp(u: torch.Tensor, table: torch.Tensor, knots: torch.Tensor) -> torch.Tensor:
    """``table (B, 2, K, C)`` (values at the evenly spaced ``knots (K,)``) linearly interpolated at
    ``u (B, 2, N)``, constant beyond the ends: ``(B, 2, C, N)``, channel first (so each channel's
    ``unbind(2)`` slice is contiguous: ops on strided slices take twice as long on the CPU)."""
    b, e, k, c = table.shape
    x = ((u - knots[0]) * (1.0 / (knots[1] - knots[0]))).clamp(0, k - 1.001)
    i0 = x.floor()
    f = (x - i0).unsqueeze(2)  # (B, 2, 1, N)
    start = torch.arange(b * e * c, device=u.device).view(b, e, c, 1) * k  # each (eye, channel)'s K values
    at = (i0.long().unsqueeze(2) + start).reshape(-1)  # into (B·2·C·K,)
    flat = table.transpose(-1, -2).reshape(-1)
    lo = flat.index_select(0, at).view(b, e, c, -1)
    hi = flat.index_select(0, at + 1).view(b, e, c, -1)
    return lo + (hi - lo) * f


class _Frames:
    """Each eye's frame in source and target at once (``(2B, 2, 1)`` tensors, source first): origin
    ``o`` the corners' midpoint, ``a`` from the image-left to the image-right corner (``u``), ``c``
    down the face (``v``), px.

    ``c`` is the face's own vertical (``vertical``: two rigid points on the midline), as long as
    the eye is wide on the neutral face: a turned head narrows the eye without opening it, a
    nodding one flattens it without closing it. Both axes are differences of landmarks, so an
    affine motion of the whole face leaves every point's ``(u, v)`` as it was."""

    def __init__(self, xy: torch.Tensor, p: torch.Tensor, q: torch.Tensor, vertical: torch.Tensor,
                 ratio: torch.Tensor):
        o, a = (p + q) * 0.5, q - p  # (2B, 2, 2)
        ends = xy.index_select(1, vertical)  # not xy[:, vertical[i]]: a 0-d index is read on the host
        c = ((ends[:, 1] - ends[:, 0]) * ratio)[:, None].expand_as(a)  # (a sync: no CUDA graph, a graph break)
        det = a[..., :1] * c[..., 1:] - a[..., 1:] * c[..., :1]  # (2B, 2, 1)
        # a degenerate frame (coincident landmarks, e.g. an all-zero input while a compiled graph warms
        # up) must give finite coordinates: NaN would turn into out-of-range indices downstream
        det = torch.where(det.abs() < MIN_DET, torch.full_like(det, MIN_DET), det)
        inv = torch.cat([c[..., 1:], -c[..., :1], -a[..., 1:], a[..., :1]], -1) / det  # rows of [a c]^-1
        coef = torch.cat([o, a, c, inv], -1).unsqueeze(2)  # (2B, 2, 1, 10)
        self.coef = coef
        (self.ox, self.oy, self.ax, self.ay, self.cx, self.cy, self.ua, self.ub, self.va, self.vb) = coef.unbind(-1)
        self.width = a.norm(dim=-1, keepdim=True).clamp(min=MIN_DET)

    def uv(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eye coordinates of points ``x, y (2B, 2, N)`` px (per eye)."""
        x, y = x - self.ox, y - self.oy
        return x * self.ua + y * self.ub, x * self.va + y * self.vb

    def half(self, i: int, b: int) -> "_Frames":
        """The source's (``i = 0``) or the target's (``i = 1``) frames alone."""
        out = object.__new__(_Frames)
        (out.ox, out.oy, out.ax, out.ay, out.cx, out.cy, out.ua, out.ub, out.va, out.vb) = \
            self.coef[i * b:(i + 1) * b].unbind(-1)
        out.width = self.width[i * b:(i + 1) * b]
        return out


def _hats(u: torch.Tensor, knots: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation weights ``(..., K, P)`` at the ``knots (K,)`` of a curve with
    increasing ``u (..., P)`` (constant beyond its ends; rows sum to 1)."""
    k = u.unsqueeze(-2)  # (..., 1, P)
    prev = torch.cat([k[..., :1] - 1.0, k[..., :-1]], -1)
    nxt = torch.cat([k[..., 1:], k[..., -1:] + 1.0], -1)
    q = torch.minimum(torch.maximum(knots.view(-1, 1), k[..., :1]), k[..., -1:])  # (..., K, 1)
    left = (q - prev) / (k - prev).clamp(min=1e-4)
    right = (nxt - q) / (nxt - k).clamp(min=1e-4)
    return torch.minimum(left, right).clamp(0, 1)


def _drawn_lids(up_t, lo_t, ring_t, low_t, up_s, lo_s, ring_s, low_s) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the upper and lower lids are drawn (``v``, eye widths): the source's, moved by the target's
    change times :data:`LID_GAIN`, keeping :data:`MIN_SKIN` of the lid bands; a closed eye's upper
    lid meets the lower one."""
    up = torch.maximum(up_s + LID_GAIN * (up_t - up_s), ring_t + MIN_SKIN * (up_s - ring_s))
    lo = torch.minimum(lo_s + LID_GAIN * (lo_t - lo_s), low_t - MIN_SKIN * (low_s - lo_s))
    return torch.minimum(up, lo), lo


def eye_flow(src_xy: torch.Tensor, tgt_xy: torch.Tensor, inside: torch.Tensor, regions: torch.Tensor,
             parts: dict[str, torch.Tensor], knots: torch.Tensor, lid_lift: torch.Tensor | None = None
             ) -> torch.Tensor:
    """The flow's source positions with the eyes re-mapped (module docstring).

    Args:
        src_xy, tgt_xy: ``(B, V, 2)`` source and target landmarks, px of the flow's grid.
        inside: ``(B, 2, H, W)`` the piecewise-affine source positions (px) per target pixel.
        regions: ``(B, 2, H, W)`` 1 inside the target's right / left eye region
            (:func:`~avatar_app.face.mesh.eye_region_triangles`), 0 elsewhere.
        parts: :func:`eye_parts`.
        knots: ``(K,)`` evenly spaced ``u`` at which the lid and ring curves are resampled.
        lid_lift: as for :func:`eye_remap`.

    Returns:
        ``(B, 2, H, W)`` source positions, px: ``inside`` outside the eye regions.
    """
    b, _, h, w = inside.shape
    idx, delta = eye_remap(src_xy, tgt_xy, inside, regions, parts, knots, (h, w), compact=can_compact(inside),
                           lid_lift=lid_lift)
    return inside.reshape(b, 2, h * w).scatter_add(2, idx, delta).reshape(b, 2, h, w)


def eye_curves(xy: torch.Tensor, parts: dict[str, torch.Tensor], knots: torch.Tensor):
    """Each eye's frame and curves for landmarks ``xy (N, V, 2)`` px: ``(frames, pts, pu, pv, curves)``
    with ``pts (N, 2, P, 2)`` the packed points of :func:`eye_parts`, ``pu, pv (N, 2, P)`` their eye
    coordinates and ``curves (N, 2, K, 4)`` the ``v`` of the :data:`CURVES` at the ``knots (K,)``."""
    pts = xy[:, parts["points"]]  # (N, 2, P, 2)
    frames = _Frames(xy, pts[:, :, 0], pts[:, :, 1], parts["vertical"], parts["ratio"])
    pu, pv = frames.uv(pts[..., 0], pts[..., 1])  # (N, 2, P)
    n_c = len(CURVES)
    cu = pu[..., 7:].reshape(xy.shape[0], 2, n_c, -1) + parts["pad"]
    cv = pv[..., 7:].reshape(xy.shape[0], 2, n_c, -1)
    curves = (_hats(cu, knots) * cv.unsqueeze(-2)).sum(-1).transpose(-1, -2)  # (N, 2, K, 4)
    return frames, pts, pu, pv, curves


def eye_remap(src_xy: torch.Tensor, tgt_xy: torch.Tensor, inside: torch.Tensor, regions: torch.Tensor,
              parts: dict[str, torch.Tensor], knots: torch.Tensor, out_hw: tuple[int, int], compact: bool = False,
              lid_lift: torch.Tensor | None = None):
    """The eyes' re-map on an ``out_hw`` grid, as ``(idx, delta)``: add ``delta (B, 2, 2·N)`` (px of that
    grid) at the flat pixel indices ``idx (B, 2, 2·N)`` of its source positions.

    ``inside`` and ``regions`` (as for :func:`eye_flow`) may be on a coarser grid than ``out_hw``:
    they are sampled bilinearly at each fine pixel (inside a triangle the map is affine, so that is
    exact there). So a flow computed at 256 gets its eyes drawn at 512: the upsampled flow would
    blur a closed lid line into a thin line of eyeball. ``src_xy``, ``tgt_xy``: px of ``out_hw``.

    ``compact``: work only on each window's pixels in the box around its eye region (:func:`box_window`;
    the re-map is 0 outside the region, so the values are the same, on a third to a half of the pixels;
    data-dependent shapes, so not for exported graphs); ``idx`` and ``delta`` are then ``(B, 2, 2·M)``
    with ``M`` at most ``N``.

    ``lid_lift``: ``(B, 2, 1)`` eye widths (:func:`~avatar_app.models.eye_lids.closed_lid_lift`, per
    source): a closing eye's stretched lid skin is taken from that far above the source's ring (the row
    at the ring is often crease, lash shadow or brow, which stretched over a closed eye reads as an open
    one), reached over the first :data:`LIFT_RAMP` of the lid band, so the map still joins the mesh's at
    the ring (the skipped rows show there as a thin crease); ``None``: from the ring itself."""
    b, _, h_in, w_in = inside.shape
    h, w = out_hw
    # source and target through the same small ops at once
    frames, pts, pu, pv, curves = eye_curves(torch.cat([src_xy, tgt_xy]), parts, knots)
    curves_s, curves_t = curves[:b], curves[b:]
    iu_s, iu_t, iv_s, iv_t = pu[:b, :, 2:3], pu[b:, :, 2:3], pv[:b, :, 2:3], pv[b:, :, 2:3]  # iris centres
    r_u = (pts[b:, :, 3:7] - pts[b:, :, 2:3]).norm(dim=-1).mean(-1, keepdim=True) / frames.width[b:]
    fs, ft = frames.half(0, b), frames.half(1, b)

    # one window per eye, a little above its corner line (the upper ring reaches further than the lower)
    centre = (ft.ox - 0.1 * ft.cx, ft.oy - 0.1 * ft.cy)
    if compact:  # only the part of each window around its eye region (re-mapped by 0 elsewhere)
        idx, x, y, taper = box_window(*centre, pts[b:, :, 7:], h, w, window_size(h, w), 2 * max(1, round(w / w_in)))
    else:
        idx, x, y, taper = window(*centre, h, w, window_size(h, w))  # (B, 2, N)
    fine = (h_in, w_in) != (h, w)
    if fine:  # the coarse fields at each fine pixel
        grid = grid_of(x, y, h, w)
        n = idx.shape[-1]
        weight = sample_at(regions, grid).reshape(b, 2, 2, n).diagonal(dim1=1, dim2=2).transpose(1, 2) * taper
    else:
        weight = regions.reshape(b, 2, h * w).gather(2, idx) * taper
    if compact:  # only the box's pixels inside some eye's region (the re-map is 0 at the others: about half)
        cols = (weight.amax((0, 1)) > 0).nonzero()[:, 0]  # (weight >= 0)
        idx, x, y, weight = (t.flatten(0, 1).index_select(1, cols).view(b, 2, -1) for t in (idx, x, y, weight))
        if fine:
            grid = grid_of(x, y, h, w)
    u, v = ft.uv(x, y)
    n = idx.shape[-1]
    flat_idx = idx.reshape(b, 1, 2 * n).expand(b, 2, 2 * n)
    if fine:
        pos = sample_at(inside, grid).reshape(b, 2, 2, n)  # (no copy of the whole field to sample both at once)
        x_a, y_a = (pos + 0.5).unbind(1)
        x_a, y_a = x_a * (w / w_in) - 0.5, y_a * (h / h_in) - 0.5  # fine px
    else:
        x_a, y_a = inside.reshape(b, 2, h * w).gather(2, flat_idx).reshape(b, 2, 2, n).unbind(1)  # source px (B, 2, N)
    u_a, v_a = fs.uv(x_a, y_a)
    up_t, lo_t, ring_t, low_t, up_s, lo_s, ring_s0, low_s0 = _lerp(u, torch.cat([curves_t, curves_s], -1),
                                                                   knots).unbind(2)  # at the target's u

    up, lo = _drawn_lids(up_t, lo_t, ring_t, low_t, up_s, lo_s, ring_s0, low_s0)
    # how closed the drawn eye is: 0 while its mean lid gap (at the knots inside the corners) is at
    # least CLOSED_GAP, 1 when shut
    up_k, lo_k = _drawn_lids(*torch.cat([curves_t, curves_s], -1).unbind(-1))  # (B, 2, K)
    inner = (knots.abs() < 0.5).to(up_k.dtype)
    drawn_gap = ((lo_k - up_k) * inner).sum(-1, keepdim=True) / inner.sum()
    closed = (1 - drawn_gap * (1 / CLOSED_GAP)).clamp(0, 1)  # (B, 2, 1)
    lash = (0.5 * (up_s - ring_s0)).clamp(0, LASH)
    lash_t = torch.minimum(lash, 0.5 * (up - ring_t).clamp(min=0))

    # the iris: where it is drawn along the eye, and the shift that brings the source's there
    reach = (0.5 - (1 - CORNER_OVERLAP) * r_u).clamp(min=0.0)
    cu = torch.maximum(torch.minimum(iu_s + IRIS_GAIN * (iu_t - iu_s), reach), -reach)  # (B, 2, 1)
    dv = (IRIS_GAIN * (iv_s - iv_t)).clamp(-MAX_VERTICAL, MAX_VERTICAL)
    left = ((u + 0.5) / (cu - r_u + 0.5).clamp(min=1e-3)).clamp(0, 1)
    right = ((0.5 - u) / (0.5 - cu - r_u).clamp(min=1e-3)).clamp(0, 1)
    carry = torch.minimum(left, right)  # 1 over the iris .. 0 at the corners
    u_s = torch.where((up < v) & (v < lo), u + (iu_s - cu) * carry, u_a)
    up_s2, lo_s2, ring_s, low_s = _lerp(u_s, curves_s, knots).unbind(2)  # the source's curves at u_s

    # v in the source, layer by layer (target: ring_t < up - lash_t < up <= lo < low_t)
    top = up - lash_t
    # A closing eye (drawn gap below CLOSED_GAP, fully when shut) is drawn as lid meeting lid: the lid
    # lines come from just outside the source's (the row at a lid landmark is half eyeball, which
    # showed as a line of sclera), and stretched lid skin from the skin next to the ring (the
    # source's band near its lid margin is crease and lash shadow, which stretched over the eye
    # reads as an open one). An open eye's lids are drawn as before.
    band_s = (up_s2 - lash - ring_s).clamp(min=1e-4)
    t = ((v - ring_t) / (top - ring_t).clamp(min=1e-4)).clamp(0, 1)
    if compact and not bool((closed > 0).any()):  # no eye closing: t ** 1 (pow is the slowest op here)
        skin = ring_s + t * band_s
    else:
        unfold = 1 + (((top - ring_t) / band_s).clamp(1.0, SKIN_UNFOLD) - 1) * closed
        if lid_lift is None:
            skin = ring_s + t.pow(unfold) * band_s
        else:  # the lifted row, reached over the band's first LIFT_RAMP: no seam at the ring
            ramp = (t * (1 / LIFT_RAMP)).clamp(max=1)
            lift = lid_lift * closed
            skin = ring_s - lift * ramp * ramp * (3 - 2 * ramp) + t.pow(unfold) * (band_s + lift)
    # the eyeball: a thin band of the lid's shadow goes with the upper lid; below it the eyeball
    # where the source shows it, and where it does not, the source's row just inside its opening
    gap = (lo_s2 - up_s2).clamp(min=0)
    edge = (0.5 * lash).clamp(max=LID_LINE) * closed
    margin = up_s2 - edge + (v - up) * (lash - edge) / lash_t.clamp(min=1e-4)
    shade = (0.3 * gap).clamp(max=SHADE)
    inset = (0.25 * gap).clamp(max=0.03)
    ball = v + dv * carry
    ball = torch.where(ball < up_s2 + shade, up_s2 + shade, torch.where(ball > lo_s2, lo_s2 - inset, ball))
    ball = torch.where(v < up + shade, up_s2 + (v - up), ball)
    lower = lo_s2 + edge + (v - lo) * (low_s - lo_s2 - edge) / (low_t - lo).clamp(min=1e-4)
    v_s = torch.where(v < top, skin, torch.where(v < up, margin, torch.where(v <= lo, ball, lower)))
    keep = (v >= ring_t) & (v <= low_t)  # and |u| < 0.62, where the fade is 0
    weight = torch.where(keep, weight * ((0.62 - u.abs()) * (1 / 0.12)).clamp(0, 1), torch.zeros_like(weight))
    du, dvv = u_s - u_a, v_s - v_a
    delta = torch.stack([(du * fs.ax + dvv * fs.cx) * weight, (du * fs.ay + dvv * fs.cy) * weight], 1)
    return flat_idx, delta.reshape(b, 2, -1)
