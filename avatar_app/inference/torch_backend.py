"""The torch backend: CPU or CUDA, fp32/fp16/bf16, channels_last, ``torch.compile`` and CUDA graphs.

Input buffers are allocated once per network and filled in place, so a CUDA graph
captured over them replays with no allocation and a single launch; outputs are the
graph's own tensors (valid until that network runs again).

Half precision is autocast: weights and inputs stay fp32 and convolutions and matrix
products run in fp16/bf16, while sampling grids, ``grid_sample`` (which autocast
promotes to its widest input) and the final blends stay fp32 — a grid in fp16 would
misplace pixels by up to a quarter of a pixel at 512.  The analytic flow always runs
in fp32.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from .backend import BackendUnavailable

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
FP32_NETWORKS = ("flow", "prepare")  # coordinates: half precision would move pixels
ONCE_NETWORKS = ("encoder",)  # runs once per source: not worth compiling or capturing
WARMUP_RUNS = 3


def capture_cuda_graph(fn, args, device: torch.device, warmup: int = WARMUP_RUNS) -> tuple:
    """``(graph, outputs)``: ``fn(*args)`` run ``warmup`` times on a side stream (lazy
    initialisation, allocator pools), then captured as a CUDA graph over ``args``; replaying it
    refills ``outputs`` in place.  Captured thread-locally: other threads may use CUDA meanwhile."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            for _ in range(warmup):
                fn(*args)
        torch.cuda.current_stream(device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            outs = fn(*args)
    return graph, outs


class TorchBackend:
    """Run one network with torch.

    Args:
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        precision: ``fp32``, ``fp16`` or ``bf16``.
        channels_last: NHWC memory layout for the convolutions.
        compile: ``torch.compile`` the network (inductor), once, on first load.
        cuda_graphs: capture the network in a CUDA graph (CUDA only).
    """

    def __init__(self, device: str = "cpu", precision: str = "fp32", channels_last: bool = False,
                 compile: bool = False, cuda_graphs: bool = False):
        self.torch_device = torch.device(device)
        if self.torch_device.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable("The torch-cuda backend cannot run here: no CUDA GPU is visible to torch.")
        if precision not in DTYPES:
            raise ValueError(f"unknown precision {precision!r}; choose one of {sorted(DTYPES)}")
        self.precision = precision
        self.channels_last = channels_last
        self.compile = compile
        self.cuda_graphs = cuda_graphs and self.torch_device.type == "cuda"
        self.name = "torch-cuda" if self.torch_device.type == "cuda" else "torch-cpu"
        extras = [x for x, on in (("channels_last", channels_last), ("compiled", compile),
                                  ("CUDA graphs", self.cuda_graphs)) if on]
        gpu = f" ({torch.cuda.get_device_name(self.torch_device)})" if self.torch_device.type == "cuda" else ""
        self.device = f"{self.torch_device}{gpu}, {precision}" + (", " + ", ".join(extras) if extras else "")
        self._graph = None

    # ---------------------------------------------------------------- setup

    def load(self, network) -> None:
        self.network = network
        self.spec = network.spec
        self.dtype = torch.float32 if network.name in FP32_NETWORKS else DTYPES[self.precision]
        module = copy.deepcopy(network.module).to(self.torch_device).eval()
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        self.module = module
        self._buffers = {}
        for t in self.spec.inputs:
            dtype = torch.int32 if t.dtype == "int32" else torch.float32
            buf = torch.zeros(t.shape, dtype=dtype, device=self.torch_device)
            if self.channels_last and len(t.shape) == 4 and t.shape[1] <= 64 and t.dtype != "int32":
                buf = buf.contiguous(memory_format=torch.channels_last)
            self._buffers[t.name] = buf
        self._args = [self._buffers[t.name] for t in self.spec.inputs]
        self._fn = self._autocast(module) if self.dtype != torch.float32 else module
        self._graphs = self.cuda_graphs and network.name not in ONCE_NETWORKS
        if self.compile and network.name not in ONCE_NETWORKS:
            self._fn = torch.compile(self._fn, dynamic=False)
        self._graph, self._outputs, self._ready = None, None, False

    def refit(self, network) -> int:
        """Copy ``network``'s weights (the same network of a personalized model) into the
        loaded one in place: the compiled code and CUDA graph keep running, now on the new
        weights.  Returns the number of tensors copied."""
        state = network.module.state_dict()
        with torch.no_grad():
            for name, tensor in self.module.state_dict().items():
                tensor.copy_(state[name])
        self.network = network
        return len(state)

    def _autocast(self, module):
        device_type, dtype = self.torch_device.type, self.dtype

        def run(*args):
            with torch.autocast(device_type, dtype=dtype):
                return module(*args)

        return run

    def _warm_up(self) -> None:
        """Compile (if asked), then capture the CUDA graph over the input buffers."""
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if self._graphs:
                self._graph, self._outputs = capture_cuda_graph(self._fn, self._args, self.torch_device)
            elif self.compile:
                self._fn(*self._args)  # compile now, not in the middle of a frame
        self._ready = True

    # ---------------------------------------------------------------- running

    def _fill(self, inputs: Mapping[str, Any]) -> None:
        self.spec.check(inputs, partial=True)
        for name, value in inputs.items():
            buf = self._buffers[name]
            if isinstance(value, np.ndarray):
                value = torch.from_numpy(np.ascontiguousarray(value))
            buf.copy_(value, non_blocking=isinstance(value, torch.Tensor) and value.device == buf.device)

    def bind(self, inputs: Mapping[str, Any]) -> None:
        with torch.inference_mode():
            self._fill(inputs)

    def run(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        with torch.inference_mode():
            self._fill(inputs)
        if not self._ready:  # warm up on the first frame's inputs, not on the zeroed buffers
            self._warm_up()
        with torch.inference_mode():
            if self._graph is not None:
                self._graph.replay()
                outs = self._outputs
            else:
                outs = self._fn(*self._args)
        return dict(zip(self.spec.outputs, outs))

    def to_numpy(self, value: Any) -> np.ndarray:
        if isinstance(value, torch.Tensor):
            return value.detach().float().cpu().numpy()
        return np.asarray(value)

    def synchronize(self) -> None:
        if self.torch_device.type == "cuda":
            torch.cuda.synchronize(self.torch_device)
