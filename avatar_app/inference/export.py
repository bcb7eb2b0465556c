"""ONNX export of the networks, checked against torch on the way out.

``avatar-app export`` writes one ``.onnx`` per network (static shapes, opset 17,
4-D ``GridSample`` only, no custom operators) and runs each through ONNX Runtime
against the torch module on the same inputs; a network whose outputs differ by more
than ``PARITY_TOLERANCE`` (relative, fp32) is not written.
"""

from __future__ import annotations

import copy
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import DependencyError, OutputError
from ..models.portrait import NET_SIZE, PortraitModel
from .engine_cache import EngineCache
from .networks import NETWORKS_VERSION, NetworkSpec, build_stage, example_inputs, model_hash, network_specs

log = logging.getLogger(__name__)

OPSET = 17
PARITY_TOLERANCE = 1e-3  # max |onnx - torch| / max |torch|, per output, fp32
FP16_PARITY_TOLERANCE = 2e-2  # the same for a mixed-precision (fp16) export against fp32 torch
EXPORT_PRECISIONS = ("fp32", "fp16")


@dataclass
class Network:
    """One network of a model, ready for any backend: its spec, torch module and key."""

    spec: NetworkSpec
    module: torch.nn.Module  # fp32, CPU, eval
    model_hash: str
    size: int
    model: PortraitModel  # the fp32 CPU copy the module shares weights with
    key_extra: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    def key(self, kind: str, precision: str = "fp32", **fields) -> dict:
        """The cache key of an artifact built from this network."""
        return {"network": self.name, "model": self.model_hash, "size": self.size, "kind": kind,
                "precision": precision, "networks_version": NETWORKS_VERSION, "opset": OPSET,
                **self.key_extra, **fields}


def model_networks(model: PortraitModel, size: int = NET_SIZE, names=None) -> dict[str, Network]:
    """``model``'s networks for ``size`` px avatars (all, or those ``names``)."""
    model = copy.deepcopy(model).to("cpu").float().eval()  # the caller's model stays where it is
    digest = model_hash(model)
    specs = network_specs(model, size)
    return {n: Network(specs[n], build_stage(model, n, size), digest, size, model)
            for n in specs if names is None or n in names}


def _need_onnx() -> None:
    for mod in ("onnx", "onnxruntime"):
        try:
            __import__(mod)
        except ImportError as exc:
            raise DependencyError(f"Exporting needs the {mod} package; install it with 'pip install {mod}'.") from exc


class _Float32Outputs(torch.nn.Module):
    """The network with every output cast to float32 (an autocast region ends in fp16 where
    its last operation ran in fp16; the networks' interface is float32)."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, *inputs):
        return tuple(o.float() for o in self.inner(*inputs))


def export_onnx(network: Network, path: str | Path, precision: str = "fp32") -> Path:
    """Write ``network`` to ``path`` as ONNX (no parity check; see :func:`check_parity`).

    ``fp16`` traces under torch's CPU autocast: convolutions and matrix products run in
    fp16 with fp16 weights (folded into fp16 initializers), while what autocast keeps in
    fp32 — sampling grids, normalisation statistics, the inputs and outputs — stays fp32.
    That is the mixed precision the torch-cuda backend runs, written out explicitly for
    strongly typed TensorRT builds (TensorRT 11, TensorRT for RTX), which take each
    tensor's type from the model instead of choosing precisions themselves.  The folded
    initializers lose their state-dict names (``onnx::Conv_12``); they are the same in
    every export of one architecture, so a refit takes them from the new model's export.
    """
    if precision not in EXPORT_PRECISIONS:
        raise ValueError(f"ONNX exports are {' or '.join(EXPORT_PRECISIONS)}, not {precision!r}")
    _need_onnx()
    path = Path(path)
    inputs = tuple(torch.from_numpy(v) for v in example_inputs(network.spec).values())
    module = network.module if precision == "fp32" else _Float32Outputs(network.module)
    mixed = torch.autocast("cpu", dtype=torch.float16, enabled=precision == "fp16")
    with warnings.catch_warnings(), torch.no_grad(), mixed:
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(module, inputs, str(path), input_names=[t.name for t in network.spec.inputs],
                          output_names=list(network.spec.outputs), opset_version=OPSET, do_constant_folding=True,
                          dynamo=False)
    import onnx

    onnx.checker.check_model(str(path))
    return path


def onnx_session(path: str | Path, threads: int | None = None, providers=None):
    """An ONNX Runtime session (CPU unless ``providers`` says otherwise).

    ONNX Runtime drops a provider it cannot start (CUDA without its libraries, say) and runs on
    the next one without a word; that fall-back is logged here as a warning with what was asked.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    # A chain holds five sessions, each with its own thread pool: threads that spin while
    # waiting for work would steal the cores the next network needs.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    wanted = list(providers or ["CPUExecutionProvider"])
    with warnings.catch_warnings():  # its own "not in available provider names" note: said below, once
        warnings.simplefilter("ignore", UserWarning)
        session = ort.InferenceSession(str(path), opts, providers=wanted)
    used = session.get_providers()
    dropped = [p.replace("ExecutionProvider", "") for p in wanted if p not in used]
    if dropped:
        log.warning("ONNX Runtime could not start %s for %s (not in this onnxruntime build, or its libraries did not "
                    "load) and runs it on %s instead; `avatar-app doctor` shows what is available",
                    " and ".join(dropped), Path(path).name, used[0].replace("ExecutionProvider", ""))
    return session


