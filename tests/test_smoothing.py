"""The One-Euro landmark filter on synthetic signals (pure numpy, fast)."""

from __future__ import annotations

import numpy as np
import pytest

from avatar_app.face.smoothing import OneEuroFilter

FPS = 30.0


def run(filt: OneEuroFilter, xs: np.ndarray, scale: float = 1.0, t0: float = 0.0) -> np.ndarray:
    return np.array([filt(x, t0 + i / FPS, scale=scale) for i, x in enumerate(xs)])


def test_constant_signal_stays_constant():
    x = np.array([[123.25, -7.5, 3.0], [0.0, 1e3, -2.5]], np.float32)
    out = run(OneEuroFilter(), np.repeat(x[None], 90, axis=0), scale=50.0)
    assert out.shape == (90, 2, 3)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.broadcast_to(x, out.shape))


@pytest.mark.parametrize("sigma,scale", [(0.5, 60.0), (2.0, 60.0), (0.01, 1.0)])
def test_still_point_noise_is_suppressed(sigma, scale):
    """Jitter of a still face (sigma px, face unit ``scale`` px) loses > 70 % of its variance."""
    rng = np.random.default_rng(1)
    truth = np.array([[320.0, 240.0]] * 64)
    xs = truth + rng.normal(0.0, sigma, size=(300, *truth.shape))
    out = run(OneEuroFilter(), xs, scale=scale)
    warm = 30
    ratio = out[warm:].var(axis=0).mean() / xs[warm:].var(axis=0).mean()
    assert ratio < 0.3, ratio
    # and the smoothing does not bias the still point
    assert np.abs(out[warm:].mean(axis=0) - truth).max() < 3 * sigma / np.sqrt(10)


@pytest.mark.parametrize("step,scale", [(10.0, 1.0), (30.0, 60.0), (0.2, 1.0)])
def test_step_is_followed(step, scale):
    xs = np.concatenate([np.zeros((30, 3)), np.full((30, 3), step)])
    out = run(OneEuroFilter(), xs, scale=scale)
    assert np.all(out[:30] == 0)
    # moves towards the new value at once ...
    assert np.all(out[30] > 0)
    # ... and after 0.5 s (15 samples at 30 fps) is within 3 % of it
    after = out[30 + 15 :]
    assert np.abs(after - step).max() <= 0.03 * step
    # never overshoots
    assert out.max() <= step * (1 + 1e-6)


def test_is_causal():
    rng = np.random.default_rng(2)
    a = 50 + rng.normal(0, 1.0, size=(60, 10, 2))
    b = a.copy()
    cut = 25
    b[cut:] += rng.normal(0, 20.0, size=b[cut:].shape)  # differ from sample `cut` on
    out_a = run(OneEuroFilter(), a, scale=40.0)
    out_b = run(OneEuroFilter(), b, scale=40.0)
    np.testing.assert_array_equal(out_a[:cut], out_b[:cut])
    assert not np.array_equal(out_a[cut], out_b[cut])


def test_repeated_or_earlier_timestamp_holds():
    f = OneEuroFilter()
    f(np.array([0.0, 0.0]), 0.0)
    held = f(np.array([4.0, 8.0]), 1 / FPS)
    assert not np.array_equal(held, [0.0, 0.0])
    again = f(np.array([100.0, -100.0]), 1 / FPS)  # same timestamp: hold
    np.testing.assert_array_equal(again, held)
    back = f(np.array([100.0, -100.0]), 0.5 / FPS)  # going back in time: hold
    np.testing.assert_array_equal(back, held)
    # and the held samples did not leak into the state
    f2 = OneEuroFilter()
    f2(np.array([0.0, 0.0]), 0.0)
    f2(np.array([4.0, 8.0]), 1 / FPS)
    np.testing.assert_array_equal(f(np.array([5.0, 5.0]), 2 / FPS), f2(np.array([5.0, 5.0]), 2 / FPS))


def test_reset_forgets():
    f = OneEuroFilter()
    run(f, np.zeros((20, 3)))
    f.reset()
    x = np.array([7.0, -3.0, 11.0])
    # the first sample after a reset comes out unchanged, even with an earlier timestamp
    np.testing.assert_array_equal(f(x, 0.0), x.astype(np.float32))
    # and the next one behaves like a fresh filter's
    fresh = OneEuroFilter()
    fresh(x, 0.0)
    y = np.array([9.0, -1.0, 12.0])
    np.testing.assert_array_equal(f(y, 1 / FPS), fresh(y, 1 / FPS))


def test_lower_min_cutoff_smooths_more():
    rng = np.random.default_rng(3)
    xs = 10 + rng.normal(0, 0.5, size=(200, 40))
    soft = run(OneEuroFilter(min_cutoff=0.5, beta=0.0), xs)[30:].var(0).mean()
    hard = run(OneEuroFilter(min_cutoff=5.0, beta=0.0), xs)[30:].var(0).mean()
    assert soft < 0.5 * hard
