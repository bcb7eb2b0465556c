"""The weights that ship with avatar-app, and the model the app starts from.

``assets/weights/`` (provenance in assets/README.md) holds the networks trained on real
talking-head video: ``full-real.safetensors`` (warp network, generator and 256→512
enhancer) and ``lite-real.safetensors`` (warp network and generator for CPUs).  They are
found next to the package in a source checkout (``pip install -e .``); a wheel without
them falls back to the untrained networks, and says so.  They are what ``--animator neural``
runs without ``--weights``.  ``lite-meta-2.safetensors`` is the meta-learned start the CPU
personalization plan adapts from (:func:`personalization_start`): a start, not a model to animate with
(``lite-meta.safetensors``, the first one, stays for the profiles made from it).

The default animator depends on the machine (:func:`~avatar_app.inference.default_animator.machine_default`):
the shipped ``full`` model where a GPU runs it live, the geometric avatar elsewhere.

The untrained model is always the same one (:data:`UNTRAINED_SEED`): its weights hash is
what the engine cache keys its exports and engines by, so a fresh random initialisation on
every start would re-export and rebuild every engine on every start.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .assets import WEIGHTS_DIR
SHIPPED = {"full": "full-real.safetensors", "lite": "lite-real.safetensors"}
# Meta-learned starts for personalization, by (preset, plan), where one measured better than the shipped weights
# themselves: lite's for the CPU plan, which its meta-training ran as its inner loop (docs/PERSONALIZATION.md:
# lite-meta-2, Reptile with a longer inner loop, ahead of the first lite-meta at 112 steps on ls_demo3 and vt_529 and on 5
# of 8 validation people, level on 2).  None for full: Reptile's full weights ended behind the base's 30 s curve (H200,
# 2026-12-01, docs/REAL_FACES.md).
SHIPPED_META = {("lite", "warp+decoder"): "lite-meta-2.safetensors"}
# Earlier starts stay installed: a profile stores only what personalization adapted, over the start it names
# (``shipped:NAME``, checked by SHA-256), so a profile made from one loads only where that file is.
RETIRED_META = ("lite-meta.safetensors",)

UNTRAINED_SEED = 0


def shipped_weights(preset: str) -> Path | None:
    """The shipped checkpoint of ``preset`` (``lite`` or ``full``), or ``None`` when it is not installed."""
    return _installed(SHIPPED.get(preset))


def _installed(name: str | None) -> Path | None:
    """``assets/weights/NAME`` where it is installed, else ``None`` (also for no name)."""
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


def personalization_start(preset: str, weights: str | Path | None = None,
                          plan: str = "warp+decoder") -> tuple[StartModel, StartModel | None]:
    """``(base, meta)``: the model personalization is compared against (:func:`start_model`: what the
    app animates with, unpersonalized) and the weights it adapts from when they differ -- the shipped
    meta-learned start of ``preset`` for ``plan`` (:data:`SHIPPED_META`) when ``base`` is the shipped
    model and that file is installed; ``None`` otherwise (chosen weights, another plan, or no
    meta-learned start: adapt ``base``)."""
    from .portrait import load_checkpoint

    base = start_model(preset, weights)
    path = _installed(SHIPPED_META.get((base.preset, plan)))
    if not base.shipped or path is None:
        return base, None
    return base, StartModel(load_checkpoint(path, "cpu"), base.preset, path, True)
