"""TensorRT backend, the pure logic: runs everywhere, no TensorRT or GPU needed.

Cache keys, I/O checks, calibration batches and tables, weight-name mapping on real
ONNX exports, explicit Q/DQ quantization, the corrupt-engine path of the cache, and
import without torch.  Engines themselves are tested in ``test_tensorrt_gpu.py``.
"""

from __future__ import annotations

import copy
import enum
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from avatar_app.models.portrait import PortraitModel
from avatar_app.inference.backend import probe
from avatar_app.inference.engine_cache import CorruptEngine, EngineCache, key_digest
from avatar_app.inference.export import export_onnx, model_networks, relative_errors, torch_outputs
from avatar_app.inference.networks import example_inputs, weights_of
from avatar_app.inference.trt_build import (CalibrationBatches, EngineBuildError, calibration_cache_key, check_io,
                                          engine_key, network_io, network_precision, numpy_dtype, ordered_like,
                                          quantize_qdq, read_calibration_cache, timing_cache_name,
                                          write_calibration_cache)
from avatar_app.inference.trt_refit import map_weight_names, onnx_initializers, refit_plan

SIZE = 512
TRT_REASON = probe("tensorrt")


class DataType(enum.Enum):
    """TensorRT's DataType members as the Python bindings name them (the mapping goes by name)."""

    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BF16 = 7


class StandInCalibration:
    """A calibration set's interface (``digest``, ``inputs_for``) over example inputs."""

    def __init__(self, frames: int = 6, digest: str = "calib-a"):
        self.frames, self.digest = frames, digest

    def inputs_for(self, model, size, network):
        spec = model_networks(PortraitModel("lite"), size, names=[network])[network].spec
        return [example_inputs(spec, seed) for seed in range(self.frames)]


@pytest.fixture(scope="module")
def lite():
    torch.manual_seed(0)
    return PortraitModel("lite").eval()


@pytest.fixture(scope="module")
def networks(lite):
    return model_networks(lite, SIZE)


@pytest.fixture(scope="module")
def exports(networks, tmp_path_factory):
    """The networks with weights (flow has none), exported as the engines' builds export them."""
    folder = tmp_path_factory.mktemp("onnx")
    return {name: export_onnx(net, folder / f"{name}.onnx") for name, net in networks.items() if name != "flow"}


@pytest.fixture
def trt_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AVATAR_APP_ENGINES", str(tmp_path / "engines"))
    return EngineCache()


def spec_rows(spec):
    ins = [(t.name, t.shape, DataType.INT32 if t.dtype == "int32" else DataType.FLOAT) for t in spec.inputs]
    return ins, [(n, (1,), DataType.FLOAT) for n in spec.outputs]


# ---------------------------------------------------------------- keys


def test_engine_key_changes_with_every_keyed_field_and_nothing_else(networks):
    warp = networks["warp"]
    base = dict(network=warp, precision="fp16", gpu_name="NVIDIA H100", compute_capability="9.0",
                trt_version="10.9.0", calibration_digest=None)
    key = lambda **change: key_digest(engine_key(**{**base, **change}))  # noqa: E731
    variants = {"model": key(network=replace(warp, model_hash="f" * 64)), "gpu": key(gpu_name="NVIDIA H200"),
                "cc": key(compute_capability="8.9"), "trt": key(trt_version="11.3.0"),
                "precision": key(precision="fp32"), "int8": key(precision="int8", calibration_digest="a"),
                "int8-other-calibration": key(precision="int8", calibration_digest="b"),
                "not refittable": key_digest(engine_key(**base, refit=False))}
    assert len(set(variants.values()) | {key()}) == len(variants) + 1, variants
    assert key() == key(), "the same fields give the same key"
    assert key(calibration_digest="ignored") == key(), "a calibration set does not change an fp16 engine"
    k = engine_key(**base)
    assert (k["gpu"], k["cc"], k["trt"], k["precision"], k["kind"]) == ("NVIDIA H100", "9.0", "10.9.0", "fp16",
                                                                        "tensorrt")
    with pytest.raises(ValueError, match="calibration"):
        engine_key(**{**base, "precision": "int8"})


