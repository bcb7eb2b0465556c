"""Reptile whose inner loop is the CPU personalization plan (``inner_plan``, train/meta_tasks.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avatar_app.imaging import bgr_to_rgb_chw
from avatar_app.models.portrait import PortraitModel
from avatar_app.face.retarget import rest_frame
from avatar_app.train.adapt_cached import FULL_PLANS, PLANS, adapted_parameters, cache_picks
from avatar_app.train.config import TrainConfig
from avatar_app.train.inputs import FlowInputs
from avatar_app.train.meta import MetaTrainer
from avatar_app.train.meta_tasks import RecordingTasks
from avatar_app.train.personalize import training_indices

from test_meta import _animated_clip
from test_trainer import TINY, ShiftedPairs

torch.set_num_threads(1)
PLAN = "warp+decoder"


class _PersonClip:
    """A prepared clip's face (what ``load_clip`` gives) over in-memory frames."""

    def __init__(self, key: str, person: str, clip):
        self.key, self.identity, self._crops = key, person, clip.crops
        self.landmarks = np.stack(clip.points).astype(np.float32)
        self.valid = np.ones(len(clip.crops), bool)
        self.embedding = None

    def image(self, index: int) -> np.ndarray:
        return self._crops[index]


@pytest.fixture(params=["first"])
def trainer(request, tmp_path, astronaut_source, hopper_source):
    people = {"astronaut": [(_PersonClip("a", "astronaut", _animated_clip(astronaut_source, 24)), 25.0)],
              "hopper": [(_PersonClip("h", "hopper", _animated_clip(hopper_source, 24)), 25.0)]}
    # 20 frames recorded, 8 of them cached
    recordings = RecordingTasks(people, record_s=0.8, cache_frames=8, reference=request.param)
    cfg = TrainConfig(stage="meta", model=TINY, inner_plan=PLAN, inner_steps=3, meta_lr=0.5, warmup_steps=0,
                      schedule="constant", num_workers=0, batch_size=8, inner_lr=1.0, w_warped=0.0)
    return MetaTrainer(cfg, tmp_path, train_set=FlowInputs(ShiftedPairs([astronaut_source], n=4)),
                       recordings=recordings)


def test_the_inner_loop_adapts_the_plans_parameters_with_its_settings(trainer, monkeypatch):
    plan = PLANS[PLAN]
    names = sorted(adapted_parameters(trainer.model, plan))
    everything = [n for n, _ in trainer.model.named_parameters() if n.startswith(("warp.", "generator."))]
    assert trainer.adapted == names and len(names) < len(everything)  # a part: the check could fail
    cfg = trainer.cfg  # the plan's settings replace the config's (batch 8, lr 1, w_warped 0 above)
    assert (cfg.batch_size, cfg.inner_lr, cfg.warp_lr_scale, cfg.w_warped, cfg.w_ssim, cfg.w_gan) == (
        plan.batch_size, plan.lr, plan.warp_lr_scale, plan.w_warped, plan.w_ssim, 0.0)
    trainable = []  # the parameters taking gradients in each inner step
    forward = PortraitModel.warp_frame  # once per inner step (the cached plan's loss runs the warp network itself)

    def spy(self, *args, **kwargs):
        trainable.append(sorted(n for n, p in self.named_parameters() if p.requires_grad))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(PortraitModel, "warp_frame", spy)
    task = trainer.recordings.recording(0)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    adapted, losses = trainer.adapt_plan(task)
    changed = {n for n, p in adapted.named_parameters() if not torch.equal(p, before[n])}
    assert len(losses) == 3 and trainable == [names] * 3
    assert changed <= set(names), sorted(changed - set(names))[:5]  # nothing outside the plan adapted
    assert any(n.startswith("warp.") for n in changed) and any(n.startswith("generator.") for n in changed)


def test_the_outer_step_moves_only_the_plans_parameters(trainer, monkeypatch):
    """Whatever the inner loop returns, the outer step moves the plan's parameters part of the way and no other."""
    task = trainer.recordings.recording(0)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    adapted, losses = trainer.adapt_plan(task)
    with torch.no_grad():
        for p in adapted.parameters():  # as if every weight had moved in the inner loop
            p.add_(0.01)
    monkeypatch.setattr(trainer, "adapt_plan", lambda task, items=None: (adapted, losses))
    trainer.reptile_step(task=task)
    new = dict(adapted.named_parameters())
    plan = set(trainer.adapted)
    for name, p in trainer.model.named_parameters():
        if name in plan:
            torch.testing.assert_close(p, before[name] + 0.5 * (new[name].detach() - before[name]), msg=name)
        else:
            assert torch.equal(p, before[name]), name  # frozen in personalization: not meta-learned
    assert plan and any(n not in plan for n in before)


