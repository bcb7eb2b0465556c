"""The per-frame inputs drawn in torch (models/gpu_raster, gpu_conditioning, frame_inputs)
against the OpenCV drawing the networks were trained on, and the chain option that uses them."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from avatar_app.capture.synthetic import FacePose, synthetic_landmarks
from avatar_app.errors import AvatarError
from avatar_app.face.mesh import topology
from avatar_app.models.conditioning import landmark_image
from avatar_app.models.flow import AnalyticFlow, rasterize_triangles
from avatar_app.models.frame_inputs import FrameInputs
from avatar_app.models.gpu_conditioning import LandmarkImage, line_aa_pixels
from avatar_app.models.gpu_raster import XY_SHIFT, TriangleRaster
from avatar_app.inference.backend import probe
from avatar_app.inference.chain import prepare_on_device

REAL = Path(os.environ.get("AVATAR_APP_REAL_DATA", Path(__file__).resolve().parents[2] / "data" / "real"))
TRIANGLES = np.ascontiguousarray(topology().triangles)
POSES = [FacePose(), FacePose(yaw=28, jaw=0.9), FacePose(pitch=-15, roll=20, smile=0.8, blink_left=1.0),
         FacePose(yaw=-35, pitch=12, blink_left=1.0, blink_right=1.0)]


def synthetic(pose: FacePose, size: int = 256, eyes_px: float = 60.0) -> np.ndarray:
    return synthetic_landmarks(pose, (size, size), eyes_px).points


def real_frames(count: int = 12) -> list[np.ndarray]:
    """Landmarks (256 px) of frames spread over the prepared real clips; skips without them."""
    clips = sorted(REAL.glob("clips/*/landmarks.npy"))
    if not clips:
        pytest.skip(f"no prepared real clips at {REAL} (set AVATAR_APP_REAL_DATA)")
    rng = np.random.default_rng(0)
    picks = [clips[i] for i in rng.choice(len(clips), min(count, len(clips)), replace=False)]
    out = []
    for c in picks:
        valid = np.flatnonzero(np.load(c.with_name("valid.npy")))
        out.append(np.load(c, mmap_mode="r")[rng.choice(valid)].astype(np.float32))
    return out


def crumpled(pts: np.ndarray, rng, scale: float, shift) -> np.ndarray:
    """A face scaled, moved (partly off the crop) and jittered so the mesh folds over itself."""
    out = pts.astype(np.float64).copy()
    out[:, :2] = (out[:, :2] - 128) * scale + 128 + np.asarray(shift) + rng.normal(0, 1.5, out[:, :2].shape)
    return out


# ---------------------------------------------------------------- triangle ids


def test_triangle_ids_match_opencv_on_synthetic_and_stressed_faces():
    rng = np.random.default_rng(1)
    faces = [synthetic(p) for p in POSES]
    faces += [crumpled(faces[i % len(faces)], rng, s, sh) for i, (s, sh) in
              enumerate([(0.4, (0, 0)), (2.2, (-60, 90)), (1.3, (140, -120)), (0.9, (-200, 0))])]
    for res, some in ((256, faces), (128, faces[::3])):
        raster = TriangleRaster(TRIANGLES, 256, res)
        same = [float((raster(torch.from_numpy(p)[None])[0].numpy() == rasterize_triangles(p, TRIANGLES, 256, res))
                      .mean()) for p in some]
        assert min(same) >= 0.9995, (res, same)
        assert np.mean(same) >= 0.9999, (res, same)


def test_triangle_ids_and_flow_match_on_real_faces():
    frames = real_frames(8)
    raster, flow = TriangleRaster(TRIANGLES, 256), AnalyticFlow(256)
    src = torch.from_numpy(frames[0][None, :, :2]).double()
    same, diff_px = [], []
    for p in frames:
        ref = rasterize_triangles(p, TRIANGLES, 256)
        got = raster(torch.from_numpy(p)[None])
        same.append(float((got[0].numpy() == ref).mean()))
        tgt = torch.from_numpy(p[None, :, :2]).double()
        with torch.no_grad():
            a, b = flow(src, tgt, torch.from_numpy(ref)[None])[0], flow(src, tgt, got)[0]
        diff_px.append(float(((a - b) * 128).norm(dim=-1).mean()))
    assert min(same) >= 0.9999, same
    assert max(diff_px) < 0.05, diff_px  # the brief allows 0.5 px on average


# ---------------------------------------------------------------- landmark image


def test_antialiased_lines_match_opencv_including_clipped_ones():
    m = LandmarkImage(256)
    rng = np.random.default_rng(2)
    for _ in range(60):
        f = np.rint(rng.uniform(-30, 290, 4) * 16).astype(np.int64)
        ref = np.zeros((256, 256), np.uint8)
        cv2.line(ref, (int(f[0]), int(f[1])), (int(f[2]), int(f[3])), 255, 1, cv2.LINE_AA, 4)
        a, b = (torch.tensor([[f[0], f[1]]]) << (XY_SHIFT - 4)), (torch.tensor([[f[2], f[3]]]) << (XY_SHIFT - 4))
        index, alpha = line_aa_pixels(a, b, 256, 256, m.slope_corr, m.filt)
        keep = torch.ones(256 * 256)
        keep[index.reshape(-1)] = (1 - alpha.reshape(-1).float() / 256) ** 2  # one line: no pixel twice
        ours = torch.round(255 * (1 - keep)).view(256, 256).numpy()
        assert np.abs(ours - ref).max() <= 1, f


def _compare_images(faces: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per channel: mean and max abs difference (levels of 255) torch vs OpenCV."""
    drawn = LandmarkImage(256)(torch.from_numpy(np.stack(faces).astype(np.float32))).numpy()
    ref = np.stack([landmark_image(p.astype(np.float32), 256) for p in faces])
    d = np.abs(drawn - ref).transpose(1, 0, 2, 3).reshape(6, -1) * 255
    return d.mean(1), d.max(1)


