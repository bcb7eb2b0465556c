"""TemporalEnhancer: shapes, identity at init, gradients, causality, window, budgets, ONNX."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from avatar_app.models.enhancer import TemporalEnhancer

FULL = dict(channels=32, blocks=4, neighbours=2)
LITE = dict(channels=12, blocks=2, neighbours=2)
TINY = dict(channels=4, blocks=1, neighbours=2)  # cheap, for the multi-frame behaviour tests


def _inputs(batch: int = 1, frames: int | None = None, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lead = (batch,) if frames is None else (batch, frames)
    return torch.rand(*lead, 3, 256, 256, generator=g), torch.rand(*lead, 3, 512, 512, generator=g)


def _randomise_last(model: TemporalEnhancer, seed: int = 1) -> TemporalEnhancer:
    """Give the zero-initialised last conv small random weights.

    With a zero last layer the residual is identically zero, so the output (and
    every gradient flowing to the earlier layers) does not depend on them at all,
    by construction; behaviour and gradient tests need a non-zero last layer.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.last.weight.copy_(torch.randn(model.last.weight.shape, generator=g) * 0.05)
        model.last.bias.copy_(torch.randn(model.last.bias.shape, generator=g) * 0.05)
    return model


def _model(cfg: dict, seed: int = 0, randomise: bool = True) -> TemporalEnhancer:
    torch.manual_seed(seed)
    model = TemporalEnhancer(**cfg).eval()
    return _randomise_last(model) if randomise else model


@pytest.mark.parametrize("cfg", [FULL, LITE], ids=["full", "lite"])
def test_shapes_and_identity_at_init(cfg):
    model = _model(cfg, randomise=False)
    frame, base = _inputs()
    with torch.no_grad():
        history = model.start_history(frame, base)
        assert history.shape == (1, cfg["neighbours"], cfg["channels"], 128, 128)
        assert model.features(frame, base).shape == (1, cfg["channels"], 128, 128)
        out, new_history = model(frame, base, history)
        assert out.shape == (1, 3, 512, 512) and out.dtype == torch.float32
        assert new_history.shape == history.shape and new_history.dtype == torch.float32
        assert torch.equal(out, base)

        frames, bases = _inputs(frames=2, seed=1)
        window = model.forward_window(frames, bases)
        assert window.shape == (1, 2, 3, 512, 512) and window.dtype == torch.float32
        assert torch.equal(window, bases)


def test_gradients_reach_every_parameter():
    model = _model(LITE).train()  # last layer re-initialised: see _randomise_last
    frame, base = _inputs(seed=2)
    history = torch.randn(1, LITE["neighbours"], LITE["channels"], 128, 128)
    out, new_history = model(frame, base, history)
    loss = (out - base).square().mean() + new_history.square().mean()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name


def test_live_mode_is_causal_and_history_rolls():
    model = _model(TINY)
    frames, bases = _inputs(frames=6, seed=3)
    changed_frames, changed_bases = frames.clone(), bases.clone()
    changed_frames[:, 4:] = torch.rand_like(changed_frames[:, 4:])
    changed_bases[:, 4:] = torch.rand_like(changed_bases[:, 4:])

    def run(fr, ba):
        outs = []
        with torch.no_grad():
            history = model.start_history(fr[:, 0], ba[:, 0])
            for t in range(fr.shape[1]):
                out, new_history = model(fr[:, t], ba[:, t], history)
                assert new_history.shape == (1, TINY["neighbours"], TINY["channels"], 128, 128)
                assert torch.equal(new_history[:, :-1], history[:, 1:])
                if t == 2:
                    assert torch.equal(new_history[:, -1], model.features(fr[:, t], ba[:, t]))
                history = new_history
                outs.append(out)
        return outs

    a, b = run(frames, bases), run(changed_frames, changed_bases)
    for t in range(4):
        assert torch.equal(a[t], b[t]), t
    assert not torch.equal(a[4], b[4])
    assert not torch.equal(a[1], bases[:, 1])  # the residual is really active


def test_window_mode_uses_centred_neighbours():
    model = _model(TINY)
    assert model.window_offsets() == [-1, 1]
    frames, bases = _inputs(frames=5, seed=4)
    with torch.no_grad():
        ref = model.forward_window(frames, bases)
        nxt = frames.clone()
        nxt[:, 3] = torch.rand_like(nxt[:, 3])
        far = frames.clone()
        far[:, 0] = torch.rand_like(far[:, 0])
        out_next = model.forward_window(nxt, bases)
        out_far = model.forward_window(far, bases)
    assert not torch.equal(out_next[:, 2], ref[:, 2])  # t + 1 is used (non-causal by design)
    assert torch.equal(out_far[:, 2], ref[:, 2])  # t - 2 is beyond r = 1
    assert torch.equal(out_far[:, 4], ref[:, 4])


def test_window_offsets_odd_neighbours():
    assert TemporalEnhancer(channels=4, blocks=0, neighbours=3).window_offsets() == [-2, -1, 1]
    assert TemporalEnhancer(channels=4, blocks=0, neighbours=4).window_offsets() == [-2, -1, 1, 2]


def test_start_history_constant_sequence_is_steady_and_matches_window():
    model = _model(TINY)
    frame, base = _inputs(seed=5)
    with torch.no_grad():
        history = model.start_history(frame, base)
        outs = []
        for _ in range(3):
            out, history = model(frame, base, history)
            outs.append(out)
        window = model.forward_window(frame.unsqueeze(1).expand(-1, 2, -1, -1, -1), base.unsqueeze(1).expand(-1, 2, -1, -1, -1))
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[1], outs[2])
    # Same weights in both modes: identical inputs everywhere give the same output.
    torch.testing.assert_close(window[:, 0], outs[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("cfg,budget", [(FULL, 45e9), (LITE, 1.5e9)], ids=["full", "lite"])
def test_flop_budget(cfg, budget):
    model = _model(cfg, randomise=False)
    frame, base = _inputs()
    history = torch.zeros(1, cfg["neighbours"], cfg["channels"], 128, 128)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(frame, base, history)
    assert 0 < counter.get_total_flops() <= budget


def test_onnx_export_matches_onnxruntime(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = _model(LITE)
    frame, base = _inputs(seed=6)
    history = torch.randn(1, LITE["neighbours"], LITE["channels"], 128, 128)
    path = tmp_path / "enhancer.onnx"
    torch.onnx.export(
        model,
        (frame, base, history),
        str(path),
        opset_version=17,
        dynamo=False,
        input_names=["frame", "base", "history"],
        output_names=["out", "new_history"],
    )
    with torch.no_grad():
        ref_out, ref_hist = model(frame, base, history)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out, hist = session.run(None, {"frame": frame.numpy(), "base": base.numpy(), "history": history.numpy()})
    assert (torch.from_numpy(out) - ref_out).abs().max() < 1e-4
    assert (torch.from_numpy(hist) - ref_hist).abs().max() < 1e-4


def test_bad_config_rejected():
    with pytest.raises(ValueError):
        TemporalEnhancer(neighbours=0)
    assert isinstance(TemporalEnhancer(channels=4, blocks=0), nn.Module)