def test_flow_is_always_fp32_and_int8_covers_only_the_convolution_networks(networks):
    assert network_precision("flow", "fp16") == network_precision("flow", "int8") == "fp32"
    assert network_precision("encoder", "int8") == "fp16"
    assert [network_precision(n, "int8") for n in ("warp", "generator", "enhancer")] == ["int8"] * 3
    flow = engine_key(networks["flow"], "int8", "g", "9.0", "10.9", calibration_digest="a")
    assert flow["precision"] == "fp32" and "calib" not in flow, "flow's engine is shared by every precision"
    with pytest.raises(ValueError, match="bf16"):
        network_precision("warp", "bf16")


def test_timing_cache_is_named_by_gpu_compute_capability_and_version():
    name = timing_cache_name("NVIDIA H100 80GB HBM3", "9.0", "10.9.0")
    assert name == "timing-nvidia-h100-80gb-hbm3-sm90-trt10.9.0.cache"
    assert timing_cache_name("NVIDIA H100 80GB HBM3", "9.0", "11.3.0") != name


# ---------------------------------------------------------------- types and I/O checks


def test_trt_dtypes_map_to_numpy_by_member_name():
    assert numpy_dtype(DataType.FLOAT) == np.float32 and numpy_dtype(DataType.HALF) == np.float16
    assert numpy_dtype(DataType.INT32) == np.int32 and numpy_dtype("DataType.INT8") == np.int8
    with pytest.raises(TypeError, match="BF16"):
        numpy_dtype(DataType.BF16)


def test_io_check_accepts_the_spec_and_names_each_mismatch(networks):
    flow = networks["flow"].spec
    ins, outs = spec_rows(flow)
    check_io(flow, ins, outs, "parsed ONNX model")
    check_io(flow, *ordered_like(flow, ins[::-1], outs[::-1]), "engine")  # engines may list tensors in any order
    dynamic = [(ins[0][0], (-1, 478, 2), DataType.FLOAT)] + ins[1:]
    with pytest.raises(EngineBuildError, match=r"flow\.source_xy.*dynamic shapes"):
        check_io(flow, dynamic, outs, "parsed ONNX model")
    as_float = ins[:2] + [(ins[2][0], ins[2][1], DataType.FLOAT)] + ins[3:]
    with pytest.raises(EngineBuildError, match=r"tri_ids is float32, not int32"):
        check_io(flow, as_float, outs, "engine")
    with pytest.raises(EngineBuildError, match="takes inputs"):
        check_io(flow, ins[:2], outs, "engine")
    with pytest.raises(EngineBuildError, match="has outputs"):
        check_io(flow, ins, outs[:2], "engine")
    half = outs[:2] + [(outs[2][0], outs[2][1], DataType.HALF)] + outs[3:]
    with pytest.raises(EngineBuildError, match="non-float32 outputs"):
        check_io(flow, ins, half, "engine")


def test_parsed_network_is_read_through_the_tensorrt_network_protocol(networks):
    """network_io reads get_input/get_output like an INetworkDefinition; plain objects stand in."""
    spec = networks["generator"].spec
    ins, outs = spec_rows(spec)
    tensors = lambda rows: [SimpleNamespace(name=n, shape=s, dtype=d) for n, s, d in rows]  # noqa: E731
    t_in, t_out = tensors(ins), tensors(outs)
    parsed = SimpleNamespace(num_inputs=len(t_in), num_outputs=len(t_out), get_input=t_in.__getitem__,
                             get_output=t_out.__getitem__)
    got = network_io(parsed)
    assert [r[0] for r in got[0]] == [t.name for t in spec.inputs]
    check_io(spec, *got, "parsed ONNX model")


def test_exported_onnx_io_is_what_the_engine_checks_expect(networks, exports):
    """What TensorRT's parser will see (the ONNX graph's inputs and outputs) passes the spec check."""
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    def rows(values):
        return [(v.name, tuple(d.dim_value for d in v.type.tensor_type.shape.dim),
                 tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)) for v in values]

    for name, path in exports.items():
        graph = onnx.load(str(path)).graph
        check_io(networks[name].spec, rows(graph.input), rows(graph.output), f"{name} ONNX export")


# ---------------------------------------------------------------- calibration


