"""tools/pair_yaw.py: the head turn between training pairs, as the motion limits measure it."""

from __future__ import annotations

import numpy as np
import pytest

from avatar_app.capture.synthetic import FacePose, synthetic_landmarks

from conftest import load_tool


def _tool():
    return load_tool("pair_yaw")


def test_a_clip_turning_between_two_poses():
    clip_yaws = _tool().clip_yaws
    yaws = [0.0, 0.0, 0.0, 20.0, 0.0, 0.0, 0.0, -15.0] * 3  # mostly frontal, a turn each way now and then
    points = np.stack([synthetic_landmarks(FacePose(yaw=y, jaw=0.2 * (k % 2))).points for k, y in enumerate(yaws)])
    valid = np.ones(len(yaws), bool)
    valid[5] = False  # a frame without a face is never drawn
    rand, hard, own = clip_yaws(points, valid, np.random.default_rng(0), pairs=300)
    # every pair's turn is one the clip holds: 0, 15, 20 or 35 degrees (the talking jaw moves no rigid point)
    for v in (rand, hard):
        assert np.min(np.abs(v[:, None] - np.array([0.0, 15.0, 20.0, 35.0])[None]), axis=1).max() < 1.0
    assert np.mean(rand < 1.0) > 0.4  # two frontal frames, most often
    assert np.mean(hard > 14.0) > 0.9  # the hard pick is a turned frame (or the frontal one from a turned frame)
    assert sorted(np.unique(np.round(own))) == [0.0, 15.0, 20.0]  # against the clip's (frontal) median
    alone = clip_yaws(points[:1], np.ones(1, bool), np.random.default_rng(0))
    assert all(len(v) == 0 for v in alone)
    assert float(np.max(rand)) == pytest.approx(35.0, abs=1.0)
