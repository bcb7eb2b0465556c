"""``avatar-app doctor``: what this machine has, and what the app can use on it.

Each check is a :class:`Check` (name, ok, detail) so front ends can show them;
nothing here raises for a missing package — that is what it reports.
"""

from __future__ import annotations

import importlib
import importlib.util
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

from .. import __version__


@dataclass(frozen=True)
class Check:
    section: str
    name: str
    ok: bool
    detail: str


def _version(module: str) -> tuple[bool, str]:
    if importlib.util.find_spec(module) is None:
        return False, "not installed"
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # a broken install is worth reporting, not crashing on
        return False, f"installed but fails to import: {exc}"
    return True, str(getattr(mod, "__version__", "installed"))


def package_checks() -> list[Check]:
    out = []
    for name, module, why in [
        ("numpy", "numpy", "arrays"),
        ("opencv", "cv2", "video and camera I/O"),
        ("mediapipe", "mediapipe", "face tracking"),
        ("torch", "torch", "analytic flow and neural networks"),
        ("onnxruntime", "onnxruntime", "ONNX Runtime backend (optional)"),
        ("tensorrt", "tensorrt", "TensorRT backend (optional, NVIDIA GPUs)"),
        ("pycuda", "pycuda", "TensorRT buffers (optional)"),
        ("pyvirtualcam", "pyvirtualcam", "virtual camera output (optional)"),
        ("PySide6", "PySide6", "desktop app (optional)"),
    ]:
        ok, detail = _version(module)
        out.append(Check("packages", name, ok, f"{detail} — {why}"))
    return out


def tracker_check() -> Check:
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        return Check("tracker", "face mesh model", False, "mediapipe is not installed")
    model = Path(spec.submodule_search_locations[0]) / "modules" / "face_landmark" / "face_landmark_with_attention.tflite"
    if model.is_file():
        return Check("tracker", "face mesh model", True, f"bundled with mediapipe ({model.name})")
    return Check(
        "tracker", "face mesh model", False,
        "this mediapipe ships no FaceMesh model; install mediapipe==0.10.21 or pass a face_landmarker.task file",
    )


def backend_checks() -> list[Check]:
    out = [Check("backends", "geometric animator", True, "needs no weights; runs on torch CPU")]
    try:
        import torch

        out.append(Check("backends", "torch-cpu", True, f"torch {torch.__version__}, {torch.get_num_threads()} threads"))
        if torch.cuda.is_available():
            name = torch.cuda.get_device_name(0)
            cap = ".".join(map(str, torch.cuda.get_device_capability(0)))
            out.append(Check("backends", "torch-cuda", True, f"{name} (compute capability {cap})"))
        else:
            why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            out.append(Check("backends", "torch-cuda", False, why))
    except ImportError:
        out.append(Check("backends", "torch-cpu", False, "torch is not installed"))
    ok, detail = _version("onnxruntime")
    if ok:
        import onnxruntime

        detail = f"{detail}, providers: {', '.join(onnxruntime.get_available_providers())}"
    out.append(Check("backends", "onnxruntime", ok, detail))
    ok, detail = _version("tensorrt")
    out.append(Check("backends", "tensorrt", ok, detail if ok else "tensorrt is not installed (NVIDIA GPUs only)"))
    return out


def camera_checks() -> list[Check]:
    from ..capture.camera import list_cameras

    cams = list_cameras()
    return [Check("cameras", "cameras found", bool(cams), ", ".join(cams) if cams else "none found")]


def run_checks() -> list[Check]:
    checks = [Check("system", "avatar-app", True, __version__),
              Check("system", "python", True, f"{sys.version.split()[0]} on {platform.platform()}")]
    return checks + package_checks() + [tracker_check()] + backend_checks() + camera_checks()


def format_checks(checks: list[Check]) -> str:
    lines, section = [], None
    for c in checks:
        if c.section != section:
            section = c.section
            lines.append(f"{section}:")
        lines.append(f"  [{'ok' if c.ok else '--'}] {c.name}: {c.detail}")
    return "\n".join(lines)
