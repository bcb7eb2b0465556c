"""The dense-landmark warp network: refines the analytic flow.

MetaPortrait's warping module takes the source image and the source/target landmark
images and predicts the flow.  Ours starts from the analytic flow (geometry from the
landmark mesh) and predicts only a *residual* flow plus an occlusion map, modulated
(AdaIN) by a code computed from the source image and its landmark image.  The
residual head is zero-initialised, so an untrained network returns the analytic flow
exactly.

All inputs at the network size ``S`` (256); the work happens at ``resolution``
(≤ S) and the outputs are upsampled back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .conditioning import COND_CHANNELS
from .layers import AdaResBlock, conv, down, zero_

OCCLUSION_INIT_BIAS = 8.0  # sigmoid(8) = 0.99966: untrained, nothing is occluded


def identity_grid(batch: int, size: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """``(B, 2, S, S)`` pixel-centre positions in norm [-1, 1] (x then y), align_corners=False."""
    t = (torch.arange(size, device=device, dtype=dtype) + 0.5) * (2.0 / size) - 1.0
    gy, gx = torch.meshgrid(t, t, indexing="ij")
    return torch.stack([gx, gy], 0).unsqueeze(0).expand(batch, -1, -1, -1)


class WarpNet(nn.Module):
    """Residual flow and occlusion from source, landmark images and the analytic flow.

    Args:
        channels: width at the finest internal level (doubles per level, capped at 4×).
        levels: number of stride-2 levels in the encoder.
        code_dim: size of the AdaIN code.
        resolution: internal working resolution (the inputs are resized to it).
        cond_channels: channels of the landmark images.
    """

    def __init__(self, channels: int = 32, levels: int = 3, code_dim: int = 128, resolution: int = 128,
                 cond_channels: int = COND_CHANNELS):
        super().__init__()
        self.resolution = resolution
        widths = [min(channels * 2**i, channels * 4) for i in range(levels + 1)]
        cin = 3 + 3 + 2 * cond_channels + 2  # source, analytically warped source, 2 landmark images, flow
        self.stem = nn.Sequential(conv(cin, widths[0]), nn.LeakyReLU(0.2, inplace=True))
        self.downs = nn.ModuleList(down(widths[i], widths[i + 1]) for i in range(levels))
        self.code_net = nn.Sequential(down(3 + cond_channels, widths[0]), down(widths[0], widths[1]),
                                      down(widths[1], widths[1]))
        self.code_fc = nn.Linear(widths[1], code_dim)
        self.bottleneck = AdaResBlock(widths[-1], code_dim)
        self.fuse = nn.ModuleList(conv(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(levels)))
        self.blocks = nn.ModuleList(AdaResBlock(widths[i], code_dim) for i in reversed(range(levels)))
        self.residual_head = zero_(conv(widths[0], 2))
        self.occlusion_head = conv(widths[0], 1)
        nn.init.zeros_(self.occlusion_head.weight)
        nn.init.constant_(self.occlusion_head.bias, OCCLUSION_INIT_BIAS)

    def code(self, source: torch.Tensor, src_cond: torch.Tensor) -> torch.Tensor:
        """``(B, code_dim)`` from the source image and its landmark image (computable once per source)."""
        x = self._resize(torch.cat([source, src_cond], 1))
        return self.code_fc(self.code_net(x).mean(dim=(2, 3)))

    def forward(self, source: torch.Tensor, src_cond: torch.Tensor, tgt_cond: torch.Tensor, flow: torch.Tensor,
                code: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict the correction to the analytic flow.

        Args:
            source: ``(B, 3, S, S)`` source crop, RGB [0, 1].
            src_cond, tgt_cond: ``(B, K, S, S)`` landmark images of source and target.
            flow: ``(B, 2, S, S)`` analytic flow as a displacement in norm units
                (sampling grid minus :func:`identity_grid`).
            code: precomputed :meth:`code` (computed here when omitted).

        Returns:
            ``residual (B, 2, S, S)`` (norm units, add to ``flow``) and
            ``occlusion (B, 1, S, S)`` in (0, 1), 1 = visible in the source.
        """
        size = source.shape[-1]
        if code is None:
            code = self.code(source, src_cond)
        grid = (identity_grid(source.shape[0], size, source.device, source.dtype) + flow).permute(0, 2, 3, 1)
        warped = F.grid_sample(source, grid, mode="bilinear", padding_mode="border", align_corners=False)
        x = self._resize(torch.cat([source, warped, src_cond, tgt_cond, flow], 1))
        skips = [self.stem(x)]
        for d in self.downs:
            skips.append(d(skips[-1]))
        h = self.bottleneck(skips[-1], code)
        for fuse, block, skip in zip(self.fuse, self.blocks, reversed(skips[:-1])):
            h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            h = block(F.leaky_relu(fuse(torch.cat([h, skip], 1)), 0.2), code)
        residual = self.residual_head(h)
        occlusion = torch.sigmoid(self.occlusion_head(h))
        if residual.shape[-1] != size:
            residual = F.interpolate(residual, size=(size, size), mode="bilinear", align_corners=False)
            occlusion = F.interpolate(occlusion, size=(size, size), mode="bilinear", align_corners=False)
        return residual, occlusion

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-1]
        if size == self.resolution:
            return x
        if size > self.resolution and size % self.resolution == 0:
            return F.avg_pool2d(x, size // self.resolution)  # exportable anti-aliased downscale
        return F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False)


#: the most the warp network may move a pixel away from the analytic flow while the head moves
#: far (px at the network's 256; :func:`limit_residual`)
LARGE_MOTION_RESIDUAL_PX = 6.0


def limit_residual(residual: torch.Tensor, large_motion: torch.Tensor, limit_px: float = LARGE_MOTION_RESIDUAL_PX,
                   knee: float = 0.6) -> torch.Tensor:
    """The warp network's ``residual (B, 2, S, S)`` (norm units), bounded where the head moved far.

    Trained on clips whose backgrounds stand still, the network learnt to hold what lies around
    the face still against the analytic flow's whole-head motion, by up to ~26 px at 256 on
    ordinary frames.  When the head moves far (``large_motion (B,)`` 1, from
    :meth:`~.flow.AnalyticFlow.for_networks`: where the analytic flow moves the head rigidly) that
    stretched a hat between the face and the place it held (docs/MOTION_TRANSITIONS.md §4).  There
    each pixel's correction saturates smoothly at ``limit_px`` (unchanged up to ``knee`` of it, as
    :func:`~avatar_app.face.retarget.soft_limit`); at ``large_motion`` 0 it is untouched, between
    the two blended.  A zero residual (an untrained network) stays zero.
    """
    limit = limit_px * 2.0 / residual.shape[-1]
    start, room = knee * limit, (1 - knee) * limit
    # each pixel's length, at least 1e-4 (0.01 px), in float32 (1e-8 is no fp16 number); squares summed over the two
    # channels, as .norm(dim=1) but ~14x faster on a CPU (10 ms a 256 frame on two threads: a tenth of a
    # personalization step); the floor under the root keeps the root's derivative finite at a zero residual
    mag = residual.float().square().sum(1, keepdim=True).clamp(min=1e-8).sqrt()
    bounded = torch.where(mag <= start, mag, start + room * torch.tanh((mag - start) / room))
    weight = large_motion.float().reshape(-1, 1, 1, 1)
    return residual * (1 + weight * (bounded / mag - 1)).to(residual.dtype)
