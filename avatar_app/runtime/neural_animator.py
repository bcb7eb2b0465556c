"""The neural animator: MetaPortrait's networks in the same slot as the geometric one.

The source is prepared once (256 px network input, its landmark image, identity
embedding, warp code and generator features).  Per frame: the analytic flow and
target landmark image at 256, the warp network's correction, the generator, and —
for 512 crops — the temporal enhancer on top of the source warped at 512 with the
final flow, with its ring buffer of recent frames' features carried between calls.

Untrained, every network is (near-)identity by construction, so the neural avatar
equals the geometric one; trained weights come from a checkpoint.
"""

from __future__ import annotations

import logging
import time

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..face.align import rescale_points
from ..face.mesh import mouth_opening, topology
from ..models.conditioning import landmark_image, landmark_images
from ..models.flow import AnalyticFlow, fill_mouth_interior, rasterize_triangles
from ..models.portrait import NET_SIZE, PortraitModel, load_checkpoint
from ..models.layers import resize_grid
from ..types import Landmarks, SourcePortrait
from .animator import mouth_fill_amount

log = logging.getLogger(__name__)


def _rgb_tensor(image_bgr: np.ndarray, device) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(image_bgr[:, :, ::-1])).permute(2, 0, 1).float().div_(255.0)
    return t.unsqueeze(0).to(device)


def _bgr_image(t: torch.Tensor) -> np.ndarray:
    img = t[0].clamp(0, 1).mul(255.0).add_(0.5).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return np.ascontiguousarray(img[:, :, ::-1])


class NeuralAnimator:
    """Animate a source with a :class:`PortraitModel`.

    Args:
        source: the prepared source portrait (256 or 512).
        model: the networks; ``None`` loads ``weights`` or builds an untrained ``preset``.
        weights: a checkpoint path (see :func:`~avatar_app.models.portrait.load_checkpoint`).
        preset: ``lite`` or ``full`` when neither ``model`` nor ``weights`` is given.
        device: torch device (default: from ``backend``).
        backend: one of :data:`~avatar_app.runtime.backend.BACKEND_CHOICES`.
        identity: the source's 128-d identity embedding; computed with dlib when omitted.
    """

    name = "neural"

    def __init__(self, source: SourcePortrait, model: PortraitModel | None = None, weights: str | None = None,
                 preset: str = "lite", device: str | None = None, identity: np.ndarray | None = None,
                 backend: str = "torch-cpu"):
        if device is None:
            device = "cuda" if backend == "torch-cuda" or (backend == "auto" and torch.cuda.is_available()) else "cpu"
        self.device = torch.device(device)
        if model is None:
            if weights:
                model = load_checkpoint(weights, self.device)
            else:
                model = PortraitModel(preset)
                log.warning("no weights given: running the untrained %s model, which reproduces the geometric "
                            "avatar", preset)
        self.model = model.to(self.device).eval()
        self.trained = weights is not None
        self.size = source.size
        self.timings: dict[str, float] = {}
        self._triangles = topology().triangles
        self.flow = AnalyticFlow(NET_SIZE).to(self.device)
        self._identity_override = identity
        self.set_source(source)

    @torch.inference_mode()
    def set_source(self, source: SourcePortrait, identity: np.ndarray | None = None) -> None:
        """Prepare a new source (and reset the enhancer's memory of earlier frames)."""
        if source.size != self.size:
            raise ValueError(f"source crop is {source.size}px but the animator runs at {self.size}px")
        self.source = source
        identity = identity if identity is not None else self._identity_override
        if identity is None:
            from ..models.identity import IdentityEncoder

            identity = IdentityEncoder().embed(source.crop, source.landmarks)
        self.identity = np.asarray(identity, np.float32)
        crop256 = source.crop if self.size == NET_SIZE else cv2.resize(source.crop, (NET_SIZE, NET_SIZE),
                                                                         interpolation=cv2.INTER_AREA)
        self._src_pts = rescale_points(source.landmarks.points, self.size, NET_SIZE)
        cond = torch.from_numpy(landmark_image(self._src_pts, NET_SIZE)).unsqueeze(0).to(self.device)
        ident = torch.from_numpy(self.identity).unsqueeze(0).to(self.device)
        self._src = self.model.encode_source(_rgb_tensor(crop256, self.device), cond, ident)
        self._src_xy = torch.from_numpy(self._src_pts[:, :2].copy()).unsqueeze(0).to(self.device)
        self._src_full = _rgb_tensor(source.crop, self.device) if self.size != NET_SIZE else None
        self._src_gap = mouth_opening(self._src_pts)
        self.reset()

    def reset(self) -> None:
        """Forget earlier frames (the enhancer's ring buffer)."""
        self._history = None

    @torch.inference_mode()
    def animate(self, target: Landmarks) -> np.ndarray:
        """The avatar ``(S, S, 3) uint8`` BGR for target landmarks in source crop px."""
        t0 = time.perf_counter()
        pts = rescale_points(target.points, self.size, NET_SIZE)
        ids = rasterize_triangles(pts, self._triangles, NET_SIZE)
        tgt_cond = landmark_images(pts[None], NET_SIZE).to(self.device)
        t1 = time.perf_counter()
        tgt_xy = torch.from_numpy(pts[:, :2].copy()).unsqueeze(0).to(self.device)
        grid, mouth, coord = self.flow(self._src_xy, tgt_xy, torch.from_numpy(ids).unsqueeze(0).to(self.device))
        amount = mouth_fill_amount(self._src_gap, mouth_opening(pts), NET_SIZE)
        out = self.model.forward_frame(self._src, tgt_cond, grid, mouth, coord, amount)
        t2 = time.perf_counter()
        image = out["image"]
        if self.size != NET_SIZE:
            image = self._enhance(out, mouth, coord, amount)
        result = _bgr_image(image)
        t3 = time.perf_counter()
        self.timings = {"prepare": (t1 - t0) * 1e3, "networks": (t2 - t1) * 1e3, "enhance": (t3 - t2) * 1e3}
        return result

    def _enhance(self, out: dict, mouth: torch.Tensor, coord: torch.Tensor, amount: float) -> torch.Tensor:
        """512 output: the source warped at 512 with the final flow, the generator's
        synthesis blended in where its mask says, refined by the temporal enhancer."""
        size = (self.size, self.size)
        grid = resize_grid(out["grid"], size)
        base = F.grid_sample(self._src_full, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if amount > 0:
            up = F.interpolate(torch.cat([mouth, coord], 1), size=size, mode="bilinear", align_corners=False)
            base = fill_mouth_interior(base.flip(1), up[:, :1], up[:, 1:], amount).flip(1)
        mask = F.interpolate(out["mask"], size=size, mode="bilinear", align_corners=False)
        generated = F.interpolate(out["image"], size=size, mode="bilinear", align_corners=False)
        base = mask * generated + (1 - mask) * base
        enhancer = self.model.enhancer
        if self._history is None:
            self._history = enhancer.start_history(out["image"], base)
        image, self._history = enhancer(out["image"], base, self._history)
        return image
