"""The personalization measuring tools in tools/ (their own paths through the model must be the model's)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from avatar_app.train.adapt_cached import FrameCache
from avatar_app.train.config import TrainConfig
from avatar_app.train.personalize import _score, frame_items
from avatar_app.train.trainer import Trainer

from test_meta import _cast_clip
from test_personalize_fast import _trained_like

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
torch.set_num_threads(1)


def test_the_variant_tools_window_over_the_whole_frame_is_the_models_frame(astronaut_source):
    """tools/cpu_variants.py decodes a window of the frame to make a step cheaper (docs/PERSONALIZATION_ROUNDS.md,
    third round); over the whole frame its windowed path must be the model's own frame, and a window its crop's size."""
    from cpu_variants import image_of

    model, clip = _trained_like().eval(), _cast_clip(astronaut_source)
    cache = FrameCache(model, clip, [3, 7], np.zeros(128, np.float32), -1)
    b = cache.batch([0, 1])
    with torch.no_grad():
        want = model.forward_frame(b["source"], b["cond"], b["grid"], b["mouth"], b["coord"], b["mouth_amount"], b["big"])
        whole, part = image_of(model, b, (0, 0, 256)), image_of(model, b, (64, 32, 128))
    assert torch.allclose(whole, want["image"], atol=1e-6) and part.shape == (2, 3, 128, 128)


def test_the_later_error_tool_renders_and_scores_as_personalization_does(astronaut_source):
    """tools/later_error.py (docs/PERSONALIZATION_PLATEAU.md) renders the later frames through personalization's
    scoring: its images must be the trainer's frames and its PSNR personalization's, and each frame's face mask the
    hull of that frame's own driving landmarks."""
    from later_error import face_masks, render

    from avatar_app.train.personalize import frame_psnr

    model, clip = _trained_like().eval(), _cast_clip(astronaut_source)
    items = frame_items(clip, [(0, 3), (0, 7), (0, 11)], np.zeros(128, np.float32))
    cfg = TrainConfig(stage="meta", batch_size=2, num_workers=0, w_gan=0.0)
    trainer = Trainer(cfg, None, train_set=items, model=model)
    b = trainer._to_device(torch.utils.data.default_collate(items))
    with torch.no_grad():
        want = trainer._frame(model, b)["image"].clamp(0, 1)
    got, truth = render(trainer, model, items)
    assert torch.allclose(got, want, atol=1e-6) and torch.equal(truth, b["driving"])
    assert abs(float(frame_psnr(got, truth).mean()) - _score(trainer, model, items)["psnr"]) < 1e-4
    masks = face_masks(items)
    assert 0.1 < float(masks.float().mean()) < 0.7
    for k, it in enumerate(items):
        pts = np.asarray(it["driving_points"])[:, :2].round().astype(int).clip(0, 255)
        assert masks[k][pts[:, 1], pts[:, 0]].float().mean() > 0.97
    moved = [dict(it, driving_points=it["driving_points"] + torch.tensor([40.0, 0.0, 0.0])) for it in items]
    assert (face_masks(moved) != masks).float().mean() > 0.05  # a mask follows its own frame's landmarks


def test_the_coverage_tool_measures_how_far_later_faces_sit_from_the_nearest_recorded_one():
    """tools/recording_coverage.py (docs/PERSONALIZATION_REAL_FACES.md): each later face's distance to the nearest
    recorded face, by the points' means, averaged and in face sizes; a later face where the recording went adds 0."""
    from recording_coverage import coverage_gap

    face = np.random.default_rng(0).normal(size=(478, 3))
    at = lambda x, y: face + [x, y, 0.0]  # noqa: E731
    recorded = [at(0, 0), at(1, 0)]
    assert coverage_gap(recorded, [at(0, 0), at(1, 0)], 1.0) == pytest.approx(0.0, abs=1e-9)
    assert coverage_gap(recorded, [at(0, 0), at(4, 0)], 2.0) == pytest.approx((0 + 3) / 2 / 2)
    assert coverage_gap(recorded, [at(0.5, 2)], 1.0) == pytest.approx(np.hypot(0.5, 2))


def test_the_coverage_tool_reads_a_recordings_spread_and_yaw_range():
    """tools/recording_coverage.py's recording-only figures: the faces' mean distance from their median place, in
    face sizes, and the 5th-95th percentile range of the head's yaw."""
    from recording_coverage import spread, yaw_range

    from avatar_app.face.mesh import topology

    face = topology().neutral.astype(np.float64) * 100.0
    at = lambda x, y: face + [x, y, 0.0]  # noqa: E731
    assert spread([at(0, 0), at(1, 0), at(2, 0)], 2.0) == pytest.approx((1 + 0 + 1) / 3 / 2)
    assert spread([at(3, 3)] * 4, 1.0) == pytest.approx(0.0, abs=1e-9)

    def turned(deg):
        a = np.radians(deg)
        rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
        return face @ rot.T

    assert yaw_range([turned(d) for d in np.linspace(-10, 10, 21)]) == pytest.approx(18.0, abs=0.2)
    assert yaw_range([turned(5.0)] * 5) == pytest.approx(0.0, abs=1e-6)


def test_a_curve_variant_changes_only_the_fields_it_names_and_refuses_what_is_not_a_plan():
    """tools/personalize_curve.py --variant NAME=PLAN:FIELD=VALUE,... (tools/plan_variants.sh's runs): the named
    plan with those fields changed; an unknown plan, an unknown field or a combination Plan refuses exits with the
    reason, not a traceback."""
    from personalize_curve import plan_variant

    from avatar_app.train.adapt_cached import FULL_PLANS, PLANS

    v = plan_variant("w1", "warp+decoder:w_warped=1.5,decay=0,frozen=.spade.")
    base = PLANS["warp+decoder"]
    assert (v.name, v.w_warped, v.decay, v.frozen) == ("w1", 1.5, False, (".spade.",))
    assert (v.lr, v.batch_size, v.start, v.params) == (base.lr, base.batch_size, base.start, base.params)
    assert plan_variant("fd", "full:decay=1").decay is True and FULL_PLANS["full"].decay is False
    for spec, says in (("warp+decodr:", "'warp+decodr' is not a plan"),
                       ("warp+decoder:rate=1", "'rate' is not a field"),
                       ("warp+decoder:decode=0", "only a 'warp' plan")):
        with pytest.raises(SystemExit, match=re.escape(says)):
            plan_variant("x", spec)
