"""``avatar-app export``, ``avatar-app engines build | list | clean | calibrate`` and
``avatar-app bench --backend``: the command line over :mod:`avatar_app.runtime`'s engines."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import AvatarError, UsageError


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", metavar="PATH", help="model checkpoint (.safetensors); default: the shipped weights of "
                   "--preset (what 'live --animator neural' runs), else the untrained --preset")
    p.add_argument("--preset", choices=("lite", "full"), default="lite", help="without --weights (default lite)")
    p.add_argument("--size", type=int, choices=(256, 512), default=256, help="avatar size the engines are for")


def add_engine_parsers(sub) -> None:
    """Add ``export`` and ``engines`` to the CLI's subparsers."""
    e = sub.add_parser("export", help="export the neural networks to ONNX (checked against torch)")
    _add_model_args(e)
    e.add_argument("-o", "--output", default="onnx", metavar="DIR", help="folder for the .onnx files (default onnx/)")

    g = sub.add_parser("engines", help="build, list or delete cached inference engines")
    actions = g.add_subparsers(dest="engines_action", metavar="ACTION", required=True)
    b = actions.add_parser("build", help="build (or reuse) every network's engine for a backend")
    _add_model_args(b)
    b.add_argument("--backend", choices=("tensorrt", "onnxruntime"), default="tensorrt")
    b.add_argument("--precision", choices=("fp32", "fp16", "int8"), default=None,
                   help="default: fp16 for tensorrt, fp32 for onnxruntime; int8 needs --calibration")
    b.add_argument("--calibration", metavar="SET.npz", help="a calibration set (avatar-app engines calibrate)")
    actions.add_parser("list", help="the cached engines and exports, with their keys")
    c = actions.add_parser("clean", help="delete cached engines")
    c.add_argument("--kind", default=None, help="only this kind (onnx, ort, tensorrt, ...); default: everything")
    k = actions.add_parser("calibrate", help="record an INT8 calibration set from a portrait and a driver")
    k.add_argument("--source", required=True, metavar="IMG", help="a portrait (ideally the one you will animate)")
    drv = k.add_mutually_exclusive_group()
    drv.add_argument("--driving", metavar="VIDEO", help="a video of a face (default: the synthetic driver)")
    k.add_argument("--size", type=int, choices=(256, 512), default=256)
    k.add_argument("--frames", type=int, default=48, help="frames to keep (default 48)")
    k.add_argument("-o", "--output", required=True, metavar="SET.npz", help="where to write it (e.g. calibration/me.npz)")


def add_bench_backend_args(b: argparse.ArgumentParser) -> None:
    b.add_argument("--backend", nargs="?", const="auto", default=None, metavar="NAME",
                   help="time the network chain per backend against eager fp32 torch in the same run: "
                        "'cuda' (torch eager/compiled/CUDA graphs), 'cpu' (torch vs onnxruntime), "
                        "'tensorrt', or 'auto' (cuda if a GPU is visible, else cpu)")
    b.add_argument("--weights", metavar="PATH", help="with --backend: a checkpoint instead of an untrained --preset")
    b.add_argument("--calibration", metavar="SET.npz", help="with --backend cpu/tensorrt: also time int8")


def _model(args):
    from .models.shipped import start_model

    return start_model(args.preset, args.weights)


def _calibration(path):
    if not path:
        return None
    from .inference.calibration import CalibrationSet

    return CalibrationSet.load(path)


def run_export(args) -> int:
    from .inference.export import PARITY_TOLERANCE, export_all

    def show(row):
        print(f"  {row['network']:<10} {row['bytes'] / 1e6:7.2f} MB  max relative error vs torch "
              f"{row['max_rel_error']:.1e}  {'ok' if row['ok'] else 'FAILED'}", flush=True)

    start = _model(args)
    print(f"exporting {'weights ' + str(start.weights) if start.trained else 'an untrained ' + args.preset + ' model'} "
          f"for {args.size}px avatars to {args.output}/ (opset 17, static shapes, parity tolerance "
          f"{PARITY_TOLERANCE:.0e})")
    export_all(start.model, args.output, args.size, progress=show)
    return 0


