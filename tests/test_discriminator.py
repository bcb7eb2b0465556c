"""MultiScaleDiscriminator: structure, logits shapes, conditioning, gradients, spectral norm."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils import parametrize

from avatar_app.models.discriminator import MultiScaleDiscriminator


def test_structure_and_logits_shapes():
    torch.manual_seed(0)
    disc = MultiScaleDiscriminator(channels=8)
    image = torch.rand(2, 3, 256, 256)
    outs = disc(image)
    assert len(outs) == 2 and all(len(feats) == 4 for feats in outs)
    # 256 -> 128 -> 64 (stride 2) -> 63 -> 62 (stride 1); scale 1 starts at 128.
    assert outs[0][-1].shape == (2, 1, 62, 62)
    assert outs[1][-1].shape == (2, 1, 30, 30)
    assert [f.shape[1] for f in outs[0]] == [8, 16, 32, 1]
    assert outs[0][0].shape == (2, 8, 128, 128)


def test_layers_and_scales_configurable():
    disc = MultiScaleDiscriminator(channels=4, scales=3, layers=5)
    outs = disc(torch.rand(1, 3, 256, 256))
    assert len(outs) == 3 and all(len(f) == 5 for f in outs)
    assert [o[-1].shape[-1] for o in outs] == [30, 14, 6]
    assert [f.shape[1] for f in outs[0]] == [4, 8, 16, 32, 1]


def test_cond_concatenation():
    torch.manual_seed(0)
    disc = MultiScaleDiscriminator(in_channels=3, cond_channels=2, channels=8)
    image, cond = torch.rand(1, 3, 128, 128), torch.rand(1, 2, 128, 128)
    outs = disc(image, cond)
    assert outs[0][-1].shape == (1, 1, 30, 30)
    other = disc(image, torch.rand(1, 2, 128, 128))
    assert not torch.equal(outs[0][-1], other[0][-1])  # the condition matters
    with pytest.raises(ValueError):
        disc(image)
    with pytest.raises(ValueError):
        MultiScaleDiscriminator(channels=8)(image, cond)


@pytest.mark.parametrize("sn", [True, False])
def test_gradients_reach_every_parameter(sn):
    torch.manual_seed(0)
    disc = MultiScaleDiscriminator(cond_channels=1, channels=8, spectral_norm=sn)
    outs = disc(torch.rand(2, 3, 128, 128), torch.rand(2, 1, 128, 128))
    loss = sum(feats[-1].square().mean() for feats in outs) + sum(f.abs().mean() for feats in outs for f in feats[:-1])
    loss.backward()
    for name, p in disc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_spectral_norm_on_off():
    torch.manual_seed(0)
    on = MultiScaleDiscriminator(channels=8, spectral_norm=True)
    off = MultiScaleDiscriminator(channels=8, spectral_norm=False)
    convs_on = [m for m in on.modules() if isinstance(m, torch.nn.Conv2d)]
    convs_off = [m for m in off.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs_on) == len(convs_off) == 8
    assert all(parametrize.is_parametrized(m, "weight") for m in convs_on)
    assert not any(parametrize.is_parametrized(m, "weight") for m in convs_off)
    # After a few power iterations each normalised weight has spectral norm ~1.
    on.train()
    for _ in range(20):
        on(torch.rand(1, 3, 64, 64))
    on.eval()
    for conv in convs_on:
        sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
        assert sigma == pytest.approx(1.0, abs=0.05)
