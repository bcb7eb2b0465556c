"""Each animator moves the head as far as it draws cleanly: the geometric avatar to its analytic flow's
limits (30 degrees of yaw, 1.35x zoom), the neural one to what its networks were trained on (20, 1.25x), in
every path that pairs a retargeter with an animator (live, with the animator swapped while it runs; render)."""

from __future__ import annotations

import time

import numpy as np

from avatar_app.capture import stress
from avatar_app.capture.synthetic import FacePose, synthetic_landmarks
from avatar_app.face.align import similarity_fit
from avatar_app.face.mesh import topology
from avatar_app.face.retarget import (MOTION_LIMITS, NEURAL_MOTION_LIMITS, MotionLimits, Retargeter, RetargetOptions,
                                      rotation_yaw)
from avatar_app.runtime.animator import GeometricAnimator
from avatar_app.runtime.neural_animator import NeuralAnimator
from avatar_app.runtime.pipeline import Pipeline
from avatar_app.runtime.render import render_video


def _yaw(source, target) -> float:
    """Degrees of yaw of ``target``'s rigid points against ``source``'s (the rotation vector's y, as the limits)."""
    rig = topology().rigid
    _, rot, _ = similarity_fit(source.points[rig].astype(np.float64), target.points[rig].astype(np.float64))
    return rotation_yaw(rot)


def _recording(cls):
    """``cls`` keeping every target it animates."""

    class Recording(cls):
        def animate(self, target):
            self.targets = getattr(self, "targets", []) + [target]
            return super().animate(target)

    return Recording


def _neural(source):
    return _recording(NeuralAnimator)(source, preset="lite", identity=np.zeros(128, np.float32))


def test_the_retargeter_keeps_to_the_limits_it_is_given(astronaut_source):
    src = astronaut_source.landmarks
    turned = synthetic_landmarks(FacePose(yaw=45))
    yaws = {}
    for name, options in (("default", RetargetOptions()), ("neural", RetargetOptions(limits=NEURAL_MOTION_LIMITS)),
                          ("narrow", RetargetOptions(limits=MotionLimits(yaw=10)))):
        rt = Retargeter(src, options)
        rt.calibrate(synthetic_landmarks(FacePose()))
        yaws[name] = abs(_yaw(src, rt(turned)))
    # 45 degrees bend towards each limit: 29.7 / 19.98 / 10.0 by the tanh knee at 0.6 of the limit
    assert 0.9 * MOTION_LIMITS.yaw < yaws["default"] < MOTION_LIMITS.yaw * 1.02
    assert 0.9 * NEURAL_MOTION_LIMITS.yaw < yaws["neural"] < NEURAL_MOTION_LIMITS.yaw * 1.02
    assert 9.0 < yaws["narrow"] < 10.2
    rig = topology().rigid
    for limits in (MOTION_LIMITS, NEURAL_MOTION_LIMITS):  # 1.6x nearer bends towards 1.35x / 1.25x
        rt = Retargeter(src, RetargetOptions(limits=limits))
        rt.calibrate(synthetic_landmarks(FacePose()))
        zoom, _, _ = similarity_fit(src.points[rig].astype(np.float64),
                                    rt(synthetic_landmarks(FacePose(scale=1.6))).points[rig].astype(np.float64))
        assert limits.zoom ** 0.9 < zoom < limits.zoom


def test_render_turns_the_head_as_far_as_its_animator_draws_cleanly(astronaut_source, tmp_path):
    turns = stress.profile_turns(seconds=2.0)  # to +60 degrees of yaw at frame 19, then -60
    widest = {}
    for animator in (_recording(GeometricAnimator)(astronaut_source), _neural(astronaut_source)):
        render_video(astronaut_source, turns.source(), tmp_path / f"{animator.name}.mp4", animator=animator,
                     progress=False, max_frames=32)  # to +60 degrees and back towards 0
        widest[animator.name] = max(abs(_yaw(astronaut_source.landmarks, t)) for t in animator.targets)
    assert 0.9 * MOTION_LIMITS.yaw < widest["geometric"] < MOTION_LIMITS.yaw
    assert 0.9 * NEURAL_MOTION_LIMITS.yaw < widest["neural"] < NEURAL_MOTION_LIMITS.yaw


