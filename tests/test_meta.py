"""Reptile meta-learning and budgeted personalization."""

from __future__ import annotations

import copy

import cv2
import numpy as np
import pytest
import torch

from avatar_app.capture.synthetic import FacePose, synthetic_landmarks, timeline_pose
from avatar_app.capture.video import VideoFileSource
from avatar_app.face.retarget import Retargeter
from avatar_app.models.portrait import PortraitModel
from avatar_app.runtime.animator import GeometricAnimator
from avatar_app.train.config import TrainConfig
from avatar_app.train.adapt_cached import ALL_ADAPTED as ADAPTED
from avatar_app.train.meta import MetaTrainer
from avatar_app.train.personalize import CancelToken, ClipFrames, clip_frames, personalize
from avatar_app.train.inputs import FlowInputs

from test_trainer import TINY, ShiftedPairs

torch.set_num_threads(1)


def _tiny() -> PortraitModel:
    torch.manual_seed(0)
    return PortraitModel(config={"preset": "custom", **TINY})


def _animated_clip(source, n: int = 30, poses=None) -> ClipFrames:
    """A person's clip: the source face animated by the synthetic driver (exact landmarks), along its
    timeline or through ``poses``."""
    rt = Retargeter(source.landmarks)
    rt.calibrate(synthetic_landmarks(FacePose()))
    anim = GeometricAnimator(source)
    crops, points = [], []
    for pose in poses or [timeline_pose(1.0 + i * 0.15) for i in range(n)]:
        target = rt(synthetic_landmarks(pose))
        crops.append(anim.animate(target))
        points.append(target.points)
    return ClipFrames(crops, points, reference=0)


def test_one_reptile_step_moves_towards_the_adapted_weights(tmp_path, astronaut_source, hopper_source):
    data = FlowInputs(ShiftedPairs([astronaut_source, hopper_source], n=8))
    cfg = TrainConfig(stage="meta", model=TINY, batch_size=2, inner_steps=3, inner_lr=1e-3, meta_lr=0.5,
                      warmup_steps=0, schedule="constant", num_workers=0)
    trainer = MetaTrainer(cfg, tmp_path, train_set=data)
    assert len(trainer.tasks) == 2  # one task per identity (clip) in the data
    batches = trainer.task_batches(0)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    adapted, losses = trainer.adapt(batches)
    adapted_params = dict(adapted.named_parameters())
    trainer.reptile_step(batches)
    moved = 0
    for name, p in trainer.model.named_parameters():
        if name.startswith(ADAPTED):
            expected = before[name] + 0.5 * (adapted_params[name].detach() - before[name])
            assert torch.allclose(p, expected, atol=1e-7), name
            moved += int(not torch.equal(p, before[name]))
        else:
            assert torch.equal(p, before[name]), name  # the enhancer is not meta-learned
    assert moved > 0 and len(losses) == 3


def test_meta_batches_loaded_by_workers_are_the_serial_ones(tmp_path, astronaut_source, hopper_source):
    data = FlowInputs(ShiftedPairs([astronaut_source, hopper_source], n=8))
    cfg = TrainConfig(stage="meta", model=TINY, batch_size=2, inner_steps=3, num_workers=2)
    trainer = MetaTrainer(cfg, tmp_path, train_set=data)
    stream = trainer._task_stream(5)
    for step in (5, 6, 7):
        serial = trainer.task_batches(step)
        for want in serial:
            got = next(stream)
            assert got.keys() == want.keys()
            for key in want:
                assert torch.equal(got[key], want[key]), (step, key)
    assert trainer.task_indices(5) != trainer.task_indices(6)  # the steps differ: the check could fail


def _cast_clip(source) -> ClipFrames:
    clip = _animated_clip(source)
    # The clip is made by the analytic flow itself, which the untrained model reproduces
    # exactly; give the reference (source) frame a colour cast the rest of the clip lacks,
    # so there is a person-specific mapping to learn, as with real footage.
    clip.crops[0] = np.clip(clip.crops[0].astype(np.float32) * [1.15, 0.95, 0.8], 0, 255).astype(np.uint8)
    return clip


def test_personalization_lowers_heldout_loss(astronaut_source):
    # a fixed number of steps (not seconds), so the result does not depend on how busy the machine is;
    # measured here: l1 0.0740 -> 0.0729 (-1.5 %), PSNR +0.11 dB after 30 steps
    token = CancelToken()

    def progress(info):
        if info["step"] == 30:
            token.cancel()

    result = personalize(_cast_clip(astronaut_source), _tiny(), np.zeros(128, np.float32), budget_s=600,
                         batch_size=2, lr=3e-3, progress=progress, cancel=token)
    assert result.steps == 30
    assert result.after["l1"] < 0.99 * result.before["l1"], (result.before, result.after)
    assert result.after["psnr"] > result.before["psnr"] + 0.05, (result.before, result.after)


def test_personalization_stops_at_its_budget(astronaut_source):
    steps: list[dict] = []
    result = personalize(_cast_clip(astronaut_source), _tiny(), np.zeros(128, np.float32), budget_s=2.0,
                         batch_size=2, lr=3e-3, progress=steps.append)
    # (the budget includes building the CPU plan's cache, so a busy machine gets only a few steps)
    assert result.steps >= 2 and not result.cancelled
    slowest = max(b["elapsed"] - a["elapsed"] for a, b in zip(steps, steps[1:]))
    assert result.seconds <= 2.0 + slowest + 0.05  # stops at the budget (at most one step over)
    assert steps[-1]["eta"] == pytest.approx(max(0.0, 2.0 - steps[-1]["elapsed"]))


