"""Eye following for ``avatar-app evaluate``: does the avatar look and blink as the driver does?

Mediapipe (still-image mode) re-detects the face on the **driver's frames** and on the
**avatar's outputs**; from each, :func:`~avatar_app.face.eyes.horizontal_gaze` (iris centre
along the eye-corner line) and :func:`~avatar_app.face.eyes.eye_openness` (lid gap over eye
width). Both are ratios of the face's own distances, so a driver and an avatar of another
person compare directly. Per clip and animator:

* ``gaze_r`` / ``open_r``: Pearson r of the avatar's series against the driver's;
* ``gaze_amp`` / ``open_amp``: the least-squares slope of the avatar's series on the
  driver's (1 = the driver's amplitude; noise in the driver's series pulls it below 1,
  never above);
* ``gaze_hold`` / ``gaze_hold_p95``: the mean / 95th percentile over the frames of |avatar gaze −
  the source portrait's own gaze| (what eye contact holds near 0).

Gaze is scored only on frames where the **driver's eyes are open** (openness at least
:data:`~avatar_app.face.eyes.CLOSED_EYES`): with the lids shut there is no gaze to follow or
hold, and mediapipe places an iris behind a closed lid at random, in the driver and in the
avatar alike. ``gaze_r_all`` / ``gaze_amp_all`` are the same over all frames, for comparison.

r and slope need the driver to move: they are ``None`` when the driver's series varies by
less than :data:`GAZE_MIN_SD` (:data:`OPEN_MIN_SD` for openness) over the driven frames —
"clips with clear eye movement" are those where they are measured.
"""

from __future__ import annotations

import numpy as np

from ..face.eyes import CLOSED_EYES, eye_openness, horizontal_gaze

GAZE_MIN_SD = 0.02  # iris travel, in eye widths (mediapipe's still-image jitter is ~0.005)
OPEN_MIN_SD = 0.02  # lid gap, in eye widths (a blink moves it by ~0.15)
EYE_KEYS = ("gaze_r", "gaze_amp", "open_r", "open_amp", "gaze_hold", "gaze_hold_p95", "gaze_r_all", "gaze_amp_all")


def _follow(driver: np.ndarray, avatar: np.ndarray, min_sd: float) -> tuple[float | None, float | None]:
    """``(r, slope)`` of ``avatar`` on ``driver``, ``None`` when the driver hardly moves (or there are
    fewer than 3 pairs)."""
    if len(driver) < 3 or driver.std() < min_sd:
        return None, None
    if avatar.std() < 1e-9:
        return 0.0, 0.0
    r = float(np.corrcoef(driver, avatar)[0, 1])
    slope = float(np.cov(driver, avatar, bias=True)[0, 1] / driver.var())
    return r, slope


def eye_follow(driver_points, avatar_points, source_points=None) -> dict:
    """The eye metrics (module docstring) of one animator on one clip.

    Args:
        driver_points: per driven frame, landmarks re-detected on the driver's frame, or ``None``.
        avatar_points: per driven frame, landmarks re-detected on the avatar's output, or ``None``.
        source_points: landmarks re-detected on the source portrait (for ``gaze_hold``), or ``None``.

    Returns:
        ``{key: float | None}`` for :data:`EYE_KEYS`; frames where either face is missing are left out.
    """
    pairs = [(d, a) for d, a in zip(driver_points, avatar_points) if d is not None and a is not None]
    out = dict.fromkeys(EYE_KEYS)
    if not pairs:
        return out
    gd = np.array([horizontal_gaze(d) for d, _ in pairs])
    ga = np.array([horizontal_gaze(a) for _, a in pairs])
    od = np.array([eye_openness(d) for d, _ in pairs])
    oa = np.array([eye_openness(a) for _, a in pairs])
    look = od >= CLOSED_EYES  # the driver's eyes open: a gaze to follow (module docstring)
    out["gaze_r"], out["gaze_amp"] = _follow(gd[look], ga[look], GAZE_MIN_SD)
    out["gaze_r_all"], out["gaze_amp_all"] = _follow(gd, ga, GAZE_MIN_SD)
    out["open_r"], out["open_amp"] = _follow(od, oa, OPEN_MIN_SD)
    if source_points is not None and look.any():
        off = np.abs(ga[look] - horizontal_gaze(source_points))
        out["gaze_hold"], out["gaze_hold_p95"] = float(off.mean()), float(np.percentile(off, 95))
    return out


def detect_all(tracker, images) -> list:
    """Landmarks ``(478, 3)`` re-detected on each image (``None`` where no face is found)."""
    found = []
    for img in images:
        faces = tracker.detect_faces(img)
        found.append(np.asarray(faces[0].points) if faces else None)
    return found
