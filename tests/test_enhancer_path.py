"""The enhancer trains on the app's own 512 path (train/enhancer_path.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avatar_app.models.flow import AnalyticFlow
from avatar_app.models.portrait import load_checkpoint
from avatar_app.models.shipped import shipped_weights
from avatar_app.inference.networks import EnhancerStage
from avatar_app.runtime.neural_animator import NeuralAnimator
from avatar_app.train.config import TrainConfig
from avatar_app.train.data import PreparedDataset
from avatar_app.train.enhancer_path import enhanced_window
from avatar_app.train.inputs import WindowFlowInputs
from avatar_app.train.metrics import psnr
from avatar_app.train.trainer import Trainer
from avatar_app.types import Landmarks, SourcePortrait

from conftest import three_portrait_dataset


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return three_portrait_dataset(tmp_path_factory, frames=6, sizes=(256, 512))


def _bgr(x: torch.Tensor) -> np.ndarray:
    return (x.clamp(0, 1).permute(1, 2, 0).numpy()[:, :, ::-1] * 255 + 0.5).astype(np.uint8)


def test_training_sees_what_the_app_renders_at_512(root):
    """The frames the enhancer is trained on are the ones NeuralAnimator makes at 512 from the same source."""
    model = load_checkpoint(shipped_weights("lite"))  # real-trained warp and generator: not an identity map
    with torch.no_grad():  # a non-zero enhancer, so the comparison covers it and its ring buffer too
        model.enhancer.last.weight.normal_(0, 1e-3)
    ds = WindowFlowInputs(PreparedDataset(root, split="all", mode="window", window=3, augment=False,
                                          window_source=True))
    b = {k: v[None] for k, v in ds[0].items()}
    with torch.no_grad():
        train_frames = enhanced_window(model, AnalyticFlow(256), EnhancerStage(model, 512), b)[0]
    src = _bgr(b["source_512"][0])
    pts512 = (b["source_points"][0].numpy() + 0.5) * 2 - 0.5
    pts512[:, 2] *= 2
    portrait = SourcePortrait(crop=src, landmarks=Landmarks(pts512, (512, 512)), size=512, image=src,
                              crop_to_image=np.array([[1.0, 0, 0], [0, 1.0, 0]]))
    anim = NeuralAnimator(portrait, model=model, identity=b["identity"][0].numpy(), backend="torch-cpu")
    for t in range(3):
        target = (b["points_256"][0, t].numpy() + 0.5) * 2 - 0.5
        target[:, 2] *= 2
        app = anim.animate(Landmarks(target, (512, 512)))
        # the app resizes the 512 source to 256 itself; the trainer reads the prepared 256 crop
        assert psnr(app, _bgr(train_frames[t])) > 35, t


def test_enhancer_stage_trains_on_the_app_path_and_validates_against_its_base(root, tmp_path):
    cfg = TrainConfig(stage="enhancer", preset="lite", steps=2, batch_size=1, window=2, val_fraction=0.34,
                      num_workers=0, val_batches=1, val_every=1000, ckpt_every=1000, log_every=1)
    trainer = Trainer(cfg, tmp_path / "run", data=root, device="cpu")
    assert isinstance(trainer.train_set, WindowFlowInputs)
    before = trainer.validate()
    assert before["psnr"] == pytest.approx(before["psnr_base"], abs=1e-6)  # untrained: exactly its base
    weights = [p.detach().clone() for p in trainer.model.warp.parameters()]
    trainer.fit(progress=False)
    assert trainer.step == 2
    assert all(torch.equal(w, p) for w, p in zip(weights, trainer.model.warp.parameters()))  # frozen
    assert float(trainer.model.enhancer.last.weight.detach().abs().max()) > 0  # the enhancer moved
    trainer.ema.load_state_dict(trainer.model.state_dict())
    after = trainer.validate()
    assert after["psnr"] != pytest.approx(after["psnr_base"], abs=1e-6)  # validation sees the enhancer


def test_the_512_base_counts_the_generators_mask_once():
    """The 256 output is ``mask · synthesis + (1 − mask) · warped``; at 512 the synthesis keeps the weight
    ``mask`` and only the warped source is swapped for the 512 warp (blending the 256 output with the
    512 warp by ``mask`` again counted the synthesis ``mask²``: the eyes, where the mask is partial,
    followed the lids about half as far at 512 as at 256, docs/EYES.md)."""
    from avatar_app.models.layers import resize_grid
    from avatar_app.models.portrait import PortraitModel
    from avatar_app.models.warp import identity_grid

    torch.manual_seed(0)
    stage = EnhancerStage(PortraitModel("lite"), 512).eval()  # untrained enhancer: its output is its base
    full = torch.rand(1, 3, 512, 512)
    grid = (identity_grid(1, 256, "cpu", torch.float32) * 0.9).permute(0, 2, 3, 1)  # a zoom: the warp moves pixels
    warped = torch.nn.functional.grid_sample(torch.nn.functional.avg_pool2d(full, 2), grid, align_corners=False)
    synthesis = torch.tensor([0.9, 0.1, 0.3]).view(1, 3, 1, 1).expand(1, 3, 256, 256)
    zeros = torch.zeros(1, 1, 256, 256)
    for m in (0.2, 0.7):
        mask = torch.full((1, 1, 256, 256), m)
        image = mask * synthesis + (1 - mask) * warped
        with torch.no_grad():
            out, _ = stage(image, mask, warped, grid, zeros, zeros, torch.zeros(1), full,
                           torch.zeros(1, 2, 12, 128, 128), torch.ones(1))
        sharp = torch.nn.functional.grid_sample(full, resize_grid(grid, (512, 512)), align_corners=False)
        expected = m * synthesis[:, :, :1, :1] + (1 - m) * sharp
        assert torch.allclose(out, expected, atol=1e-5), (m, float((out - expected).abs().max()))