def test_cancel_stops_at_the_next_step(astronaut_source):
    clip = _animated_clip(astronaut_source, n=20)
    token = CancelToken()
    base = _tiny()
    snapshot = copy.deepcopy(base.state_dict())

    def progress(info):
        if info["step"] == 2:
            token.cancel()

    result = personalize(clip, base, np.zeros(128, np.float32), budget_s=60, batch_size=1, progress=progress,
                         cancel=token)
    assert result.cancelled and result.steps == 2
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in snapshot.items())  # the base is untouched


def write_clip_video(clip: ClipFrames, path):
    """The clip's crops centred in 640×480 frames, as a webcam recording would hold them."""
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (640, 480))
    for crop in clip.crops:
        canvas = np.full((480, 640, 3), 50, np.uint8)
        canvas[112:368, 192:448] = crop
        w.write(canvas)
    w.release()
    return path


def test_clip_frames_from_a_video(tmp_path, astronaut_source):
    clip = _animated_clip(astronaut_source, n=16)
    path = write_clip_video(clip, tmp_path / "me.mp4")
    frames = clip_frames(VideoFileSource(path))
    assert len(frames.crops) >= 14 and frames.crops[0].shape == (256, 256, 3)
    pts = np.stack(frames.points)
    assert pts[..., :2].min() > 0 and pts[..., :2].max() < 256


def test_a_recording_that_starts_mid_word_gives_a_profile_at_rest(tmp_path, astronaut_source):
    """The reference (a profile's portrait and neutral) is the recording's rest, not its first frame."""
    from avatar_app.face.mesh import mouth_opening
    from avatar_app.face.retarget import inter_ocular

    poses = [FacePose(jaw=0.8, brows=0.5), FacePose(jaw=0.6, blink_left=1.0, blink_right=1.0)]
    # then at rest two frames in three (moving a little), talking in the third
    poses += [FacePose(jaw=0.5, smile=0.4) if k % 3 == 2 else FacePose(roll=4.0 * np.sin(k)) for k in range(15)]
    path = write_clip_video(_animated_clip(astronaut_source, poses=poses), tmp_path / "me.mp4")
    clip = clip_frames(VideoFileSource(path))
    assert len(clip.crops) == len(poses)
    assert clip.reference >= 2 and (clip.reference - 2) % 3 != 2, clip.reference  # a frame at rest
    opening = [mouth_opening(p) for p in clip.points]
    assert opening[clip.reference] < opening[0] - 5.0  # px of a 256 crop (the first frame's jaw opened 9 px)
    # the neutral is that frame's face, in the recording's own pixels
    assert clip.neutral.image_size == (640, 480)
    ratio = lambda p: mouth_opening(p) / inter_ocular(p)  # noqa: E731  (the same in crop and camera px)
    assert ratio(clip.neutral.points) == pytest.approx(ratio(clip.points[clip.reference]), abs=1e-3)


def test_personalization_inputs_rasterise_each_frame_once_and_match_the_trainers(astronaut_source):
    """FrameFlowInputs (personalization) gives the same conditioning as FlowInputs (training),
    drawing each frame's landmark image and triangle map once, however many pairs use it."""
    from avatar_app.train.inputs import FrameFlowInputs
    from avatar_app.train.recording_pairs import FramePairs

    clip = _animated_clip(astronaut_source, n=6)
    pairs = [(0, 3), (2, 5), (0, 5), (3, 0)]
    cached = FrameFlowInputs(FramePairs(clip, list(range(6)), np.zeros(128, np.float32), pairs=pairs))

    class Plain(torch.utils.data.Dataset):  # the same pairs without the frame indices
        def __len__(self):
            return len(pairs)

        def __getitem__(self, i):
            return {k: v for k, v in cached.base[i].items() if not k.endswith("_frame")}

    plain = FlowInputs(Plain())
    for i in range(len(pairs)):
        a, b = plain[i], cached[i]
        assert a.keys() == b.keys()
        for key, value in a.items():
            assert value.dtype == b[key].dtype, key
            torch.testing.assert_close(b[key], value, rtol=0, atol=1e-6, msg=key)
    assert sorted(cached._frames) == [0, 2, 3, 5]  # four distinct frames, each drawn once


def test_resident_pairs_gather_what_the_items_collate_to(astronaut_source):
    """The full plan's device-held sampler (used on a GPU; here on the CPU) gives the same batch as
    collating FrameFlowInputs' items for the same pairs, and draws the reference as source about half the time."""
    from avatar_app.train.inputs import FrameFlowInputs
    from avatar_app.train.recording_pairs import FramePairs, ResidentPairs

    clip = _animated_clip(astronaut_source, n=6)
    pairs = [(0, 3), (2, 5), (0, 5), (3, 1)]
    items = FrameFlowInputs(FramePairs(clip, list(range(1, 6)), np.zeros(128, np.float32), pairs=pairs))
    expected = torch.utils.data.default_collate([items[i] for i in range(len(pairs))])
    resident = ResidentPairs(FrameFlowInputs(FramePairs(clip, list(range(1, 6)), np.zeros(128, np.float32))), "cpu")
    got = resident.pairs([a for a, _ in pairs], [b for _, b in pairs])
    for key, value in got.items():
        assert value.dtype == expected[key].dtype, key
        torch.testing.assert_close(value, expected[key], rtol=0, atol=1e-6, msg=key)
    drawn = resident.batch(400)
    from_reference = (drawn["source_points"] == resident.points[resident.row[0]]).flatten(1).all(1).float().mean()
    assert 0.35 < float(from_reference) < 0.65
    assert set(expected) - set(got) == {"clip"}
