"""The network chain's CPU-side inputs, from a source portrait and target landmarks.

Shared by the neural animator (every live frame) and INT8 calibration (recording a
model's per-network inputs), so both feed :class:`~avatar_app.inference.chain.NetworkChain`
exactly the same way.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..face.align import rescale_points
from ..face.mesh import MouthFill, topology
from ..imaging import bgr_to_rgb_chw
from ..models.conditioning import landmark_image
from ..models.eye_lids import closed_lid_lift
from ..models.flow import rasterize_triangles
from ..models.portrait import NET_SIZE
from ..types import Landmarks, SourcePortrait


class ChainInputs:
    """A source's inputs, prepared once, and each target's.

    Args:
        source: the prepared source portrait (256 or 512 px crop).
        identity: its ``(128,)`` identity embedding.
    """

    def __init__(self, source: SourcePortrait, identity: np.ndarray):
        self.size = source.size
        self._triangles = topology().triangles
        crop256 = source.crop if self.size == NET_SIZE else cv2.resize(source.crop, (NET_SIZE, NET_SIZE),
                                                                         interpolation=cv2.INTER_AREA)
        points = rescale_points(source.landmarks.points, self.size, NET_SIZE)
        self._mouth_fill = MouthFill(points, NET_SIZE)
        #: the arguments of :meth:`NetworkChain.set_source`
        self.source = (bgr_to_rgb_chw(crop256)[None], landmark_image(points, NET_SIZE)[None],
                       np.asarray(identity, np.float32)[None], points[None, :, :2].astype(np.float32),
                       bgr_to_rgb_chw(source.crop)[None] if self.size != NET_SIZE else None,
                       closed_lid_lift(source.crop, source.landmarks.points).reshape(1, 2, 1))

    def frame(self, target: Landmarks, prepare=None) -> tuple:
        """The arguments of :meth:`NetworkChain.frame` for ``target`` (landmarks in source crop px).

        ``prepare``: the chain's own drawing of the landmark image and triangle ids on its device
        (:meth:`NetworkChain.prepare_frame`, taking ``(1, 478, 3)`` float32 points); without it
        they are drawn here with OpenCV.
        """
        pts = rescale_points(target.points, self.size, NET_SIZE)
        amount = self._mouth_fill(pts)
        if prepare is not None:
            cond, ids = prepare(pts[None].astype(np.float32))
            return cond, pts[None, :, :2].astype(np.float32), ids, amount
        ids = rasterize_triangles(pts, self._triangles, NET_SIZE).astype(np.int32)
        return landmark_image(pts, NET_SIZE)[None], pts[None, :, :2].astype(np.float32), ids[None], amount
