"""Build every network's TensorRT engine for both presets at 256 and 512, and run what this GPU can.

For the GPU machine (issue 15): with TensorRT or TensorRT for RTX and pycuda importable, this
builds fp16 engines through the app's own engine cache (``TensorRTBackend.engine_path``), times
each build, checks that a second request reuses the cached file, loads each engine, checks its
inputs and outputs against the network, refits it with perturbed weights, and runs one frame
against torch where the GPU can run the engines — saying why where it cannot.  One JSON line per
engine on stdout, a summary at the end:

    python tools/trt_verify.py --cache /tmp/engines [--presets lite full] [--sizes 256 512]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avatar_app.models.portrait import PortraitModel, load_checkpoint  # noqa: E402
from avatar_app.models.shipped import shipped_weights  # noqa: E402
from avatar_app.inference.backend import probe  # noqa: E402
from avatar_app.inference.engine_cache import EngineCache  # noqa: E402
from avatar_app.inference.export import model_networks, relative_errors, torch_outputs  # noqa: E402
from avatar_app.inference.networks import example_inputs, weights_of  # noqa: E402
from avatar_app.inference.trt_backend import TensorRTBackend, _trt_logger, cuda_context  # noqa: E402
from avatar_app.inference.trt_build import check_io, engine_io, ordered_like  # noqa: E402
from avatar_app.inference.trt_refit import onnx_initializers, refit_engine  # noqa: E402


def _model(preset: str) -> tuple[PortraitModel, str]:
    path = shipped_weights(preset)
    if path is not None:
        return load_checkpoint(path), path.name
    torch.manual_seed(0)
    return PortraitModel(preset), "untrained (seed 0)"


def _perturbed(model: PortraitModel) -> PortraitModel:
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(1.02).add_(0.001)
    return other


def verify(preset: str, size: int, cache: EngineCache, run_reason: str | None) -> list[dict]:
    model, weights = _model(preset)
    backend = TensorRTBackend("fp16", cache=cache, build_only=True)
    trt = backend.flavour.module
    personal = model_networks(_perturbed(model), size)
    rows = []
    for name, net in model_networks(model, size).items():
        row = {"preset": preset, "size": size, "network": name, "weights": weights, "trt": backend.flavour.label}
        t0 = time.perf_counter()
        try:
            path = backend.engine_path(net)
        except Exception as exc:
            rows.append({**row, "built": False, "error": str(exc)})
            print(json.dumps(rows[-1]), flush=True)
            continue
        row.update(built=True, build_s=round(time.perf_counter() - t0, 2), bytes=path.stat().st_size,
                   precision=backend.key(net)["precision"])
        t0 = time.perf_counter()
        row["cached"] = backend.engine_path(net) == path and time.perf_counter() - t0 < 1.0
        with cuda_context():
            try:
                engine = trt.Runtime(_trt_logger()).deserialize_cuda_engine(path.read_bytes())
                row["loaded"] = engine is not None
            except Exception as exc:
                engine, row["loaded"], row["load_error"] = None, False, str(exc)
            if engine is not None:
                try:
                    check_io(net.spec, *ordered_like(net.spec, *engine_io(engine)), what="built engine")
                    row["io_ok"] = True
                except Exception as exc:
                    row["io_ok"], row["io_error"] = False, str(exc)
                new = personal[name]
                try:
                    row["refitted"] = refit_engine(
                        engine, weights_of(new.model, name, size),
                        lambda: onnx_initializers(backend.exported_onnx(new, row["precision"])),
                        _trt_logger(), trt)
                except Exception as exc:
                    row["refitted"], row["refit_error"] = 0, str(exc)
        if run_reason is None:
            runner = TensorRTBackend("fp16", cache=cache)
            runner.load(net)
            inputs = example_inputs(net.spec, 3)
            got = {k: runner.to_numpy(v) for k, v in runner.run(inputs).items()}
            row["max_rel_error"] = max(relative_errors(torch_outputs(net, inputs), got).values())
        else:
            row["ran"] = f"not run: {run_reason}"
        rows.append(row)
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("AVATAR_APP_ENGINES", "engines")))
    ap.add_argument("--presets", nargs="+", default=["lite", "full"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[256, 512])
    args = ap.parse_args()
    why = probe("tensorrt", build_only=True)
    if why:
        sys.exit(f"cannot build TensorRT engines here: {why}")
    run_reason = probe("tensorrt")
    cache = EngineCache(args.cache)
    rows = [r for preset in args.presets for size in args.sizes for r in verify(preset, size, cache, run_reason)]
    built = [r for r in rows if r.get("built")]
    print(json.dumps({"summary": True, "engines": len(rows), "built": len(built),
                      "build_s_total": round(sum(r["build_s"] for r in built), 1),
                      "cached_reused": sum(bool(r.get("cached")) for r in built),
                      "loaded": sum(bool(r.get("loaded")) for r in built),
                      "io_ok": sum(bool(r.get("io_ok")) for r in built),
                      "refitted": sum(r.get("refitted", 0) > 0 for r in built),
                      "ran": sum("max_rel_error" in r for r in built), "run_reason": run_reason}), flush=True)


if __name__ == "__main__":
    main()
