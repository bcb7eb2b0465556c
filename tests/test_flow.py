"""Analytic dense flow: exactness inside the mesh, behaviour outside, export."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avatar_app.face.mesh import REGION_MOUTH, mouth_opening, topology
from avatar_app.models.flow import AnalyticFlow, pixel_grid, px_to_norm, rasterize_triangles, warp_image

SIZE = 256


def _flow(src_pts: np.ndarray, tgt_pts: np.ndarray, size: int = SIZE):
    flow = AnalyticFlow(size)
    ids = rasterize_triangles(tgt_pts, topology().triangles, size)
    grid, mouth, coord = flow(
        torch.from_numpy(src_pts[None, :, :2].copy()),
        torch.from_numpy(tgt_pts[None, :, :2].copy()),
        torch.from_numpy(ids)[None],
    )
    return grid[0], mouth[0, 0], coord[0, 0], ids


def _grid_px(grid: torch.Tensor, size: int = SIZE) -> torch.Tensor:
    """norm [-1, 1] -> px."""
    return (grid + 1) * size / 2 - 0.5


def test_identical_meshes_give_identity_flow(astronaut_source):
    pts = astronaut_source.landmarks.points
    grid, mouth, _, ids = _flow(pts, pts)
    ident = px_to_norm(pixel_grid(SIZE, SIZE), SIZE, SIZE)
    assert (ids >= 0).mean() > 0.2  # the face covers a good part of the crop
    assert torch.allclose(grid, ident, atol=1e-4)
    region = topology().triangle_region[np.clip(ids, 0, None)]
    assert torch.equal(mouth.bool(), torch.from_numpy((ids >= 0) & (region == REGION_MOUTH)))


def test_piecewise_affine_is_exact_for_a_global_affine(astronaut_source):
    """If the target is an affine image of the source, so is the flow inside the mesh."""
    src = astronaut_source.landmarks.points.astype(np.float64)
    a = np.array([[1.05, 0.08], [-0.06, 0.97]])
    b = np.array([6.0, -4.0])
    tgt = src.copy()
    tgt[:, :2] = src[:, :2] @ a.T + b
    grid, _, _, ids = _flow(src.astype(np.float32), tgt.astype(np.float32))
    px = pixel_grid(SIZE, SIZE).double().numpy()
    expected = (px - b) @ np.linalg.inv(a).T  # source position of each target pixel
    got = _grid_px(grid).double().numpy()
    # away from the outline (where the inside and outside fields are blended)
    inner = torch.nn.functional.max_pool2d(torch.from_numpy((ids < 0).astype(np.float32))[None], 7, 1, 3)[0] == 0
    inner = inner.numpy()
    assert inner.sum() > 5000
    err = np.abs(got[inner] - expected[inner]).max(-1)
    assert np.median(err) < 1e-3
    # triangles under half a square pixel are moved by their mean displacement instead
    assert err.max() < 0.25


def test_background_still_and_hair_follows_head(astronaut_source):
    src = astronaut_source.landmarks.points
    tgt = src.copy()
    tgt[:, 0] += 10.0  # the whole head moves 10 px right
    grid, _, _, ids = _flow(src, tgt)
    disp = (pixel_grid(SIZE, SIZE) - _grid_px(grid)).numpy()  # how far content moved, px
    # far background (beyond the fade-out distance from the face outline) is still
    outline = src[topology().face_oval, :2]
    face_h = np.linalg.norm(src[152, :2] - src[10, :2])
    far = 0
    for y, x in [(0, 0), (0, SIZE - 1), (SIZE - 1, 0), (SIZE - 1, SIZE - 1)]:
        if np.linalg.norm(outline - [x, y], axis=1).min() > 0.7 * face_h:
            far += 1
            assert np.abs(disp[y, x]).max() < 0.01
    assert far >= 2
    # just above the forehead (hair, outside the mesh) moves with the head
    fx, fy = src[10, :2]
    y, x = int(fy - 0.1 * SIZE), int(fx)
    assert ids[y, x] < 0
    assert disp[y, x, 0] > 7.0
    # inside the face: exactly the head motion
    cx, cy = src[1, :2].astype(int)
    assert abs(disp[cy, cx, 0] - 10.0) < 1e-3


def test_opened_mouth_is_flagged_with_a_lip_coordinate():
    from avatar_app.capture.synthetic import FacePose, synthetic_landmarks

    src = synthetic_landmarks(FacePose(), (SIZE, SIZE), eye_distance_px=60).points
    tgt = synthetic_landmarks(FacePose(jaw=1.0), (SIZE, SIZE), eye_distance_px=60).points
    assert mouth_opening(tgt) > mouth_opening(src) + 10
    _, mouth, coord, ids = _flow(src, tgt)
    region = topology().triangle_region
    inside = (ids >= 0) & (region[np.clip(ids, 0, None)] == REGION_MOUTH)
    assert inside.sum() > 100
    assert torch.equal(mouth.bool(), torch.from_numpy(inside))
    # the lip coordinate runs from ~0 at the top of the opening to ~1 at the bottom
    col = int(np.round(tgt[13, 0]))
    rows = np.nonzero(inside[:, col])[0]
    top, bottom = rows.min(), rows.max()
    assert coord[top + 1, col] < 0.25 and coord[bottom - 1, col] > 0.75


def test_flow_is_differentiable_in_the_landmarks(astronaut_source):
    src = torch.from_numpy(astronaut_source.landmarks.xy.copy())[None]
    tgt = src.clone() + torch.tensor([3.0, -2.0])
    tgt_pts = np.concatenate([tgt[0].numpy(), astronaut_source.landmarks.points[:, 2:]], 1)
    ids = torch.from_numpy(rasterize_triangles(tgt_pts, topology().triangles, SIZE))[None]
    tgt.requires_grad_(True)
    image = torch.rand(1, 3, SIZE, SIZE)
    grid, _, _ = AnalyticFlow(SIZE)(src, tgt, ids)
    warp_image(image, grid).mean().backward()
    assert tgt.grad is not None and torch.isfinite(tgt.grad).all() and tgt.grad.abs().sum() > 0


def test_batch_items_are_independent(astronaut_source, hopper_source):
    a, b = astronaut_source.landmarks.points, hopper_source.landmarks.points
    flow = AnalyticFlow(SIZE)
    tri = topology().triangles
    ids = torch.from_numpy(np.stack([rasterize_triangles(b, tri, SIZE), rasterize_triangles(a, tri, SIZE)]))
    src = torch.from_numpy(np.stack([a[:, :2], b[:, :2]]).copy())
    tgt = torch.from_numpy(np.stack([b[:, :2], a[:, :2]]).copy())
    grid, _, _ = flow(src, tgt, ids)
    single, _, _ = flow(src[1:], tgt[1:], ids[1:])
    assert torch.allclose(grid[1], single[0], atol=1e-5)


def test_flow_at_half_resolution_matches_full_resolution(astronaut, still_tracker):
    """At 512 the flow is computed at 256 and upsampled: nearly the same flow."""
    from avatar_app.face.source import prepare_source

    src = prepare_source(astronaut, 512, tracker=still_tracker).landmarks.points
    tgt = src.copy()
    tgt[:, :2] = (src[:, :2] - 256) * 1.1 + 256
    tgt[:, 1] += np.where(src[:, 1] > src[14, 1], 12.0, 0.0)  # and the jaw drops
    tri = topology().triangles
    args = torch.from_numpy(src[None, :, :2].copy()), torch.from_numpy(tgt[None, :, :2].copy())
    full_flow, half_flow = AnalyticFlow(512, resolution=512), AnalyticFlow(512)
    assert half_flow.resolution == 256
    full = full_flow(*args, torch.from_numpy(rasterize_triangles(tgt, tri, 512, 512))[None])[0]
    half = half_flow(*args, torch.from_numpy(rasterize_triangles(tgt, tri, 512, 256))[None])[0]
    assert full.shape == half.shape == (1, 512, 512, 2)
    diff_px = ((full - half).abs() * 256).amax(-1)
    assert diff_px.median() < 0.01  # inside triangles: exact up to rounding
    assert diff_px.quantile(0.99) < 1.0  # along triangle edges: under a pixel


@pytest.mark.parametrize("size, resolution, fine_eyes", [(256, 256, False), (512, 256, False), (512, 256, True)])
@pytest.mark.parametrize("case", ["all zero", "one point", "target all zero"])
def test_degenerate_landmarks_give_a_finite_flow(case, size, resolution, fine_eyes):
    """Landmarks with no eye to speak of (all at one point: what a compiled graph warms up on, or
    a broken track) must not make NaN eye frames, whose indices then fall outside the tables (on a
    GPU: a device-side assert that ends the process)."""
    gen = torch.Generator().manual_seed(0)
    real = torch.rand(1, len(topology().mirror), 2, generator=gen) * size * 0.6 + size * 0.2
    zero, point = torch.zeros_like(real), torch.full_like(real, size / 3)
    src, tgt = {"all zero": (zero, zero), "one point": (point, point), "target all zero": (real, zero)}[case]
    flow = AnalyticFlow(size, resolution=resolution, upsample=not fine_eyes, math_dtype=torch.float32)
    tri = torch.zeros(1, resolution, resolution, dtype=torch.long)
    out = flow(src, tgt, tri, fine_eyes=fine_eyes)
    tensors = [t for o in out if o is not None for t in (o if isinstance(o, tuple) else (o,))]
    assert tensors and all(torch.isfinite(t.float()).all() for t in tensors)


def test_onnx_export_matches_torch(tmp_path, astronaut_source):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    src = torch.from_numpy(astronaut_source.landmarks.xy.copy())[None]
    pts = astronaut_source.landmarks.points.copy()
    pts[:, 1] += np.where(pts[:, 1] > pts[14, 1], 6.0, 0.0)  # open the jaw a little
    tgt = torch.from_numpy(pts[:, :2].copy())[None]
    ids = torch.from_numpy(rasterize_triangles(pts, topology().triangles, SIZE))[None]
    model = AnalyticFlow(SIZE).eval()
    path = tmp_path / "flow.onnx"
    torch.onnx.export(model, (src, tgt, ids), str(path), input_names=["src_xy", "tgt_xy", "tri_ids"],
                      output_names=["grid", "mouth", "mouth_coord"], opset_version=17, dynamo=False)
    onnx.checker.check_model(onnx.load(str(path)))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outs = sess.run(None, {"src_xy": src.numpy(), "tgt_xy": tgt.numpy(), "tri_ids": ids.numpy()})
    ref = model(src, tgt, ids)
    for got, want in zip(outs, ref):
        assert np.abs(got - want.numpy()).max() < 1e-4


def _moved(points: np.ndarray, shift_faces: float = 0.0, scale: float = 1.0, turn_deg: float = 0.0) -> np.ndarray:
    """The landmarks moved as a whole head: about their centre, ``shift_faces`` face widths right."""
    pts = points.astype(np.float64).copy()
    centre = pts[:, :2].mean(0)
    width = np.ptp(pts[topology().face_oval, 0])
    c, s = np.cos(np.radians(turn_deg)), np.sin(np.radians(turn_deg))
    pts[:, :2] = (pts[:, :2] - centre) @ (scale * np.array([[c, s], [-s, c]])) + centre + [shift_faces * width, 0]
    return pts.astype(np.float32)


@pytest.mark.parametrize("motion", [dict(shift_faces=0.6), dict(shift_faces=-0.8), dict(scale=0.55),
                                    dict(scale=0.75, shift_faces=0.3), dict(turn_deg=40, shift_faces=0.4)],
                         ids=["shift", "shift_far", "shrink", "shrink_shift", "turn_shift"])
def test_moved_head_leaves_no_copy_of_the_face(motion, astronaut_source, hopper_source):
    """Whole-head motion: where the head was, the background comes back — no second face, and no
    copy of the ears and nearest hair either (the outside map never folds)."""
    from avatar_app.train.ghost import ghost_area

    for source in (astronaut_source, hopper_source):
        src = source.landmarks.points
        tgt = _moved(src, **motion)
        grid = _flow(src, tgt)[0]
        assert ghost_area(grid, src[:, :2], tgt[:, :2]) == 0.0
        assert ghost_area(grid, src[:, :2], tgt[:, :2], grow=0.15) < 0.002


def test_flow_stage_compiles_to_one_graph():
    """torch.compile must see the whole flow as one graph. With a graph break the code between the
    graphs runs eagerly inside the CUDA graph capture of `--backend torch-cuda`, where any read of a
    value on the host (a 0-d tensor used as an index, `.item()`, `.tolist()`) fails the capture:
    the eye re-map once did that, and the neural animator could not start on a GPU."""
    import torch._dynamo as dynamo

    from avatar_app.inference.networks import FlowStage

    src = torch.rand(1, len(topology().mirror), 2, generator=torch.Generator().manual_seed(1)) * 150 + 50
    tri = torch.zeros(1, 256, 256, dtype=torch.int32)  # what is drawn does not change the graph
    explained = dynamo.explain(FlowStage().eval())(src, src + 1, tri, torch.full((1, 2, 1), 0.1))
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
