"""tools/pair_yaw.py: the head turn between training pairs, as the motion limits measure it."""

from __future__ import annotations

import numpy as np
import pytest

from avatar_app.capture.synthetic import FacePose, synthetic_landmarks

from conftest import load_tool


def _tool():
    return load_tool("pair_yaw")


def test_a_clip_turning_between_two_poses():
    clip_pairs = _tool().clip_pairs
    yaws = [0.0, 0.0, 0.0, 20.0, 0.0, 0.0, 0.0, -15.0] * 3  # mostly frontal, a turn each way now and then
    points = np.stack([synthetic_landmarks(FacePose(yaw=y, jaw=0.2 * (k % 2))).points for k, y in enumerate(yaws)])
    valid = np.ones(len(yaws), bool)
    valid[5] = False  # a frame without a face is never drawn
    got = clip_pairs(points, valid, np.random.default_rng(0), pairs=300)
    rand, hard, own = got["random"], got["hard"], got["frames"]
    # every pair's turn is one the clip holds: 0, 15, 20 or 35 degrees (the talking jaw moves no rigid point)
    for v in (rand, hard):
        assert np.min(np.abs(v[:, None] - np.array([0.0, 15.0, 20.0, 35.0])[None]), axis=1).max() < 1.0
    assert np.mean(rand < 1.0) > 0.4  # two frontal frames, most often
    assert np.mean(hard > 14.0) > 0.9  # the hard pick is a turned frame (or the frontal one from a turned frame)
    assert sorted(np.unique(np.round(own))) == [0.0, 15.0, 20.0]  # against the clip's (frontal) median
    alone = clip_pairs(points[:1], np.ones(1, bool), np.random.default_rng(0))
    assert all(len(v) == 0 for v in alone.values())
    assert float(np.max(rand)) == pytest.approx(35.0, abs=1.0)


def test_a_clip_that_comes_nearer():
    clip_pairs = _tool().clip_pairs
    scales = [1.0, 1.0, 1.25, 1.0, 0.8, 1.0] * 4  # the face 1.25x nearer, then 0.8x (farther), now and then
    points = np.stack([synthetic_landmarks(FacePose(scale=s)).points for s in scales])
    got = clip_pairs(points, np.ones(len(scales), bool), np.random.default_rng(0), pairs=300)
    # the zoom either way between two frames the clip holds: 1, 1.25 (1.0 against 1.25 or 0.8) or 1.5625
    for v in (got["random_zoom"], got["hard_zoom"]):
        assert np.min(np.abs(v[:, None] - np.array([1.0, 1.25, 1.5625])[None]), axis=1).max() < 0.01
    assert np.mean(got["hard_zoom"] > 1.2) > 0.9  # the hard pick moves the most
    assert np.abs(got["random"]).max() < 1.0  # and no turn
