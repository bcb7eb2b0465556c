"""Switching profiles in the running app swaps the profile's portrait and weights into the
running networks: no restart, the same backends and compiled modules, frames keep coming."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("PySide6.QtWidgets", exc_type=ImportError)

from avatar_app.inference.networks import model_hash  # noqa: E402
from avatar_app.models.portrait import load_checkpoint  # noqa: E402
from avatar_app.models.shipped import shipped_weights  # noqa: E402
from avatar_app.profiles import save_profile  # noqa: E402
from gui_helpers import make_window, start, stop  # noqa: E402,F401  (make_window is a fixture)

WEIGHTS = Path(__file__).resolve().parents[1] / "assets" / "weights" / "lite-synthetic.safetensors"


def _swapped(window, count: int) -> bool:
    return sum("swapped into the running networks" in m for m in window.status.messages()) >= count


def test_switching_profiles_swaps_weights_into_the_running_avatar(make_window, qtbot, hopper):
    pytest.importorskip("dlib", exc_type=ImportError)
    if shipped_weights("lite") is None:
        pytest.skip("the shipped lite weights are not installed (the plain neural avatar runs them)")
    w = make_window()
    personal = load_checkpoint(WEIGHTS)
    save_profile("me", personal, hopper)
    w.refresh_profiles()
    for box, value in ((w.animator_box, "neural"), (w.backend_box, "torch-cpu")):
        box.setCurrentIndex(box.findData(value))
        box.activated.emit(box.currentIndex())
    start(qtbot, w)
    qtbot.waitUntil(lambda: "networks" in w.stats_label.text(), timeout=20000)
    pipeline = w.controller._pipeline
    animator = pipeline.animator
    backends = dict(animator.chain.backends)
    modules = {n: b.module for n, b in backends.items()}
    states: list[str] = []
    w.controller.state_changed.connect(states.append)

    w.use_profile("me")
    qtbot.waitUntil(lambda: _swapped(w, 1), timeout=30000)
    assert w.controller._pipeline is pipeline and pipeline.animator is animator and states == []  # no restart
    assert all(animator.chain.backends[n] is b and b.module is modules[n] for n, b in backends.items())
    assert model_hash(animator.model) == model_hash(personal)
    shown = w.avatar_view.frames_shown
    qtbot.waitUntil(lambda: w.avatar_view.frames_shown >= shown + 3, timeout=15000)  # still animating

    w.use_profile(None)  # back to the plain portrait: the shipped weights, again in place
    qtbot.waitUntil(lambda: _swapped(w, 2), timeout=30000)
    assert w.controller._pipeline is pipeline and states == []
    assert model_hash(animator.model) == model_hash(load_checkpoint(shipped_weights("lite")))
    assert pipeline.error is None
    stop(qtbot, w)
