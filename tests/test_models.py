"""Warp network, generator, the bundled PortraitModel and its checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from avatar_app.capture.synthetic import FacePose, synthetic_landmarks
from avatar_app.errors import InputFileError
from avatar_app.face.mesh import topology
from avatar_app.models.conditioning import COND_CHANNELS, landmark_images
from avatar_app.models.flow import AnalyticFlow, rasterize_triangles
from avatar_app.models.generator import Generator
from avatar_app.models.portrait import PRESETS, PortraitModel, load_checkpoint, save_checkpoint
from avatar_app.models.warp import WarpNet, identity_grid

S = 256


def _inputs(b: int = 1, seed: int = 0):
    """A source (synthetic face drawn as its landmark image + noise) and a target with an open jaw."""
    g = torch.Generator().manual_seed(seed)
    src_pts = np.stack([synthetic_landmarks(FacePose(), (S, S), 60).points] * b)
    tgt_pts = np.stack([synthetic_landmarks(FacePose(jaw=0.8, yaw=10), (S, S), 60).points] * b)
    flow = AnalyticFlow(S)
    ids = torch.from_numpy(np.stack([rasterize_triangles(p, topology().triangles, S) for p in tgt_pts]))
    grid, mouth, coord = flow(torch.from_numpy(src_pts[..., :2].copy()), torch.from_numpy(tgt_pts[..., :2].copy()), ids)
    image = torch.rand(b, 3, S, S, generator=g)
    return {
        "image": image,
        "src_cond": landmark_images(src_pts, S),
        "tgt_cond": landmark_images(tgt_pts, S),
        "grid": grid,
        "identity": torch.randn(b, 128, generator=g),
        "mouth": mouth,
        "coord": coord,
    }


def _randomize_zero_heads(model: nn.Module) -> None:
    """With a zero-initialised last layer the gradient to every earlier layer is exactly
    zero by construction; give such layers small random weights before gradient checks."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and not m.weight.any():
                m.weight.normal_(0, 0.01)


@pytest.mark.parametrize("preset", ["lite", "full"])
def test_untrained_warp_returns_the_analytic_flow_exactly(preset):
    x = _inputs()
    warp = WarpNet(**PRESETS[preset]["warp"])
    flow = x["grid"].permute(0, 3, 1, 2) - identity_grid(1, S)
    residual, occlusion = warp(x["image"], x["src_cond"], x["tgt_cond"], flow)
    assert residual.shape == (1, 2, S, S) and occlusion.shape == (1, 1, S, S)
    assert residual.dtype == torch.float32
    assert torch.count_nonzero(residual) == 0  # final flow == analytic flow, bit for bit
    assert occlusion.min() > 0.999


@pytest.mark.parametrize("preset", ["lite", "full"])
def test_untrained_model_returns_the_warped_source(preset):
    x = _inputs()
    model = PortraitModel(preset).eval()
    with torch.no_grad():
        src = model.encode_source(x["image"], x["src_cond"], x["identity"])
        out = model.forward_frame(src, x["tgt_cond"], x["grid"])
    assert out["image"].shape == (1, 3, S, S) and out["mask"].shape == (1, 1, S, S)
    assert torch.allclose(out["grid"], x["grid"], atol=1e-6)  # analytic flow, untouched (up to float rounding)
    warped = torch.nn.functional.grid_sample(x["image"], x["grid"], padding_mode="border", align_corners=False)
    assert (out["image"] - warped).abs().max() < 0.003  # the mask head starts at 0.25 %


def test_mouth_fill_reaches_the_generator_input():
    x = _inputs()
    model = PortraitModel("lite").eval()
    with torch.no_grad():
        src = model.encode_source(x["image"], x["src_cond"], x["identity"])
        plain = model.forward_frame(src, x["tgt_cond"], x["grid"])
        filled = model.forward_frame(src, x["tgt_cond"], x["grid"], x["mouth"], x["coord"], 1.0)
    inside = x["mouth"][0, 0] > 0.5
    assert inside.sum() > 50
    diff = (filled["warped"] - plain["warped"]).abs().amax(1)[0]
    assert x["mouth"].unique().tolist() == [0.0, 1.0]  # a hard mask: nothing is painted where it is 0
    assert diff[inside].mean() > 0.1 and diff[~inside].max() < 1e-6