def test_live_takes_the_limits_of_the_animator_swapped_in(astronaut_source):
    from test_pipeline import PoseSource

    driver = PoseSource(FacePose())
    geometric, neural = _recording(GeometricAnimator)(astronaut_source), _neural(astronaut_source)
    p = Pipeline(astronaut_source, driver, [], fps=30, animator=geometric)
    p.start()

    def turned_to(animator) -> float:
        """The yaw of the last of three new targets ``animator`` got (the first after a swap may have been
        retargeted just before it)."""
        n = len(getattr(animator, "targets", []))
        end = time.monotonic() + 20.0
        while len(getattr(animator, "targets", [])) < n + 3 and time.monotonic() < end:
            time.sleep(0.05)
        assert len(getattr(animator, "targets", [])) >= n + 3, f"{animator.name}: no new frames in 20 s"
        return abs(_yaw(astronaut_source.landmarks, animator.targets[-1]))

    try:
        time.sleep(0.3)
        for k in range(1, 24):  # to 46 degrees in 0.75 s (an instant turn is a jump, not motion)
            driver.pose = FacePose(yaw=2.0 * k)
            time.sleep(0.033)
        assert 0.9 * MOTION_LIMITS.yaw < turned_to(geometric) < MOTION_LIMITS.yaw
        p.set_animator(neural)
        assert 0.9 * NEURAL_MOTION_LIMITS.yaw < turned_to(neural) < NEURAL_MOTION_LIMITS.yaw
        p.set_eye_contact(True)  # another option changed: the limits stay the animator's
        assert 0.9 * NEURAL_MOTION_LIMITS.yaw < turned_to(neural) < NEURAL_MOTION_LIMITS.yaw
        p.set_animator(geometric)
        assert 0.9 * MOTION_LIMITS.yaw < turned_to(geometric) < MOTION_LIMITS.yaw
    finally:
        p.stop()
    assert p.error is None


def test_a_turned_portrait_turns_further_only_as_far_as_the_flow_draws():
    """The yaw limit was measured on frontal portraits: a portrait turned 18 degrees (the Mona Lisa's own turn)
    turns further only to 30 degrees from the camera, the other way as far as a frontal one; a frontal portrait
    keeps its 30 degrees each way -- also when the driver's neutral face is tilted (rolled) against the portrait."""
    from avatar_app.face.retarget import MIN_TURN, portrait_yaw

    assert abs(portrait_yaw(synthetic_landmarks(FacePose()).points)) < 0.1
    for own in (-18.0, 0.0, 18.0, 40.0):
        portrait = synthetic_landmarks(FacePose(yaw=-own))  # FacePose's yaw is the limits' negative
        assert abs(portrait_yaw(portrait.points) - own) < 0.5
        for roll in (0.0, 20.0):
            rt = Retargeter(portrait, RetargetOptions())
            rt.calibrate(synthetic_landmarks(FacePose(roll=roll)))
            for driver in (60.0, -60.0):  # the driver turns far either way (relative to its neutral)
                moved = portrait_yaw(rt(synthetic_landmarks(FacePose(yaw=-driver, roll=roll))).points) - own
                further = np.sign(driver) == np.sign(own)
                room = min(max(MOTION_LIMITS.rendered_yaw - abs(own), MIN_TURN) if further else MOTION_LIMITS.yaw,
                           MOTION_LIMITS.yaw)
                assert np.sign(moved) == np.sign(driver)
                assert 0.9 * room < abs(moved) < room * 1.02, (own, roll, driver, moved)
