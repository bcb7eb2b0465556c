"""ONNX Runtime static INT8 quantization of a network's export, cached per calibration set.

The calibration frames come from a :class:`~avatar_app.inference.calibration.CalibrationSet`
(its ``inputs_for``): they are recorded from the fp32 chain of the model being quantized.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .engine_cache import EngineCache

log = logging.getLogger(__name__)


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over recorded inputs."""

    def __init__(self, frames: list[dict[str, np.ndarray]]):
        self.frames, self.i = frames, 0

    def get_next(self):
        if self.i >= len(self.frames):
            return None
        self.i += 1
        return self.frames[self.i - 1]

    def rewind(self):
        self.i = 0


#: output convolutions stay fp32: their outputs are flows, masks and colours, where
#: 1/255 of the activation range is already a visible error
KEEP_FP32 = ("residual_head", "occlusion_head", "/head/", "/last/")


QUANTIZER = "qdq-conv-perchannel-u8s8-minmax-v1"  # the settings below; part of INT8 cache keys


class _DropMessages(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def quantize_int8(onnx_path: Path, out_path: Path, frames: list[dict[str, np.ndarray]]) -> None:
    """Static INT8 quantization (QDQ; per-channel int8 weights, uint8 activations) of the
    inner convolutions only: grids, resampling, blends, AdaIN codes and output heads stay fp32."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    keep = [n.name for n in onnx.load(str(onnx_path)).graph.node
            if n.op_type == "Conv" and any(k in n.name for k in KEEP_FP32)]
    advice = _DropMessages("pre-processing")  # the quantizer's advice, logged on the root logger
    logging.getLogger().addFilter(advice)
    try:
        quantize_static(str(onnx_path), str(out_path), _Reader(frames), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=["Conv"], nodes_to_exclude=keep, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
    finally:
        logging.getLogger().removeFilter(advice)


def cached_int8(network, onnx_path: Path, calibration, cache: EngineCache) -> Path:
    """The INT8 model of ``network`` from the cache, quantized on first use."""
    import onnxruntime

    def build(tmp: Path) -> None:
        frames = calibration.inputs_for(network.model, network.size, network.name)
        log.info("quantizing %s to int8 on %d calibration frames", network.name, len(frames))
        quantize_int8(onnx_path, tmp, frames)

    key = network.key("ort", "int8", calib=calibration.digest, ort=onnxruntime.__version__, quantizer=QUANTIZER,
                      keep_fp32=",".join(KEEP_FP32))
    return cache.get_or_build(key, ".onnx", build, describe=f"INT8 {network.name}, {len(calibration)} frames")

