"""The least-squares 2-D similarity between point sets, in torch (batched, differentiable, exportable).

``face.align.similarity_fit`` / ``similarity_fits`` are the NumPy fits (any dimension, via an SVD; one
set onto one or many); this is the closed form for 2-D, on tensors, used inside networks and exported graphs.
"""

from __future__ import annotations

import torch


def similarity_2d(src: torch.Tensor, dst: torch.Tensor, eps: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares similarity ``dst ≈ M @ src + t`` without reflection (Umeyama's method in its 2-D
    closed form; dlib's ``find_similarity_transform``).

    ``src (..., P, 2)`` and ``dst (..., P, 2)`` broadcast over their leading dimensions (e.g. one
    template ``(P, 2)`` against a batch ``(B, P, 2)``) → ``M (..., 2, 2)``, ``t (..., 2)``.
    ``eps``: the least spread of ``src`` (sum of squares, px²) divided by, for degenerate sets."""
    src = src.to(dst)
    ms, md = src.mean(-2, keepdim=True), dst.mean(-2, keepdim=True)
    s, d = src - ms, dst - md
    norm = (s * s).sum((-2, -1))
    if eps:
        norm = norm.clamp(min=eps)
    a = (s * d).sum((-2, -1)) / norm  # scale * cos(angle)
    b = (s[..., 0] * d[..., 1] - s[..., 1] * d[..., 0]).sum(-1) / norm  # scale * sin(angle)
    m = torch.stack([torch.stack([a, -b], -1), torch.stack([b, a], -1)], -2)
    return m, md.squeeze(-2) - (m @ ms.transpose(-1, -2)).squeeze(-1)
