"""How far the head moved (models/head_motion.py) and the warp network's bounded correction then
(models/warp.py ``limit_residual``; docs/MOTION_TRANSITIONS.md §4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avatar_app.capture.synthetic import FacePose, synthetic_landmarks
from avatar_app.face.mesh import topology
from avatar_app.models.conditioning import landmark_images
from avatar_app.models.flow import AnalyticFlow, rasterize_triangles
from avatar_app.models.portrait import PortraitModel
from avatar_app.models.warp import LARGE_MOTION_RESIDUAL_PX, limit_residual

S = 256
PX = 2.0 / S  # one pixel in norm units


def _moved(points: np.ndarray, shift: float, angle_deg: float = 0.0, scale: float = 1.0) -> np.ndarray:
    """``points`` turned by ``angle_deg`` in the image plane, scaled and shifted right by ``shift`` px."""
    out = points.copy()
    c = points[:, :2].mean(0)
    a = np.radians(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    out[:, :2] = (points[:, :2] - c) @ rot.T * scale + c + [shift, 0.0]
    return out


def _large(src: np.ndarray, tgt: np.ndarray) -> float:
    t = lambda p: torch.from_numpy(p[None, :, :2].copy())  # noqa: E731
    ids = torch.from_numpy(rasterize_triangles(tgt, topology().triangles, S))[None]
    return float(AnalyticFlow(S).for_networks(t(src), t(tgt), ids)[3][0])


def test_large_motion_tells_a_head_that_moved_far_from_one_that_moved_a_little():
    """0 for talking-head motion (a few px, a few degrees), 1 once the head's similarity carries
    its outline a good part of a face height, rising smoothly between."""
    src = synthetic_landmarks(FacePose(), (S, S), 60).points
    face_h = float(np.ptp(src[:, 1]))
    assert _large(src, src) == 0.0
    assert _large(src, _moved(src, 0.05 * face_h, 3.0)) == 0.0
    assert _large(src, _moved(src, 0.6 * face_h)) == 1.0
    steps = [_large(src, _moved(src, f * face_h)) for f in np.linspace(0.2, 0.6, 9)]
    assert steps == sorted(steps) and 0 < max(s for s in steps if s < 1)  # monotonic, with values between


def test_the_bound_leaves_small_motion_alone_and_saturates_smoothly_when_the_head_moved_far():
    g = torch.Generator().manual_seed(0)
    n = 16  # a 16 x 16 grid: its px (norm units) are 2 / 16
    direction = torch.nn.functional.normalize(torch.randn(3, 2, n, n, generator=g), dim=1)
    mags = torch.linspace(0, 30, n * n).reshape(1, 1, n, n) * (2.0 / n)  # 0..30 px
    residual = direction * mags
    out = limit_residual(residual, torch.tensor([0.0, 1.0, 0.5]))
    size = lambda t: t.norm(dim=0)  # one row's (2, H, W) -> (H, W)  # noqa: E731
    assert torch.equal(out[0], residual[0])  # a small motion: untouched
    limit = LARGE_MOTION_RESIDUAL_PX * (2.0 / n)
    assert 0.95 * limit < size(out[1]).max() <= limit * (1 + 1e-6)
    knee = mags[0, 0] <= 0.6 * limit
    assert torch.allclose(out[1][:, knee], residual[1][:, knee])  # under the knee: unchanged
    # the bounded correction keeps its direction and grows with the network's (no fold, no sticking)
    cos = (out[1] * residual[1]).sum(0) / (size(out[1]) * size(residual[1])).clamp(min=1e-12)
    assert bool((cos[mags[0, 0] > 0] > 0.9999).all())
    assert bool((torch.diff(size(out[1]).flatten()) >= -1e-6).all())
    assert bool((size(out[2]) <= size(residual[2]) + 1e-6).all() and (size(out[2]) >= size(out[1]) - 1e-6).all())
    assert torch.count_nonzero(limit_residual(torch.zeros(1, 2, 4, 4), torch.ones(1))) == 0


@pytest.fixture(scope="module")
def far_frame():
    """A model whose warp network moves every pixel 20 px, and a target whose head moved far."""
    model = PortraitModel("lite").eval()
    with torch.no_grad():
        model.warp.residual_head.bias.copy_(torch.tensor([20 * PX, 0.0]))
    src = synthetic_landmarks(FacePose(), (S, S), 60).points
    tgt = _moved(src, 0.6 * float(np.ptp(src[:, 1])))
    ids = torch.from_numpy(rasterize_triangles(tgt, topology().triangles, S))[None]
    t = lambda p: torch.from_numpy(p[None, :, :2].copy())  # noqa: E731
    grid, mouth, coord, big = AnalyticFlow(S).for_networks(t(src), t(tgt), ids)
    image = torch.rand(1, 3, S, S, generator=torch.Generator().manual_seed(1))
    code = model.encode_source(image, landmark_images(src[None], S), torch.zeros(1, 128))
    return model, code, landmark_images(tgt[None], S), grid, big


def test_the_model_bounds_its_warp_only_when_told_the_head_moved_far(far_frame):
    """What the exported chain runs (``warp_frame`` with the flow's ``large_motion``): the warp's 20 px
    correction comes down under the bound; without it (or at 0) the network's correction stands."""
    model, code, cond, grid, big = far_frame
    assert float(big[0]) == 1.0
    with torch.no_grad():
        free = model.warp_frame(code, cond, grid)["grid"]
        bounded = model.warp_frame(code, cond, grid, large_motion=big)["grid"]
        small = model.warp_frame(code, cond, grid, large_motion=torch.zeros(1))["grid"]
    off = lambda g: ((g - grid) / PX).norm(dim=-1)  # noqa: E731
    assert off(free).mean() == pytest.approx(20, abs=0.5)
    assert torch.equal(small, free)
    assert off(bounded).max() <= LARGE_MOTION_RESIDUAL_PX + 1e-3
