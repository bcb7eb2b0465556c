"""The shipped real-trained weights and the default animator choice."""

from __future__ import annotations

import json

import pytest
import torch

from avatar_app.models import shipped
from avatar_app.models.portrait import PRESETS, load_checkpoint


@pytest.mark.parametrize("preset", ["lite", "full"])
def test_shipped_weights_load_as_their_preset(preset):
    path = shipped.shipped_weights(preset)
    assert path is not None, f"assets/weights/{shipped.SHIPPED[preset]} is missing"
    model = load_checkpoint(path)
    assert model.config["warp"] == PRESETS[preset]["warp"]
    assert tuple(model.config["generator"]["channels"]) == tuple(PRESETS[preset]["generator"]["channels"])
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:  # shipped small: fp16 on disk
        meta = f.metadata()
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
    assert "F16" in dtypes and "F32" not in dtypes
    assert json.loads(meta["config"])["preset"] == preset and meta.get("data")
    assert path.stat().st_size < 16 * 2**20
    # trained: the warp network's residual-flow head is no longer the zero it starts as
    assert float(model.warp.residual_head.weight.detach().abs().max()) > 0


def test_default_preset_follows_the_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert shipped.default_preset() == "lite"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert shipped.default_preset() == "full"
    monkeypatch.setattr(shipped, "WEIGHTS_DIR", shipped.WEIGHTS_DIR / "nowhere")
    assert shipped.shipped_weights("full") is None and shipped.shipped_weights("nope") is None
