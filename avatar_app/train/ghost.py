"""Does a flow leave a copy of the source face where the head was (the "ghost")?

A backward flow samples, for every output pixel, a position in the source crop.  Outside
the target face only hair, neck and background belong; if such a pixel samples the
*source face*, part of the face is shown twice — beside the moved head, or as a ring
around a shrunk one.  :func:`ghost_area` measures how much: the output area outside the
target face outline (dilated by a seam margin) whose samples land inside the source face
outline, as a fraction of the source face's area.  A map that does not fold gives 0.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from ..face.align import similarity_fit
from ..face.mesh import CHIN, FOREHEAD_TOP, topology


def face_mask(xy: np.ndarray, size: int, grow_px: float = 0.0) -> np.ndarray:
    """``(size, size) bool``: inside the landmarks' hull (``xy (V, 2)`` crop px), grown by ``grow_px``.

    The hull, not the outline polygon: on a turned head the outline points fold inwards
    while the mesh still covers the cheek beyond them."""
    mask = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(xy).astype(np.int32)), 1)
    if grow_px > 0:
        k = 2 * int(np.ceil(grow_px)) + 1
        mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    return mask.astype(bool)


def ghost_area(grid: torch.Tensor, src_xy: np.ndarray, tgt_xy: np.ndarray, grow: float = 0.0,
               seam: float = 0.05) -> float:
    """Fraction of the source face's area that a flow shows again outside the target face.

    Args:
        grid: ``(1, S, S, 2)`` or ``(S, S, 2)`` backward flow, ``norm [-1, 1]`` (as
            :class:`~avatar_app.models.flow.AnalyticFlow` returns).
        src_xy: ``(V, 2)`` source landmarks, crop px.
        tgt_xy: ``(V, 2)`` target landmarks, crop px.
        grow: both faces are grown by this many (source) face heights (0: the face itself;
            0.15: with the ears and the hair nearest to it); the target head is then also
            where the grown source head goes under the head's similarity (a nodding head
            foreshortens its face, not the hair it uncovers).
        seam: the target face is grown by this many face heights more (the soft seam where
            the mesh and the outside flow are blended).
    """
    g = grid.reshape(grid.shape[-3:]).detach().cpu().double().numpy()
    size = g.shape[0]
    src_h = float(np.linalg.norm(src_xy[CHIN] - src_xy[FOREHEAD_TOP]))
    src_face = face_mask(src_xy, size, grow * src_h)
    outside = ~face_mask(tgt_xy, size, (grow + seam) * src_h * _head_scale(src_xy, tgt_xy))
    if grow > 0:  # where the grown source head went: moved by the head's similarity
        s, rot, t = similarity_fit(src_xy[topology().face_oval], tgt_xy[topology().face_oval])
        ys, xs = np.nonzero(src_face)
        moved = (np.stack([xs, ys], 1) @ rot.T) * s + t
        outside &= ~face_mask(moved, size, seam * src_h * s)
    px = np.round((g + 1) * size / 2 - 0.5).astype(np.int64)
    valid = (px >= 0).all(-1) & (px < size).all(-1)
    hit = np.zeros((size, size), bool)
    x, y = np.clip(px[..., 0], 0, size - 1), np.clip(px[..., 1], 0, size - 1)
    hit[valid] = src_face[y[valid], x[valid]]
    return float((hit & outside).sum() / max(src_face.sum(), 1))


def _head_scale(src_xy: np.ndarray, tgt_xy: np.ndarray) -> float:
    """How much larger the target head is than the source one (similarity of the outlines)."""
    oval = topology().face_oval
    return similarity_fit(src_xy[oval], tgt_xy[oval])[0]
