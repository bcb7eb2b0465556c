"""The animator the app starts with on this machine, and why (``--animator auto``, the app's *auto*).

Issue 12: the neural animator is the default where it is measured better than the geometric avatar
*and* holds 25 fps live (docs/BENCHMARKS.md, *Neural models live*): on a GPU the shipped ``full``
model; on a CPU the lite model does not, so the geometric avatar stays.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import DependencyError
from ..models.shipped import shipped_weights
from . import backend

# Why each default (the CLI's --animator help and notes, the app's animator box).  Measured with `bench --live
# --animator {geometric,neural} --size 256 --kind synthetic tracked` (docs/BENCHMARKS.md, *Neural models live*):
# on a 2-core CPU the lite model through ONNX Runtime, on an H200 the full model compiled with CUDA graphs.
WHY_NEURAL = ("neural (the shipped full model) is the default on a GPU: it is closer to real faces than the "
              "geometric avatar (+1.09 dB on people it never saw) and on an H200 it kept up with a 30 fps camera, "
              "16 ms from camera frame to output with face tracking (a smaller GPU may be slower: the first start "
              "times the networks here and falls back to geometric if they cannot keep up with 25 fps)")
WHY_GEOMETRIC = ("geometric is the default without a GPU: the shipped lite model is closer to real faces (+0.76 dB on "
                 "people it never saw), but on a 2-core CPU it ran live at 13 fps against the geometric avatar's 30, "
                 "under the 25 fps a call needs")


@dataclass(frozen=True)
class MachineDefault:
    """The animator (and neural preset) this machine starts with, and why."""

    animator: str  # "geometric" or "neural"
    preset: str  # the neural preset: "full" on a GPU, else "lite"
    why: str


def machine_default(size: int = 256, live: bool = True, on_backend: str | None = None) -> MachineDefault:
    """``neural`` with the shipped ``full`` weights where a GPU backend can run them (TensorRT or torch
    on CUDA) and the identity embedding they need is installed, else ``geometric`` (the CPU's lite
    model does not hold 25 fps live), with the reason.  For ``live`` use, where a first start measured that
    the ``full`` networks do not keep up at ``size`` on this GPU (:mod:`.live_speed`; with ``on_backend``, on that
    backend), ``geometric``, saying so (a render is not live: it takes the networks however fast they run)."""
    from ..models.identity import model_files
    from .live_speed import fallback_note, known_slow

    gpu = backend.probe("torch-cuda") is None or backend.probe("tensorrt") is None
    if not gpu:
        return MachineDefault("geometric", "lite", WHY_GEOMETRIC)
    if shipped_weights("full") is None:
        return MachineDefault("geometric", "full", "geometric is the default: the shipped full weights are not "
                                                   "installed, and the untrained model reproduces the geometric avatar")
    try:
        model_files()
    except DependencyError as exc:
        why = str(exc).rstrip(".")
        return MachineDefault("geometric", "full", "geometric is the default here although there is a GPU: "
                                                   + why[:1].lower() + why[1:])
    slow = known_slow("full", size, on_backend) if live else None
    if slow is not None:
        return MachineDefault("geometric", "full", "geometric is the default here although there is a GPU: "
                                                   + fallback_note(slow))
    return MachineDefault("neural", "full", WHY_NEURAL)
