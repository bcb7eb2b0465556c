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

from . import __version__


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


def backend_checks(probe_fn=None, verdict_fn=None) -> list[Check]:
    """Each neural backend: usable, or why not; a self-tested backend's verdict on this GPU; then
    what ``--backend auto`` picks (``probe_fn``: :func:`~avatar_app.inference.backend.probe` and
    ``verdict_fn``: :func:`~avatar_app.inference.selftest.check` without running a test, unless given)."""
    from .inference.backend import AUTO_ORDER, BackendUnavailable, probe
    from .inference.selection import choose_backend
    from .inference.selftest import SELF_TESTED, check

    probe_fn = probe_fn or probe
    verdict_fn = verdict_fn or (lambda name: check(name, run=False))

    out = [Check("backends", "geometric animator", True, "needs no weights; runs on torch CPU")]
    details = {"torch-cpu": lambda: f"torch {_version('torch')[1]}",
               "torch-cuda": _cuda_detail, "onnxruntime": _ort_detail, "tensorrt": _trt_detail}
    for name in AUTO_ORDER:
        reason = probe_fn(name)
        if reason and name == "tensorrt" and probe_fn is probe and probe(name, build_only=True) is None:
            reason += "; engines can still be built here (avatar-app engines build)"
        out.append(Check("backends", name, reason is None, details[name]() if reason is None else reason))
    verdicts = {name: verdict_fn(name) for name in SELF_TESTED if probe_fn(name) is None}
    for name, (verdict, why) in verdicts.items():
        out.append(Check("backends", f"{name} self-test", why is None, why or verdict.explain()))
    try:
        choice = choose_backend("auto", probe_fn, lambda name: verdicts[name][1] if name in verdicts else None)
        out.append(Check("backends", "--backend auto", True, choice.explain()))
    except BackendUnavailable as exc:
        out.append(Check("backends", "--backend auto", False, str(exc)))
    return out


def animator_check() -> Check:
    """What ``--animator auto`` (the app's *auto*) runs here, and why."""
    from .inference import live_speed
    from .inference.default_animator import machine_default
    from .inference.selftest import VerdictStore

    d = machine_default()
    which = f"neural ({d.preset})" if d.animator == "neural" else d.animator
    store = VerdictStore()
    measured = store.all(live_speed.KIND, live_speed.gpu_name()) if store.has(live_speed.KIND) else []
    speed = "; ".join(f"{v.version}: {v.detail} ({v.when}{', ' + str(v.count) + ' starts' if v.count > 1 else ''})"
                      for v in measured)
    return Check("backends", "--animator auto", True, f"{which}: {d.why}"
                 + (f". Measured live here: {speed}" if speed else ""))


def _cuda_detail() -> str:
    import torch

    cap = ".".join(map(str, torch.cuda.get_device_capability(0)))
    return f"{torch.cuda.get_device_name(0)} (compute capability {cap}), torch {torch.__version__}"


def _trt_detail() -> str:
    from .inference.backend import gpu_compute_capability
    from .inference.trt_api import find

    flavour, _ = find()
    if flavour is None:  # probed usable by a stand-in probe: nothing more to say
        return "usable"
    return f"{flavour.label}, its engines run on this GPU (compute capability {gpu_compute_capability()})"


def _ort_detail() -> str:
    import onnxruntime

    return f"{onnxruntime.__version__}, providers: {', '.join(onnxruntime.get_available_providers())}"


def camera_checks() -> list[Check]:
    from .capture.camera import list_cameras

    cams = list_cameras()
    return [Check("cameras", "cameras found", bool(cams), ", ".join(cams) if cams else "none found")]


def run_checks() -> list[Check]:
    checks = [Check("system", "avatar-app", True, __version__),
              Check("system", "python", True, f"{sys.version.split()[0]} on {platform.platform()}")]
    return checks + package_checks() + [tracker_check()] + backend_checks() + [animator_check()] + camera_checks()


def format_checks(checks: list[Check]) -> str:
    lines, section = [], None
    for c in checks:
        if c.section != section:
            section = c.section
            lines.append(f"{section}:")
        lines.append(f"  [{'ok' if c.ok else '--'}] {c.name}: {c.detail}")
    return "\n".join(lines)
