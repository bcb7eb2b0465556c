"""Inference backends: the names users choose between (see ``--backend``)."""

from __future__ import annotations

#: ``auto`` tries each of the others in this order and says why it skipped any.
BACKEND_CHOICES: tuple[str, ...] = ("auto", "tensorrt", "torch-cuda", "onnxruntime", "torch-cpu")
