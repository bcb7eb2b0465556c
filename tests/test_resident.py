"""GPU-resident training pairs (train/resident.py), run on the CPU on a small synthetic dataset,
and the pieces real-video training added: people files, frame masks, masked losses and metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from avatar_app.errors import InputFileError
from avatar_app.face.align import CropBox
from avatar_app.models.conditioning import landmark_image
from avatar_app.models.flow import AnalyticFlow, rasterize_triangles
from avatar_app.face.mesh import MouthFill, topology
from avatar_app.models.portrait import PortraitModel, load_checkpoint, save_checkpoint
from avatar_app.train.clipio import clip_frame_mask, inside_frame_mask
from avatar_app.train.config import TrainConfig
from avatar_app.train.data import PreparedDataset
from avatar_app.train.fit_clock import FitClock
from avatar_app.train.losses import ms_ssim_loss, pyramid_l1
from avatar_app.train.metrics import l1, psnr, ssim
from avatar_app.train.resident import ResidentPairs, mirror_points, people_split_summary
from avatar_app.train.trainer import Trainer

from conftest import three_portrait_dataset

@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    out = three_portrait_dataset(tmp_path_factory, frames=6)
    # pretend the first clip was cut from a small video: its crop reaches past the frame's top and left
    first = sorted((out / "clips").iterdir())[0]
    meta = json.loads((first / "meta.json").read_text())
    cx, cy = meta["crop"]["center"]
    meta["frame_size"] = [int(cx + meta["crop"]["side"]), int(cy + meta["crop"]["side"])]
    meta["crop"]["center"] = [meta["crop"]["side"] * 0.3, meta["crop"]["side"] * 0.3]
    (first / "meta.json").write_text(json.dumps(meta))
    return out


@pytest.fixture(scope="module")
def train_set(root) -> ResidentPairs:
    return ResidentPairs(root, "train", val_fraction=0.34, device="cpu", workers=1)


def test_a_process_pool_renders_what_this_process_does(root, train_set, monkeypatch):
    """Big datasets render their landmark images and triangle maps in spawned workers, small ones in
    this process (a worker's start costs more than a few frames); both give the same bytes."""
    import avatar_app.train.resident as resident

    monkeypatch.setattr(resident, "FRAMES_PER_WORKER", 1)  # a pool even for this dataset's frames
    pooled = ResidentPairs(root, "train", val_fraction=0.34, device="cpu", workers=2)
    assert torch.equal(pooled.cond, train_set.cond) and torch.equal(pooled.tri, train_set.tri)
    assert int(train_set.tri.max()) > 0 and int(train_set.cond.max()) > 0  # something was drawn


def test_split_by_person_and_batch_layout(root, train_set):
    val = ResidentPairs(root, "val", val_fraction=0.34, device="cpu", workers=1)
    assert set(train_set.people).isdisjoint(val.people) and train_set.people and val.people
    summary = people_split_summary(root, 0.34)
    assert summary["train"]["people"] == train_set.people and summary["val"]["people"] == val.people
    b = train_set.batch(5, np.random.default_rng(0))
    assert b["source"].shape == b["driving"].shape == (5, 3, 256, 256) and b["source"].dtype == torch.float32
    assert b["source_cond"].shape == b["driving_cond"].shape == (5, 6, 256, 256)
    assert b["tri_ids"].shape == (5, 256, 256) and b["tri_ids"].dtype == torch.int64
    assert b["mask"].shape == (5, 1, 256, 256) and b["identity"].shape == (5, 128)
    assert b["source_points"].shape == (5, 478, 3) and b["mouth_amount"].shape == (5,)
    assert 0.0 <= float(b["source"].min()) and float(b["source"].max()) <= 1.0
    # how much mouth to paint, from the landmarks as augmented, exactly as the app's animator computes it
    for k in range(5):
        sp, dp = b["source_points"][k].numpy(), b["driving_points"][k].numpy()
        assert float(b["mouth_amount"][k]) == pytest.approx(MouthFill(sp, 256)(dp), abs=1e-5)
    # validation pairs are not augmented: a batch is exactly the plain pairs it drew
    assert not val.augment and train_set.augment
    drawn = val.draw(2, np.random.default_rng(3))
    assert torch.equal(val.batch(2, np.random.default_rng(3))["driving"], val.assemble(*drawn, None)["driving"])


def test_mirrored_frames_are_rendered_from_mirrored_landmarks(train_set):
    i = 3
    pts = train_set.points[0, i].numpy()
    mirrored = mirror_points(pts)
    assert np.allclose(train_set.points[1, i].numpy(), mirrored)
    assert np.allclose(mirror_points(mirrored), pts)  # mirroring twice is the identity
    expected = np.rint(landmark_image(mirrored, 256) * 255).astype(np.uint8)
    assert np.array_equal(train_set.cond[1, i].numpy(), expected)
    assert np.array_equal(train_set.tri[1, i].numpy(), rasterize_triangles(mirrored, topology().triangles, 256))
    # in the flipped image the subject's right eye is the old left eye, mirrored: still on the image's left
    right, left = topology().right_eye, topology().left_eye
    assert pts[right, 0].mean() < pts[left, 0].mean() and mirrored[right, 0].mean() < mirrored[left, 0].mean()
    assert mirrored[right, 0].mean() == pytest.approx(255 - pts[left, 0].mean(), abs=1e-3)


def test_the_driving_frame_is_not_resampled_by_default(train_set):
    """The frame the output is compared with keeps its pixels (flip and colour aside): jittering it
    resamples, i.e. blurs, the target, and the network learns to blur. The source is jittered."""
    assert not train_set.jitter_target
    clip, src, drv = train_set.draw(6, np.random.default_rng(1))
    plain = train_set.assemble(clip, src, drv, None)
    jit = train_set.assemble(clip, src, drv, np.random.default_rng(2))
    mirrored = {k: torch.from_numpy(mirror_points(plain[k].numpy())) for k in ("source_points", "driving_points")}
    for k in range(6):
        same = [torch.equal(jit["driving_points"][k], ref[k]) for ref in (plain["driving_points"], mirrored["driving_points"])]
        assert any(same)
        flipped = same[1] and not same[0]
        assert torch.equal(jit["tri_ids"][k], train_set.tri[1 if flipped else 0, int(drv[k])].long())
        ref = mirrored["source_points"] if flipped else plain["source_points"]
        assert float((jit["source_points"][k, :, :2] - ref[k, :, :2]).abs().max()) > 0.5  # the source moved


def test_geometric_jitter_moves_landmarks_with_the_image(train_set, monkeypatch):
    monkeypatch.setattr(train_set, "jitter_target", True)  # the driving side, where the checks below look
    rng = np.random.default_rng(1)
    clip, src, drv = train_set.draw(6, rng)
    plain = train_set.assemble(clip, src, drv, None)
    jit = train_set.assemble(clip, src, drv, np.random.default_rng(2))
    tri = topology().triangles
    flow = AnalyticFlow(256)
    mirrored = torch.from_numpy(mirror_points(plain["driving_points"].numpy()))
    moved = [min(float((jit["driving_points"][k, :, :2] - ref[k, :, :2]).abs().max()) for ref in
                 (plain["driving_points"], mirrored)) for k in range(6)]
    assert max(moved) > 2.0  # the similarity, not only a flip, moved the faces
    checked = 0
    for k in range(6):
        pts = jit["driving_points"][k].numpy()
        drawn = landmark_image(pts, 256)[4:5]  # the mouth opening, drawn at the moved landmarks
        warped = jit["driving_cond"][k, 4:5].numpy()
        before = plain["driving_cond"][k, 4:5].numpy()
        if drawn.sum() < 20:  # a closed mouth draws almost nothing
            continue
        assert np.abs(drawn - warped).sum() < 0.5 * np.abs(drawn - before).sum() + 1.0
        # the resampled triangle map differs from one drawn afresh only along triangle edges, where the
        # piecewise-affine flow is continuous: the flows it gives agree to well under a pixel
        fresh = torch.from_numpy(rasterize_triangles(pts, tri, 256))[None]
        sp, dp = jit["source_points"][k:k + 1, :, :2], jit["driving_points"][k:k + 1, :, :2]
        grid_resampled = flow(sp, dp, jit["tri_ids"][k:k + 1])[0][0]
        grid_fresh = flow(sp, dp, fresh)[0][0]
        face = (fresh[0] >= 0).numpy()
        err_px = ((grid_resampled - grid_fresh).abs().amax(-1).numpy() * 128.0)[face]
        assert np.percentile(err_px, 99) < 0.5, np.percentile(err_px, 99)
        checked += 1
    assert checked >= 2  # enough open mouths were compared


def test_frame_mask_marks_pixels_past_the_video_edge(root, train_set):
    crop = {"center": [50.0, 60.0], "side": 200.0, "angle": 0.0}
    mask = inside_frame_mask(crop, (400, 300), 256)
    # the crop spans x in [-50, 150] and y in [-40, 160]: its left quarter and top fifth lie outside
    assert mask[:, :60].sum() == 0 and mask[:45].sum() == 0 and mask[60:, 70:].all()
    assert clip_frame_mask({"crop": {"center": [200.0, 150.0], "side": 100.0, "angle": 0.0},
                            "frame_size": [400, 300]}) is None  # wholly inside
    assert clip_frame_mask({"crop": crop}) is None  # synthetic clips record no frame
    first = sorted((root / "clips").iterdir())[0].name
    every = ResidentPairs(root, "all", device="cpu", workers=1)
    m = every.masks[[c.key for c in every.clips].index(first)].numpy()
    assert m[:20, :20].sum() == 0 and m[-20:, -20:].all()  # the fixture's first clip reaches past the frame


def test_masked_losses_and_metrics_ignore_the_masked_pixels():
    torch.manual_seed(0)
    gt = torch.rand(2, 3, 64, 64)
    out = gt.clone()
    out[..., :16] = torch.rand(2, 3, 64, 16)  # wrong only in the left quarter
    mask = torch.ones(2, 1, 64, 64)
    mask[..., :20] = 0
    assert float(pyramid_l1(out, gt, mask=mask)) == pytest.approx(0.0, abs=1e-6)
    assert float(pyramid_l1(out, gt)) > 0.01
    assert float(ms_ssim_loss(out, gt, mask=mask)) < float(ms_ssim_loss(out, gt)) - 0.05
    assert float(ms_ssim_loss(gt, gt)) == pytest.approx(0.0, abs=1e-5)
    a = (gt[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    b = (out[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    m = mask[0, 0].numpy()
    assert psnr(a, b, m) == 100.0 and l1(a, b, m) == 0.0 and ssim(a, b, m) > 0.99
    assert psnr(a, b) < 20 and ssim(a, b) < 0.9
    with pytest.raises(ValueError):
        psnr(a, b, np.zeros_like(m))


def test_ssim_loss_is_float32_under_autocast():
    torch.manual_seed(1)
    gt = torch.nn.functional.avg_pool2d(torch.rand(2, 3, 96, 96), 5, 1, 2)
    out = (gt + 0.05 * torch.randn_like(gt)).clamp(0, 1)
    plain = float(ms_ssim_loss(out, gt))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = ms_ssim_loss(out, gt)
    assert mixed.dtype == torch.float32 and float(mixed) == pytest.approx(plain, rel=1e-5)


def test_resident_training_steps_and_validation_against_geometric(root, tmp_path):
    cfg = TrainConfig(stage="full", preset="lite", steps=2, batch_size=2, resident=True, val_fraction=0.34,
                      w_ssim=1.0, w_warped=0.5, val_batches=1, val_every=1000, ckpt_every=1000, log_every=1)
    trainer = Trainer(cfg, tmp_path / "run", data=root, device="cpu")
    assert isinstance(trainer.train_set, ResidentPairs) and isinstance(trainer.val_set, ResidentPairs)
    first = trainer.validate()
    # the untrained model is the analytic warp up to its generator's 0.25 % blend
    assert first["psnr"] == pytest.approx(first["psnr_geometric"], abs=0.1)
    trainer.fit(progress=False)
    assert trainer.step == 2
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {"train/ssim", "train/warped", "train/l1"} <= set(lines[0])
    assert (tmp_path / "run" / "model_fp16.safetensors").is_file()


def test_fp16_checkpoint_is_half_the_size_and_loads(tmp_path):
    torch.manual_seed(0)
    model = PortraitModel("lite")
    full = save_checkpoint(model, tmp_path / "a.safetensors")
    half = save_checkpoint(model, tmp_path / "b.safetensors", dtype=torch.float16)
    assert half.stat().st_size < 0.55 * full.stat().st_size
    with pytest.raises(ValueError, match="reserved"):  # a note called "config" must not replace the model config
        save_checkpoint(model, tmp_path / "c.safetensors", {"config": "configs/x.toml"})
    back = load_checkpoint(half)
    for (k, v), w in zip(model.state_dict().items(), back.state_dict().values()):
        assert w.dtype == v.dtype and torch.allclose(w, v.half().to(v.dtype)), k


def test_enhancer_data_keeps_only_sharp_clips(root):
    sides = {d.name: json.loads((d / "meta.json").read_text())["crop"]["side"] for d in (root / "clips").iterdir()}
    cut = sorted(sides.values())[len(sides) // 2]
    ds = PreparedDataset(root, split="all", mode="pairs", min_crop_side=cut)
    assert set(ds.clips) == {k for k, s in sides.items() if s >= cut} and 0 < len(ds.clips) < len(sides)
    with pytest.raises(InputFileError, match="source pixels"):
        PreparedDataset(root, split="all", min_crop_side=1e9)


def test_crop_box_of_the_fixture_is_what_the_mask_says(root):
    first = sorted((root / "clips").iterdir())[0]
    meta = json.loads((first / "meta.json").read_text())
    box = CropBox(tuple(meta["crop"]["center"]), meta["crop"]["side"], meta["crop"]["angle"])
    corner = box.crop_to_image(256) @ np.array([0.0, 0.0, 1.0])
    assert corner[0] < 0 and corner[1] < 0  # the crop's top-left corner lies outside the frame
    assert clip_frame_mask(meta)[0, 0] == 0


def test_time_budget_sets_the_steps_and_a_resumed_run_keeps_them(root, tmp_path):
    import time

    cfg = TrainConfig(stage="full", preset="lite", steps=100000, time_budget_s=10.0, resident=True,
                      val_fraction=0.34, batch_size=2)
    trainer = Trainer(cfg, tmp_path / "run", data=root, device="cpu")

    class Bar:
        total = None

    now = time.perf_counter()
    clock = FitClock(0, torch.device("cpu"))
    clock.t0, clock.t_warm = now - 4.0, now - 3.0  # 4 s of the 10 s gone; steps 11..40 took 3 s: 0.1 s a step
    trainer.step = 40
    steps = trainer._fit_budget(clock, Bar())  # about 58 more steps
    assert 95 <= steps <= 99 and trainer.cfg.steps == steps
    assert TrainConfig.load(tmp_path / "run" / "config.toml").steps == steps  # written down for resume
    trainer._resumed = True
    trainer.cfg.steps = 1234
    assert trainer._fit_budget(clock, Bar()) == 1234


@pytest.mark.parametrize("resident", [True, False])
def test_a_run_trained_in_shares_ends_as_one_run_does(root, tmp_path, monkeypatch, resident):
    """--stop-after: the call checkpoints and stops once its time is out (the speed known, here after 2
    steps); --resume continues to the run's own length, and the weights are those of the run made at once
    (the schedule past its warm-up included; the resident pairs and the loader alike)."""
    monkeypatch.setattr(FitClock, "WARM", 1)
    monkeypatch.setattr(FitClock, "TIMED", 2)
    cfg = dict(stage="full", preset="lite", steps=4, batch_size=2, resident=resident, num_workers=0,
               val_fraction=0.34, warmup_steps=1, val_every=1000, ckpt_every=1000, log_every=1000, d_channels=8)
    whole = Trainer(TrainConfig(**cfg), tmp_path / "whole", data=root, device="cpu")
    whole.fit(progress=False, stop_after_s=1e6)  # time to spare: the whole run
    assert whole.step == 4
    part = Trainer(TrainConfig(**cfg), tmp_path / "part", data=root, device="cpu")
    part.fit(progress=False, stop_after_s=1e-3)  # out of time as soon as the speed is known
    assert part.step == 3 and part.cfg.steps == 4
    saved = load_checkpoint(tmp_path / "part" / "model.safetensors")  # the share's EMA weights, on disk
    assert all(torch.equal(x, y) for x, y in zip(saved.state_dict().values(), part.ema.state_dict().values()))
    rest = Trainer(TrainConfig(**cfg), tmp_path / "part", data=root, device="cpu")
    rest.resume()
    assert rest.step == 3
    rest.fit(progress=False)
    assert rest.step == 4
    for a, b in ((whole.model, rest.model), (whole.ema, rest.ema)):
        for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(x, y), name


def test_resuming_with_another_length_than_the_saved_one_says_so(root, tmp_path, caplog):
    cfg = dict(stage="full", preset="lite", steps=1, batch_size=2, resident=True, val_fraction=0.34,
               val_every=1000, ckpt_every=1000, log_every=1000, d_channels=8)
    Trainer(TrainConfig(**cfg), tmp_path / "run", data=root, device="cpu").fit(progress=False)
    same = Trainer(TrainConfig(**cfg), tmp_path / "run", data=root, device="cpu")
    with caplog.at_level("WARNING"):
        same.resume()
    assert "saved to train" not in caplog.text
    longer = Trainer(TrainConfig(**{**cfg, "steps": 100000}), tmp_path / "run", data=root, device="cpu")
    with caplog.at_level("WARNING"):
        longer.resume()  # e.g. a run whose time budget set its length, resumed without the budget
    assert "saved to train to step 1; it now trains to 100000" in caplog.text and longer.cfg.steps == 100000