@pytest.mark.parametrize("trainer", ["first", "rest"], indirect=True)
def test_the_inner_loop_animates_one_fixed_source_the_recordings_reference_frame(trainer, monkeypatch):
    """The portrait is the recording's first frame, or (``inner_reference = "rest"``) the one the app takes."""
    sources = []
    forward = PortraitModel.warp_frame

    def spy(self, src, *args, **kwargs):
        sources.append(src.image.detach().clone())
        return forward(self, src, *args, **kwargs)

    monkeypatch.setattr(PortraitModel, "warp_frame", spy)
    first, rest = {}, trainer.recordings.reference == "rest"
    for step in range(4):
        task = trainer.recordings.recording(step)
        clip = trainer.recordings.clips[task.key]
        want = rest_frame([clip.landmarks[f] for f in task.frames]) if rest else 0
        assert task.reference == want
        sources.clear()
        trainer.adapt_plan(task)
        reference = torch.from_numpy(bgr_to_rgb_chw(clip.image(task.frames[want])))
        assert len(sources) == trainer.cfg.inner_steps
        for s in sources:  # every sample of every inner step animates the recording's reference frame
            assert s.shape[0] == trainer.cfg.batch_size
            assert all(torch.equal(x, reference) for x in s)
        # personalization's held-out rule and its picks
        assert task.train == cache_picks(training_indices(len(task.frames), want), 8)
        assert len(task.train) == 8 and not any(i % 10 == 9 and i != want for i in task.train)
        first[(task.key, task.frames[want])] = reference
    assert len(first) > 1  # different tasks, different sources: the check could fail
    if rest:  # the rest frame is not the first one in every recording: the check could fail
        assert any(trainer.recordings.recording(s).reference != 0 for s in range(4))


def test_tasks_loaded_by_workers_are_the_serial_ones(trainer):
    trainer.cfg.num_workers = 1
    stream = trainer._task_stream(3)
    for step in (3, 4):
        task, items = next(stream)
        want = trainer.recordings.recording(step)
        assert task == want
        serial = trainer.recordings.inputs(want)
        assert len(items) == len(serial) == len(want.train)
        for k in range(len(serial)):
            for key, value in serial[k].items():
                assert torch.equal(items[k][key], value), (step, k, key)
    assert trainer.recordings.recording(3) != trainer.recordings.recording(4)  # the check could fail


def test_the_gpus_plan_as_inner_loop_adapts_every_weight_on_pairs_of_the_recordings_frames(tmp_path, astronaut_source,
                                                                                          hopper_source, monkeypatch):
    """``inner_plan = "full"``: personalization's GPU plan on a recording -- every warp and generator weight, random
    pairs of the recording's (cached) frames with its first frame the source half the time, the plan's settings."""
    people = {"astronaut": [(_PersonClip("a", "astronaut", _animated_clip(astronaut_source, 24)), 25.0)],
              "hopper": [(_PersonClip("h", "hopper", _animated_clip(hopper_source, 24)), 25.0)]}
    recordings = RecordingTasks(people, record_s=0.8, cache_frames=8)
    cfg = TrainConfig(stage="meta", model=TINY, inner_plan="full", inner_steps=6, meta_lr=0.5, warmup_steps=0,
                      schedule="constant", num_workers=0, batch_size=8, inner_lr=1.0, amp=False)
    trainer = MetaTrainer(cfg, tmp_path, train_set=FlowInputs(ShiftedPairs([astronaut_source], n=4)),
                          recordings=recordings)
    plan = FULL_PLANS["full"]
    assert (trainer.cfg.batch_size, trainer.cfg.inner_lr, trainer.cfg.warp_lr_scale) == (
        plan.batch_size, plan.lr, plan.warp_lr_scale)
    everything = sorted(n for n, _ in trainer.model.named_parameters() if n.startswith(("warp.", "generator.")))
    assert sorted(trainer.adapted) == everything
    task = trainer.recordings.recording(0)
    clip = trainer.recordings.clips[task.key]
    frames = {bytes(bgr_to_rgb_chw(clip.image(task.frames[i])).tobytes()) for i in task.train}
    seen = []
    losses_of = trainer.compute_losses

    def spy(batch, *args, **kwargs):
        seen.append((batch["source"].detach().clone(), batch["driving"].detach().clone()))
        return losses_of(batch, *args, **kwargs)

    monkeypatch.setattr(trainer, "compute_losses", spy)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    adapted, losses = trainer.adapt_plan(task)
    assert len(losses) == 6 and len(seen) == 6
    assert all(s.shape[0] == plan.batch_size for s, _ in seen)
    images = [x for s, d in seen for x in list(s) + list(d)]
    assert all(bytes(x.numpy().tobytes()) in frames for x in images)  # only the recording's cached frames
    reference = bytes(bgr_to_rgb_chw(clip.image(task.frames[0])).tobytes())
    sources = [bytes(x.numpy().tobytes()) for s, _ in seen for x in s]
    assert 0 < sum(x == reference for x in sources) < len(sources)  # the first frame is the source some of the time
    changed = {n for n, p in adapted.named_parameters() if not torch.equal(p, before[n])}
    assert any(n.startswith("warp.code") for n in changed) and any(n.startswith("generator.") for n in changed)
