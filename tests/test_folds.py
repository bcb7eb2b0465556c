"""The portrait's skin folds no further than the driver's own (face/folds.py)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from avatar_app.capture.synthetic import FacePose, synthetic_landmarks
from avatar_app.face.folds import MIN_AREA, SkinFolds
from avatar_app.face.lips import _lip_halves
from avatar_app.face.mesh import eye_paths, face_size, mouth_opening, topology
from avatar_app.face.retarget import Retargeter, RetargetOptions, inter_ocular
from avatar_app.types import Landmarks

CLIPS = Path(os.environ.get("AVATAR_APP_REAL_CLIPS",
                           Path(__file__).resolve().parents[2] / "shared" / "data" / "real_clips"))


def _fold_excess(folds: SkinFolds, shape: np.ndarray, ratios: np.ndarray | None = None) -> float:
    """px² by which ``shape``'s checked skin triangles pass under their floor (MIN_AREA of their area on the
    portrait, or the driver's own share where that is less)."""
    floor = np.full(len(folds.triangles), MIN_AREA) if ratios is None else np.minimum(MIN_AREA, ratios)
    return float(np.maximum((floor - folds.shares(shape)) * folds.sizes, 0.0).sum())


def _dropped_jaw(points: np.ndarray, drop: float) -> np.ndarray:
    """The lower lip (inner and outer) moved down by ``drop`` px while the chin and the jaw stay: a mouth
    opened further than the portrait's short chin leaves room for."""
    _, lower, _, _ = _lip_halves()
    out = points.astype(np.float64).copy()
    out[lower, 1] += drop
    return out


def test_a_lip_pushed_past_the_chin_opens_the_skin_below_and_keeps_the_mouth_open(hopper_source):
    base = hopper_source.landmarks.points
    folds = SkinFolds(base)
    iod = inter_ocular(base)
    shape = _dropped_jaw(base, 0.25 * iod)
    assert _fold_excess(folds, shape) > 500.0  # folds without the fix (the corpus's worst pair: 430 px²)
    out = folds(shape)
    assert _fold_excess(folds, out) < 1.0
    assert mouth_opening(out) > 0.95 * mouth_opening(shape)  # the skin below gave way, the mouth stayed open
    moved = np.linalg.norm(out[:, :2] - shape[:, :2], axis=1)
    topo = topology()
    inner = np.concatenate([topo.lips_inner_upper, topo.lips_inner_lower])
    assert moved.max() > 0.1 * iod and moved[inner].max() < 0.25 * moved.max()
    eyes = np.concatenate([np.concatenate(p) for p in eye_paths().values()])
    assert moved[eyes].max() < 1e-9  # nothing near the eyes folded, so nothing there moved
    assert np.array_equal(out[:, 2], shape[:, 2])  # depth (the warp's drawing order) untouched


def test_nothing_folding_is_returned_as_it_is(hopper_source):
    base = hopper_source.landmarks.points
    folds = SkinFolds(base)
    shape = _dropped_jaw(base, 0.05 * inter_ocular(base))
    assert folds(shape) is shape


def test_a_fold_the_driver_has_too_is_kept(hopper_source):
    base = hopper_source.landmarks.points
    folds = SkinFolds(base)
    shape = _dropped_jaw(base, 0.25 * inter_ocular(base))
    own = folds.shares(shape)
    assert own.min() < 0
    assert folds(shape, own) is shape  # the driver's face turned those triangles over as far
    halfway = folds(shape, np.maximum(own, own.min() / 2))  # the driver folded only half as far
    assert _fold_excess(folds, halfway, np.maximum(own, own.min() / 2)) < 1.0
    assert not np.allclose(halfway, shape)


def test_the_drivers_own_share_is_read_in_its_frame(hopper_source):
    base = hopper_source.landmarks.points
    folds = SkinFolds(base)
    rest = base.astype(np.float64)
    assert np.allclose(folds.driver_ratios(rest, rest), 1.0)
    squashed = rest * np.array([1.0, 0.5, 1.0])
    assert np.allclose(folds.driver_ratios(squashed, rest), 0.5)
    mirrored = rest * np.array([-1.0, 1.0, 1.0])
    assert np.allclose(folds.driver_ratios(mirrored, rest), -1.0)


