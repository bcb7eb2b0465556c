"""CUDA paths checked for correctness against the CPU: the compiled fp16 chain, refit under CUDA
graphs, and the geometric animator's torch warp.

Run them on a machine with an NVIDIA GPU (torch with CUDA, and Triton for torch.compile)::

    python -m pytest -q -m gpu

Everywhere else every test here skips with the reason (``probe("torch-cuda")``: no CUDA GPU
visible, or a CPU build of torch).  The tolerances are the README's measured figures with a
margin; the frames compared are the trained ``lite-synthetic`` weights (untrained networks are
near-identity by construction, which would hide precision loss) driven by the synthetic driver.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from avatar_app.capture.synthetic import FacePose, SyntheticDriver, synthetic_landmarks, timeline_pose
from avatar_app.face.retarget import Retargeter
from avatar_app.face.source import prepare_source
from avatar_app.models.portrait import PortraitModel, load_checkpoint
from avatar_app.runtime.animator import GeometricAnimator
from avatar_app.inference.backend import probe
from avatar_app.inference.calibration import CalibrationSet, record_calibration
from avatar_app.runtime.neural_animator import NeuralAnimator
from avatar_app.types import Landmarks

CUDA_REASON = probe("torch-cuda")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(CUDA_REASON is not None, reason=f"CUDA test: {CUDA_REASON}")]
WEIGHTS = Path(__file__).resolve().parents[1] / "assets" / "weights" / "lite-synthetic.safetensors"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


@pytest.fixture(scope="module")
def trained() -> PortraitModel:
    return load_checkpoint(WEIGHTS)


def _calibration(hopper, tracker, size: int, frames: int = 16) -> CalibrationSet:
    """Grace Hopper driven by 4 s of the synthetic driver; a fixed identity (no dlib needed)."""
    source = prepare_source(hopper, size, tracker=tracker)
    drivers = (f.landmarks for f in SyntheticDriver(fps=4, duration=4, seed=3))
    identity = np.random.default_rng(0).standard_normal(128).astype(np.float32) * 0.1
    return record_calibration(source, drivers, identity, frames=frames, description="gpu test")


def _frames(animator, cal: CalibrationSet) -> np.ndarray:
    return np.stack([animator.animate(Landmarks(p, (cal.size, cal.size))) for p in cal.targets])


@pytest.mark.parametrize("size,max_levels", [(256, 4), (512, 6)])  # README: measured 2 / 4
def test_compiled_fp16_chain_matches_the_cpu(trained, hopper, still_tracker, size, max_levels):
    cal = _calibration(hopper, still_tracker, size)
    gpu = NeuralAnimator(cal.source(), model=trained, identity=cal.identity, backend="torch-cuda",
                         precision="fp16")  # compiled + CUDA graphs: what --backend torch-cuda runs
    cpu = NeuralAnimator(cal.source(), model=trained, identity=cal.identity, backend="torch-cpu")
    warp = gpu.chain.backends["warp"]
    assert warp.compile and warp.cuda_graphs and warp.precision == "fp16"
    fg, fc = _frames(gpu, cal), _frames(cpu, cal)
    diff = np.abs(fg.astype(int) - fc.astype(int))
    assert diff.max() <= max_levels and psnr(fg, fc) >= 60.0, (diff.max(), diff.mean(), psnr(fg, fc))
    assert psnr(fc, np.stack([cal.crop] * len(fc))) < 40  # the avatar moved: the comparison is not trivial


def test_refit_under_cuda_graphs_runs_the_new_weights(trained, hopper, still_tracker):
    cal = _calibration(hopper, still_tracker, 256, frames=8)
    anim = NeuralAnimator(cal.source(), model=PortraitModel("lite"), identity=cal.identity, backend="torch-cuda",
                          precision="fp16")
    warp = anim.chain.backends["warp"]
    graph = warp._graph
    assert graph is not None, "the warp network runs as a captured CUDA graph"
    before = _frames(anim, cal)
    anim.set_model(trained)
    assert warp._graph is graph  # refitted in place: the same graph replays, now on the new weights
    after = _frames(anim, cal)
    fresh = _frames(NeuralAnimator(cal.source(), model=trained, identity=cal.identity, backend="torch-cuda",
                                   precision="fp16"), cal)
    assert np.abs(after.astype(int) - fresh.astype(int)).max() <= 1
    assert np.abs(after.astype(int) - before.astype(int)).max() > 10  # the weights really changed


@pytest.mark.parametrize("portrait", ["astronaut", "hopper"])
def test_geometric_animator_on_cuda_matches_the_cpu(request, still_tracker, portrait):
    source = prepare_source(request.getfixturevalue(portrait), 256, tracker=still_tracker)
    rt = Retargeter(source.landmarks)
    rt.calibrate(synthetic_landmarks(FacePose()))
    gpu = GeometricAnimator(source, device="cuda")
    cpu = GeometricAnimator(source, device="cpu", opencv_warp=False)  # the same torch path on the CPU
    worst, means = 0, []
    for t in np.arange(0.0, 13.0, 0.25):  # the synthetic driver's whole timeline
        target = rt(synthetic_landmarks(timeline_pose(t)))
        diff = np.abs(gpu.animate(target).astype(int) - cpu.animate(target).astype(int))
        worst, means = max(worst, int(diff.max())), means + [float(diff.mean())]
    assert worst <= 2 and max(means) < 0.1, (worst, max(means))
