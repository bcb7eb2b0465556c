"""Training pairs of large head motion (train/large_motion.py, issue 13): hard pairs and large zoom,
on the resident pairs run on the CPU over a small synthetic dataset."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from avatar_app.face.align import similarity_fit
from avatar_app.face.mesh import topology
from avatar_app.models.conditioning import landmark_image
from avatar_app.models.flow import rasterize_triangles
from avatar_app.train.large_motion import ZOOM_RANGE, HeadPoses, LargeZoom, draw_large_zoom
from avatar_app.train.resident import ResidentPairs

from conftest import three_portrait_dataset


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return three_portrait_dataset(tmp_path_factory, frames=8)


def _yaw(points: np.ndarray, degrees: float, scale: float = 1.0) -> np.ndarray:
    a = np.deg2rad(degrees)
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    centre = points.mean(0)
    return (points - centre) @ rot.T * scale + centre


def test_head_poses_measure_rotation_and_scale():
    face = topology().neutral.astype(np.float64) * 100.0 + 128.0
    frames = np.stack([face, _yaw(face, 20.0), _yaw(face, -10.0, 1.3), np.zeros_like(face)])
    poses = HeadPoses(frames, np.array([True, True, True, False]))
    assert poses.motion(0, 0) == pytest.approx(0.0, abs=1e-6)
    assert poses.motion(0, 1) == pytest.approx(np.deg2rad(20.0), abs=1e-4)
    assert poses.motion(1, 2) == pytest.approx(np.deg2rad(30.0) + np.log(1.3), abs=1e-4)
    assert poses.log_scale[3] == 0.0 and np.array_equal(poses.rotation[3], np.eye(3))  # no face: not fitted
    assert np.allclose(poses.motion(0, np.array([0, 1, 2])), [poses.motion(0, k) for k in range(3)])
    # of the candidates, the furthest from the source; never the source itself
    assert poses.hardest(0, np.array([0, 1, 2]), np.random.default_rng(0)) == 2
    assert poses.hardest(2, np.array([0, 1, 2]), np.random.default_rng(0)) == 1


def test_large_zoom_never_upsamples():
    zoom = draw_large_zoom(4000, 0.3, np.random.default_rng(0))
    assert 0.25 < len(zoom.rows) / 4000 < 0.35
    big = np.abs(np.log(zoom.zoom))
    assert big.min() >= np.log(ZOOM_RANGE[0]) - 1e-9 and big.max() <= np.log(ZOOM_RANGE[1]) + 1e-9
    assert 0.4 < (zoom.zoom > 1).mean() < 0.6  # approach and retreat alike
    sides = zoom.side_transforms()
    for rows, scale, _, _ in sides.values():
        assert np.all(scale <= 1.0)  # only the shrunk image is resampled by the zoom
    src_rows, src_scale, _, _ = sides["source"]
    assert np.array_equal(src_rows, zoom.rows)  # every large pair's source rolls
    assert np.allclose(src_scale[zoom.zoom > 1], 1.0 / zoom.zoom[zoom.zoom > 1])
    assert np.array_equal(sides["driving"][0], zoom.rows[zoom.zoom < 1])


def test_hard_pairs_move_the_head_more(root):
    plain = ResidentPairs(root, "all", device="cpu", workers=1)
    hard = ResidentPairs(root, "all", device="cpu", workers=1, hard_pairs=1.0)
    poses = hard._poses
    rng_a, rng_b = np.random.default_rng(4), np.random.default_rng(4)
    _, src_p, drv_p = plain.draw(200, rng_a)
    clip_h, src_h, drv_h = hard.draw(200, rng_b)
    assert poses.motion(src_h, drv_h).mean() > 1.5 * poses.motion(src_p, drv_p).mean()
    for c, s, d in zip(clip_h, src_h, drv_h):  # still two frames with a face of one clip
        assert s != d and s in hard._valid[c] and d in hard._valid[c]
    val = ResidentPairs(root, "val", val_fraction=0.34, device="cpu", workers=1, hard_pairs=1.0)
    assert val._poses is None  # validation pairs stay plain


def test_similarity_shrinks_like_an_area_resize(root):
    pairs = ResidentPairs(root, "all", device="cpu", workers=1)
    clip, src, drv = pairs.draw(1, np.random.default_rng(0))
    out = pairs.assemble(clip, src, drv, None)
    plain = out["driving"][0].permute(1, 2, 0).numpy().copy()
    pairs._similarity(out, "driving", np.array([0]), np.array([0.625]), np.array([0.0]), np.zeros((1, 2)), exact=True)
    ref = cv2.resize(plain, (160, 160), interpolation=cv2.INTER_AREA)
    got = out["driving"][0].permute(1, 2, 0).numpy()[48:208, 48:208]
    # supersampled, it is as smooth as an area resize (0.0011; plain bilinear sampling: 0.0021)
    assert np.abs(got - ref)[4:-4, 4:-4].mean() < 0.0016
    mask = out["mask"][0, 0].numpy()
    assert mask[:45].sum() == 0 and mask[52:204, 52:204].all()  # what came from outside the crop is not scored


def test_large_zoom_pairs_are_drawn_as_the_app_draws_them(root):
    pairs = ResidentPairs(root, "all", device="cpu", workers=1, large_motion=1.0)
    pairs.augment = True  # the "all" split is augmented like "train"
    rng = np.random.default_rng(7)
    clip, src, drv = pairs.draw(6, rng)
    plain = pairs.assemble(clip, src, drv, None)
    big = pairs.assemble(clip, src, drv, np.random.default_rng(8))
    rigid = topology().rigid
    for k in range(6):
        sp, dp = big["source_points"][k].numpy(), big["driving_points"][k].numpy()
        # the relative zoom is large whichever way (the small source jitter is at most 6 %)
        s_big = similarity_fit(sp[rigid, :2], dp[rigid, :2])[0]
        s0 = similarity_fit(plain["source_points"][k, rigid, :2].numpy(), plain["driving_points"][k, rigid, :2].numpy())[0]
        assert abs(np.log(s_big / s0)) > np.log(ZOOM_RANGE[0]) - 0.062
        for side, pts in (("source", sp), ("driving", dp)):  # landmark images drawn at the moved landmarks
            want = np.rint(landmark_image(pts, 256) * 255.0)
            got = big[f"{side}_cond"][k].numpy() * 255.0
            assert np.mean(np.abs(got - want) > 1.5) < 0.002, side
        tri = big["tri_ids"][k].numpy()
        assert np.mean(tri != rasterize_triangles(dp, topology().triangles, 256)) < 0.002


def test_large_zoom_object_is_plain_data():
    z = LargeZoom(np.array([1]), np.array([0.8]), np.array([5.0]), np.array([[0.01, 0.02]]))
    sides = z.side_transforms()
    assert sides["source"][1][0] == 1.0 and sides["driving"][1][0] == pytest.approx(0.8)
    assert sides["driving"][2][0] == 0.0  # the target is never rolled


def test_training_takes_the_options_on_its_training_split_only(root, tmp_path):
    from avatar_app.train.config import TrainConfig
    from avatar_app.train.trainer import Trainer

    cfg = TrainConfig(stage="full", preset="lite", steps=1, batch_size=4, resident=True, val_fraction=0.34,
                      hard_pairs=0.5, large_motion=1.0, val_every=1000, ckpt_every=1000)
    trainer = Trainer(cfg, tmp_path / "run", data=root, device="cpu")
    assert (trainer.train_set.hard_pairs, trainer.train_set.large_motion) == (0.5, 1.0)
    assert (trainer.val_set.hard_pairs, trainer.val_set.large_motion) == (0.0, 0.0)
    trainer.fit(progress=False)  # a step on large-zoom pairs
    assert trainer.step == 1