def test_calibration_batches_follow_the_spec_stop_and_reset(networks):
    spec = networks["flow"].spec
    frames = [example_inputs(spec, seed) for seed in range(3)]
    frames[1]["source_xy"] = frames[1]["source_xy"].astype(np.float64)  # converted, not refused
    frames[2]["target_xy"] = np.asfortranarray(frames[2]["target_xy"][0].T.T)[None]
    batches = CalibrationBatches(spec, frames, limit=2)
    assert len(batches) == 2 and batches.batch_size == 1
    first = batches.next()
    assert list(first) == [t.name for t in spec.inputs]
    assert first["tri_ids"].dtype == np.int32 and first["source_xy"].dtype == np.float32
    second = batches.next()
    assert second["source_xy"].dtype == np.float32 and all(a.flags.c_contiguous for a in second.values())
    assert batches.next() is None, "stops after the limit"
    batches.reset()
    assert np.array_equal(batches.next()["target_xy"], first["target_xy"])
    assert batches.nbytes("tri_ids") == 256 * 256 * 4


def test_calibration_batches_refuse_frames_that_do_not_fit(networks):
    spec = networks["warp"].spec
    good = example_inputs(spec, 0)
    bad = {**good, "code": good["code"][..., :-1]}
    with pytest.raises(ValueError, match=r"calibration frame 1: warp\.code must have shape"):
        CalibrationBatches(spec, [good, bad])
    with pytest.raises(ValueError, match="missing input"):
        CalibrationBatches(spec, [{k: v for k, v in good.items() if k != "mouth"}])
    with pytest.raises(ValueError, match="no calibration frames"):
        CalibrationBatches(spec, [])


def test_calibration_table_is_stored_checked_and_replaced(networks, trt_cache):
    key = calibration_cache_key(engine_key(networks["warp"], "int8", "g", "9.0", "10.9", calibration_digest="a"))
    assert read_calibration_cache(trt_cache, key) is None
    path = write_calibration_cache(trt_cache, key, b"TRT-10900-EntropyCalibration2\nsource: 3c010a14\n")
    assert read_calibration_cache(trt_cache, key).startswith(b"TRT-10900")
    assert trt_cache.entries()[path.name]["key"]["kind"] == "tensorrt-calibration"
    write_calibration_cache(trt_cache, key, b"TRT-10900-EntropyCalibration2\nsource: 3c000000\n")
    assert read_calibration_cache(trt_cache, key).endswith(b"3c000000\n"), "a new table replaces the old one"
    path.write_bytes(b"garbage of another size")
    assert read_calibration_cache(trt_cache, key) is None, "a damaged table is dropped, so TensorRT recalibrates"