def run_engines(args) -> int:
    from .inference.engine_cache import EngineCache

    cache = EngineCache()
    if args.engines_action == "list":
        entries = cache.entries()
        total = sum(int(e.get("size", 0)) for e in entries.values())
        print(f"engine cache: {cache.root} ({len(entries)} file(s), {total / 1e6:.1f} of at most "
              f"{cache.max_bytes / 1e6:.0f} MB; least recently used out)")
        for name, e in sorted(entries.items()):
            key = e.get("key", {})
            extra = ", ".join(f"{k}={key[k]}" for k in ("gpu", "cc", "trt", "ort", "calib") if k in key)
            print(f"  {name}  {e.get('size', 0) / 1e6:.2f} MB  model {str(key.get('model', ''))[:12]}  "
                  f"{key.get('size', '')}px  built {e.get('built', '?')}" + (f"  {extra}" if extra else ""))
        return 0
    if args.engines_action == "clean":
        removed = cache.clean(lambda e: args.kind is None or str(e.get("key", {}).get("kind", "")).startswith(args.kind))
        print(f"removed {len(removed)} file(s) from {cache.root}")
        return 0
    if args.engines_action == "calibrate":
        return _calibrate(args)
    return _build(args, cache)


def _build(args, cache) -> int:
    from .inference.selection import choose_backend

    if args.backend != "tensorrt":  # TensorRT says for itself whether it can build here (it may not run)
        choose_backend(args.backend)  # says why it cannot run here
    model, calibration = _model(args).model, _calibration(args.calibration)
    if args.precision == "int8" and calibration is None:
        raise UsageError("--precision int8 needs --calibration SET.npz (make one with 'avatar-app engines calibrate').")
    if args.backend == "tensorrt":
        from .inference.trt_backend import build_engines

        rows = build_engines(model, args.size, args.precision or "fp16", cache=cache, calibration=calibration,
                             progress=lambda r: print(f"  {r}", flush=True))
        for r in rows:
            print(f"  {r['network']:<10} {r['precision']:<5} {r['bytes'] / 1e6:7.2f} MB  {r['path']}")
        return 0
    from .inference.chain import NetworkChain

    chain = NetworkChain(model, args.size, "onnxruntime", args.precision or "fp32", cache=cache, calibration=calibration,
                         use_accelerators=False)
    for name, b in chain.backends.items():
        print(f"  {name:<10} {b.precision:<5} {b.path}")
    return 0


def _calibrate(args) -> int:
    from .capture.synthetic import SyntheticDriver
    from .capture.video import VideoFileSource
    from .face.source import prepare_source
    from .face.tracker import FaceTracker
    from .models.identity import IdentityEncoder
    from .inference.calibration import record_calibration

    with FaceTracker() as still:
        source = prepare_source(args.source, args.size, tracker=still)
    identity = IdentityEncoder().embed(source.crop, source.landmarks)
    if args.driving:
        def drivers():
            with VideoFileSource(args.driving) as video, FaceTracker() as tracker:
                for frame in video:
                    yield tracker.track(frame).landmarks
    else:
        def drivers():
            for frame in SyntheticDriver(fps=10, duration=max(args.frames / 10.0, 1.0)):
                yield frame.landmarks
    desc = f"source {Path(args.source).name}, driver {Path(args.driving).name if args.driving else 'synthetic'}"
    cal = record_calibration(source, drivers(), identity, args.frames, desc)
    path = cal.save(args.output)
    print(f"wrote {path} ({len(cal)} frames, {cal.size}px; {desc})")
    return 0


def run_bench_backend(args) -> int:
    from .inference.backend import probe
    from .runtime.bench_backends import (Variant, bench_backends, cpu_variants, format_backend_figures,
                                         gpu_variants)

    kind = args.backend
    if kind == "auto":
        kind = "cuda" if probe("torch-cuda") is None else "cpu"
    calibration = _calibration(args.calibration)
    if kind in ("cuda", "torch-cuda"):
        why = probe("torch-cuda")
        if why:
            raise AvatarError(f"--backend cuda cannot run here: {why}.")
        variants = gpu_variants()
    elif kind in ("cpu", "onnxruntime", "torch-cpu"):
        variants = cpu_variants(calibration)
    elif kind == "tensorrt":
        why = probe("tensorrt")
        if why:
            raise AvatarError(f"--backend tensorrt cannot run here: {why}.")
        variants = [gpu_variants()[0], gpu_variants()[-1], Variant("tensorrt fp16", "tensorrt", dict(precision="fp16"))]
        if calibration is not None:
            variants.append(Variant("tensorrt int8", "tensorrt", dict(precision="int8", calibration=calibration)))
    else:
        raise UsageError(f"Unknown --backend '{kind}'; choose cuda, cpu, tensorrt or auto.")
    for preset in args.preset:
        for size in args.size:
            print(f"{preset} {size}px:", file=sys.stderr)
            rows, prep = bench_backends(variants, preset, size, frames=args.frames, weights=args.weights,
                                        progress=lambda s: print(s, file=sys.stderr, flush=True))
            print(format_backend_figures(rows, prep, preset, size))
    return 0
