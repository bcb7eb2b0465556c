"""Brows under a fringe (face/brows.py): hair over a portrait's brow does not move with the driver's brow."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest

from avatar_app.capture.synthetic import FacePose, synthetic_landmarks
from avatar_app.face.brows import brow_follow, portrait_brow_follow
from avatar_app.face.mesh import eye_centers, topology
from avatar_app.face.retarget import Retargeter, RetargetOptions
from avatar_app.runtime.animator import GeometricAnimator, retarget_options
from avatar_app.types import Landmarks

CLIPS = Path(os.environ.get("AVATAR_APP_REAL_CLIPS",
                           Path(__file__).resolve().parents[2] / "shared" / "data" / "real_clips"))
HAIR = (28, 30, 34)  # BGR: dark brown hair


def _fringe(source, share: float = 1.0):
    """``source``'s crop with hair painted over its right brow (the image's left), from the crop's top down to the
    brow's lower row: over all of the brow's width (a fringe), or over its outer ``share`` (a lock)."""
    crop = source.crop.copy()
    pts = source.landmarks.points[:, :2]
    brow = pts[topology().right_brow]
    x_out, x_in = brow[:, 0].min(), brow[:, 0].max()  # the right brow's inner end is towards the nose (larger x)
    x_to = x_in + 2 if share == 1.0 else x_out + share * (x_in - x_out)
    bottom = int(brow[:, 1].max() + 1)
    assert bottom < eye_centers(pts)[0][1]  # the eye stays clear
    crop[:bottom, int(x_out - 2):int(x_to)] = HAIR
    return dataclasses.replace(source, crop=crop, extras={})


def test_brows_with_skin_above_follow_and_a_brow_under_a_fringe_holds(hopper_source):
    assert brow_follow(hopper_source.crop, hopper_source.landmarks.points) == (1.0, 1.0)
    assert brow_follow(_fringe(hopper_source).crop, hopper_source.landmarks.points) == (0.0, 1.0)
    # a lock over the brow's outer end (the rest shows skin above) leaves it moving
    assert brow_follow(_fringe(hopper_source, share=0.3).crop, hopper_source.landmarks.points) == (1.0, 1.0)


def test_the_held_brow_keeps_the_portraits_place_and_nothing_else_changes(hopper_source):
    """A driver raising only their brows (every other point still): a held right brow (0) stays where the portrait
    has it, a half-held one goes half as far, and every other point is where it is without holding (but for the
    fold limit's nudge to a point or two beside the brow, a tenth of a pixel)."""
    topo = topology()
    neutral = synthetic_landmarks(FacePose())
    pts = neutral.points.copy()
    pts[np.concatenate([topo.right_brow, topo.left_brow]), 1] -= 8.0  # up (driver px)
    raised = Landmarks(pts, neutral.image_size)
    out = {}
    for follow in ((1.0, 1.0), (0.0, 1.0), (0.5, 1.0)):
        rt = Retargeter(hopper_source.landmarks, RetargetOptions(brow_follow=follow, rest_frames=0))
        rt.calibrate(neutral)
        out[follow] = rt(raised).points.astype(np.float64)
    right, source = topo.right_brow, hopper_source.landmarks.points.astype(np.float64)
    moved = out[1.0, 1.0][right] - source[right]
    assert np.linalg.norm(moved, axis=1).min() > 3.0  # the driver's raised brows move an unheld brow
    assert np.abs(out[0.0, 1.0][right] - source[right]).max() < 1e-3
    half = np.abs(out[0.5, 1.0][right] - source[right] - moved / 2)
    assert np.median(half) < 1e-3 and half.max() < 0.15  # (the fold limit nudges a point by 0.1 px here)
    others = np.setdiff1d(np.arange(len(source)), right)
    rest = np.linalg.norm(out[0.0, 1.0][others] - out[1.0, 1.0][others], axis=1)
    assert (rest > 1e-3).sum() <= 3 and rest.max() < 0.15, (np.sort(rest)[-5:])


def test_every_path_that_pairs_a_retargeter_with_an_animator_takes_the_portraits_brows(hopper_source):
    fringed = _fringe(hopper_source)
    assert retarget_options(GeometricAnimator(hopper_source)).brow_follow == (1.0, 1.0)
    options = retarget_options(GeometricAnimator(fringed), RetargetOptions(eye_contact=True))
    assert options.brow_follow == (0.0, 1.0) and options.eye_contact
    assert fringed.extras["brow_follow"] == (0.0, 1.0) and portrait_brow_follow(fringed) == (0.0, 1.0)
    with pytest.raises(ValueError, match="brow_follow"):
        RetargetOptions(brow_follow=(1.5, 1.0))
    assert RetargetOptions(brow_follow=np.array([0.5, 1.0])).brow_follow == (0.5, 1.0)  # a tuple, whatever came


def test_a_pipeline_that_changes_portrait_takes_the_new_portraits_brows(hopper_source):
    from avatar_app.capture.synthetic import SyntheticDriver
    from avatar_app.runtime.pipeline import Pipeline

    pipe = Pipeline(hopper_source, SyntheticDriver())
    assert pipe._options.brow_follow == (1.0, 1.0)
    pipe.set_source(_fringe(hopper_source))
    assert pipe._options.brow_follow == (0.0, 1.0) and pipe._retarget.options.brow_follow == (0.0, 1.0)


@pytest.mark.skipif(not (CLIPS / "MANIFEST.tsv").is_file(),
                    reason="the real clips (../shared/data/real_clips) are not here")
def test_a_real_fringe_holds_the_brow_under_it(still_tracker):
    """hm_jgz (a validation person): her fringe hides her right brow; her left brow shows skin above."""
    from avatar_app.face.source import prepare_source
    from avatar_app.train import stress_checks as sc

    people = dict(sc.validation_portraits(CLIPS, 3))
    if "hm_jgz" not in people:
        pytest.skip("hm_jgz is not among the validation people here")
    for size in (256, 512):
        right, left = portrait_brow_follow(prepare_source(people["hm_jgz"], size, tracker=still_tracker))
        assert right < 0.1 and left > 0.9, (size, right, left)
