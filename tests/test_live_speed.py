"""Issue 12: *auto* keeps the neural animator only where it keeps up live (inference/live_speed.py)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from avatar_app.inference import live_speed
from avatar_app.inference.selftest import VerdictStore


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
    each frame takes ``ms`` milliseconds; the targets it was asked for are kept."""

    def __init__(self, source, ms: float, backend: str = "torch-cuda"):
        self.source, self.chain, self.ms, self.targets = source, _Chain(backend), ms, []

    def reset(self):
        self.resets = getattr(self, "resets", 0) + 1

    def animate(self, target):
        self.targets.append(target.points.copy())
        time.sleep(self.ms / 1000.0)
        return np.zeros((self.source.size, self.source.size, 3), np.uint8)


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("AVATAR_APP_ENGINES", str(tmp_path))  # where machine_default reads the verdicts
    return VerdictStore()


def test_a_gpu_too_slow_for_live_is_measured_once_and_remembered(astronaut_source, store):
    slow = _GpuAnimator(astronaut_source, 60.0)  # 60 ms a frame: 17 fps
    verdict = live_speed.check(slow, "full", 256, store)
    assert not verdict.ok and "ms a frame" in verdict.detail and "25 fps" in verdict.detail
    frames = live_speed.WARMUP + live_speed.FRAMES
    assert len(slow.targets) == frames and slow.resets == 1  # measured, then its ring buffer forgotten
    assert len({t.tobytes() for t in slow.targets}) > frames // 2  # the head moves: not one frame over and over
    assert live_speed.check(slow, "full", 256, store) == verdict and len(slow.targets) == frames  # read, not re-run
    assert live_speed.known_slow("full", 256, store) == verdict
    assert live_speed.known_slow("full", 512, store) is None  # measured at 256 only
    assert live_speed.known_slow("lite", 256, store) is None
    fast = _GpuAnimator(astronaut_source, 1.0, backend="tensorrt")
    assert live_speed.check(fast, "full", 256, store).ok
    assert live_speed.known_slow("full", 256, store) is None  # one backend keeps up here: auto stays neural


def test_auto_starts_geometric_on_a_gpu_measured_too_slow_and_says_why(astronaut_source, store, monkeypatch):
    from avatar_app.inference import backend, default_animator
    from avatar_app.models import identity

    monkeypatch.setattr(backend, "probe", lambda name, build_only=False: None)  # a GPU backend runs here
    monkeypatch.setattr(identity, "model_files", dict)
    assert default_animator.machine_default().animator == "neural"  # not measured yet
    live_speed.check(_GpuAnimator(astronaut_source, 60.0), "full", 256, store)
    d = default_animator.machine_default()
    assert (d.animator, d.preset) == ("geometric", "full")
    assert "ms a frame" in d.why and "--animator neural" in d.why and str(store.path) in d.why
    assert default_animator.machine_default(512).animator == "neural"  # the verdict is for 256
    assert default_animator.machine_default(live=False).animator == "neural"  # a render need not keep up


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
    monkeypatch.setattr(d, "machine_default", lambda size=256, live=True: d.MachineDefault("neural", "full",
                                                                                           d.WHY_NEURAL))

    def args(animator: str) -> argparse.Namespace:
        return argparse.Namespace(animator=animator, weights=None, preset=None, calibration=None, precision="fp16",
                                  backend="auto")

    assert animate_commands.make_animator(args("auto"), astronaut_source, live=True) is None
    assert "instead of the neural one" in capsys.readouterr().err
    assert animate_commands.make_animator(args("auto"), astronaut_source) is made[-1]  # render: the networks
    assert animate_commands.make_animator(args("neural"), astronaut_source, live=True) is made[-1]  # chosen: kept

