"""Spatial-temporal super-resolution 256 -> 512 (MetaPortrait's enhancer).

:class:`TemporalEnhancer` refines a 512×512 ``base`` image (the caller passes the
upsampled 256 generator output with its warped source swapped for the 512 warp,
:func:`~avatar_app.inference.networks.upscale_output`) using the 256
generator ``frame`` and the features of neighbouring frames, and returns
``base + residual``.  The residual's last conv is zero-initialised, so an
untrained enhancer returns ``base`` bit-exactly.

Layout (``C = channels``, ``N = neighbours``, internal resolution ``h = w = 128``)::

    features:  [pixel_unshuffle(base, 4) (48 ch) | pixel_unshuffle(frame, 2) (12 ch)]  @128
               -> conv3x3 -> lrelu -> conv3x3                        -> (B, C, 128, 128)
    fusion:    per-pixel softmax over the N neighbour slots + the current frame;
               slot k's score = score_net([f_k | f_cur]) (shared weights, so the fusion
               is symmetric in the neighbours and the live/offline windows use it alike);
               fused = lrelu(conv1x1([f_cur | sum_k w_k f_k]))
    trunk:     ``blocks`` residual blocks (conv3x3 -> lrelu -> conv3x3, + skip)   @128
    upsample:  conv3x3 C->4C -> pixel_shuffle(2) -> lrelu                        @256
               [x | pixel_unshuffle(base, 2)] -> conv3x3 -> lrelu                @256
               conv3x3 C->12 (zero-init) -> pixel_shuffle(2) = residual          @512

Two ways of running it, with the same weights:

* **live (causal)**: :meth:`TemporalEnhancer.forward` takes the features of the
  ``N`` previous frames as an explicit ``history`` input and returns the updated
  one, so the network is stateless (static shapes; ONNX/TensorRT exportable).
  After a reset (first frame, or when the source portrait changes) callers must
  start over with ``history = model.start_history(frame, base)``.
* **offline (centred window)**: :meth:`TemporalEnhancer.forward_window` fuses,
  for frame ``t``, the frames ``t - r .. t + r`` (``r = N // 2``; edge frames
  replicated at the ends of the clip).

Only standard ops are used (conv, leaky relu, pixel (un)shuffle, cat, softmax,
reshape), no data-dependent control flow in ``forward``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FRAME_SIZE = 256
OUT_SIZE = 512
FEATURE_SIZE = 128
_SLOPE = 0.2


def _conv3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1)


def _lrelu() -> nn.LeakyReLU:
    return nn.LeakyReLU(_SLOPE, inplace=False)


class _ResBlock(nn.Module):
    """conv3x3 -> lrelu -> conv3x3, plus the input. ``(B, C, h, w) -> (B, C, h, w)``."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = _conv3(channels, channels)
        self.act = _lrelu()
        self.conv2 = _conv3(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(x)))


