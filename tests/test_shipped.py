"""The shipped real-trained weights and the default animator choice."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

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


@pytest.mark.parametrize("name", [shipped.SHIPPED_META[("lite", "warp+decoder")], *shipped.RETIRED_META])
def test_the_meta_learned_lite_start_ships_small_and_differs_only_where_personalization_adapts(name):
    from avatar_app.train.adapt_cached import PLANS, adapted_parameters

    path = shipped.WEIGHTS_DIR / name
    meta, base = load_checkpoint(path), load_checkpoint(shipped.shipped_weights("lite"))
    assert path.stat().st_size < 4 * 2**20 and meta.config == base.config
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"} and f.metadata().get("data")
    a, b = meta.state_dict(), base.state_dict()
    moved = {k for k in a if not torch.equal(a[k], b[k])}
    # Reptile moved the CPU plan's weights only (the plan as it was then: the SPADE branch adapted too)
    plan = set(adapted_parameters(base, replace(PLANS["warp+decoder"], frozen=())))
    assert moved and moved <= plan, sorted(moved - plan)[:5]


# what the profiles made from each retired start recorded as their base's SHA-256
RETIRED_SHA256 = {"lite-meta.safetensors": "e49179a4c167e5ded0c8cf600b5262adc74b5c6158f24898ec7770256415b429"}


@pytest.mark.parametrize("name", shipped.RETIRED_META)
def test_a_profile_made_from_an_earlier_meta_start_still_loads(tmp_path, name):
    """A profile stores only what personalization adapted, over the start it names and its SHA-256: a newer
    start must neither take the older one's place nor change its bytes, or the profiles made from it stop loading."""
    from safetensors import safe_open

    from avatar_app.files import file_sha256
    from avatar_app.models.portrait import save_checkpoint
    from avatar_app.train.adapt_cached import PLANS, adapted_parameters

    old = shipped.WEIGHTS_DIR / name
    assert file_sha256(old) == RETIRED_SHA256[name]
    adapted = load_checkpoint(old)
    keys = sorted(adapted_parameters(adapted, PLANS["warp+decoder"]))
    with torch.no_grad():
        for n, p in adapted.named_parameters():
            if n in keys:
                p.add_(0.01)
    delta = save_checkpoint(adapted, tmp_path / "me.safetensors", base=old, keys=keys, dtype=torch.float16)
    with safe_open(str(delta), framework="pt") as f:
        assert f.metadata()["base"] == f"shipped:{name}"  # by name: found wherever avatar-app is installed
    loaded, want = load_checkpoint(delta).state_dict(), adapted.state_dict()
    assert all(torch.allclose(loaded[k], want[k], atol=1e-2) if k in keys else torch.equal(loaded[k], want[k])
               for k in want)


def test_personalization_starts_from_the_meta_weights_only_over_the_shipped_model(tmp_path):
    base, meta = shipped.personalization_start("lite", plan="warp+decoder")
    assert base.shipped and base.weights == shipped.shipped_weights("lite")
    assert meta is not None and meta.weights.name == shipped.SHIPPED_META[("lite", "warp+decoder")] and meta.preset == "lite"
    chosen = tmp_path / "mine.safetensors"
    shutil.copy(shipped.shipped_weights("lite"), chosen)
    base, meta = shipped.personalization_start("lite", chosen, plan="warp+decoder")  # chosen: adapted themselves
    assert base.weights == chosen and meta is None
    assert shipped.personalization_start("lite", plan="full")[1] is None  # learned for the CPU plan only
    assert shipped.personalization_start("full", plan="full")[1] is None  # no meta full start (measured behind)


def test_the_default_animator_is_neural_full_where_a_gpu_runs_it(monkeypatch):
    from avatar_app.errors import DependencyError
    from avatar_app.inference import backend, default_animator
    from avatar_app.models import identity

    gpu = {"torch-cuda": None, "tensorrt": "TensorRT is not installed"}
    monkeypatch.setattr(backend, "probe", lambda name, build_only=False: gpu[name])
    monkeypatch.setattr(identity, "model_files", dict)  # dlib and its models installed (or not: patched below)
    d = default_animator.machine_default()
    assert (d.animator, d.preset) == ("neural", "full") and "30 fps" in d.why
    gpu["torch-cuda"] = "no CUDA GPU is visible to torch"
    d = default_animator.machine_default()
    assert (d.animator, d.preset) == ("geometric", "lite") and "13 fps" in d.why and "25 fps" in d.why
    gpu["tensorrt"] = None  # TensorRT (for RTX) without a CUDA build of torch: still a GPU
    assert default_animator.machine_default().animator == "neural"

    def no_dlib():
        raise DependencyError("The identity embedding needs dlib, which is not installed; run `pip install x`.")

    monkeypatch.setattr(identity, "model_files", no_dlib)  # the neural animator could not start: never the default
    d = default_animator.machine_default()
    assert d.animator == "geometric" and "needs dlib" in d.why
    monkeypatch.setattr(identity, "model_files", dict)
    monkeypatch.setattr(shipped, "WEIGHTS_DIR", shipped.WEIGHTS_DIR / "nowhere")
    d = default_animator.machine_default()  # no trained full weights: the untrained model would only copy the warp
    assert d.animator == "geometric" and "not installed" in d.why
