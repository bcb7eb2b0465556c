"""The lips meet, they never cross (face/lips.py), whatever the driver's rest."""

from __future__ import annotations

import numpy as np
import pytest

from avatar_app.capture.synthetic import FacePose, synthetic_landmarks
from avatar_app.face.lips import inner_lip_gaps as _signed_gaps, part_crossed_lips
from avatar_app.face.mesh import mouth_opening
from avatar_app.face.retarget import Retargeter, inter_ocular


def test_a_mouth_shut_past_its_rest_closes_without_crossing(hopper_source):
    """Grace Hopper's mouth is closed; a driver whose rest is open and who then shuts their mouth
    moves her lips towards each other by the whole gap: they meet instead of crossing."""
    src = hopper_source.landmarks
    iod = inter_ocular(src.points)
    rt = Retargeter(src)
    rt.calibrate(synthetic_landmarks(FacePose(jaw=0.6)))
    shut = rt(synthetic_landmarks(FacePose())).points
    assert _signed_gaps(shut).min() > -0.01 * iod
    assert mouth_opening(shut) < 0.02 * iod
    # the lips alone, crossed by 0.15 IOD, are parted to meet (to interpolation's hundredth of an IOD)
    crossed = _cross(src.points)
    assert _signed_gaps(crossed).min() < -0.1 * iod
    assert _signed_gaps(part_crossed_lips(crossed)).min() > -0.01 * iod


def _cross(points: np.ndarray) -> np.ndarray:
    """The lower lip pushed up over the upper one by 0.15 IOD (the upper lip down as much)."""
    from avatar_app.face.lips import _lip_halves

    upper, lower, _, _ = _lip_halves()
    out = points.astype(np.float64).copy()
    shift = 0.075 * inter_ocular(points)
    out[lower, 1] -= shift
    out[upper, 1] += shift
    return out


def test_an_open_mouth_is_left_exactly_as_it_is():
    opened = synthetic_landmarks(FacePose(jaw=0.5)).points
    assert _signed_gaps(opened).min() > 0
    assert part_crossed_lips(opened) is opened


def test_only_the_lips_move_and_by_half_the_overlap_each(astronaut_source):
    pts = astronaut_source.landmarks.points
    crossed = _cross(pts)
    fixed = part_crossed_lips(crossed)
    from avatar_app.face.lips import _lip_halves

    upper, lower, _, _ = _lip_halves()
    lips = np.zeros(len(pts), bool)
    lips[upper] = lips[lower] = True
    assert np.array_equal(fixed[~lips], crossed[~lips])
    moved_up = crossed[upper, 1] - fixed[upper, 1]
    moved_down = fixed[lower, 1] - crossed[lower, 1]
    assert moved_up.min() >= -1e-6 and moved_down.min() >= -1e-6  # each lip only moves away from the other
    from avatar_app.face.mesh import topology

    topo = topology()
    pairs_up = [int(np.flatnonzero(upper == i)[0]) for i in topo.lips_inner_upper[1:-1]]
    pairs_lo = [int(np.flatnonzero(lower == i)[0]) for i in topo.lips_inner_lower[1:-1]]
    # half the overlap each: the two inner edges move as much, taken along the mouth (each point's share is
    # interpolated at its own place, so facing points differ where the overlap changes fast)
    assert moved_up[pairs_up].sum() == pytest.approx(moved_down[pairs_lo].sum(), rel=0.1)
    assert np.abs(np.median(_signed_gaps(fixed))) < 0.01 * inter_ocular(pts)


def test_a_portraits_own_hair_of_overlap_is_left_alone(hopper_source):
    """Tracked lips can overlap by a hair (Grace Hopper's by 0.001 IOD): a driver at rest gives the
    portrait back exactly, and only crossing beyond the portrait's own is parted."""
    src = hopper_source.landmarks.points
    own = _signed_gaps(src)
    assert own.min() < 0  # the case this test is about
    assert part_crossed_lips(src, allowed=own) is src
    crossed = _cross(src)
    fixed = part_crossed_lips(crossed, allowed=own)
    assert _signed_gaps(fixed).min() > own.min() - 0.01 * inter_ocular(src)
