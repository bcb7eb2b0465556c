"""The weights that ship with avatar-app, and the model the app starts from.

``assets/weights/`` (provenance in assets/README.md) holds the networks trained on real
talking-head video: ``full-real.safetensors`` (warp network, generator and 256→512
enhancer) and ``lite-real.safetensors`` (warp network and generator for CPUs).  They are
found next to the package in a source checkout (``pip install -e .``); a wheel without
them falls back to the untrained networks, and says so.  They are what ``--animator neural``
runs without ``--weights``; the geometric animator stays the default until a model beats it
on the validation people (docs/BENCHMARKS.md, "Real faces (issue 12)").

The untrained model is always the same one (:data:`UNTRAINED_SEED`): its weights hash is
what the engine cache keys its exports and engines by, so a fresh random initialisation on
every start would re-export and rebuild every engine on every start.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .assets import WEIGHTS_DIR
SHIPPED = {"full": "full-real.safetensors", "lite": "lite-real.safetensors"}

# Why the geometric animator is still the default (the CLI's --animator help and the app's animator
# box say it).  Measured with `bench --live --animator {geometric,neural} --preset lite --backend
# onnxruntime --size 256 --kind tracked --seconds 8` on a 2-core CPU (docs/BENCHMARKS.md, *Neural
# models live on a CPU*); on GPUs the compiled `full` path is still to be measured live.
DEFAULT_ANIMATOR_WHY = (
    "geometric is the default: the shipped neural models are closer to real faces (full +1.09 dB, lite "
    "+0.76 dB on people they never saw), but on a 2-core CPU the lite model ran live at 13 fps against the "
    "geometric avatar's 30, under the 25 fps a call needs, and the GPU path is not yet measured live")
UNTRAINED_SEED = 0


def shipped_weights(preset: str) -> Path | None:
    """The shipped checkpoint of ``preset`` (``lite`` or ``full``), or ``None`` when it is not installed."""
    name = SHIPPED.get(preset)
    path = WEIGHTS_DIR / name if name else None
    return path if path is not None and path.is_file() else None


def default_preset() -> str:
    """``full`` where torch sees a CUDA GPU, else ``lite``."""
    import torch

    return "full" if torch.cuda.is_available() else "lite"


def untrained_model(preset: str):
    """The untrained ``preset`` model: the same weights on every call (the caller's torch
    random state is left as it was)."""
    import torch

    from .portrait import PortraitModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(UNTRAINED_SEED)
        return PortraitModel(preset)


@dataclass
class StartModel:
    """The model the app starts from, and where its weights came from."""

    model: object  # a PortraitModel
    preset: str
    weights: Path | None  # the checkpoint read; None for the untrained model
    shipped: bool  # the weights are the shipped real-trained ones

    @property
    def trained(self) -> bool:
        return self.weights is not None

    def describe(self) -> str:
        """``"untrained lite"``, or the checkpoint's path (provenance of a profile, log lines)."""
        return str(self.weights) if self.weights is not None else f"untrained {self.preset}"


def start_model(preset: str, weights: str | Path | None = None) -> StartModel:
    """The chosen ``weights``, else the shipped ones of ``preset``, else the untrained ``preset``
    model (:func:`untrained_model`), on the CPU."""
    from .portrait import load_checkpoint

    path = Path(weights) if weights else shipped_weights(preset)
    if path is None:
        return StartModel(untrained_model(preset), preset, None, False)
    model = load_checkpoint(path, "cpu")
    return StartModel(model, model.preset, path, not weights)
