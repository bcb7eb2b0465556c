"""The weights that ship with avatar-app.

``assets/weights/`` (provenance in assets/README.md) holds the networks trained on real
talking-head video: ``full-real.safetensors`` (warp network, generator and 256→512
enhancer) and ``lite-real.safetensors`` (warp network and generator for CPUs).  They are
found next to the package in a source checkout (``pip install -e .``); a wheel without
them falls back to the untrained networks, and says so.  They are what ``--animator neural``
runs without ``--weights``; the geometric animator stays the default until a model beats it
on the validation people (docs/BENCHMARKS.md, "Real faces (issue 12)").
"""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "assets" / "weights"
SHIPPED = {"full": "full-real.safetensors", "lite": "lite-real.safetensors"}


def shipped_weights(preset: str) -> Path | None:
    """The shipped checkpoint of ``preset`` (``lite`` or ``full``), or ``None`` when it is not installed."""
    name = SHIPPED.get(preset)
    path = WEIGHTS_DIR / name if name else None
    return path if path is not None and path.is_file() else None


def default_preset() -> str:
    """``full`` where torch sees a CUDA GPU, else ``lite``."""
    import torch

    return "full" if torch.cuda.is_available() else "lite"
