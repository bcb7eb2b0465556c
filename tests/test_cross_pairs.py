"""Pairs driven by another person (train/cross_pairs.py, issue 13): drawn from another identity,
retargeted as the app retargets, drawn as the app draws, no ground truth, the source's identity as
the identity loss's target; on the resident pairs run on the CPU over a small synthetic dataset."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from avatar_app.errors import InputFileError
from avatar_app.face.align import similarity_fit
from avatar_app.face.mesh import MouthFill, topology
from avatar_app.face.retarget import MOTION_LIMITS, Retargeter
from avatar_app.models.conditioning import landmark_image
from avatar_app.models.flow import rasterize_triangles
from avatar_app.train.config import TrainConfig
from avatar_app.train.cross_pairs import CrossMotion, draw_cross, retarget_rows
from avatar_app.train.resident import ResidentPairs
from avatar_app.types import Landmarks

from conftest import three_portrait_dataset


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return three_portrait_dataset(tmp_path_factory, frames=8)


def _face(scale: float = 90.0) -> np.ndarray:
    return (topology().neutral.astype(np.float64) * scale + 128.0).astype(np.float32)


def _trainer_with_identity(identity: torch.nn.Module, cfg: TrainConfig, root: Path, out: Path):
    """A CPU trainer whose identity loss is ``identity`` (it stands in for dlib's ResNet, whose model file the tests
    do not have)."""
    import avatar_app.train.trainer as trainer_module

    real = trainer_module.IdentityLoss
    trainer_module.IdentityLoss = lambda *_: identity
    try:
        return trainer_module.Trainer(cfg, out, data=root, device="cpu")
    finally:
        trainer_module.IdentityLoss = real


def test_cross_rows_are_driven_by_another_person():
    # 4 people, person p owns clips 2p and 2p+1; each clip's valid frames are its own 10 global indices
    person_of = np.repeat(np.arange(4), 2)
    clips_of = [np.array([2 * p, 2 * p + 1]) for p in range(4)]
    valid = [np.arange(10 * c, 10 * c + 10) for c in range(8)]
    clip = np.random.default_rng(0).integers(8, size=2000)
    cross = draw_cross(person_of, clip, clips_of, valid, 0.3, np.random.default_rng(1))
    assert 0.25 < len(cross.rows) / 2000 < 0.35
    for row, a, b in zip(cross.rows, cross.neutral, cross.driving):
        other = a // 10  # the clip both frames come from
        assert b // 10 == other and person_of[other] != person_of[clip[row]]
    assert len({int(person_of[a // 10]) for a in cross.neutral}) == 4  # every other person gets drawn
    # with hard pairs, the driving frame is the hardest-pick's, from the neutral and that clip's frames
    picked = []
    hard = draw_cross(person_of, clip[:50], clips_of, valid, 1.0, np.random.default_rng(2),
                      lambda n, choices, rng: picked.append((n, choices)) or int(choices[-1]), hard_share=1.0)
    assert len(hard.rows) == 50 and len(picked) == 50
    assert all(d == choices[-1] and n // 10 == choices[0] // 10 for d, (n, choices) in zip(hard.driving, picked))
    # one person only: nobody else to be driven by
    alone = draw_cross(np.zeros(2, int), np.array([0, 1, 0]), [np.array([0, 1])], valid[:2], 1.0,
                       np.random.default_rng(3))
    assert len(alone.rows) == 0


def test_retargeting_carries_the_other_persons_motion_not_their_face():
    source = _face(80.0)
    other = _face(100.0)
    other[:, 0] += 20.0
    upper, lower = topology().lips_inner_upper[1:-1], topology().lips_inner_lower[1:-1]  # the corners are in both
    other[lower, 1] += 3.0  # another face shape, mouth a little open at rest
    rigid = topology().rigid
    # no motion: the source as it is
    still = retarget_rows(source[None], other[None], other[None], 256)[0]
    assert np.abs(still - source).max() < 1e-3
    # the other person leans in 1.2x about their face's centre and opens their mouth by 6 px more
    centre = other[rigid].mean(0)
    moved = (other - centre) * 1.2 + centre
    moved[lower, 1] += 6.0 * 1.2
    target = retarget_rows(source[None], other[None], moved[None], 256)[0]
    s, _, _ = similarity_fit(source[rigid].astype(np.float64), target[rigid].astype(np.float64))
    assert s == pytest.approx(1.2, rel=0.01)  # inside the motion limits' knee: carried as it is
    gap = lambda p: float(np.mean(p[lower, 1] - p[upper, 1]))  # noqa: E731
    # the mouth opens by the other person's change, scaled to the source's face (80 / 100) and zoomed 1.2x
    assert gap(target) - 1.2 * gap(source) == pytest.approx(6.0 * 0.8 * 1.2, rel=0.05)
    # the app's retargeting, with its motion limits: a 2x approach is held under the zoom limit
    near = (other - centre) * 2.0 + centre
    far = retarget_rows(source[None], other[None], near[None], 256)[0]
    assert 1.2 < similarity_fit(source[rigid].astype(np.float64), far[rigid].astype(np.float64))[0] < MOTION_LIMITS.zoom
    app = Retargeter(Landmarks(source, (256, 256)))
    app.calibrate(Landmarks(other, (256, 256)))
    assert np.allclose(far, app(Landmarks(near, (256, 256))).points, atol=1e-4)


def test_cross_pairs_are_drawn_as_the_app_draws_them_and_have_no_ground_truth(root):
    pairs = ResidentPairs(root, "all", device="cpu", workers=1, cross_pairs=1.0)
    assert len(pairs.people) == 3
    batch = pairs.batch(6, np.random.default_rng(5))
    assert batch["cross"].all()
    assert float(batch["mask"].abs().sum()) == 0.0  # no pixel of these pairs is a ground truth
    own = pairs.points[0].numpy()
    for k in range(6):
        sp, dp = batch["source_points"][k].numpy(), batch["driving_points"][k].numpy()
        assert np.abs(own - dp[None]).max(axis=(1, 2)).min() > 1.0  # not a frame of the data
        want = np.rint(landmark_image(dp, 256) * 255.0)  # drawn from the retargeted landmarks
        assert np.mean(np.abs(batch["driving_cond"][k].numpy() * 255.0 - want) > 1.5) < 0.002
        assert np.mean(batch["tri_ids"][k].numpy() != rasterize_triangles(dp, topology().triangles, 256)) < 0.002
        assert float(batch["mouth_amount"][k]) == pytest.approx(MouthFill(sp, 256)(dp), abs=1e-5)
    # off: a batch is the pairs drawn and assembled with the same random numbers as before cross pairs existed
    plain = ResidentPairs(root, "all", device="cpu", workers=1)
    a = plain.batch(6, np.random.default_rng(5))
    rng = np.random.default_rng(5)
    b = plain.assemble(*plain.draw(6, rng), rng)
    assert "cross" not in a and a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
    # half of them: the other rows keep their own frame, ground truth and all
    half = ResidentPairs(root, "all", device="cpu", workers=1, cross_pairs=0.5).batch(40, np.random.default_rng(6))
    rows = half["cross"].numpy()
    assert 0 < rows.sum() < 40
    assert (half["mask"][~half["cross"]].flatten(1).amax(1) > 0).all()
    assert float(half["mask"][half["cross"]].abs().sum()) == 0.0


def test_the_other_persons_frames_are_taken_flipped_with_the_source_and_retargeted_onto_it(root):
    pairs = ResidentPairs(root, "all", device="cpu", workers=1, cross_pairs=1.0)
    rng = np.random.default_rng(9)
    clip, src, drv = pairs.draw(4, rng)
    out = pairs.assemble(clip, src, drv, None)  # no augmentation: the source as stored, unflipped
    for k in range(4):  # the source moved as augmentation would move it: the target follows the moved source
        out["source_points"][k, :, :2] = out["source_points"][k, :, :2] * 0.9 + 10.0 * k
    person = pairs._person_of[clip]
    others = [next(c for c in range(len(pairs.clips)) if pairs._person_of[c] != person[k]) for k in range(4)]
    neutral = np.array([pairs._valid[c][0] for c in others])
    driving = np.array([pairs._valid[c][-1] for c in others])
    flip = torch.tensor([0, 1, 1, 0])  # rows 1 and 2 are mirrored pairs: so is the other person's motion
    pairs._cross(out, CrossMotion(np.array([0, 1, 2]), neutral[:3], driving[:3]), flip)
    want = retarget_rows(out["source_points"][:3].numpy(), pairs.points[flip[:3], neutral[:3]].numpy(),
                         pairs.points[flip[:3], driving[:3]].numpy(), 256)
    assert np.allclose(out["driving_points"][:3].numpy(), want, atol=1e-4)
    unflipped = retarget_rows(out["source_points"][1:2].numpy(), pairs.points[0, neutral[1:2]].numpy(),
                              pairs.points[0, driving[1:2]].numpy(), 256)
    assert np.abs(out["driving_points"][1].numpy() - unflipped[0]).max() > 1.0  # the flip matters here
    assert out["cross"].tolist() == [True, True, True, False]
    assert float(out["mask"][3].sum()) > 0  # row 3 keeps its ground truth


def test_image_losses_and_the_discriminator_leave_cross_rows_out(root, tmp_path):
    from avatar_app.train.trainer import Trainer

    with pytest.raises(InputFileError, match="perceptual"):
        TrainConfig(stage="full", preset="lite", cross_pairs=0.5, w_id=0.5, perceptual_weights="vgg.safetensors")
    cfg = TrainConfig(stage="full", preset="lite", steps=1, batch_size=4, resident=True, val_fraction=0.34,
                      w_id=0.0, w_warped=0.5, w_gan=0.1, val_every=1000, ckpt_every=1000)
    trainer = Trainer(cfg, tmp_path / "run", data=root, device="cpu")
    pairs = trainer.train_set
    pairs.cross_pairs = 0.5  # (the config refuses cross pairs without the identity loss, which needs dlib's model)
    b = pairs.batch(8, np.random.default_rng(12))
    cross = b["cross"]
    assert 0 < int(cross.sum()) < 8
    out = b["driving"].clone().requires_grad_(True)
    parts = trainer._image_losses(out, torch.rand_like(out), b["driving_cond"], b["mask"])
    sum(parts.values()).backward()
    per_row = out.grad.abs().flatten(1).sum(1)
    assert (per_row[cross] == 0).all() and (per_row[~cross] > 0).all()
    # and the rows with a real frame weigh as much as they would alone: no term is diluted by the cross share
    gt, own = torch.rand_like(out), ~cross
    whole = trainer._image_losses(out.detach(), gt, b["driving_cond"], b["mask"])
    alone = trainer._image_losses(out.detach()[own], gt[own], b["driving_cond"][own], b["mask"][own])
    assert whole.keys() == alone.keys() and {"eyes", "mouth"} <= whole.keys()
    for name in whole:
        assert torch.allclose(whole[name], alone[name], rtol=1e-5, atol=1e-7), name
    judged = []
    forward = trainer.disc.forward
    trainer.disc.forward = lambda image, cond: judged.append((len(image), len(cond))) or forward(image, cond)
    trainer.train_step(b)
    n = 8 - int(cross.sum())
    assert judged == [(n, n)] * 4  # generator side: fake and real; discriminator step: real and fake
    pairs.cross_pairs = 1.0  # nothing with a real frame: no adversarial terms, no discriminator step
    judged.clear()
    losses = trainer.train_step(pairs.batch(4, np.random.default_rng(13)))
    assert judged == [] and "gan" not in losses and "d" not in losses


def test_identity_of_a_cross_pair_is_measured_against_its_source(root, tmp_path):
    with pytest.raises(InputFileError, match="w_id"):
        TrainConfig(stage="full", preset="lite", cross_pairs=0.5)
    with pytest.raises(InputFileError, match="share"):
        TrainConfig(stage="full", preset="lite", cross_pairs=1.5, w_id=0.5)
    cfg = TrainConfig(stage="full", preset="lite", steps=1, batch_size=4, resident=True, val_fraction=0.34,
                      w_id=0.5, cross_pairs=0.5, val_every=1000, ckpt_every=1000, w_gan=0.0)
    calls = []

    class Recorder(torch.nn.Module):  # stands in for dlib's ResNet: what the loss is asked to compare
        def forward(self, output, target, points, target_points=None):
            calls.append((output.detach(), target, points, target_points))
            return (output - output.detach()).sum() + 0.25

    trainer = _trainer_with_identity(Recorder(), cfg, root, tmp_path / "run")
    assert trainer.train_set.cross_pairs == 0.5 and trainer.val_set.cross_pairs == 0.0
    b = trainer.train_set.batch(8, np.random.default_rng(11))
    cross = b["cross"]
    assert 0 < int(cross.sum()) < 8
    _, parts = trainer.compute_losses(b)
    assert float(parts["identity"].detach()) == pytest.approx(0.5 * 0.25)
    _, target, points, target_points = calls[-1]
    assert torch.equal(points, b["driving_points"])  # the output is cut by its own (retargeted) landmarks
    for k in range(8):
        want, want_points = (b["source"], b["source_points"]) if cross[k] else (b["driving"], b["driving_points"])
        assert torch.equal(target[k], want[k]) and torch.equal(target_points[k], want_points[k])
    trainer.fit(progress=False)  # a training step with cross pairs
    assert trainer.step == 1


@pytest.mark.skipif(importlib.util.find_spec("face_recognition_models") is None,
                    reason="face_recognition_models is not installed (pip install face-recognition-models)")
def test_the_identity_loss_cuts_each_image_by_its_own_landmarks_when_given_two_sets(astronaut_source):
    from avatar_app.train.losses import IdentityLoss

    loss = IdentityLoss()
    rgb = torch.from_numpy(np.ascontiguousarray(astronaut_source.crop[:, :, ::-1])).permute(2, 0, 1)[None].float() / 255
    points = torch.from_numpy(astronaut_source.landmarks.points)[None]
    moved = torch.roll(rgb, shifts=(12, -9), dims=(2, 3))  # the same face elsewhere in the frame
    moved_points = points.clone()
    moved_points[..., 0] -= 9.0
    moved_points[..., 1] += 12.0
    assert float(loss(moved, rgb, moved_points, points)) < 0.05  # each cut by its own landmarks: the same face
    assert float(loss(moved, rgb, moved_points)) > 0.2  # both cut where the output's face is: the target is off


@pytest.mark.parametrize("cross_warp", [False, True])
def test_cross_rows_train_the_warp_only_when_asked(root, tmp_path, cross_warp):
    """What a pair driven by another person teaches reaches the generator; the warp learns motion from real frames
    unless ``cross_warp`` (its identity gradient taught it to follow less: docs/MOTION_CROSS_PAIRS.md §7.6)."""
    cfg = TrainConfig(stage="full", preset="lite", steps=1, batch_size=4, resident=True, val_fraction=0.34,
                      w_id=0.5, cross_pairs=0.5, cross_warp=cross_warp, w_gan=0.0, w_warped=0.0, w_blend=0.0,
                      val_every=1000, ckpt_every=1000)
    rows = {}

    class CrossOnly(torch.nn.Module):  # stands in for dlib's ResNet: a loss on the cross rows' output alone
        def forward(self, output, target, points, target_points=None):
            return output[rows["cross"]].float().square().mean()

    trainer = _trainer_with_identity(CrossOnly(), cfg, root, tmp_path / "run")
    b = trainer.train_set.batch(8, np.random.default_rng(11))
    rows["cross"] = b["cross"]
    assert 0 < int(b["cross"].sum()) < 8
    _, parts = trainer.compute_losses(b)
    parts["identity"].backward()

    def grad(module):
        return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)

    assert grad(trainer.model.generator) > 0
    assert (grad(trainer.model.warp) > 0) == cross_warp
    trainer.model.zero_grad(set_to_none=True)  # the self rows still train the warp
    trainer.compute_losses(b)[1]["l1"].backward()
    assert grad(trainer.model.warp) > 0
