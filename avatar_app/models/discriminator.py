"""Multi-scale PatchGAN discriminator (for LSGAN / hinge losses and feature matching).

At each scale ``s`` (``s = 0 .. scales - 1``) the input (image, and the
conditioning map concatenated on channels) is average-pooled by ``2**s`` and fed
to its own PatchGAN: ``layers`` 4×4 convs (padding 1), the first ``layers - 2``
with stride 2 and the last two with stride 1, LeakyReLU 0.2 between them, widths
``channels * 2**i`` capped at ``8 * channels``; the last conv gives 1-channel
logits (no activation).  With ``spectral_norm`` every conv is spectrally
normalised (no other normalisation is used).

For an ``H × W`` input, scale ``s`` gives logits of
``(H / 2**(s + layers - 2) - 2) × (W / 2**(s + layers - 2) - 2)``; e.g. 256 input,
``layers=4``: 62×62 at scale 0, 30×30 at scale 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm


class _PatchGAN(nn.Module):
    """``(B, in, H, W) -> list`` of ``layers`` feature maps, the last ``(B, 1, h, w)`` logits."""

    def __init__(self, in_channels: int, channels: int, layers: int, spectral_norm: bool):
        super().__init__()
        convs = []
        cin = in_channels
        for i in range(layers):
            last = i == layers - 1
            cout = 1 if last else min(channels * 2**i, 8 * channels)
            stride = 2 if i < layers - 2 else 1
            conv = nn.Conv2d(cin, cout, 4, stride=stride, padding=1)
            convs.append(_spectral_norm(conv) if spectral_norm else conv)
            cin = cout
        self.convs = nn.ModuleList(convs)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < len(self.convs) - 1:
                x = F.leaky_relu(x, 0.2)
            feats.append(x)
        return feats


class MultiScaleDiscriminator(nn.Module):
    """PatchGAN discriminators at ``scales`` image scales.

    Args:
        in_channels: channels of the judged image.
        cond_channels: channels of the conditioning map concatenated with it (0: none).
        scales: number of scales (each halves the resolution by average pooling).
        channels: width of the first conv.
        layers: convs per PatchGAN (>= 2), i.e. feature maps returned per scale.
        spectral_norm: spectrally normalise every conv.
    """

    def __init__(
        self,
        in_channels: int = 3,
        cond_channels: int = 0,
        scales: int = 2,
        channels: int = 64,
        layers: int = 4,
        spectral_norm: bool = True,
    ):
        super().__init__()
        if scales < 1 or layers < 2 or in_channels < 1 or cond_channels < 0:
            raise ValueError(f"bad MultiScaleDiscriminator config: scales={scales}, layers={layers}")
        self.in_channels = in_channels
        self.cond_channels = cond_channels
        self.scales = scales
        self.layers = layers
        self.nets = nn.ModuleList(
            _PatchGAN(in_channels + cond_channels, channels, layers, spectral_norm) for _ in range(scales)
        )

    def forward(self, image: torch.Tensor, cond: torch.Tensor | None = None) -> list[list[torch.Tensor]]:
        """Judge ``image`` at every scale.

        Args:
            image: ``(B, in_channels, H, W)``.
            cond: ``(B, cond_channels, H, W)``, required iff ``cond_channels > 0``.

        Returns:
            ``scales`` lists (full resolution first) of ``layers`` feature maps
            each; the last of each list is the ``(B, 1, h, w)`` logits.
        """
        if (cond is None) != (self.cond_channels == 0):
            raise ValueError(f"cond must be given iff cond_channels > 0 (cond_channels={self.cond_channels})")
        x = image if cond is None else torch.cat([image, cond], dim=1)
        outs = []
        for s, net in enumerate(self.nets):
            if s > 0:
                x = F.avg_pool2d(x, 2)
            outs.append(net(x))
        return outs
