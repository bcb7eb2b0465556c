"""The tracker's landmark smoother lets blinks through (issue 16): the lids and irises get their own,
quicker One-Euro filter in the face's frame, the rest of the face keeps the old one (pure numpy, fast)."""

from __future__ import annotations

import numpy as np

from avatar_app.face.eyes import eye_openness
from avatar_app.face.mesh import topology
from avatar_app.face.smoothing import EYE_SMOOTHING, FACE_SMOOTHING, LandmarkSmoother, OneEuroFilter

FPS = 30.0
IOD = 60.0  # px


def face() -> np.ndarray:
    """The neutral mesh as a 60 px face at (320, 240), ``(478, 3)``."""
    return (topology().neutral * IOD + np.array([320.0, 240.0, 0.0])).astype(np.float64)


def blink_clip(frames: int = 60, start: int = 30, closed: int = 2) -> np.ndarray:
    """A still face that blinks once: the upper lids drop onto the lower ones in one frame, stay
    ``closed`` frames, and open again (a fast blink, under 0.1 s)."""
    topo = topology()
    xs = np.repeat(face()[None], frames, axis=0)
    for upper, lower in ((topo.right_eye_upper, topo.right_eye_lower), (topo.left_eye_upper, topo.left_eye_lower)):
        xs[start:start + closed, upper[1:-1], :2] = xs[start:start + closed, lower[1:-1], :2]
    return xs


def run(filt, xs: np.ndarray) -> np.ndarray:
    return np.array([filt(x, i / FPS, scale=IOD) for i, x in enumerate(xs)])


def lowest_openness(xs: np.ndarray) -> float:
    return min(eye_openness(x) for x in xs)


def test_a_fast_blink_closes_most_of_the_way():
    """The face filter alone (what the tracker did before) leaves a fast blink a third open; the
    eye filter closes it to under a tenth of the open eye's gap."""
    xs = blink_clip()
    open_ = eye_openness(xs[0])
    assert lowest_openness(xs) < 1e-6
    assert lowest_openness(run(OneEuroFilter(*FACE_SMOOTHING), xs)) > 0.3 * open_  # the old loss of signal
    assert lowest_openness(run(LandmarkSmoother(), xs)) < 0.1 * open_


def test_eye_jitter_at_rest_stays_damped():
    """A still face with 0.5 px of detection noise: the eye points keep under half of the raw variance
    (the face filter alone keeps under 0.3 of it), the other points exactly what the face filter gives."""
    rng = np.random.default_rng(3)
    xs = face()[None] + rng.normal(0.0, 0.5, size=(240, 478, 3))
    xs[..., 2] = face()[:, 2]
    eye = np.unique(np.concatenate([topology().right_eye_upper, topology().right_iris, topology().left_iris]))
    smooth, old = run(LandmarkSmoother(), xs), run(OneEuroFilter(*FACE_SMOOTHING), xs)
    warm = 30
    raw_var = xs[warm:, eye, :2].var(axis=0).mean()
    assert smooth[warm:, eye, :2].var(axis=0).mean() < 0.5 * raw_var
    others = np.setdiff1d(np.arange(478), LandmarkSmoother()._eye_idx)
    np.testing.assert_allclose(smooth[:, others], old[:, others], atol=1e-4)


def test_the_eyes_move_with_the_head_as_the_face_does():
    """A fast rigid head motion (turn, zoom, slide) without blinks: the eyes keep their shape (the face
    filter alone, smoothing each coordinate on its own, bent the lids enough to change the openness), and
    they stay with the face-filtered skin around them, within 2 % of the inter-ocular distance: much
    closer than a quick filter on the eye points alone would keep them."""
    t = np.arange(45) / FPS
    base = face()
    c = base[:, :2].mean(axis=0)
    xs = []
    for k in t:
        ang, zoom, shift = 0.3 * np.sin(4 * k), 1 + 0.2 * np.sin(3 * k), np.array([80 * k, -40 * k])
        rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
        p = base.copy()
        p[:, :2] = (base[:, :2] - c) @ rot.T * zoom + c + shift
        xs.append(p)
    xs = np.array(xs)
    smooth = run(LandmarkSmoother(), xs)
    old = run(OneEuroFilter(*FACE_SMOOTHING), xs)
    quick = run(OneEuroFilter(*EYE_SMOOTHING), xs)
    drift = [abs(eye_openness(a) - eye_openness(b)) for a, b in zip(smooth, xs)]
    drift_old = [abs(eye_openness(a) - eye_openness(b)) for a, b in zip(old, xs)]
    assert max(drift) < 1e-4 < 1e-3 < max(drift_old)
    eye = LandmarkSmoother()._eye_idx
    apart = np.abs(smooth - old)[:, eye, :2].max()
    assert apart < 0.02 * IOD
    assert apart < 0.3 * np.abs(quick - old)[:, eye, :2].max()
