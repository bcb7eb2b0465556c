"""Training pairs with large head motion (issue 13): the generator must keep the source's face
when the user leans in, steps back or turns, not only under the small motion of most pairs.

Two ways, both for the resident pairs (:mod:`.resident`):

* **Hard pairs** (:meth:`HeadPoses.hardest`): for a share of the pairs the driving frame is
  one of the few, of several drawn from the clip, that lie furthest in head pose from the source
  (rotation angle in radians + |log scale|, from a similarity fit of the rigid landmarks, as
  the retargeting measures head motion; one of the top few, not the single furthest, so one
  mis-tracked frame is not drawn again and again).  Real turns: yaw and pitch cannot be made
  by warping an image.
* **Large zoom** (:func:`draw_large_zoom`): for a share of the pairs a relative zoom of
  1.1–1.4× either way (the motion limits stop at 1.35×; of the training pairs' |log scale|, p95
  is 0.057 (1.06×) and p99.9 0.22).  The image that is *shrunk* takes it: the source for an
  approach, the driving frame for a retreat, so the zoom never upsamples (an upsampled target
  teaches the network to blur, an upsampled source to paint detail).  The source also rolls by
  up to 15°.  These pairs skip the small jitter, so each image is resampled once; a shrunk image
  with 2× supersampling.  Their landmark images and triangle maps are drawn afresh from the
  moved landmarks, as the app's GPU path draws them (:class:`ExactDrawer`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..face.align import similarity_fits
from ..face.mesh import topology
from ..inference.torch_backend import capture_cuda_graph
from ..models.frame_inputs import FrameInputs

CANDIDATES = 16  # driving frames drawn for a hard pair ...
KEEP = 4  # ... of which one of the KEEP furthest from the source is taken
ZOOM_RANGE = (1.1, 1.4)  # relative zoom of a large-zoom pair, either way
ROLL_DEGREES = 15.0  # largest extra roll of a large-zoom pair's source
SHIFT = 0.08  # largest shift of a large-zoom pair, in halves of the crop (grid units)


def rotation_angle(rotation: np.ndarray) -> np.ndarray:
    """The angle (radians) of rotation matrices ``(..., 3, 3)``."""
    return np.arccos(np.clip((np.trace(rotation, axis1=-2, axis2=-1) - 1.0) / 2.0, -1.0, 1.0))


class HeadPoses:
    """Every frame's head pose against the mesh's neutral face: ``log_scale (N,)``, ``rotation (N, 3, 3)``.

    Args:
        points: ``(N, 478, 3)`` landmarks (px of any crop; frames without a face may hold anything).
        valid: ``(N,) bool``, the frames with a face (the others, and any with a non-finite
            landmark, get the neutral pose).
    """

    def __init__(self, points: np.ndarray, valid: np.ndarray):
        topo = topology()
        ref = topo.neutral[topo.rigid].astype(np.float64)
        n = len(points)
        self.log_scale = np.zeros(n, np.float64)
        self.rotation = np.tile(np.eye(3), (n, 1, 1))
        finite = np.isfinite(points[:, topo.rigid]).all(axis=(1, 2))
        fit = np.flatnonzero(np.asarray(valid, bool) & finite)
        if len(fit):
            s, self.rotation[fit], _ = similarity_fits(ref, points[fit[:, None], topo.rigid])
            self.log_scale[fit] = np.log(np.maximum(s, 1e-9))

    def motion(self, a, b) -> np.ndarray:
        """Head motion between frames ``a`` and ``b`` (broadcast): rotation angle (rad) + |Δ log scale|."""
        a, b = np.asarray(a), np.asarray(b)
        rel = self.rotation[b] @ np.swapaxes(self.rotation[a], -1, -2)
        return rotation_angle(rel) + np.abs(self.log_scale[b] - self.log_scale[a])

    def hardest(self, source: int, choices: np.ndarray, rng: np.random.Generator,
                candidates: int = CANDIDATES, keep: int = KEEP) -> int:
        """Of ``candidates`` frames drawn from ``choices`` (not ``source`` where others exist), one of
        the ``keep`` of largest head motion from ``source``, at random."""
        pool = choices[choices != source] if len(choices) > 1 else choices
        drawn = rng.choice(pool, size=min(candidates, len(pool)), replace=False)
        top = drawn[np.argsort(-self.motion(source, drawn), kind="stable")[:keep]]
        return int(rng.choice(top))


def two_frames(choices: np.ndarray, rng: np.random.Generator, hardest=None,
               hard_share: float = 0.0) -> tuple[int, int]:
    """Two of ``choices`` at random (one twice only when there is one); with ``hardest``
    (:meth:`HeadPoses.hardest`), for ``hard_share`` of the calls the second is one of large head
    motion from the first."""
    a, b = rng.choice(choices, size=2, replace=len(choices) < 2)
    if hardest is not None and rng.random() < hard_share:
        b = hardest(int(a), choices, rng)
    return int(a), int(b)


@dataclass(frozen=True)
class LargeZoom:
    """Per pair of a batch: ``rows`` (indices of the pairs that take a large zoom), and for each of
    them ``zoom`` (> 1: the driving face is larger than the source's), ``roll`` (degrees, the
    source's) and ``shift`` ``(k, 2)`` (grid units, the shrunk image's)."""

    rows: np.ndarray
    zoom: np.ndarray
    roll: np.ndarray
    shift: np.ndarray

    def transforms(self) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]]:
        """``[(side, rows, scale, degrees, shift, supersample), ...]``: the one similarity each image of
        these pairs takes.  The shrunk image takes the zoom (scale ``< 1``) and the shift, supersampled;
        the source also takes the roll (at scale 1 in a retreat: not supersampled, nothing shrinks)."""
        approach = self.zoom > 1.0
        out = []
        a, r = self.rows[approach], self.rows[~approach]
        if len(a):
            out.append(("source", a, 1.0 / self.zoom[approach], self.roll[approach], self.shift[approach], True))
        if len(r):
            out.append(("source", r, np.ones(len(r)), self.roll[~approach], np.zeros((len(r), 2)), False))
            out.append(("driving", r, self.zoom[~approach], np.zeros(len(r)), self.shift[~approach], True))
        return out


def draw_large_zoom(batch: int, share: float, rng: np.random.Generator) -> LargeZoom:
    """Which pairs of a batch of ``batch`` take a large zoom (each with probability ``share``), and how much."""
    rows = np.flatnonzero(rng.random(batch) < share)
    k = len(rows)
    lo, hi = np.log(ZOOM_RANGE[0]), np.log(ZOOM_RANGE[1])
    zoom = np.exp(rng.uniform(lo, hi, k) * rng.choice([-1.0, 1.0], k))
    return LargeZoom(rows, zoom, rng.uniform(-ROLL_DEGREES, ROLL_DEGREES, k), rng.uniform(-SHIFT, SHIFT, (k, 2)))


class ExactDrawer:
    """A face's landmark image (and triangle map) drawn from its landmarks as the app's GPU path
    draws them (:class:`~avatar_app.models.frame_inputs.FrameInputs`, the torch twin of the OpenCV
    drawing), one face at a time.  On CUDA the drawing of one face is captured once in a CUDA graph
    and replayed per face: drawn eagerly it is hundreds of small kernels a face, and drawing the
    large-zoom pairs so halved the training speed (74 against 137 samples/s, two runs sharing one
    GPU, docs/MOTION_IDENTITY.md §7.2).

    Args:
        size: crop side.
        device: where the points come from and the drawings go.
    """

    def __init__(self, size: int, device: torch.device):
        self.device = torch.device(device)
        self.inputs = FrameInputs(size).to(self.device).eval()
        self._graphs: dict[bool, tuple] = {}  # triangles wanted -> (graph, points buffer, outputs)

    def _draw(self, points: torch.Tensor, triangles: bool) -> tuple:
        if triangles:
            return self.inputs(points)
        return (self.inputs.cond(points),)

    @torch.no_grad()
    def __call__(self, points: torch.Tensor, triangles: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``points (k, 478, 3)`` px -> ``(cond (k, 6, S, S) float32, tri_ids (k, S, S) int64 or None)``."""
        if self.device.type != "cuda":
            drawn = self._draw(points, triangles)
            return drawn[0], drawn[1].long() if triangles else None
        if triangles not in self._graphs:
            self._graphs[triangles] = self._capture(points[:1], triangles)
        graph, buffer, outs = self._graphs[triangles]
        conds, tris = [], []
        for p in points:  # each replay overwrites the graph's outputs: copy them out
            buffer.copy_(p[None])
            graph.replay()
            conds.append(outs[0].clone())
            if triangles:
                tris.append(outs[1].to(torch.long, copy=True))
        return torch.cat(conds), torch.cat(tris) if triangles else None

    def _capture(self, first: torch.Tensor, triangles: bool) -> tuple:
        """Warm up on a real face (not zeros), then capture over an input buffer."""
        buffer = first.detach().clone().float()
        graph, outs = capture_cuda_graph(self._draw, (buffer, triangles), self.device, warmup=2)
        return graph, buffer, outs
