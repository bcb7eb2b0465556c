"""Building blocks shared by the warp network and the generator.

Plain ``nn.Module`` s, no I/O.  Shapes: ``x (B, C, H, W)``, codes ``(B, D)``,
condition maps ``(B, K, h, w)`` (resized to ``x`` inside).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2)


def zero_(module: nn.Module) -> nn.Module:
    """Zero a layer's weights and bias (its output starts at exactly 0)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class AdaIN(nn.Module):
    """Instance norm whose scale and shift come from a code: ``norm(x) · (1 + γ(z)) + β(z)``."""

    def __init__(self, channels: int, code_dim: int):
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.affine = nn.Linear(code_dim, 2 * channels)

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.affine(code)[:, :, None, None].chunk(2, dim=1)
        return self.norm(x) * (1 + gamma) + beta


class IDPreservingNorm(nn.Module):
    """MetaPortrait's ID-preserving normalisation.

    ``a · SPADE(x, cond) + (1 − a) · AdaIN(x, identity)``, where SPADE's per-pixel scale
    and shift come from the target's landmark images, AdaIN's from the source identity
    embedding, and the attention map ``a`` is predicted from both the condition and
    the normalised features.

    Args:
        channels: C of ``x``.
        cond_channels: K of the condition map.
        id_dim: size of the identity embedding.
        hidden: width of SPADE's shared condition encoder.
    """

    def __init__(self, channels: int, cond_channels: int, id_dim: int, hidden: int):
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.shared = nn.Sequential(conv(cond_channels, hidden), nn.ReLU(inplace=True))
        self.spade = conv(hidden, 2 * channels)
        self.adain = nn.Linear(id_dim, 2 * channels)
        self.attention = conv(hidden + channels, 1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        n = self.norm(x)
        if cond.shape[-2:] != x.shape[-2:]:
            cond = F.interpolate(cond, size=x.shape[-2:], mode="bilinear", align_corners=False)
        h = self.shared(cond)
        g_s, b_s = self.spade(h).chunk(2, dim=1)
        g_a, b_a = self.adain(identity)[:, :, None, None].chunk(2, dim=1)
        a = torch.sigmoid(self.attention(torch.cat([h, n], 1)))
        return a * (n * (1 + g_s) + b_s) + (1 - a) * (n * (1 + g_a) + b_a)


class IDResBlock(nn.Module):
    """Residual block with :class:`IDPreservingNorm` before each conv (SPADE-ResBlk style)."""

    def __init__(self, cin: int, cout: int, cond_channels: int, id_dim: int, hidden: int):
        super().__init__()
        mid = min(cin, cout)
        self.norm1 = IDPreservingNorm(cin, cond_channels, id_dim, hidden)
        self.conv1 = conv(cin, mid)
        self.norm2 = IDPreservingNorm(mid, cond_channels, id_dim, hidden)
        self.conv2 = conv(mid, cout)
        self.skip = None if cin == cout else nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.leaky_relu(self.norm1(x, cond, identity), 0.2))
        h = self.conv2(F.leaky_relu(self.norm2(h, cond, identity), 0.2))
        return (x if self.skip is None else self.skip(x)) + h


class AdaResBlock(nn.Module):
    """Residual block with :class:`AdaIN` (code-modulated) before each conv."""

    def __init__(self, channels: int, code_dim: int):
        super().__init__()
        self.norm1 = AdaIN(channels, code_dim)
        self.conv1 = conv(channels, channels)
        self.norm2 = AdaIN(channels, code_dim)
        self.conv2 = conv(channels, channels)

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.leaky_relu(self.norm1(x, code), 0.2))
        return x + self.conv2(F.leaky_relu(self.norm2(h, code), 0.2))


def down(cin: int, cout: int) -> nn.Sequential:
    """Halve the resolution: stride-2 conv + LeakyReLU."""
    return nn.Sequential(conv(cin, cout, 3, stride=2), nn.LeakyReLU(0.2, inplace=True))


def resize_grid(grid: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resample a ``(B, H, W, 2)`` sampling grid (norm [-1, 1]) to another resolution."""
    if grid.shape[1:3] == tuple(size):
        return grid
    g = F.interpolate(grid.permute(0, 3, 1, 2), size=size, mode="bilinear", align_corners=False)
    return g.permute(0, 2, 3, 1)