def test_explicit_qdq_model_is_symmetric_int8_and_still_the_network(networks, exports, tmp_path):
    """TensorRT 11's INT8 path: Q/DQ nodes TensorRT accepts (int8, zero point 0), close to fp32."""
    import onnx
    from onnx import numpy_helper

    from avatar_app.inference.export import onnx_session

    net = networks["enhancer"]
    batches = CalibrationBatches(net.spec, [example_inputs(net.spec, s) for s in range(2)])
    quantize_qdq(exports["enhancer"], tmp_path / "q.onnx", batches)
    model = onnx.load(str(tmp_path / "q.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    quants = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert quants, "no Q/DQ nodes were inserted"
    zero_points = [inits[n.input[2]] for n in quants]
    assert all(z.dtype == np.int8 and not z.any() for z in zero_points)
    inputs = example_inputs(net.spec, 5)
    got = dict(zip(net.spec.outputs, onnx_session(tmp_path / "q.onnx").run(None, inputs)))
    assert relative_errors(torch_outputs(net, inputs), got)["output"] < 0.1


# ---------------------------------------------------------------- refit names


def test_every_onnx_weight_of_every_network_maps_to_its_torch_weight(lite, exports):
    """Refit by name works: each float initializer the exporter wrote is a state-dict weight, bit for bit."""
    counts = {}
    for name, path in exports.items():
        inits = onnx_initializers(path)
        weights = weights_of(lite, name, SIZE)
        plan, missing = refit_plan(inits, weights)
        assert missing == [], f"{name}: initializers with no torch weight: {missing[:5]}"
        assert all(np.array_equal(plan[n], inits[n]) for n in inits), name
        counts[name] = len(plan)
    assert set(counts) == {"encoder", "warp", "generator", "enhancer"} and min(counts.values()) > 10, counts
    assert weights_of(lite, "flow", SIZE) == {}, "the analytic flow has nothing to refit"


def test_personalized_weights_land_under_the_same_initializer_names(lite, exports, tmp_path):
    personal = copy.deepcopy(lite)
    with torch.no_grad():
        for p in personal.enhancer.parameters():
            p.add_(0.01)
    net = model_networks(personal, SIZE, names=["enhancer"])["enhancer"]
    new = onnx_initializers(export_onnx(net, tmp_path / "enhancer.onnx"))
    old = onnx_initializers(exports["enhancer"])
    assert {k: v.shape for k, v in new.items()} == {k: v.shape for k, v in old.items()}
    plan, missing = refit_plan(old, weights_of(personal, "enhancer", SIZE))
    assert missing == [] and all(np.array_equal(plan[n], new[n]) for n in new)
    assert any(not np.array_equal(plan[n], old[n]) for n in old), "the new weights differ from the built ones"


def test_weight_names_map_by_unambiguous_module_path_only():
    onnx_names = ["model.warp.stem.0.weight", "model.warp.stem.0.bias", "head.weight", "a.x.weight", "b.x.weight"]
    torch_names = ["warp.stem.0.weight", "model.warp.stem.0.bias", "x.weight", "unused.weight", "head.weight"]
    assert map_weight_names(torch_names, onnx_names) == {
        "warp.stem.0.weight": "model.warp.stem.0.weight", "model.warp.stem.0.bias": "model.warp.stem.0.bias",
        "head.weight": "head.weight"}, "x.weight is ambiguous (a.x or b.x); unused.weight matches nothing"


def test_refit_plan_fills_folded_constants_from_the_new_export_only_when_needed():
    torch_w = {"conv.weight": np.ones((2, 2), np.float32)}
    calls = []

    def export():
        calls.append(1)
        return {"onnx::Mul_7": np.full(3, 2.0, np.float32)}

    plan, missing = refit_plan(["conv.weight"], torch_w, export)
    assert missing == [] and not calls, "the export is not read when torch names cover everything"
    plan, missing = refit_plan(["conv.weight", "onnx::Mul_7", "onnx::Add_9"], torch_w, export)
    assert missing == ["onnx::Add_9"] and calls and plan["onnx::Mul_7"].tolist() == [2.0] * 3


# ---------------------------------------------------------------- cache and imports


def test_a_damaged_engine_is_reported_deleted_and_rebuilt(networks, trt_cache, capsys):
    key = engine_key(networks["warp"], "fp16", "g", "9.0", "10.9")
    builds = []

    def build(tmp: Path) -> None:  # the first build writes a plan TensorRT would not deserialize
        builds.append(1)
        tmp.write_bytes(b"PLAN" + bytes(64) if len(builds) > 1 else b"not a plan")

    def open_engine(path: Path):
        data = path.read_bytes()
        if not data.startswith(b"PLAN"):
            raise CorruptEngine("TensorRT cannot deserialize it")
        return data

    assert trt_cache.load(key, ".engine", build, open_engine) == b"PLAN" + bytes(64)
    assert len(builds) == 2 and "cannot deserialize it); rebuilding" in capsys.readouterr().out
    path = trt_cache.lookup(key, ".engine")
    path.write_bytes(b"PLAN" + bytes(63) + b"\x01")  # same size, other bytes: the checksum catches it
    assert trt_cache.load(key, ".engine", build, open_engine) == b"PLAN" + bytes(64)
    assert len(builds) == 3 and "checksum does not match" in capsys.readouterr().out


BLOCK_TORCH = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, Block())
from avatar_app.inference import trt_backend, trt_build, trt_refit
from avatar_app.inference.backend import BackendUnavailable, probe
assert "torch" not in sys.modules
reason = probe("tensorrt")
try:
    trt_backend.TensorRTBackend("fp16")
    print("constructed" if reason is None else "constructed without a reason?")
except BackendUnavailable as exc:
    print("unavailable:", exc)
print("torch imported" if "torch" in sys.modules else "no torch")
"""


def test_backend_imports_and_reports_without_torch():
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", BLOCK_TORCH], cwd=root, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[-1] == "no torch"
    if TRT_REASON is None:
        assert lines[0] == "constructed"
    else:
        assert lines[0] == f"unavailable: The tensorrt backend cannot run here: {TRT_REASON}."