@pytest.mark.parametrize("which", ["synthetic", "real"])
def test_landmark_image_matches_opencv(which):
    faces = [synthetic(p) for p in POSES] if which == "synthetic" else real_frames(8)
    mean, worst = _compare_images(faces)
    # lines: OpenCV rounds every blend step; crossings differ by a few levels at most
    assert mean[:3].max() < 0.15 and worst[:3].max() <= 6, (mean, worst)
    # eye and mouth openings, gaze: exact fills, outlines within a level or two
    assert mean[3:].max() < 0.01 and worst[3:].max() <= 2, (mean, worst)


def test_landmark_image_rescales_and_rejects_thick_lines():
    pts = synthetic(FacePose(jaw=0.6), size=512, eyes_px=120)
    got = LandmarkImage(256, src_size=512)(torch.from_numpy(pts)[None])[0].numpy()
    ref = landmark_image(pts, 256, src_size=512)
    assert np.abs(got - ref).max() <= 6 / 255
    with pytest.raises(ValueError, match="1 px lines"):
        LandmarkImage(512)


# ---------------------------------------------------------------- the chain's preparation


def test_frame_inputs_trace_as_one_graph_with_fixed_shapes():
    """No graph break (no host sync, no data-dependent shape): what CUDA graphs and
    torch.compile need; dynamo traces it here without compiling kernels."""
    torch._dynamo.reset()
    module = FrameInputs().eval()
    pts = torch.from_numpy(np.stack([synthetic(POSES[0]), synthetic(POSES[1])]).astype(np.float32))
    traced = torch.compile(module, backend="eager", fullgraph=True, dynamic=False)
    with torch.inference_mode():
        cond, ids = traced(pts)
        cond_e, ids_e = module(pts)
    assert cond.shape == (2, 6, 256, 256) and ids.shape == (2, 256, 256) and ids.dtype == torch.int32
    assert torch.equal(ids, ids_e) and torch.equal(cond, cond_e)
    assert (ids[1].numpy() == rasterize_triangles(pts[1].numpy(), TRIANGLES, 256)).mean() > 0.9999


