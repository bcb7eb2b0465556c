"""Stress drivers end to end: the avatar never breaks, whatever the driver does.

Each driver plays through the real offline render (and one through the live
pipeline) for both bundled portraits; the *output* is re-detected with mediapipe
(and dlib, when its models are installed) and must satisfy the checks of
:mod:`avatar_app.train.stress_checks`: a face in ≥ 99 % of frames, never two faces,
no frame-to-frame jump larger than the driver's own largest natural motion, identity
distance p95 ≤ 0.45.  Real-clip drivers skip, with the reason, when the clips are absent.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from avatar_app.capture import stress
from avatar_app.face.retarget import Retargeter
from avatar_app.face.tracker import FaceTracker
from avatar_app.runtime.animator import GeometricAnimator
from avatar_app.runtime.face_loss import DriverGuard
from avatar_app.runtime.pipeline import Pipeline
from avatar_app.runtime.render import drive_frames
from avatar_app.sinks.base import Sink
from avatar_app.train import stress_checks as sc

CLIPS = Path(os.environ.get("AVATAR_APP_REAL_CLIPS", Path(__file__).resolve().parents[2] / "shared" / "data" / "real_clips"))
REAL_FRAMES = 60
log = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def identity():
    """dlib's identity encoder, or None (the identity check is then left out, with the reason)."""
    try:
        from avatar_app.models.identity import IdentityEncoder

        return IdentityEncoder().load()
    except Exception as exc:  # dlib or its models missing
        log.warning("identity check left out: %s", exc)
        return None


@pytest.fixture(scope="module")
def portraits(astronaut_source, hopper_source, identity):
    """name -> (source, its identity embedding or None)."""
    return {name: (src, identity.embed(src.crop, src.landmarks) if identity else None)
            for name, src in (("astronaut", astronaut_source), ("grace_hopper", hopper_source))}


@pytest.fixture(scope="module")
def real_drivers(still_tracker):
    if not (CLIPS / "MANIFEST.tsv").is_file():
        pytest.skip(f"real clips not found at {CLIPS} (they are never copied into the repository)")
    drivers = stress.real_stress_drivers(CLIPS, REAL_FRAMES)
    return {d.name: (d, sc.driver_natural_jump(d, still_tracker)) for d in drivers}


def _offline(source, driver: stress.StressDriver, tmp_path) -> list:
    """The avatars the offline render makes (before video encoding, whose noise is not the avatar's)."""
    with FaceTracker() as tracker:
        guard = DriverGuard(Retargeter(source.landmarks))
        return [im for im, _ in drive_frames(source, driver.frames, tracker, GeometricAnimator(source), guard)]


def _assert_holds(result: sc.StressResult) -> None:
    assert not result.failures(), f"{result.name}: " + "; ".join(result.failures())


@pytest.mark.parametrize("portrait", ["astronaut", "grace_hopper"])
@pytest.mark.parametrize("make", [stress.profile_turns, stress.synthetic_cut], ids=["profile_turns", "synthetic_cut"])
def test_synthetic_stress_offline(portrait, make, portraits, still_tracker, identity, tmp_path):
    source, emb = portraits[portrait]
    driver = make()
    images = _offline(source, driver, tmp_path)
    _assert_holds(sc.check_output(driver.name, images, sc.driver_natural_jump(driver, still_tracker, source),
                                  still_tracker, identity, emb))


@pytest.mark.parametrize("portrait", ["astronaut", "grace_hopper"])
@pytest.mark.parametrize("name", ["shot_cut", "approach_retreat", "side_to_side", "second_face"])
def test_real_stress_offline(portrait, name, real_drivers, portraits, still_tracker, identity, tmp_path):
    source, emb = portraits[portrait]
    driver, natural = real_drivers[name]
    images = _offline(source, driver, tmp_path)
    _assert_holds(sc.check_output(driver.name, images, natural, still_tracker, identity, emb))


class _Collect(Sink):
    name = "collect"

    def __init__(self) -> None:
        self.frames = []

    def send(self, image) -> None:
        self.frames.append(image.copy())

    def close(self) -> None:
        pass


def test_live_pipeline_survives_shot_cuts(hopper_source, still_tracker):
    """The live path (paced, threaded) under cuts to other places and sizes."""
    driver = stress.synthetic_cut()
    sink = _Collect()
    p = Pipeline(hopper_source, driver.source(), [sink], fps=driver.fps, pace=True)
    p.start()
    deadline = time.monotonic() + 3 * len(driver.frames) / driver.fps
    while p.running and time.monotonic() < deadline:
        time.sleep(0.05)
    p.stop()
    assert p.error is None and len(sink.frames) >= len(driver.frames) // 2
    natural = sc.driver_natural_jump(driver, still_tracker, hopper_source)
    _assert_holds(sc.check_output("live synthetic_cut", sink.frames, natural, still_tracker))