@pytest.mark.parametrize("preset", ["lite", "full"])
def test_gradients_reach_every_parameter(preset):
    x = _inputs(b=2)
    model = PortraitModel(preset)
    _randomize_zero_heads(model.warp)
    _randomize_zero_heads(model.generator)
    with torch.no_grad():
        model.generator.head.weight[3].normal_(0, 0.01)
    src = model.encode_source(x["image"], x["src_cond"], x["identity"])
    out = model.forward_frame(src, x["tgt_cond"], x["grid"])
    (out["image"].mean() + out["occlusion"].mean()).backward()
    silent = [n for n, p in list(model.warp.named_parameters(prefix="warp")) +
              list(model.generator.named_parameters(prefix="generator"))
              if p.grad is None or not p.grad.abs().sum() > 0]
    assert silent == []


def test_batch_items_are_independent():
    """Changing one batch item's inputs leaves the other's output bit-identical (no leakage,
    e.g. through a batch-wide normalisation)."""
    model = PortraitModel("lite").eval()
    _randomize_zero_heads(model)
    outs = []
    for blank_first in (False, True):
        x = _inputs(b=2, seed=3)
        if blank_first:
            x["image"][0] = 0.0
            x["identity"][0] = 0.0
        with torch.no_grad():
            src = model.encode_source(x["image"], x["src_cond"], x["identity"])
            outs.append(model.forward_frame(src, x["tgt_cond"], x["grid"])["image"])
    assert not torch.equal(outs[0][0], outs[1][0])
    assert torch.equal(outs[0][1], outs[1][1])


def test_identity_changes_the_output_once_trained():
    """AdaIN(identity) is wired in: a different embedding changes a non-trivial generator."""
    x = _inputs()
    gen = Generator(channels=(16, 32, 64), top_channels=16, top_block=False, hidden=16)
    _randomize_zero_heads(gen)
    with torch.no_grad():
        gen.head.weight[3].normal_(0, 0.5)
        gen.head.bias[3].fill_(0.0)
        feats = gen.encode(x["image"])
        occ = torch.ones(1, 1, S, S)
        a, _ = gen(feats, x["grid"], occ, x["tgt_cond"], x["identity"], x["image"])
        b, _ = gen(feats, x["grid"], occ, x["tgt_cond"], -x["identity"], x["image"])
    assert (a - b).abs().max() > 1e-3


def test_checkpoint_round_trip_is_bit_exact(tmp_path):
    model = PortraitModel("lite")
    _randomize_zero_heads(model)
    path = save_checkpoint(model, tmp_path / "m.safetensors")
    loaded = load_checkpoint(path)
    assert loaded.config == model.config
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not list(tmp_path.glob(".*tmp"))  # the temporary file was renamed away


def test_missing_and_corrupt_checkpoints(tmp_path):
    with pytest.raises(InputFileError, match="does not exist"):
        load_checkpoint(tmp_path / "none.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(InputFileError, match="damaged"):
        load_checkpoint(bad)
    good = save_checkpoint(PortraitModel("lite"), tmp_path / "good.safetensors")
    data = good.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputFileError, match="truncated.safetensors"):
        load_checkpoint(truncated)


def test_mismatched_checkpoint_names_what_differs(tmp_path):
    from safetensors.torch import load_file, save_file

    path = save_checkpoint(PortraitModel("lite"), tmp_path / "m.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    state = load_file(str(path))
    state["warp.stem.0.weight"] = torch.zeros(3, 3, 3, 3)
    del state["generator.head.bias"]
    state["extra.layer"] = torch.zeros(1)
    save_file(state, str(path), metadata=meta)
    with pytest.raises(InputFileError) as exc:
        load_checkpoint(path)
    msg = str(exc.value)
    assert "generator.head.bias" in msg and "extra.layer" in msg and "warp.stem.0.weight" in msg and "(3, 3, 3, 3)" in msg


def test_foreign_safetensors_file_is_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(InputFileError, match="not an avatar-app model"):
        load_checkpoint(path)


def test_unknown_preset():
    with pytest.raises(ValueError, match="lite"):
        PortraitModel("huge")


def test_cond_channels_match():
    assert PortraitModel("lite").warp.stem[0].in_channels == 3 + 3 + 2 * COND_CHANNELS + 2
