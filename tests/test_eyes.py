"""Eyes (issue 16): gaze measures, gaze inside the analytic flow, eye contact.

The flow and animator tests fail on the code before issue 16, whose flow moved the eye
opening as skin (the iris stayed where it was between the lids)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avatar_app.capture.synthetic import FacePose, synthetic_landmarks
from avatar_app.face.eyes import eye_gaze, eye_openness, hold_gaze, horizontal_gaze
from avatar_app.face.mesh import eye_region_triangles, topology
from avatar_app.face.retarget import Retargeter, RetargetOptions
from avatar_app.models.eye_flow import IRIS_GAIN
from avatar_app.models.flow import AnalyticFlow, rasterize_triangles
from avatar_app.runtime.animator import GeometricAnimator

SIZE = 256
LOOKS = (-0.35, 0.35)  # synthetic gaze to the image's left / right, in iris widths


def _targets(source, eye_contact: bool = False, **pose):
    retarget = Retargeter(source.landmarks, RetargetOptions(eye_contact=eye_contact))
    retarget.calibrate(synthetic_landmarks(FacePose()))
    return retarget(synthetic_landmarks(FacePose(**pose)))


def test_gaze_and_openness_measures_on_the_synthetic_face():
    ahead = synthetic_landmarks(FacePose()).points
    right = synthetic_landmarks(FacePose(gaze=(0.3, 0.0))).points
    left = synthetic_landmarks(FacePose(gaze=(-0.3, 0.0))).points
    assert abs(horizontal_gaze(ahead) - 0.5) < 0.05
    assert horizontal_gaze(left) < horizontal_gaze(ahead) - 0.05 < horizontal_gaze(right) - 0.1
    r, l = eye_gaze(right)
    assert r > 0.55 and l > 0.55  # both eyes move to the image's right
    closed = synthetic_landmarks(FacePose(blink_left=1.0, blink_right=1.0)).points
    assert eye_openness(closed) < 0.4 * eye_openness(ahead)
    # ratios of the face's own distances: scale and position do not matter
    far = synthetic_landmarks(FacePose(gaze=(0.3, 0.0), scale=0.6, shift=(0.2, 0.1))).points
    assert horizontal_gaze(far) == pytest.approx(horizontal_gaze(right), abs=1e-3)


def test_hold_gaze_keeps_the_iris_where_it_sits_between_the_corners():
    rest = synthetic_landmarks(FacePose()).points
    moved = synthetic_landmarks(FacePose(gaze=(0.4, 0.0), roll=12.0, yaw=10.0, shift=(0.1, 0.0),
                                         blink_left=0.5, blink_right=0.5)).points
    held = hold_gaze(moved, rest)
    assert abs(horizontal_gaze(held) - horizontal_gaze(rest)) < 0.01 < abs(horizontal_gaze(moved) - horizontal_gaze(rest))
    iris = np.concatenate([topology().right_iris, topology().left_iris])
    others = np.setdiff1d(np.arange(len(moved)), iris)
    assert np.array_equal(held[others], moved[others])  # lids and everything else untouched
    assert eye_openness(held) == pytest.approx(eye_openness(moved))


def test_retargeting_with_eye_contact_holds_gaze_and_keeps_blinks(astronaut_source):
    src = astronaut_source.landmarks.points
    follow = _targets(astronaut_source, gaze=(0.35, 0.0), blink_left=0.6, blink_right=0.6).points
    contact = _targets(astronaut_source, eye_contact=True, gaze=(0.35, 0.0), blink_left=0.6, blink_right=0.6).points
    assert horizontal_gaze(follow) - horizontal_gaze(src) > 0.05
    assert abs(horizontal_gaze(contact) - horizontal_gaze(src)) < 0.01
    assert eye_openness(contact) == pytest.approx(eye_openness(follow))
    assert eye_openness(contact) < 0.8 * eye_openness(src)


@pytest.mark.parametrize("yaw", (15.0, 30.0, -30.0))
def test_eye_contact_holds_gaze_while_the_head_turns(astronaut_source, yaw):
    """The held irises are placed after the head's 3-D turn, as `evaluate --eye-contact` holds
    them: placed before it, the turn carried them along (0.056 eye widths off at 30 degrees)."""
    src = astronaut_source.landmarks.points
    turned = _targets(astronaut_source, yaw=yaw, gaze=(0.2, 0.0))
    contact = _targets(astronaut_source, eye_contact=True, yaw=yaw, gaze=(0.2, 0.0))
    assert abs(horizontal_gaze(turned.points) - horizontal_gaze(src)) > 0.03
    assert abs(horizontal_gaze(contact.points) - horizontal_gaze(src)) < 0.01
    iris = np.concatenate([topology().right_iris, topology().left_iris])
    others = np.setdiff1d(np.arange(len(src)), iris)
    assert np.array_equal(contact.points[others], turned.points[others])  # the head and lids still follow


def _grid_px_at(source, target, point: np.ndarray) -> np.ndarray:
    """Where the analytic flow samples the source for the target pixel nearest ``point`` (px)."""
    flow = AnalyticFlow(SIZE)
    ids = rasterize_triangles(target.points, topology().triangles, SIZE)
    grid, _, _ = flow(torch.from_numpy(source.landmarks.xy[None].copy()), torch.from_numpy(target.xy[None].copy()),
                      torch.from_numpy(ids)[None])
    x, y = np.round(point).astype(int)
    return ((grid[0, y, x].double() + 1) * SIZE / 2 - 0.5).numpy()


@pytest.mark.parametrize("look", LOOKS)
def test_the_drawn_iris_samples_the_source_iris(astronaut_source, look):
    """Before issue 16 the flow moved the eye opening as skin: the iris stayed between the lids,
    so the target pixel where the iris is drawn sampled the source where the iris had *not* been
    (several px off). Now the iris is drawn at the source's position plus ``IRIS_GAIN`` times the
    target's gaze change (the eyes keep their frame here), and that pixel samples the source's
    iris centre."""
    target = _targets(astronaut_source, gaze=(look, 0.0))
    topo = topology()
    for iris in (topo.right_iris[0], topo.left_iris[0]):
        c_t, c_s = target.xy[iris], astronaut_source.landmarks.xy[iris]
        assert np.linalg.norm(c_t - c_s) > 3.0  # the driver's gaze moved the target iris
        drawn = c_s + IRIS_GAIN * (c_t - c_s)
        assert np.linalg.norm(_grid_px_at(astronaut_source, target, drawn) - c_s) < 1.0
        assert np.linalg.norm(_grid_px_at(astronaut_source, target, c_t) - c_s) > 1.5  # the gain is real


def test_gaze_changes_only_the_eyes(astronaut_source):
    """A look to the side moves pixels of the eye regions (the openings, and a pixel or so of lid
    where the drawn lid line and the mesh's disagree), mostly inside the openings, nothing else."""
    ahead, looking = _targets(astronaut_source), _targets(astronaut_source, gaze=(0.35, 0.0))
    assert not np.allclose(ahead.points, looking.points)
    flow = AnalyticFlow(SIZE)
    ids = rasterize_triangles(ahead.points, topology().triangles, SIZE)  # irises are in no triangle: same map
    src = torch.from_numpy(astronaut_source.landmarks.xy[None].copy())
    g0 = flow(src, torch.from_numpy(ahead.xy[None].copy()), torch.from_numpy(ids)[None])[0]
    g1 = flow(src, torch.from_numpy(looking.xy[None].copy()), torch.from_numpy(ids)[None])[0]
    moved = (g1 - g0).abs().amax(-1)[0] > 1e-6
    in_openings = torch.from_numpy(np.isin(ids, np.flatnonzero(topology().triangle_region == 2)))
    in_regions = torch.from_numpy(np.isin(ids, np.flatnonzero(eye_region_triangles().any(axis=1))))
    assert moved.any() and not moved[~in_regions].any()
    assert moved[in_openings].sum() > 3 * moved[~in_openings].sum()


def _animated_gaze(animator, source, tracker, eye_contact=False, **pose):
    faces = tracker.detect_faces(animator.animate(_targets(source, eye_contact, **pose)))
    assert faces, "no face re-detected in the avatar"
    return horizontal_gaze(faces[0].points), eye_openness(faces[0].points)


@pytest.mark.parametrize("size", [256, 512])
def test_the_avatar_looks_where_the_driver_looks(astronaut, still_tracker, size):
    """Mediapipe re-detects the avatar's irises: they follow the driver's gaze (before issue 16 they
    stayed put: under 0.01 apart); with eye contact they stay at the portrait's gaze while a blink
    still closes the eyes."""
    from avatar_app.face.source import prepare_source

    source = prepare_source(astronaut, size, tracker=still_tracker)
    animator = GeometricAnimator(source)
    (g_left, _), (g_right, _) = (_animated_gaze(animator, source, still_tracker, gaze=(x, 0.0)) for x in LOOKS)
    t_left, t_right = (horizontal_gaze(_targets(source, gaze=(x, 0.0)).points) for x in LOOKS)
    assert g_right - g_left > 0.5 * (t_right - t_left) > 0.05
    (c_left, _), (c_right, _) = (_animated_gaze(animator, source, still_tracker, True, gaze=(x, 0.0)) for x in LOOKS)
    g_rest, o_rest = _animated_gaze(animator, source, still_tracker)
    assert abs(c_left - g_rest) < 0.03 and abs(c_right - g_rest) < 0.03
    _, o_blink = _animated_gaze(animator, source, still_tracker, True, gaze=(0.35, 0.0), blink_left=1.0,
                                blink_right=1.0)
    assert o_blink < 0.75 * o_rest


def test_the_neural_animator_gets_the_gaze_through_its_prior(astronaut_source, still_tracker):
    """The untrained networks reproduce the analytic flow, so the neural avatar looks around too."""
    from avatar_app.models.identity import IDENTITY_DIM
    from avatar_app.runtime.neural_animator import NeuralAnimator

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            animator = NeuralAnimator(astronaut_source, preset="lite", identity=np.zeros(IDENTITY_DIM, np.float32))
        g_left, g_right = (_animated_gaze(animator, astronaut_source, still_tracker, gaze=(x, 0.0))[0] for x in LOOKS)
    finally:
        torch.set_num_threads(threads)
    assert g_right - g_left > 0.05


def test_eye_follow_is_the_correlation_and_slope_against_the_driver():
    from avatar_app.train.eval_eyes import eye_follow

    looks = np.linspace(-0.4, 0.4, 9)
    driver = [synthetic_landmarks(FacePose(gaze=(x, 0.0), blink_left=b, blink_right=b)).points
              for x, b in zip(looks, np.abs(looks))]
    half = [synthetic_landmarks(FacePose(gaze=(x / 2, 0.0), blink_left=b, blink_right=b)).points
            for x, b in zip(looks, np.abs(looks))]
    rest = synthetic_landmarks(FacePose()).points
    m = eye_follow(driver, half, rest)
    assert m["gaze_r"] > 0.99 and m["gaze_amp"] == pytest.approx(0.5, abs=0.05)
    assert m["open_r"] > 0.99 and m["open_amp"] == pytest.approx(1.0, abs=0.05)
    assert m["gaze_hold"] > 0.02
    still = eye_follow([rest] * 9, driver, rest)  # the driver's eyes do not move: nothing to follow
    assert still["gaze_r"] is None and still["open_amp"] is None
    frozen = eye_follow(driver, [rest] * 9, rest)
    assert frozen["gaze_r"] == 0.0 and frozen["gaze_hold"] == pytest.approx(0.0)
    missing = eye_follow(driver, [None] * 9, rest)  # no face re-detected in any output
    assert all(v is None for v in missing.values())


def test_gaze_is_scored_where_the_drivers_eyes_are_open():
    """A blink has no gaze: the iris mediapipe places behind a closed lid, in driver or avatar, is left
    out of gaze r, amplitude and hold (openness still counts every frame)."""
    from avatar_app.face.eyes import CLOSED_EYES, eye_openness
    from avatar_app.train.eval_eyes import eye_follow

    looks = np.linspace(-0.4, 0.4, 9)
    shut = [0.0] * 4 + [1.0] + [0.0] * 4  # the driver blinks mid-clip
    driver = [synthetic_landmarks(FacePose(gaze=(x, 0.0), blink_left=b, blink_right=b)).points
              for x, b in zip(looks, shut)]
    assert eye_openness(driver[4]) < CLOSED_EYES < eye_openness(driver[3])
    avatar = [synthetic_landmarks(FacePose(gaze=(x if b == 0 else 0.8, 0.0), blink_left=b, blink_right=b)).points
              for x, b in zip(looks, shut)]  # behind its closed lids, the iris read far to one side
    rest = synthetic_landmarks(FacePose()).points
    m = eye_follow(driver, avatar, rest)
    assert m["gaze_r"] > 0.99 and m["gaze_amp"] == pytest.approx(1.0, abs=0.05)
    assert m["gaze_r_all"] < 0.9  # the blink frame counted
    held = eye_follow(driver, [synthetic_landmarks(FacePose(gaze=(0.8 * b, 0.0))).points for b in shut], rest)
    assert held["gaze_hold"] == pytest.approx(0.0) and held["gaze_hold_p95"] == pytest.approx(0.0)
    assert held["open_r"] is not None


def test_eye_contact_flags():
    from avatar_app.cli import build_parser

    parser = build_parser()
    assert not parser.parse_args(["live", "--synthetic", "--source", "a.jpg"]).eye_contact
    assert parser.parse_args(["live", "--synthetic", "--source", "a.jpg", "--eye-contact"]).eye_contact
    assert parser.parse_args(["render", "--synthetic", "--source", "a.jpg", "-o", "o.mp4", "--eye-contact"]).eye_contact
    args = parser.parse_args(["evaluate", "--data", "d", "--eye-contact", "--size", "512"])
    assert args.eye_contact and args.size == 512
