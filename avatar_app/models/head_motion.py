"""Whole-head motion: the analytic flow outside the face mesh, and how far the head moved.

:class:`~.flow.AnalyticFlow` maps pixels inside the face mesh piecewise-affinely; everything
else (hair, ears, neck, background) is moved by :class:`HeadMotion`, from the face outline's
displacements.  Two regimes, chosen by how far the head's similarity (rotation, scale, shift)
moves the outline (``reach``, in face heights):

* **small motions** (95 % of the validation clips' frames): a pixel moves as the outline near
  it does, fading to 0 with distance — hair and neck go with the head, the background stays;
* **large motions**: the head moves rigidly as a whole, then fades.

Its ``large_motion`` tells the two apart (0 small .. 1 large); the warp network's
correction is bounded where it is 1 (:func:`~.warp.limit_residual`), so a network trained on
clips with still backgrounds cannot hold a hat or hair still while the face under it moves
far (it stretched a cap badge into a second face: docs/MOTION_TRANSITIONS.md §4).

Only reductions and element-wise ops: batched, differentiable, ONNX-exportable.
"""

from __future__ import annotations

import cv2
import torch
import torch.nn.functional as F
from torch import nn

from ..face.mesh import CHIN, FOREHEAD_TOP
from .eye_window import eager_on_cpu
from .similarity import similarity_2d


class HeadMotion(nn.Module):
    """The outside-the-mesh map of :class:`~.flow.AnalyticFlow` (its parameters are documented there).

    Args:
        oval: the face outline's landmark indices.
        coarse_px: ``(c, c, 2)`` px (at the flow's resolution) where the smooth field is computed.
    """

    def __init__(self, oval, coarse_px: torch.Tensor, falloff=(0.1, 0.65), big_motion=(0.3, 0.45),
                 fold_margin: float = 0.6, max_band: float = 3.0):
        super().__init__()
        self.falloff, self.big_motion, self.fold_margin, self.max_band = falloff, big_motion, fold_margin, max_band
        self.coarse = int(coarse_px.shape[0])
        self.register_buffer("oval", torch.tensor(oval, dtype=torch.long), persistent=False)
        self.register_buffer("coarse_pixels", coarse_px, persistent=False)

    def _head(self, src_xy: torch.Tensor, tgt_xy: torch.Tensor):
        """The head's similarity target -> source ``(m, shift)``, the target outline, the outline's
        displacements, the face height (px) and ``reach``: the similarity's displacement at the
        fade's start, in face heights."""
        anchors = tgt_xy[:, self.oval]  # (B, K, 2)
        m, shift = similarity_2d(anchors, src_xy[:, self.oval], eps=1e-6)
        face_h = (tgt_xy[:, CHIN] - tgt_xy[:, FOREHEAD_TOP]).norm(dim=-1).clamp(min=1.0)  # (B,)
        t = anchors - anchors.mean(1, keepdim=True)
        out = t / t.norm(dim=-1, keepdim=True).clamp(min=1e-6)
        edge = anchors + out * (self.falloff[0] * face_h[:, None, None])
        reach = (edge @ m.transpose(1, 2) + shift[:, None] - edge).norm(dim=-1).amax(1) / face_h  # (B,)
        return m, shift, anchors, src_xy[:, self.oval] - anchors, face_h, reach

    def forward(self, src_xy: torch.Tensor, tgt_xy: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Displacements ``(B, 2, h, w)`` (px, target -> source) for pixels outside the mesh, and
        ``large_motion (B,)``: 0 while the head's motion is small, rising smoothly to 1 where the map
        turns rigid (``big_motion``; in face heights, so the landmarks' px scale does not matter).

        In both regimes the fade's band widens with the motion so the map never folds: the place the
        head left is filled from the background beyond it, never from the source head (no second
        copy of the face, the "ghost"). The rigid map for every motion cost 0.18 dB on real
        validation clips (it moves the background near a turning head; docs/MOTION.md §4).
        """
        m, shift, anchors, disp, face_h, reach = self._head(src_xy, tgt_xy)

        def rigid(p: torch.Tensor) -> torch.Tensor:  # (B, P, 2) target px -> displacement to source px
            return p @ m.transpose(1, 2) + shift[:, None] - p

        residual = disp - rigid(anchors)  # the outline's non-rigid motion
        coarse = self.coarse_pixels.to(tgt_xy.dtype)  # (float64 landmarks: no float32 matrix product below)
        q = coarse.reshape(1, -1, 1, 2)  # (1, P, 1, 2)
        dx, dy = (q - anchors[:, None]).unbind(-1)  # (a sum over a last axis of 2 is slow on the CPU)
        d2 = dx * dx + dy * dy  # (B, P, K)
        r2 = d2 + (0.02 * face_h[:, None, None]) ** 2
        weights = torch.rsqrt(r2) / r2  # inverse distance cubed
        weights = weights / weights.sum(2, keepdim=True)
        dist = d2.min(dim=2).values.sqrt() / face_h[:, None]  # face heights from the outline
        # Band width: a smoothstep over W face heights has slope 1.5 / W, so a displacement of
        # D px folds nothing while D * 1.5 / (W * face_h) < 1 (with a margin).  D: the head's
        # similarity at the outline pushed out to where the fade starts (``reach``).
        r0, r1 = self.falloff
        width = torch.maximum(reach * (1.5 / self.fold_margin), torch.full_like(reach, r1 - r0))
        width = width.clamp(max=self.max_band)[:, None]
        band = fade(dist, r0, r0 + width)[..., None]
        near = (weights @ disp) * band  # small motions: the outline's own displacements
        whole = rigid(coarse.reshape(1, -1, 2)) * band + (weights @ residual) * fade(dist, r0, r1)[..., None]
        lo, hi = self.big_motion
        large = 1 - fade(reach, lo, hi)  # 0 below lo, 1 from hi
        d_out = near + large[:, None, None] * (whole - near)
        c = self.coarse
        field = d_out.reshape(-1, c, c, 2).permute(0, 3, 1, 2).contiguous()  # channels-last: 3x slower upsampling
        return upsample(field, h, w), large


def fade(dist: torch.Tensor, r0, r1) -> torch.Tensor:
    """1 up to ``r0``, smoothstep down to 0 at ``r1`` (``r1`` may be a tensor)."""
    t = ((dist - r0) / (r1 - r0)).clamp(0, 1)
    return 1 - t * t * (3 - 2 * t)


def upsample(field: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``field (B, C, h0, w0)`` bilinearly to ``(B, C, h, w)`` (``align_corners=False``).

    On the CPU, eager (not exported or compiled) and without gradients, with OpenCV plane by plane: the same
    values (to 2e-5 px on the outside field) at a third of ``F.interpolate``'s time, on the live path."""
    if not eager_on_cpu(field) or field.dtype != torch.float32 or field.requires_grad:
        return F.interpolate(field, size=(h, w), mode="bilinear", align_corners=False)
    planes = field.reshape(-1, *field.shape[2:]).numpy()
    up = [torch.from_numpy(cv2.resize(p, (w, h), interpolation=cv2.INTER_LINEAR)) for p in planes]
    return torch.stack(up).reshape(*field.shape[:2], h, w)
