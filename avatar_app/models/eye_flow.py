"""Gaze inside the analytic flow: the irises move within the eye openings.

The piecewise-affine flow (:mod:`.flow`) moves the eye opening as skin: its content is
stretched with the lids, so the iris stays where it was *relative to the lids* whatever
the driver's eyes do. Here, for pixels inside a target eye opening, the sampling position
is shifted along the eye so that the target's iris centre samples the source's iris centre:

* each eye gets a frame from its corners: ``u`` runs along the corner line (−½ at the
  image-left corner .. +½ at the image-right one, in eye widths), ``v`` across it;
* the target iris centre (retargeting gives it the driver's gaze relative to its
  calibrated neutral) is clipped to the opening along ``u`` (it may hide behind a corner
  by a fifth of its radius at most, never leave the eye); the piecewise-affine map sends
  it somewhere in the source, and the shift is what brings that onto the source's iris
  centre — zero when the eye moved as skin does, e.g. any global affine motion. Its
  component across the eye is limited to :data:`MAX_VERTICAL` eye widths (the lids carry
  most of a vertical look);
* the shift is the full gaze change over the target iris (so the iris moves rigidly,
  keeping its round shape) and fades linearly to 0 at the eye corners: the sclera on the
  side the iris left is stretched over where it was, the other side is compressed — the
  map stays one-to-one while the source iris lies inside its own opening;
* only pixels of the eye-opening triangles get the shift, so the lids occlude the iris
  where the opening is narrower than the iris (a blink, a squint).

All in torch on ``(B, …)`` batches, ONNX-exportable (no data-dependent control flow).
"""

from __future__ import annotations

import torch

from ..face.mesh import topology

MAX_VERTICAL = 0.08  # most vertical iris shift, in eye widths
CORNER_OVERLAP = 0.2  # how far (in iris radii) the iris may pass behind an eye corner


def eye_indices() -> torch.Tensor:
    """``(2, 8) long``: per eye (subject's right, left): the two corners, iris centre, 4 ring points, and
    the centre again (padding)."""
    topo = topology()
    rows = []
    for upper, iris in ((topo.right_eye_upper, topo.right_iris), (topo.left_eye_upper, topo.left_iris)):
        rows.append([int(upper[0]), int(upper[-1]), *[int(i) for i in iris], int(iris[0])])
    return torch.tensor(rows, dtype=torch.long)


def _frame(xy: torch.Tensor, idx: torch.Tensor):
    """Per eye: corner midpoint ``(B, 2, 2)``, axis ``(B, 2, 2)`` (image-left to image-right corner),
    its perpendicular, squared width ``(B, 2)``, iris centre ``(B, 2, 2)`` and radius ``(B, 2)`` (px)."""
    pts = xy[:, idx]  # (B, 2, 8, 2)
    a, b = pts[:, :, 0], pts[:, :, 1]
    flip = (a[..., 0] > b[..., 0]).unsqueeze(-1)
    a, b = torch.where(flip, b, a), torch.where(flip, a, b)
    axis = b - a
    perp = torch.stack([-axis[..., 1], axis[..., 0]], -1)
    w2 = (axis * axis).sum(-1).clamp(min=1e-6)
    centre = pts[:, :, 2]
    radius = (pts[:, :, 3:7] - centre[:, :, None]).norm(dim=-1).mean(-1)
    return (a + b) / 2, axis, perp, w2, centre, radius


def gaze_shift(src_xy: torch.Tensor, tgt_xy: torch.Tensor, pixels: torch.Tensor, eye_masks: torch.Tensor,
               idx: torch.Tensor, tri_ids: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """The source-position shift ``(B, 2, H, W)`` (source px) that moves the irises.

    Args:
        src_xy, tgt_xy: ``(B, V, 2)`` source and target landmarks, px of the flow's grid.
        pixels: ``(2, H, W)`` pixel-centre coordinates of that grid.
        eye_masks: ``(B, 2, H, W)`` 1 inside the target's right / left eye opening.
        idx: :func:`eye_indices`.
        tri_ids: ``(B, H, W)`` the target's triangle per pixel (``-1`` uncovered).
        table: ``(C ≥ 6, B·F)`` per triangle the affine map target px -> source px, rows
            ``(ax, ay, a0, bx, by, b0)`` first (as :class:`~.flow.AnalyticFlow` builds it).
    """
    b, h, w = tri_ids.shape
    nf = table.shape[1] // b
    _, ax_s, pp_s, w2_s, c_s, _ = _frame(src_xy, idx)
    m_t, ax_t, _, w2_t, c_t, r_t = _frame(tgt_xy, idx)
    # the target iris, clipped to its opening along the corner line (eye widths from the corners' midpoint)
    u_t = ((c_t - m_t) * ax_t).sum(-1) / w2_t  # (B, 2)
    r_u = r_t / w2_t.sqrt()
    reach = (0.5 - (1 - CORNER_OVERLAP) * r_u).clamp(min=0.0)
    u_c = torch.maximum(torch.minimum(u_t, reach), -reach)
    c_t = c_t + (u_c - u_t)[..., None] * ax_t
    # where the piecewise-affine map sends it, from the triangle under it
    ix = c_t[..., 0].round().clamp(0, w - 1).long()
    iy = c_t[..., 1].round().clamp(0, h - 1).long()
    tri = tri_ids.reshape(b, h * w).gather(1, iy * w + ix).clamp(min=0)  # (B, 2)
    tri = tri + (torch.arange(b, device=tri.device) * nf).view(b, 1)
    g = table[:6].index_select(1, tri.reshape(-1)).reshape(6, b, 2)
    mapped = torch.stack([g[0] * c_t[..., 0] + g[1] * c_t[..., 1] + g[2],
                          g[3] * c_t[..., 0] + g[4] * c_t[..., 1] + g[5]], -1)  # (B, 2, 2)
    miss = c_s - mapped  # what the target iris centre must sample instead of what it does
    du = (miss * ax_s).sum(-1) / w2_s
    dv = ((miss * pp_s).sum(-1) / w2_s).clamp(-MAX_VERTICAL, MAX_VERTICAL)
    shift = du[..., None] * ax_s + dv[..., None] * pp_s  # (B, 2, 2) source px
    # falloff along the target eye: 1 over the iris, linearly to 0 at each corner
    rel = pixels[None, None] - m_t[..., None, None]  # (B, 2 eyes, 2, H, W)
    u = (rel * ax_t[..., None, None]).sum(2) / w2_t[..., None, None]  # (B, 2, H, W)
    uc, r = u_c[..., None, None], r_u[..., None, None]
    left = ((u + 0.5) / (uc - r + 0.5).clamp(min=1e-3)).clamp(0, 1)
    right = ((0.5 - u) / (0.5 - uc - r).clamp(min=1e-3)).clamp(0, 1)
    weight = torch.minimum(left, right) * eye_masks  # (B, 2, H, W)
    return (weight[:, :, None] * shift[..., None, None]).sum(1)
