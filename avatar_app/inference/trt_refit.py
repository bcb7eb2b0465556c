"""Refitting a built TensorRT engine with a personalized model's weights, no rebuild.

The ONNX parser names an engine's refittable weights after the ONNX initializers, and
the exporter names those after the stage's state-dict paths (``model.warp.stem.0.weight``),
so personalized torch weights map onto the engine by name.  A weight the exporter
folded into a derived constant has no torch name; it is taken from the personalized
model's own ONNX export.  Anything still unmatched raises :class:`RefitMismatch`, and
the backend rebuilds the engine instead (saying so).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np


class RefitMismatch(Exception):
    """The engine's weights cannot be replaced one for one (the caller rebuilds instead)."""


def onnx_initializers(path: str | Path) -> dict[str, np.ndarray]:
    """The float initializers of an ONNX file by name (what the ONNX parser names refittable weights)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer
            if i.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)}


def map_weight_names(torch_names: Iterable[str], onnx_names: Iterable[str]) -> dict[str, str]:
    """torch state-dict name -> ONNX initializer name, for the weights the export kept.

    The exporter names initializers by their state-dict path, so most match exactly; a
    name that differs only by a leading module path (``a.b.weight`` vs ``b.weight``)
    matches when that is unambiguous.  Weights the graph does not use (or that constant
    folding merged into other constants) have no entry.
    """
    torch_names, onnx_names = list(torch_names), list(onnx_names)
    exact = set(torch_names) & set(onnx_names)
    mapping = {t: t for t in exact}
    free = [o for o in onnx_names if o not in exact]
    claims: dict[str, list[str]] = {}
    for t in torch_names:
        if t in exact:
            continue
        near = [o for o in free if o.endswith("." + t) or t.endswith("." + o)]
        if len(near) == 1:
            claims.setdefault(near[0], []).append(t)
    mapping.update({ts[0]: o for o, ts in claims.items() if len(ts) == 1})  # one torch name per ONNX name
    return mapping


def refit_plan(refittable: Iterable[str], weights: Mapping[str, np.ndarray],
               fallback: Mapping[str, np.ndarray] | Callable[[], Mapping[str, np.ndarray]] | None = None
               ) -> tuple[dict[str, np.ndarray], list[str]]:
    """``(new value by refittable name, refittable names with no value)``.

    ``weights`` are torch-named (mapped with :func:`map_weight_names`) or already
    ONNX-named; names they leave uncovered come from ``fallback`` (ONNX-named, e.g. the
    new model's export; a callable is only called when something is uncovered).
    """
    refittable = list(refittable)
    mapping = map_weight_names(weights, refittable)
    named = {mapping[t]: w for t, w in weights.items() if t in mapping}
    if fallback is not None and any(n not in named for n in refittable):
        extra = fallback() if callable(fallback) else fallback
        named = {**{n: extra[n] for n in refittable if n in extra}, **named}
    plan, missing = {}, []
    for name in refittable:
        if name not in named:
            missing.append(name)
        else:
            value = np.asarray(named[name])
            plan[name] = np.ascontiguousarray(value, dtype=np.float16 if value.dtype == np.float16 else np.float32)
    return plan, sorted(missing)


def refit_engine(engine, weights: Mapping[str, np.ndarray], fallback=None, logger=None, trt=None) -> int:
    """Replace ``engine``'s weights in place (it was built with ``REFIT``); the number refitted.

    ``weights`` and ``fallback`` as in :func:`refit_plan`.  Raises :class:`RefitMismatch`
    when a refittable weight has no new value or TensorRT rejects one (e.g. a new shape).
    ``trt``: the TensorRT module (default: the one :mod:`.trt_api` picks).
    """
    if trt is None:
        from .trt_api import trt as tensorrt

        trt = tensorrt()

    refitter = trt.Refitter(engine, logger or trt.Logger(trt.Logger.WARNING))
    plan, missing = refit_plan(refitter.get_all_weights(), weights, fallback)
    if missing:
        raise RefitMismatch(f"{len(missing)} refittable weight(s) have no new value, e.g. {missing[:3]}")
    keep = []  # trt.Weights points into these arrays until refit_cuda_engine returns
    for name, value in plan.items():
        keep.append(value)
        if not refitter.set_named_weights(name, trt.Weights(value)):
            raise RefitMismatch(f"TensorRT rejected new weights for {name} (shape {value.shape})")
    still = list(refitter.get_missing_weights())
    if still:
        raise RefitMismatch(f"{len(still)} weight(s) still missing after setting all, e.g. {still[:3]}")
    if not refitter.refit_cuda_engine():
        raise RefitMismatch("TensorRT could not refit the engine")
    return len(plan)