def relative_errors(reference: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> dict[str, float]:
    """Per output: max abs difference over the reference's max magnitude."""
    return {k: float(np.abs(other[k].astype(np.float64) - ref).max() / max(np.abs(ref).max(), 1e-6))
            for k, ref in reference.items()}


def torch_outputs(network: Network, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    with torch.no_grad():
        outs = network.module(*(torch.from_numpy(inputs[t.name]) for t in network.spec.inputs))
    return {n: o.numpy() for n, o in zip(network.spec.outputs, outs)}


def check_parity(network: Network, path: str | Path, seeds=(0, 1)) -> dict[str, float]:
    """Worst relative error per output between ONNX Runtime and torch on example inputs."""
    sess = onnx_session(path)
    worst: dict[str, float] = {}
    for seed in seeds:
        inputs = example_inputs(network.spec, seed)
        ref = torch_outputs(network, inputs)
        got = dict(zip(network.spec.outputs, sess.run(None, inputs)))
        for k, e in relative_errors(ref, got).items():
            worst[k] = max(worst.get(k, 0.0), e)
    return worst


def cached_onnx(network: Network, cache: EngineCache | None = None, precision: str = "fp32") -> Path:
    """The network's ONNX file (``fp32``, or mixed ``fp16``: see :func:`export_onnx`) from the
    cache, exported and parity-checked against fp32 torch when missing."""
    cache = cache or EngineCache()
    tolerance = PARITY_TOLERANCE if precision == "fp32" else FP16_PARITY_TOLERANCE

    def build(tmp: Path) -> None:
        export_onnx(network, tmp, precision)
        errors = check_parity(network, tmp, seeds=(0,))
        bad = {k: e for k, e in errors.items() if e > tolerance}
        if bad:
            raise OutputError(f"The exported {precision} {network.name} network disagrees with torch ({bad}); "
                              "not caching it.")

    return cache.get_or_build(network.key("onnx", precision), ".onnx", build,
                              describe=f"{precision} ONNX export of {network.name}")


def export_all(model: PortraitModel, out_dir: str | Path, size: int = NET_SIZE, progress=None) -> list[dict]:
    """``avatar-app export``: every network to ``out_dir/<name>.onnx``; their parity errors."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"Cannot create the export folder '{out_dir}' ({exc.strerror}).") from exc
    rows = []
    for net in model_networks(model, size).values():
        path = out_dir / f"{net.name}.onnx"
        export_onnx(net, path)
        errors = check_parity(net, path)
        worst = max(errors.values())
        rows.append({"network": net.name, "path": str(path), "bytes": path.stat().st_size,
                     "max_rel_error": worst, "ok": worst <= PARITY_TOLERANCE})
        if progress:
            progress(rows[-1])
        if worst > PARITY_TOLERANCE:
            path.unlink()
            raise OutputError(f"The exported {net.name} network disagrees with torch (relative error {worst:.2e} "
                              f"> {PARITY_TOLERANCE:.0e}); it was not written.")
    return rows