def test_device_prepare_choice_per_backend():
    assert prepare_on_device("torch-cuda", None, {})  # compiled, CUDA graphs: the live configuration
    assert not prepare_on_device("torch-cuda", None, {"compile": False, "cuda_graphs": False})
    assert not prepare_on_device("torch-cpu", None, {})
    assert not prepare_on_device("onnxruntime", None, {})
    assert prepare_on_device("torch-cpu", True, {})
    with pytest.raises(AvatarError, match="needs a torch backend"):
        prepare_on_device("onnxruntime", True, {})


def test_neural_animator_with_device_prepare_matches_host(astronaut_source):
    from avatar_app.models.portrait import PortraitModel
    from avatar_app.runtime.neural_animator import NeuralAnimator
    from avatar_app.train.metrics import psnr
    from avatar_app.types import Landmarks

    torch.manual_seed(0)
    model = PortraitModel("lite")
    identity = np.zeros(128, np.float32)
    host = NeuralAnimator(astronaut_source, model=model, identity=identity, backend="torch-cpu")
    dev = NeuralAnimator(astronaut_source, model=model, identity=identity, backend="torch-cpu", device_prepare=True)
    assert host.chain.prepare is None and dev.chain.prepare is not None
    pts = astronaut_source.landmarks.points.copy()
    pts[:, 1] += 3.0
    target = Landmarks(pts, astronaut_source.landmarks.image_size)
    cond_h, xy_h, ids_h, amount_h = host.network_inputs(target)
    cond_d, xy_d, ids_d, amount_d = dev.network_inputs(target)
    assert (ids_d.numpy() == ids_h).mean() > 0.9999 and np.abs(cond_d.numpy() - cond_h).max() <= 6 / 255
    assert amount_d == amount_h and np.array_equal(xy_d, xy_h)
    assert psnr(host.animate(target), dev.animate(target)) >= 40.0


CUDA_REASON = probe("torch-cuda")


@pytest.mark.gpu
@pytest.mark.skipif(CUDA_REASON is not None, reason=f"CUDA test: {CUDA_REASON}")
def test_cuda_compiled_chain_draws_the_cpu_inputs(astronaut_source):
    """On a GPU: the drawing in CUDA (eager and in the compiled, graphed chain) against OpenCV,
    and the avatar from device-drawn inputs against the same chain fed CPU-drawn ones."""
    from avatar_app.models.portrait import load_checkpoint
    from avatar_app.runtime.neural_animator import NeuralAnimator
    from avatar_app.train.metrics import psnr
    from avatar_app.types import Landmarks

    faces = [synthetic(p) for p in POSES]
    pts = torch.from_numpy(np.stack(faces).astype(np.float32)).cuda()
    with torch.inference_mode():
        cond, ids = FrameInputs().cuda().eval()(pts)
    for k, p in enumerate(faces):
        assert (ids[k].cpu().numpy() == rasterize_triangles(p.astype(np.float32), TRIANGLES, 256)).mean() > 0.9999
        assert np.abs(cond[k].cpu().numpy() - landmark_image(p.astype(np.float32), 256)).max() <= 6 / 255
    model = load_checkpoint(Path(__file__).resolve().parents[1] / "assets" / "weights" / "lite-synthetic.safetensors")
    identity = np.zeros(128, np.float32)
    dev = NeuralAnimator(astronaut_source, model=model, identity=identity, backend="torch-cuda")
    host = NeuralAnimator(astronaut_source, model=model, identity=identity, backend="torch-cuda", device_prepare=False)
    assert dev.chain.prepare is not None and host.chain.prepare is None
    for dy in (2.0, -3.0):
        moved = astronaut_source.landmarks.points.copy()
        moved[:, 1] += dy
        target = Landmarks(moved, astronaut_source.landmarks.image_size)
        cond_d, _, ids_d, _ = dev.network_inputs(target)
        cond_h, _, ids_h, _ = host.network_inputs(target)
        assert (ids_d.cpu().numpy() == ids_h).mean() > 0.9999
        assert np.abs(cond_d.cpu().numpy() - cond_h).max() <= 6 / 255
        assert psnr(host.animate(target), dev.animate(target)) >= 40.0
