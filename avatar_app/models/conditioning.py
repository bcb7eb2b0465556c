"""Landmark conditioning images (MetaPortrait's "dense landmarks drawn as coloured lines").

The warp network and the generator see the driving (and source) face as an image,
not as a list of points.  :func:`landmark_image` rasterises mediapipe's 478 points
into ``COND_CHANNELS = 6`` planes, ``float32`` in ``[0, 1]``, shape ``(6, S, S)``:

* **0-2 - lines.**  The face drawn as anti-aliased lines whose colour ``(c0, c1, c2)``
  names the part: the skin mesh edges faint grey ``(0.25, 0.25, 0.25)``, 1 px at every
  size; on top, about 1 px wide at 256 and scaled with the size, each part contour
  in its own bright colour - face oval white ``(1, 1, 1)``, right brow ``(1, .63, 0)``,
  left brow ``(.63, 1, 0)``, right eye ``(0, 1, 1)``, left eye ``(0, .5, 1)``, outer
  lips red ``(1, 0, 0)``, inner lips magenta ``(1, 0, 1)``, nose bridge and base
  blue ``(0, 0, 1)``.  ("right"/"left" are the subject's, as in :mod:`..face.mesh`.)
* **3 - eye openings.**  Both eyes filled from their eyelid contours (anti-aliased
  edge): 1 inside the open eye, 0 elsewhere; a closed eye leaves (almost) nothing.
* **4 - mouth opening.**  The inner-lip polygon (upper path, then the lower path
  back) filled: how far and how wide the mouth is open.
* **5 - gaze.**  A Gaussian blob at each iris centre (sigma = the iris radius from
  its ring points) multiplied by channel 3, so a closed eye shows no iris, and
  faded out as the largest lid gap shrinks from 1.0 to 0.4 iris radii (a shut
  eye's contour keeps a thin sliver open; open eyes measure 1.3-1.7).

Training and inference both call these functions, so the network always sees the
same rasterisation.  Drawing is done with OpenCV into ``uint8`` buffers with
4 bits of sub-pixel precision and converted to ``float32`` once at the end.

Coordinates use the pixel-centre convention: pixel ``(i, j)`` covers
``[j - 0.5, j + 0.5] x [i - 0.5, i + 0.5]``, so points of a ``src_size`` crop are
mapped to a ``size`` image with ``x' = (x + 0.5) * size / src_size - 0.5``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
import torch

from ..face.mesh import LEFT_BROW_LOWER, LEFT_BROW_UPPER, RIGHT_BROW_LOWER, RIGHT_BROW_UPPER, topology
from ..types import NUM_LANDMARKS

COND_CHANNELS = 6

_SHIFT = 4  # sub-pixel bits for cv2 drawing
_ONE = 1 << _SHIFT
_MESH_GREY = 64
_GAP_SHUT, _GAP_OPEN = 0.4, 1.0  # lid gap in iris radii: gaze blob fades in between

# mediapipe indices not in the topology file as ordered paths
_NOSE_BRIDGE = (168, 6, 197, 195, 5, 4, 1)
_NOSE_BASE = (98, 97, 2, 326, 327)


@dataclass(frozen=True)
class _Part:
    """One coloured group of paths: ``paths`` index arrays, drawn closed or open."""

    color: tuple[int, int, int]
    paths: tuple[np.ndarray, ...]
    closed: bool


@dataclass(frozen=True)
class _Plan:
    mesh_order: np.ndarray  # the mesh edges as chained paths, concatenated
    mesh_splits: tuple[tuple[int, int], ...]  # (start, stop) of each path in mesh_order
    parts: tuple[_Part, ...]
    eyes: tuple[np.ndarray, np.ndarray]  # closed eye contours (right, left)
    mouth: np.ndarray  # closed inner-lip contour
    irises: tuple[np.ndarray, np.ndarray]  # centre first, then 4 ring points
    lids: tuple[tuple[np.ndarray, np.ndarray], ...]  # (upper, lower) inner points of each eye, paired


def _chain_edges(edges: np.ndarray) -> tuple[np.ndarray, tuple[tuple[int, int], ...]]:
    """Cover the undirected ``edges`` with few paths, each edge exactly once.

    One polyline per path instead of one per edge: OpenCV's Python binding pays per
    array, not per segment, so ~100 paths draw far faster than ~1300 two-point lines.
    Greedy walks starting at odd-degree vertices (deterministic order).
    """
    adj: dict[int, set[int]] = {}
    for a, b in edges.tolist():
        adj.setdefault(a, set()).add(b)
        adj.setdefault(b, set()).add(a)
    order: list[int] = []
    splits: list[tuple[int, int]] = []
    while True:
        live = [v for v in sorted(adj) if adj[v]]
        if not live:
            break
        odd = [v for v in live if len(adj[v]) % 2]
        v = odd[0] if odd else live[0]
        start = len(order)
        order.append(v)
        while adj[v]:
            w = min(adj[v])
            adj[v].discard(w)
            adj[w].discard(v)
            order.append(w)
            v = w
        splits.append((start, len(order)))
    return np.asarray(order, dtype=np.intp), tuple(splits)


@lru_cache(maxsize=1)
def _plan() -> _Plan:
    topo = topology()
    for path, brow in ((RIGHT_BROW_LOWER + RIGHT_BROW_UPPER, topo.right_brow),
                       (LEFT_BROW_LOWER + LEFT_BROW_UPPER, topo.left_brow)):
        assert set(path) == {int(i) for i in brow}, "brow indices disagree with the mesh data"

    def idx(seq) -> np.ndarray:
        return np.asarray(seq, dtype=np.intp)

    def brow(lower, upper) -> np.ndarray:
        return idx(lower + upper[::-1])  # outline: along the lower edge, back along the upper

    parts = (
        _Part((255, 255, 255), (idx(topo.face_oval),), True),
        _Part((255, 160, 0), (brow(RIGHT_BROW_LOWER, RIGHT_BROW_UPPER),), True),
        _Part((160, 255, 0), (brow(LEFT_BROW_LOWER, LEFT_BROW_UPPER),), True),
        _Part((0, 0, 255), (idx(_NOSE_BRIDGE), idx(_NOSE_BASE)), False),
        _Part((255, 0, 0), (idx(topo.lips_outer),), True),
        _Part((255, 0, 255), (idx(topo.lips_inner),), True),
        _Part((0, 255, 255), (idx(topo.right_eye),), True),
        _Part((0, 128, 255), (idx(topo.left_eye),), True),
    )
    order, splits = _chain_edges(topo.edges)
    return _Plan(
        mesh_order=order,
        mesh_splits=splits,
        parts=parts,
        eyes=(idx(topo.right_eye), idx(topo.left_eye)),
        mouth=idx(topo.lips_inner),
        irises=(idx(topo.right_iris), idx(topo.left_iris)),
        lids=((idx(topo.right_eye_upper[1:-1]), idx(topo.right_eye_lower[1:-1])),
              (idx(topo.left_eye_upper[1:-1]), idx(topo.left_eye_lower[1:-1]))),
    )


def _line_width(size: int) -> int:
    return max(1, round(size / 256))


def _scaled_xy(points: np.ndarray, size: int, src_size: int | None) -> np.ndarray:
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[0] != NUM_LANDMARKS or pts.shape[1] not in (2, 3):
        raise ValueError(f"landmark points must be ({NUM_LANDMARKS}, 2|3), got {pts.shape}")
    xy = pts[:, :2].astype(np.float64)
    if src_size is not None and src_size != size:
        xy = (xy + 0.5) * (size / float(src_size)) - 0.5
    # keep fixed-point coordinates far from int32 overflow (cv2 clips to the image anyway)
    return np.clip(np.nan_to_num(xy, nan=-4.0 * size), -4.0 * size, 5.0 * size)


def _gaussian_1d(center: float, sigma: float, lo: int, hi: int) -> np.ndarray:
    d = np.arange(lo, hi, dtype=np.float32) - np.float32(center)
    return np.exp(d * d * np.float32(-0.5 / (sigma * sigma)))


def _draw(xy: np.ndarray, size: int, lines: np.ndarray, masks: np.ndarray) -> None:
    """Rasterise one face into ``lines`` ``(S, S, 3) uint8`` and ``masks`` ``(3, S, S) uint8``
    (eye openings, mouth opening, gaze); both must be zero on entry."""
    plan = _plan()
    fixed = np.rint(xy * _ONE).astype(np.int32)
    width = _line_width(size)
    aa = cv2.LINE_AA

    mesh = fixed[plan.mesh_order]
    # the faint mesh stays 1 px at every size (thick anti-aliased lines cost ~6x in OpenCV)
    cv2.polylines(lines, [mesh[a:b] for a, b in plan.mesh_splits], False, (_MESH_GREY,) * 3, 1, aa, _SHIFT)
    for part in plan.parts:
        cv2.polylines(lines, [fixed[p] for p in part.paths], part.closed, part.color, width, aa, _SHIFT)

    eye_mask, mouth_mask, gaze = masks[0], masks[1], masks[2]
    cv2.fillPoly(eye_mask, [fixed[plan.eyes[0]], fixed[plan.eyes[1]]], 255, aa, _SHIFT)
    cv2.fillPoly(mouth_mask, [fixed[plan.mouth]], 255, aa, _SHIFT)

    for iris, (upper, lower) in zip(plan.irises, plan.lids):
        c = xy[iris[0]]
        d = np.linalg.norm(xy[iris[1:]] - c, axis=1)
        # ring points come in opposite pairs (1st/3rd, 2nd/4th): take the longer diameter, so a
        # squashed ring (a closing lid, a turned head) still gives the true radius
        sigma = max(0.5 * (d[0] + d[2]), 0.5 * (d[1] + d[3]), 0.5)
        # how much iris the lids let through: open eyes have a lid gap of ~1.3-1.7 iris
        # radii, a shut one (mediapipe rarely closes the contour fully) under ~0.4
        gap = float(np.max(np.linalg.norm(xy[upper] - xy[lower], axis=1))) / sigma
        visible = min(max((gap - _GAP_SHUT) / (_GAP_OPEN - _GAP_SHUT), 0.0), 1.0)
        if visible <= 0.0:
            continue
        r = 3.0 * sigma
        x0, x1 = max(int(np.floor(c[0] - r)), 0), min(int(np.ceil(c[0] + r)) + 1, size)
        y0, y1 = max(int(np.floor(c[1] - r)), 0), min(int(np.ceil(c[1] + r)) + 1, size)
        if x0 >= x1 or y0 >= y1:
            continue
        blob = np.outer(_gaussian_1d(c[1], sigma, y0, y1), _gaussian_1d(c[0], sigma, x0, x1))
        blob *= eye_mask[y0:y1, x0:x1] * np.float32(visible)  # 0..255, closed eye -> nothing
        win = gaze[y0:y1, x0:x1]
        np.maximum(win, np.rint(blob).astype(np.uint8), out=win)


def _render_into(points: np.ndarray, size: int, src_size: int | None, out: np.ndarray,
                 lines: np.ndarray, masks: np.ndarray) -> None:
    lines.fill(0)
    masks.fill(0)
    _draw(_scaled_xy(points, size, src_size), size, lines, masks)
    scale = np.float32(1.0 / 255.0)
    for k, plane in enumerate(cv2.split(lines)):  # HWC -> CHW via cv2.split: faster than a transpose
        np.multiply(plane, scale, out=out[k])
    np.multiply(masks, scale, out=out[3:])


def _check_size(size: int) -> int:
    size = int(size)
    if size < 8:
        raise ValueError(f"conditioning image size must be at least 8 px, got {size}")
    return size


def landmark_image(points: np.ndarray, size: int = 256, src_size: int | None = None) -> np.ndarray:
    """The conditioning image of one face: ``(6, size, size) float32`` in ``[0, 1]``.

    Args:
        points: ``(478, 2|3)`` landmark px of a ``src_size`` x ``src_size`` crop
            (z is ignored).  A :class:`~avatar_app.types.Landmarks` is accepted too.
        size: side of the output image.
        src_size: side of the crop the points refer to (default: ``size``).

    Channels (see the module docstring): 0-2 part-coloured lines, 3 eye openings,
    4 mouth opening, 5 gaze blobs masked by the eye openings.
    """
    size = _check_size(size)
    points = getattr(points, "points", points)
    out = np.empty((COND_CHANNELS, size, size), np.float32)
    lines = np.empty((size, size, 3), np.uint8)
    masks = np.empty((3, size, size), np.uint8)
    _render_into(points, size, src_size, out, lines, masks)
    return out


def landmark_images(points: np.ndarray | torch.Tensor, size: int = 256,
                    src_size: int | None = None) -> torch.Tensor:
    """Batch version of :func:`landmark_image`: ``(B, 478, 2|3) -> (B, 6, size, size)``
    ``float32`` CPU tensor (move it to the model's device yourself)."""
    size = _check_size(size)
    if isinstance(points, torch.Tensor):
        points = points.detach().to("cpu", torch.float64).numpy()
    pts = np.asarray(points)
    if pts.ndim != 3:
        raise ValueError(f"batched landmark points must be (B, {NUM_LANDMARKS}, 2|3), got {pts.shape}")
    out = np.empty((pts.shape[0], COND_CHANNELS, size, size), np.float32)
    lines = np.empty((size, size, 3), np.uint8)
    masks = np.empty((3, size, size), np.uint8)
    for b in range(pts.shape[0]):
        _render_into(pts[b], size, src_size, out[b], lines, masks)
    return torch.from_numpy(out)
