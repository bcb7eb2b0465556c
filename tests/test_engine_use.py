"""Engines that are kept, and used: the same untrained model every start (so its cached exports
are found again), a bounded cache (least recently used out), and weights swapped into running
networks without rebuilding them."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from avatar_app.inference.engine_cache import EngineCache
from avatar_app.inference.networks import model_hash
from avatar_app.models import shipped
from avatar_app.models.portrait import load_checkpoint
from avatar_app.models.shipped import start_model, untrained_model
from avatar_app.runtime.neural_animator import NeuralAnimator
from avatar_app.types import Landmarks

WEIGHTS = Path(__file__).resolve().parents[1] / "assets" / "weights" / "lite-synthetic.safetensors"
IDENTITY = np.random.default_rng(0).standard_normal(128).astype(np.float32) * 0.1  # no dlib needed


def test_the_model_the_app_starts_from(monkeypatch, tmp_path):
    if shipped.shipped_weights("lite") is not None:  # a checkout: the shipped weights unless others are chosen
        start = start_model("lite")
        assert start.shipped and start.trained and start.weights == shipped.shipped_weights("lite")
    chosen = start_model("lite", WEIGHTS)
    assert chosen.trained and not chosen.shipped and chosen.describe() == str(WEIGHTS)

    monkeypatch.setattr(shipped, "WEIGHTS_DIR", tmp_path / "not-installed")  # a wheel without weights
    rng = torch.get_rng_state()
    a, b = start_model("lite"), start_model("lite")
    assert not a.trained and a.describe() == "untrained lite"
    assert model_hash(a.model) == model_hash(b.model) == model_hash(untrained_model("lite"))  # the same key
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's random state is untouched


def test_a_second_untrained_start_reuses_the_cached_exports(astronaut_source, tmp_path):
    cache = EngineCache(tmp_path / "engines")
    NeuralAnimator(astronaut_source, preset="lite", backend="onnxruntime", identity=IDENTITY, cache=cache)
    first = cache.entries()
    assert first, "the first start exported the networks"
    NeuralAnimator(astronaut_source, preset="lite", backend="onnxruntime", identity=IDENTITY, cache=cache)
    second = cache.entries()
    assert second.keys() == first.keys()  # nothing new exported ...
    assert all(second[n]["built"] == first[n]["built"] and second[n]["used"] > first[n]["used"] for n in first)


def _write(size: int):
    return lambda tmp: tmp.write_bytes(b"x" * size)


def test_the_cache_keeps_the_most_recently_used_files_under_its_cap(tmp_path):
    cache = EngineCache(tmp_path, max_bytes=2500)
    keys = [{"network": n, "kind": "onnx", "precision": "fp32", "model": "m"} for n in ("a", "b", "c", "d")]
    paths = []
    for key in keys[:2]:
        paths.append(cache.get_or_build(key, ".onnx", _write(1000)))
        time.sleep(0.01)
    assert cache.lookup(keys[0], ".onnx") == paths[0]  # a used after b: b is the least recently used
    time.sleep(0.01)
    c = cache.get_or_build(keys[2], ".onnx", _write(1000))  # 3000 bytes > 2500: b goes
    assert sorted(cache.entries()) == sorted([paths[0].name, c.name])
    assert not paths[1].exists() and paths[0].exists() and c.exists()
    assert cache.lookup(keys[1], ".onnx") is None  # gone means rebuilt when next needed
    big = cache.get_or_build(keys[3], ".onnx", _write(4000))  # larger than the cap alone: kept, the rest go
    assert list(cache.entries()) == [big.name] and big.exists()
    assert cache.clean() == [big.name] and not cache.entries()  # `engines clean` still empties it


def test_the_cap_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("AVATAR_APP_ENGINES_MAX_MB", "1.5")
    assert EngineCache(tmp_path).max_bytes == 1_500_000
    monkeypatch.setenv("AVATAR_APP_ENGINES_MAX_MB", "lots")
    assert EngineCache(tmp_path).max_bytes == 4096 * 10**6


def test_set_model_swaps_weights_into_the_running_backends(astronaut_source, hopper_source):
    """A profile switch: the same backends and compiled modules, the weights copied into the
    same tensors (no rebuild) — and the frames are the new model's."""
    anim = NeuralAnimator(astronaut_source, preset="lite", backend="torch-cpu", identity=IDENTITY)
    backends = dict(anim.chain.backends)
    modules = {n: b.module for n, b in backends.items()}
    storage = {n: [t.data_ptr() for t in b.module.state_dict().values()] for n, b in backends.items()}
    trained = load_checkpoint(WEIGHTS)
    target = Landmarks(hopper_source.landmarks.points * 1.0, hopper_source.landmarks.image_size)
    before = anim.animate(astronaut_source.landmarks)

    swapped = anim.set_model(trained, hopper_source)
    assert swapped == {n: len(s) for n, s in storage.items()}  # every tensor copied in place ...
    assert sum(swapped.values()) > 100  # (the analytic flow network has none)
    assert all(anim.chain.backends[n] is b for n, b in backends.items())
    assert all(anim.chain.backends[n].module is m for n, m in modules.items())
    assert {n: [t.data_ptr() for t in b.module.state_dict().values()] for n, b in backends.items()} == storage
    after = anim.animate(target)
    fresh = NeuralAnimator(hopper_source, model=trained, backend="torch-cpu", identity=IDENTITY).animate(target)
    assert np.array_equal(after, fresh)
    assert np.abs(after.astype(int) - before.astype(int)).mean() > 1.0  # another portrait and other weights
    with pytest.raises(ValueError, match="same architecture"):
        anim.set_model(untrained_model("full"))
