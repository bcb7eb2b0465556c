"""Inference: the networks exported per stage, one backend protocol and its torch, ONNX Runtime and
TensorRT implementations, the network chain, the engine cache and INT8 calibration."""
