"""The neural animator in the geometric animator's slot: untrained, it gives the same avatar."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avatar_app.capture.synthetic import FacePose, synthetic_landmarks
from avatar_app.cli import main
from avatar_app.face.retarget import Retargeter
from avatar_app.face.source import prepare_source
from avatar_app.models.portrait import PortraitModel, save_checkpoint
from avatar_app.runtime.animator import GeometricAnimator
from avatar_app.runtime.neural_animator import NeuralAnimator

pytest.importorskip("dlib", exc_type=ImportError)

POSES = [FacePose(), FacePose(jaw=0.9, yaw=12), FacePose(pitch=10, smile=0.7, blink_left=1.0)]


def _targets(source):
    rt = Retargeter(source.landmarks)
    rt.calibrate(synthetic_landmarks(FacePose()))
    return [rt(synthetic_landmarks(p)) for p in POSES]


@pytest.mark.parametrize("size", [256, 512])
def test_untrained_neural_matches_geometric(astronaut, still_tracker, size):
    source = prepare_source(astronaut, size, tracker=still_tracker)
    geo = GeometricAnimator(source, opencv_warp=False)
    neural = NeuralAnimator(source, preset="lite")
    assert neural.identity.shape == (128,)
    for target in _targets(source):
        a = geo.animate(target)
        b = neural.animate(target)
        assert b.shape == (size, size, 3) and b.dtype == np.uint8
        diff = np.abs(a.astype(int) - b.astype(int))
        # the generator's mask starts at 0.25 %: at most a grey level or two anywhere -- except, at 512,
        # in the eye windows, which the geometric animator re-maps at 512 (issue 16) while the neural
        # path's flow is computed at 256 and upsampled: there a few pixels differ more (a known gap)
        off = (diff.max(axis=2) > 3).mean()
        assert diff.mean() < 0.3, (size, diff.mean())
        assert (diff.max() <= 3) if size == 256 else (off < 0.002), (size, diff.max(), off)


def test_source_swap_resets_the_enhancer(astronaut, hopper, still_tracker):
    a = prepare_source(astronaut, 512, tracker=still_tracker)
    b = prepare_source(hopper, 512, tracker=still_tracker)
    neural = NeuralAnimator(a, preset="lite")
    neural.animate(_targets(a)[1])
    assert neural.chain._history is not None
    neural.set_source(b)
    assert neural.chain._history is None
    out = neural.animate(b.landmarks)
    assert np.abs(out.astype(int) - b.crop.astype(int)).mean() < 1.0


def test_cli_neural_with_and_without_weights(tmp_path, capsys, astronaut_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU machine: the lite preset
    out = tmp_path / "n.mp4"
    assert main(["render", "--source", str(astronaut_path), "--synthetic", "--duration", "0.4", "--fps", "10",
                 "--animator", "neural", "-o", str(out), "--no-progress"]) == 0
    err = capsys.readouterr().err  # no --weights on a CPU: the shipped lite weights
    assert "shipped lite weights" in err and "lite-real.safetensors" in err and "untrained" not in err
    from avatar_app.models import shipped

    monkeypatch.setattr(shipped, "WEIGHTS_DIR", tmp_path / "not-installed")
    assert main(["render", "--source", str(astronaut_path), "--synthetic", "--duration", "0.4", "--fps", "10",
                 "--animator", "neural", "-o", str(out), "--no-progress"]) == 0
    assert "untrained lite neural model" in capsys.readouterr().err
    weights = save_checkpoint(PortraitModel("lite"), tmp_path / "w.safetensors")
    assert main(["render", "--source", str(astronaut_path), "--synthetic", "--duration", "0.4", "--fps", "10",
                 "--animator", "neural", "--weights", str(weights), "-o", str(out), "--no-progress"]) == 0
    assert "untrained" not in capsys.readouterr().err
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"nonsense")
    assert main(["render", "--source", str(astronaut_path), "--synthetic", "--animator", "neural",
                 "--weights", str(bad), "-o", str(out), "--no-progress"]) == 3
    assert "bad.safetensors" in capsys.readouterr().err
    assert main(["render", "--source", str(astronaut_path), "--synthetic", "--animator", "geometric",
                 "--weights", str(weights), "-o", str(out)]) == 2  # weights with the geometric animator: bad arguments
    assert main(["render", "--source", str(astronaut_path), "--synthetic", "--duration", "0.4", "--fps", "10",
                 "--weights", str(weights), "-o", str(out), "--no-progress"]) == 0  # auto: weights mean neural
    assert "neural networks on" in capsys.readouterr().err


def test_live_pipeline_runs_the_neural_animator(astronaut_source):
    import time

    from avatar_app.capture.synthetic import SyntheticDriver
    from avatar_app.runtime.pipeline import Pipeline

    neural = NeuralAnimator(astronaut_source, preset="lite")
    p = Pipeline(astronaut_source, SyntheticDriver(fps=30, duration=None, realtime=True), [], animator=neural)
    p.start()
    time.sleep(2.0)
    stats = p.stats()
    p.stop()
    assert p.error is None and stats.frames_animated >= 3
    assert "networks" in stats.stage_ms