def _short_chin(source):
    """``source``'s landmarks with everything below the mouth pulled halfway up to it: a portrait whose chin
    leaves a wide-open driver's jaw no room."""
    p = source.points.copy()
    mouth_y = p[[13, 14], 1].mean()
    below = p[:, 1] > mouth_y
    p[below, 1] = mouth_y + 0.5 * (p[below, 1] - mouth_y)
    return Landmarks(p, source.image_size)


def test_the_retargeter_limits_folds_in_relative_mode_only(hopper_source, monkeypatch):
    portrait = _short_chin(hopper_source.landmarks)
    folds = SkinFolds(portrait.points)

    def drive(mode):
        rt = Retargeter(portrait, RetargetOptions(mode=mode))
        rt.calibrate(synthetic_landmarks(FacePose()))
        return rt(synthetic_landmarks(FacePose(jaw=1.0))).points

    def turned_over(points):
        return float(np.maximum(-folds.shares(points) * folds.sizes, 0).sum())

    limited, absolute = drive("relative"), drive("absolute")
    monkeypatch.setattr(SkinFolds, "__call__", lambda self, shape, ratios=None: shape)
    unlimited = drive("relative")
    assert turned_over(unlimited) > 100.0  # 190 px² of her skin turned over
    assert turned_over(limited) < turned_over(unlimited) / 3
    assert mouth_opening(limited) > 0.95 * mouth_opening(unlimited)
    assert np.array_equal(drive("absolute"), absolute)  # the driver's own face: left as it is


def test_a_tracker_gone_wrong_gives_finite_bounded_points(hopper_source):
    base = hopper_source.landmarks.points
    folds = SkinFolds(base)
    rng = np.random.default_rng(0)
    wrong = {"scattered": base + np.c_[rng.normal(0, 8, (len(base), 2)), np.zeros(len(base))],
             "mirrored": base * np.array([-1, 1, 1]) + np.array([256, 0, 0]),
             "collapsed": np.full_like(base, 100.0) + rng.normal(0, 1e-4, base.shape)}
    for name, shape in wrong.items():
        out = folds(shape.astype(np.float32))
        assert np.isfinite(out).all(), name
        assert np.linalg.norm(out[:, :2] - shape[:, :2], axis=1).max() < face_size(base), name
    nan = _dropped_jaw(base, 0.25 * inter_ocular(base))
    nan[5] = np.nan
    assert folds(nan) is nan  # folding, but not all finite: left as it is


def _clip_frames(name: str, indices) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(CLIPS / name))
    out, i = [], 0
    try:
        while i <= max(indices):
            ok, image = cap.read()
            if not ok:
                break
            if i in indices:
                out.append(image)
            i += 1
    finally:
        cap.release()
    return out


@pytest.mark.skipif(not (CLIPS / "FuxiVirtualHuman__styletalk__spata_clip1.mp4").is_file()
                    or not (CLIPS / "filby89__spectre__W023_level_2_surprised_010.mp4").is_file(),
                    reason="the real clips (../shared/data/real_clips) are not here")
def test_a_real_scream_onto_another_face_folds_no_further_than_the_drivers_own(monkeypatch, still_tracker):
    """A man screaming drives a woman's portrait (the corpus pair whose retargeted mouth folded most, 430 px²
    of skin turned over at 256): her skin folds no further than his own, and her mouth opens as wide."""
    from avatar_app.face.source import prepare_source

    portrait = prepare_source(_clip_frames("filby89__spectre__W023_level_2_surprised_010.mp4", {0})[0], 256,
                              tracker=still_tracker)
    frames = _clip_frames("FuxiVirtualHuman__styletalk__spata_clip1.mp4", {0, 18, 24, 30, 36})
    faces = [still_tracker.detect_faces(f)[0] for f in frames]
    seen = []
    real_call = SkinFolds.__call__

    def recording(self, shape, ratios=None):
        out = real_call(self, shape, ratios)
        seen.append((self, shape, ratios, out))
        return out

    monkeypatch.setattr(SkinFolds, "__call__", recording)
    rt = Retargeter(portrait.landmarks)
    rt.calibrate(faces[0])
    for f in faces[1:]:
        rt(f)
    before = max(_fold_excess(s, shape, r) for s, shape, r, _ in seen)
    after = max(_fold_excess(s, out, r) for s, _, r, out in seen)
    assert before > 100.0, before
    assert after < 1.0, after
    for _, shape, _, out in seen:
        assert mouth_opening(out) > 0.9 * mouth_opening(shape)
