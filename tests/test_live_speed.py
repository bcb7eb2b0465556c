"""Issue 12: *auto* keeps the neural animator only where it keeps up live (inference/live_speed.py)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from avatar_app.inference import live_speed
from avatar_app.inference.selftest import Verdict, VerdictStore


class _Choice:
    def __init__(self, name: str):
        self.name = name

    def explain(self) -> str:
        return f"{self.name} (chosen)"


class _Chain:
    """A backend chain as live_speed and the CLI read it."""

    def __init__(self, name: str):
        self.name, self.device, self.choice = name, "cuda:0 (a GPU), fp16", _Choice(name)


class _GpuAnimator:
    """Stands in for the neural animator on a GPU of a given speed (no GPU exists here, and none that is slow):
    each frame takes ``ms`` milliseconds (``fail``: raises instead); the targets it was asked for are kept."""

    model = None

    def __init__(self, source, ms: float, backend: str = "torch-cuda", fail: Exception | None = None):
        self.source, self.chain, self.ms, self.fail = source, _Chain(backend), ms, fail
        self.targets, self.resets = [], 0

    def reset(self):
        self.resets += 1

    def animate(self, target):
        if self.fail is not None:
            raise self.fail
        self.targets.append(target.points.copy())
        time.sleep(self.ms / 1000.0)
        return np.zeros((self.source.size, self.source.size, 3), np.uint8)


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("AVATAR_APP_ENGINES", str(tmp_path))  # where machine_default and doctor read the verdicts
    monkeypatch.setattr(live_speed, "WARMUP", 1)
    monkeypatch.setattr(live_speed, "FRAMES", 10)
    return VerdictStore()


def test_a_gpu_too_slow_for_live_is_measured_on_two_starts_then_remembered(astronaut_source, store):
    slow = _GpuAnimator(astronaut_source, 60.0)  # 60 ms a frame: 17 fps
    first = live_speed.check(slow, "full", 256, store)
    assert not first.ok and first.count == 1 and "ms a frame" in first.detail and "25 fps" in first.detail
    assert 1 + 2 <= len(slow.targets) < 1 + 10  # stopped once the 90th percentile could only be over the limit
    assert slow.resets == 1  # measured, then the enhancer's ring buffer forgotten
    assert len({t.tobytes() for t in slow.targets}) == len(slow.targets)  # the head moves: a new frame each time
    assert live_speed.known_slow("full", 256, store=store) is None  # one slow start may have shared the GPU
    assert "the next start measures once more" in live_speed.fallback_note(first)
    second = live_speed.check(slow, "full", 256, store)  # the next start measures again
    assert not second.ok and second.count == 2 and live_speed.settled_slow(second)
    measured = len(slow.targets)
    assert live_speed.check(slow, "full", 256, store) == second and len(slow.targets) == measured  # read, not re-run
    assert live_speed.known_slow("full", 256, store=store) == second
    assert live_speed.known_slow("full", 256, "torch-cuda", store) == second
    assert live_speed.known_slow("full", 256, "tensorrt", store) is None  # another backend is not known slow
    assert live_speed.known_slow("full", 512, store=store) is None  # measured at 256 only
    assert live_speed.known_slow("lite", 256, store=store) is None
    assert "doctor --remeasure" in live_speed.fallback_note(second)
    fast = _GpuAnimator(astronaut_source, 1.0, backend="tensorrt")
    assert live_speed.check(fast, "full", 256, store).ok and len(fast.targets) == 1 + 10  # every frame timed
    assert live_speed.known_slow("full", 256, store=store) is None  # one backend keeps up here: auto stays neural


def test_forgetting_the_live_verdicts_keeps_the_backends_self_tests(astronaut_source, store):
    store.put(Verdict("tensorrt", "some GPU", "10.1", True, "worst relative error 1e-3"))
    live_speed.check(_GpuAnimator(astronaut_source, 60.0), "full", 256, store)
    assert store.has(live_speed.KIND) and store.forget(live_speed.KIND) == 1
    assert not store.has(live_speed.KIND) and store.get("tensorrt", "some GPU", "10.1") is not None


def test_a_failed_measurement_or_an_unwritable_store_never_stops_the_start(astronaut_source, tmp_path, store):
    crashing = _GpuAnimator(astronaut_source, 1.0, fail=RuntimeError("CUDA out of memory"))
    why = live_speed.fallback_reason(crashing, "full", 512)
    assert why is not None and "geometric" in why and "CUDA out of memory" in why
    (tmp_path / "file").write_text("not a folder")
    unwritable = VerdictStore(tmp_path / "file" / "verdicts.json")
    assert not live_speed.check(_GpuAnimator(astronaut_source, 60.0), "full", 256, unwritable).ok
    assert live_speed.check(_GpuAnimator(astronaut_source, 1.0), "full", 256, unwritable).ok


def test_auto_starts_geometric_on_a_gpu_measured_too_slow_and_says_why(astronaut_source, store, monkeypatch):
    from avatar_app.doctor import animator_check
    from avatar_app.inference import backend, default_animator
    from avatar_app.models import identity

    monkeypatch.setattr(backend, "probe", lambda name, build_only=False: None)  # a GPU backend runs here
    monkeypatch.setattr(identity, "model_files", dict)
    assert default_animator.machine_default().animator == "neural"  # not measured yet
    assert "Measured live here" not in animator_check().detail
    for _ in range(2):
        live_speed.check(_GpuAnimator(astronaut_source, 60.0), "full", 256, store)
    d = default_animator.machine_default()
    assert (d.animator, d.preset) == ("geometric", "full")
    assert "ms a frame" in d.why and "--animator neural" in d.why and "--remeasure" in d.why
    assert default_animator.machine_default(512).animator == "neural"  # the verdict is for 256
    assert default_animator.machine_default(live=False).animator == "neural"  # a render need not keep up
    assert default_animator.machine_default(on_backend="tensorrt").animator == "neural"  # not measured there
    check = animator_check()
    assert check.detail.startswith("geometric") and "Measured live here: full@256 on torch-cuda" in check.detail
    assert "2 starts" in check.detail


def test_the_cli_falls_back_to_geometric_live_when_auto_picked_a_gpu_too_slow(astronaut_source, store, monkeypatch,
                                                                              capsys):
    """`live` without --animator on a GPU measured too slow runs the geometric avatar; `--animator neural` and
    `render` keep the networks."""
    import argparse

    from avatar_app import animate_commands
    from avatar_app.inference import default_animator as d
    from avatar_app.runtime import neural_animator

    made = []

    def build(source, model=None, **kwargs):  # the neural animator on a slow GPU (none here)
        made.append(_GpuAnimator(source, 60.0))
        return made[-1]

    monkeypatch.setattr(neural_animator, "NeuralAnimator", build)
    monkeypatch.setattr(d, "machine_default", lambda *a, **k: d.MachineDefault("neural", "full", d.WHY_NEURAL))

    def args(animator: str) -> argparse.Namespace:
        return argparse.Namespace(animator=animator, weights=None, preset=None, calibration=None, precision="fp16",
                                  backend="auto")

    assert animate_commands.make_animator(args("auto"), astronaut_source, live=True) is None
    assert "instead of the neural one" in capsys.readouterr().err
    assert animate_commands.make_animator(args("auto"), astronaut_source) is made[-1]  # render: the networks
    assert animate_commands.make_animator(args("neural"), astronaut_source, live=True) is made[-1]  # chosen: kept
