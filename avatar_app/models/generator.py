"""The ID-preserving generator (MetaPortrait §3.2).

The source is encoded once into multi-scale features.  Per frame, each scale is
warped with the final flow and weighted by the occlusion map, and a decoder built
from :class:`~avatar_app.models.layers.IDResBlock` s — normalisation blending
``attention·SPADE(x, target landmarks) + (1 − attention)·AdaIN(x, identity)`` —
produces an RGB image and a blend mask.  The output is
``mask · generated + (1 − mask) · warped source``; the mask head starts at
≈ 0.25 %, so an untrained generator returns (almost exactly) the warped source.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .conditioning import COND_CHANNELS
from .identity import IDENTITY_DIM
from .layers import IDResBlock, conv, down, resize_grid

MASK_INIT_BIAS = -6.0  # sigmoid(-6) = 0.0025


class Generator(nn.Module):
    """Warp source features and decode them with ID-preserving normalisation.

    Args:
        channels: encoder widths at 1/2, 1/4 and 1/8 of the network size.
        top_channels: width at full resolution.
        top_block: run an :class:`IDResBlock` at full resolution (``full`` preset);
            otherwise a single conv there (``lite``).
        hidden: width of SPADE's condition encoder.
        cond_channels: channels of the landmark images.
        id_dim: size of the identity embedding.
    """

    def __init__(self, channels: tuple[int, int, int] = (64, 128, 256), top_channels: int = 32, top_block: bool = True,
                 hidden: int = 64, cond_channels: int = COND_CHANNELS, id_dim: int = IDENTITY_DIM):
        super().__init__()
        c0, c1, c2 = channels
        self.encoder = nn.ModuleList([down(3, c0), down(c0, c1), down(c1, c2)])
        args = (cond_channels, id_dim, hidden)
        self.dec32 = IDResBlock(c2, c2, *args)
        self.dec64 = IDResBlock(c2 + c1, c1, *args)
        self.dec128 = IDResBlock(c1 + c0, c0, *args)
        self.to_top = conv(c0, top_channels)
        self.top = IDResBlock(top_channels, top_channels, *args) if top_block else None
        self.head = conv(top_channels, 4)
        with torch.no_grad():
            self.head.weight[3].zero_()
            self.head.bias[3].fill_(MASK_INIT_BIAS)

    def encode(self, source: torch.Tensor) -> list[torch.Tensor]:
        """Source ``(B, 3, S, S)`` → features at S/2, S/4, S/8 (computed once per source)."""
        feats, x = [], source
        for layer in self.encoder:
            x = layer(x)
            feats.append(x)
        return feats

    def forward(self, features: list[torch.Tensor], grid: torch.Tensor, occlusion: torch.Tensor,
                tgt_cond: torch.Tensor, identity: torch.Tensor, warped_source: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Generate the avatar.

        Args:
            features: :meth:`encode` of the source.
            grid: ``(B, S, S, 2)`` final sampling grid (norm [-1, 1]).
            occlusion: ``(B, 1, S, S)`` from the warp network.
            tgt_cond: ``(B, K, S, S)`` target landmark images.
            identity: ``(B, 128)`` source identity embedding.
            warped_source: ``(B, 3, S, S)`` the source image sampled at ``grid``.

        Returns:
            ``image (B, 3, S, S)`` RGB in [0, 1] and ``mask (B, 1, S, S)``.
        """
        return self.decode(self.warp_features(features, grid, occlusion), tgt_cond, identity, warped_source)

    def warp_features(self, features: list[torch.Tensor], grid: torch.Tensor, occlusion: torch.Tensor,
                      window: int | None = None) -> list[torch.Tensor]:
        """Each of :meth:`encode`'s features sampled at ``grid`` and weighted by ``occlusion``; ``window``: the
        grid and occlusion cover a ``window`` px square of the frame (not all of it), so each feature is sampled
        at that square's share of its size (a training step that decodes only a window)."""
        warped = []
        for f, d in zip(features, (2, 4, 8)):
            # plain ints: static shapes in exports
            size = (int(f.shape[-2]), int(f.shape[-1])) if window is None else (window // d, window // d)
            g = resize_grid(grid, size)
            occ = F.interpolate(occlusion, size=size, mode="bilinear", align_corners=False)
            warped.append(F.grid_sample(f, g, mode="bilinear", padding_mode="border", align_corners=False) * occ)
        return warped

    def stage(self, k: int, h: torch.Tensor | None, warped: list[torch.Tensor], tgt_cond: torch.Tensor,
              identity: torch.Tensor) -> torch.Tensor:
        """Decoder stage ``k``: 1 ``dec32`` (S/8, from the warped features), 2 ``dec64`` (S/4) and
        3 ``dec128`` (S/2), each on the previous stage's output ``h`` upsampled ×2."""
        f128, f64, f32 = warped
        if k == 1:
            return self.dec32(f32, tgt_cond, identity)
        h = F.interpolate(h, scale_factor=2.0, mode="bilinear", align_corners=False)
        block, skip = (self.dec64, f64) if k == 2 else (self.dec128, f128)
        return block(torch.cat([h, skip], 1), tgt_cond, identity)

    def decode(self, warped: list[torch.Tensor | None], tgt_cond: torch.Tensor, identity: torch.Tensor,
               warped_source: torch.Tensor, start: int = 0, h: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoder over :meth:`warp_features`' output, from stage ``start`` on.

        ``start = k`` (0–3) takes ``h``, :meth:`stage` ``k``'s output, instead of running stages
        1…k (what personalization caches when it adapts only the later stages; ``start = 0``: no
        ``h``); the warped features those stages alone read may then be ``None``.
        """
        for k in range(start + 1, 4):
            h = self.stage(k, h, warped, tgt_cond, identity)
        h = F.interpolate(h, scale_factor=2.0, mode="bilinear", align_corners=False)
        h = F.leaky_relu(self.to_top(h), 0.2)
        if self.top is not None:
            h = self.top(h, tgt_cond, identity)
        out = self.head(h)
        rgb = torch.sigmoid(out[:, :3])
        mask = torch.sigmoid(out[:, 3:4])
        return mask * rgb + (1 - mask) * warped_source, mask