class TemporalEnhancer(nn.Module):
    """Spatial-temporal super-resolution, 256 -> 512, fusing neighbouring frames.

    Args:
        channels: feature width ``C``.
        blocks: residual blocks in the trunk (at 128×128).
        neighbours: ``N``, how many other frames are fused with the current one
            (the live history length; the offline window's size minus one).

    Budgets (``FlopCounterMode``, one live frame, batch 1): the full config
    ``(32, 4, 2)`` is 6.90 GFLOPs (158k parameters), the lite config
    ``(12, 2, 2)`` 1.15 GFLOPs (23k parameters).
    """

    def __init__(self, channels: int = 32, blocks: int = 4, neighbours: int = 2):
        super().__init__()
        if channels < 1 or blocks < 0 or neighbours < 1:
            raise ValueError(f"bad TemporalEnhancer config: channels={channels}, blocks={blocks}, neighbours={neighbours}")
        self.channels = channels
        self.blocks = blocks
        self.neighbours = neighbours
        self.feature_size = FEATURE_SIZE
        c = channels
        in_ch = 3 * (OUT_SIZE // FEATURE_SIZE) ** 2 + 3 * (FRAME_SIZE // FEATURE_SIZE) ** 2  # 48 + 12
        self.encode = nn.Sequential(_conv3(in_ch, c), _lrelu(), _conv3(c, c))
        # No bias on the score's last conv: a constant added to every slot's score
        # cancels in the softmax (its gradient would be identically zero).
        self.score = nn.Sequential(nn.Conv2d(2 * c, c, 1), _lrelu(), nn.Conv2d(c, 1, 3, padding=1, bias=False))
        self.mix = nn.Sequential(nn.Conv2d(2 * c, c, 1), _lrelu())
        self.trunk = nn.Sequential(*[_ResBlock(c) for _ in range(blocks)])
        self.up = nn.Sequential(_conv3(c, 4 * c), nn.PixelShuffle(2), _lrelu())
        self.refine = nn.Sequential(_conv3(c + 12, c), _lrelu())
        self.last = _conv3(c, 3 * 4)
        nn.init.zeros_(self.last.weight)
        nn.init.zeros_(self.last.bias)

    # ------------------------------------------------------------------ pieces

    def features(self, frame: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """Per-frame features.

        Args:
            frame: ``(B, 3, 256, 256)`` generator output, RGB in [0, 1].
            base: ``(B, 3, 512, 512)`` the 512 image to refine, RGB in [0, 1].

        Returns:
            ``(B, C, 128, 128)``.
        """
        b = F.pixel_unshuffle(base * 2.0 - 1.0, OUT_SIZE // FEATURE_SIZE)
        f = F.pixel_unshuffle(frame * 2.0 - 1.0, FRAME_SIZE // FEATURE_SIZE)
        return self.encode(torch.cat([b, f], dim=1))

    def _fuse(self, current: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
        """Per-pixel softmax weighting of the current and neighbour features.

        Args:
            current: ``(B, C, h, w)``.
            others: ``(B, N, C, h, w)``.

        Returns:
            ``(B, C, h, w)``.
        """
        c, s, n = self.channels, self.feature_size, self.neighbours + 1
        slots = torch.cat([others, current.unsqueeze(1)], dim=1)  # (B, n, C, h, w)
        pairs = torch.cat([slots, torch.cat([current.unsqueeze(1)] * n, dim=1)], dim=2)  # (B, n, 2C, h, w)
        scores = self.score(pairs.reshape(-1, 2 * c, s, s)).reshape(-1, n, 1, s, s)
        weights = torch.softmax(scores, dim=1)
        pooled = (weights * slots).sum(dim=1)
        return self.mix(torch.cat([current, pooled], dim=1))

    def _decode(self, current: torch.Tensor, others: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """Fusion, trunk, upsampling: ``(B, C, h, w), (B, N, C, h, w), (B, 3, 512, 512) -> (B, 3, 512, 512)``."""
        x = self._fuse(current, others)
        x = self.trunk(x)
        x = self.up(x)  # (B, C, 256, 256)
        x = self.refine(torch.cat([x, F.pixel_unshuffle(base * 2.0 - 1.0, 2)], dim=1))
        residual = F.pixel_shuffle(self.last(x), 2)
        return base + residual

    # ------------------------------------------------------------------ live

    def start_history(self, frame: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """A history buffer filled with the current frame's features.

        Callers reset the live stream this way: on the first frame and whenever
        the source portrait changes (old features would blend in the old face).

        Args:
            frame: ``(B, 3, 256, 256)``.
            base: ``(B, 3, 512, 512)``.

        Returns:
            ``(B, N, C, 128, 128)``.
        """
        feats = self.features(frame, base)
        return feats.unsqueeze(1).expand(-1, self.neighbours, -1, -1, -1).contiguous()

    def forward(
        self, frame: torch.Tensor, base: torch.Tensor, history: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Live (causal) mode: one frame, fused with the previous ``N``.

        Args:
            frame: ``(B, 3, 256, 256)`` generator output, RGB in [0, 1].
            base: ``(B, 3, 512, 512)`` the 512 image to refine.
            history: ``(B, N, C, 128, 128)`` features of the previous frames,
                oldest first (from :meth:`start_history` or the last call).

        Returns:
            ``out (B, 3, 512, 512) = base + residual`` and ``new_history
            (B, N, C, 128, 128)``: ``history`` minus its oldest entry, with the
            current frame's features appended (``new_history[:, -1]``).
        """
        current = self.features(frame, base)
        out = self._decode(current, history, base)
        new_history = torch.cat([history[:, 1:], current.unsqueeze(1)], dim=1)
        return out, new_history

    # ------------------------------------------------------------------ offline

    def window_offsets(self) -> list[int]:
        """Frame offsets fused with frame ``t`` in :meth:`forward_window`.

        ``-r .. -1, 1 .. r`` with ``r = N // 2``; for odd ``N`` one extra past
        frame (``-(r + 1)``) so the count stays ``N``.
        """
        future = self.neighbours // 2
        past = self.neighbours - future
        return list(range(-past, 0)) + list(range(1, future + 1))

    def forward_window(self, frames: torch.Tensor, bases: torch.Tensor) -> torch.Tensor:
        """Offline mode: a centred temporal window around every frame of a clip.

        Frame ``t`` is fused with frames ``t + o`` for ``o`` in
        :meth:`window_offsets` (clamped to the clip: edge frames replicated),
        with the same weights as the live mode.  The clip runs as one batch of
        ``B * T``; split long clips into overlapping chunks (overlap ``r``).

        Args:
            frames: ``(B, T, 3, 256, 256)``.
            bases: ``(B, T, 3, 512, 512)``.

        Returns:
            ``(B, T, 3, 512, 512)``.
        """
        b, t = frames.shape[:2]
        c, s = self.channels, self.feature_size
        flat_bases = bases.reshape(b * t, 3, OUT_SIZE, OUT_SIZE)
        feats = self.features(frames.reshape(b * t, 3, FRAME_SIZE, FRAME_SIZE), flat_bases)
        feats = feats.reshape(b, t, c, s, s)
        index = [[min(max(i + o, 0), t - 1) for o in self.window_offsets()] for i in range(t)]
        others = feats[:, torch.as_tensor(index, device=feats.device)]  # (B, T, N, C, h, w)
        out = self._decode(
            feats.reshape(b * t, c, s, s), others.reshape(b * t, self.neighbours, c, s, s), flat_bases
        )
        return out.reshape(b, t, 3, OUT_SIZE, OUT_SIZE)
