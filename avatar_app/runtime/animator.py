"""Animators: turn target landmarks into an avatar crop of the source portrait.

``GeometricAnimator`` needs no learned weights: analytic dense flow from the
landmark meshes, bilinear warping, and a painted mouth interior.  The source side
(its tensor, landmarks, mouth state) is prepared once; per frame only the target
side runs.  Stage timings of the last frame are kept in ``timings`` (ms).
"""

from __future__ import annotations

import dataclasses
import time

import cv2
import numpy as np
import torch

from ..face.brows import portrait_brow_follow
from ..face.mesh import MouthFill, topology
from ..face.retarget import MOTION_LIMITS, RetargetOptions
from ..models.eye_lids import closed_lid_lift
from ..models.flow import AnalyticFlow, fill_mouth_interior, rasterize_triangles, warp_image
from ..types import Landmarks, SourcePortrait


def retarget_options(animator, options: RetargetOptions | None = None) -> RetargetOptions:
    """``options`` with the motion limits of ``animator`` (its ``motion_limits``: the ranges it draws
    cleanly; :data:`~avatar_app.face.retarget.MOTION_LIMITS` for one that does not say).  Every path that
    pairs a retargeter with an animator (live, render, the stress runs, the cross-identity evaluation)
    takes its options from here, so the same animator gets the same head motion everywhere: ``options.limits``
    is replaced, whatever it was (other limits are the animator's to say), and so is ``options.brow_follow``, the
    animator's portrait's (:func:`~avatar_app.face.brows.portrait_brow_follow`: a brow under a fringe holds still)."""
    limits = getattr(animator, "motion_limits", MOTION_LIMITS)
    options = dataclasses.replace(options or RetargetOptions(), limits=limits)
    source = getattr(animator, "source", None)
    if isinstance(source, SourcePortrait):
        options = dataclasses.replace(options, brow_follow=portrait_brow_follow(source))
    return options


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """``(H, W, 3) uint8`` -> ``(1, 3, H, W) float32`` in [0, 1] (channel order kept)."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)


def tensor_to_image(t: torch.Tensor) -> np.ndarray:
    """``(1, 3, H, W)`` in [0, 1] -> ``(H, W, 3) uint8``."""
    return t[0].mul(255.0).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


class GeometricAnimator:
    """Warp the source crop along the analytic flow (see :mod:`avatar_app.models.flow`).

    On the CPU the flow is upsampled and the image warped with OpenCV (``remap`` on
    ``uint8``), and the mouth is painted only inside its bounding box; on CUDA the
    whole frame stays in torch.

    Args:
        source: the prepared source portrait.
        device: torch device for the flow and warp (``"cpu"`` or ``"cuda"``).
        opencv_warp: force (True) or forbid (False) the OpenCV warp; default: on the CPU.
    """

    name = "geometric"
    motion_limits = MOTION_LIMITS

    def __init__(self, source: SourcePortrait, device: str = "cpu", opencv_warp: bool | None = None):
        self.device = torch.device(device)
        self.size = source.size
        self.timings: dict[str, float] = {}
        self._triangles = topology().triangles
        self._cpu = self.device.type == "cpu" if opencv_warp is None else opencv_warp
        self.flow = AnalyticFlow(self.size, upsample=not self._cpu).to(self.device)
        self.set_source(source)

    def set_source(self, source: SourcePortrait) -> None:
        if source.size != self.size:
            raise ValueError(f"source crop is {source.size}px but the animator runs at {self.size}px")
        self.source = source
        self._src_image = image_to_tensor(source.crop).to(self.device)
        self._src_xy = torch.from_numpy(source.landmarks.xy.copy()).unsqueeze(0).to(self.device)
        self._mouth_fill = MouthFill(source.landmarks.points, self.size)
        lift = closed_lid_lift(source.crop, source.landmarks.points)  # where closing lids get their skin
        self._lid_lift = torch.from_numpy(lift).view(1, 2, 1).to(self.device)

    @torch.inference_mode()
    def animate(self, target: Landmarks) -> np.ndarray:
        """The avatar ``(S, S, 3) uint8`` BGR for target landmarks in source crop px."""
        t0 = time.perf_counter()
        ids = rasterize_triangles(target.points, self._triangles, self.size, self.flow.resolution)
        t1 = time.perf_counter()
        tgt_xy = torch.from_numpy(target.xy.copy()).unsqueeze(0).to(self.device)
        tri_ids = torch.from_numpy(ids).unsqueeze(0).to(self.device)
        grid, mouth, mouth_coord, eyes = self.flow(self._src_xy, tgt_xy, tri_ids, fine_eyes=True,
                                                   lid_lift=self._lid_lift)
        t2 = time.perf_counter()
        amount = self._mouth_fill(target.points)
        if self._cpu:
            image = self._warp_cpu(grid, mouth, mouth_coord, amount, eyes)
        else:
            out = warp_image(self._src_image, grid)
            if amount > 0:
                out = fill_mouth_interior(out, mouth, mouth_coord, amount)
            image = tensor_to_image(out.cpu())
        t3 = time.perf_counter()
        self.timings = {"rasterize": (t1 - t0) * 1e3, "flow": (t2 - t1) * 1e3, "warp": (t3 - t2) * 1e3}
        return image

    def _warp_cpu(self, grid: torch.Tensor, mouth: torch.Tensor, mouth_coord: torch.Tensor, amount: float,
                  eyes=None) -> np.ndarray:
        size, res = self.size, grid.shape[1]
        maps = grid[0].numpy() * (size / 2.0) + (size / 2.0 - 0.5)  # norm -> px of the source crop
        if res != size:
            maps = np.ascontiguousarray(cv2.resize(maps, (size, size), interpolation=cv2.INTER_LINEAR))
        if eyes is not None:  # the eyes, re-mapped at `size` (AnalyticFlow's fine_eyes)
            idx, delta = eyes
            flat = torch.from_numpy(maps).view(size * size, 2)
            for c in range(2):
                flat[:, c].scatter_add_(0, idx[0, c], delta[0, c])
        image = cv2.remap(self.source.crop, maps, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        if amount <= 0:
            return image
        inside = mouth[0, 0].numpy() > 0
        if not inside.any():
            return image
        ys, xs = np.nonzero(inside)
        k = size // res
        y0, y1 = max(ys.min() - 2, 0), min(ys.max() + 3, res)
        x0, x1 = max(xs.min() - 2, 0), min(xs.max() + 3, res)
        box = torch.cat([mouth, mouth_coord], 1)[:, :, y0:y1, x0:x1]
        if k > 1:
            box = torch.nn.functional.interpolate(box, scale_factor=k, mode="bilinear", align_corners=False)
        region = image[y0 * k:y1 * k, x0 * k:x1 * k]
        painted = fill_mouth_interior(image_to_tensor(region), box[:, :1], box[:, 1:], amount)
        image[y0 * k:y1 * k, x0 * k:x1 * k] = tensor_to_image(painted)
        return image
