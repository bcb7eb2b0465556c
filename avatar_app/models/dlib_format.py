"""Reader for dlib's binary serialization of a DNN (``dlib::serialize(net)``), numpy only.

Enough of the format for dlib's face-recognition ResNet
(``dlib_face_recognition_resnet_model_v1.dat``), written from dlib's C++ source:

* integers (``serialize.h``, ``pack_int``): one control byte — low 4 bits the number of
  little-endian magnitude bytes that follow, bit 0x80 the sign — then those bytes;
* floats and doubles (``float_details``): an int64 mantissa and an int16 exponent, each
  as an integer above; value = mantissa * 2**exponent;
* strings: length (integer), then the bytes; bools: the character ``'0'`` or ``'1'``;
* tensors (``tensor.h``): version 2, then ``num_samples, k, nr, nc`` (integers), then
  that many little-endian float32 values; ``alias_tensor``: version 1 and the four sizes;
* networks (``core.h``): every ``add_layer`` / tag / skip writes its version, then its
  sub-network, then (``add_layer`` only) its layer's details and bookkeeping — so the
  file lists all outer versions first, then the input layer, then the layers' details
  from the input outwards.  Tags and skips write no details (their ids are in the C++
  type only), so the graph's wiring comes from the network definition, not the file.

:func:`read_network` returns the layers in forward order (input first) as
:class:`DlibLayer` records; the network module checks them against its definition.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

_FLOAT_INF, _FLOAT_NINF, _FLOAT_NAN = 32000, 32001, 32002  # float_details special exponents


class DlibFormatError(ValueError):
    """The file is not the dlib network serialization this reader understands."""


@dataclass
class DlibLayer:
    """One layer's details as serialized: ``kind`` (dlib's version string, e.g. ``con_4``),
    its integer / float settings by name, and its parameter arrays by name."""

    kind: str
    ints: dict[str, int] = field(default_factory=dict)
    floats: dict[str, float] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise DlibFormatError(f"unexpected end of data at byte {self.pos} (wanted {n} more)")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def int(self) -> int:
        control = self._take(1)[0]
        size = control & 0x0F
        if size > 8 or control & 0x70:
            raise DlibFormatError(f"bad integer control byte 0x{control:02x} at byte {self.pos - 1}")
        value = int.from_bytes(self._take(size), "little")
        return -value if control & 0x80 else value

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        if exponent == _FLOAT_INF:
            return float("inf")
        if exponent == _FLOAT_NINF:
            return float("-inf")
        if exponent == _FLOAT_NAN:
            return float("nan")
        return float(np.ldexp(np.float64(mantissa), exponent))

    def string(self) -> str:
        n = self.int()
        if not 0 <= n < 1 << 16:
            raise DlibFormatError(f"implausible string length {n} at byte {self.pos}")
        return self._take(n).decode("ascii")

    def bool(self) -> bool:
        ch = self._take(1)
        if ch not in (b"0", b"1"):
            raise DlibFormatError(f"bad bool {ch!r} at byte {self.pos - 1}")
        return ch == b"1"

    def tensor(self) -> np.ndarray:
        self.expect_version(2, "tensor")
        shape = tuple(self.int() for _ in range(4))
        n = int(np.prod(shape))
        values = np.frombuffer(self._take(4 * n), dtype="<f4").astype(np.float32)
        return values.reshape(shape)

    def alias_tensor(self) -> tuple[int, int, int, int]:
        self.expect_version(1, "alias_tensor")
        return tuple(self.int() for _ in range(4))

    def expect_version(self, want: int, what: str) -> None:
        got = self.int()
        if got != want:
            raise DlibFormatError(f"{what}: version {got}, expected {want} (byte {self.pos})")


def _split(params: np.ndarray, *shapes: tuple[int, ...]) -> list[np.ndarray]:
    """Cut a flat parameter tensor into consecutive alias-tensor views of ``shapes``."""
    flat, out, at = params.reshape(-1), [], 0
    for shape in shapes:
        n = int(np.prod(shape))
        out.append(flat[at:at + n].reshape(shape))
        at += n
    if at != flat.size:
        raise DlibFormatError(f"parameter tensor of {flat.size} values, its aliases cover {at}")
    return out


def _layer_details(r: _Reader) -> DlibLayer:
    kind = r.string()
    layer = DlibLayer(kind)
    if kind == "con_4":
        params = r.tensor()
        for name in ("num_filters", "nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x"):
            layer.ints[name] = r.int()
        filters, biases = r.alias_tensor(), r.alias_tensor()
        layer.arrays["weight"], layer.arrays["bias"] = _split(params, filters, biases)
        layer.arrays["bias"] = layer.arrays["bias"].reshape(-1)
        for _ in range(4):  # learning-rate and weight-decay multipliers
            r.float()
    elif kind == "affine_":
        params = r.tensor()
        gamma, beta = r.alias_tensor(), r.alias_tensor()
        layer.arrays["gamma"], layer.arrays["beta"] = (a.reshape(-1) for a in _split(params, gamma, beta))
        layer.ints["mode"] = r.int()  # 0 CONV_MODE (per channel), 1 FC_MODE (per element)
    elif kind in ("max_pool_2", "avg_pool_2"):
        for name in ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x"):
            layer.ints[name] = r.int()
    elif kind in ("relu_", "add_prev_"):
        pass
    elif kind == "fc_2":
        layer.ints["num_outputs"], layer.ints["num_inputs"] = r.int(), r.int()
        params = r.tensor()
        weights, biases = r.alias_tensor(), r.alias_tensor()
        layer.ints["bias_mode"] = r.int()  # 0 FC_HAS_BIAS, 1 FC_NO_BIAS
        shapes = (weights, biases) if layer.ints["bias_mode"] == 0 else (weights,)
        parts = _split(params, *shapes)
        layer.arrays["weight"] = parts[0].reshape(layer.ints["num_inputs"], layer.ints["num_outputs"])
        if len(parts) > 1:
            layer.arrays["bias"] = parts[1].reshape(-1)
        for _ in range(4):
            r.float()
    else:
        raise DlibFormatError(f"layer type '{kind}' is not supported by this reader")
    return layer


def _input_layer(r: _Reader) -> DlibLayer:
    kind = r.string()
    if kind != "input_rgb_image_sized":
        raise DlibFormatError(f"input layer '{kind}' is not supported by this reader")
    layer = DlibLayer(kind)
    for name in ("avg_red", "avg_green", "avg_blue"):
        layer.floats[name] = r.float()
    layer.ints["nr"], layer.ints["nc"] = r.int(), r.int()
    return layer


def read_network(path: str | Path) -> tuple[DlibLayer, list[DlibLayer]]:
    """Parse a serialized ``add_loss_layer<...>`` network.

    Returns:
        ``(loss, layers)``: the loss layer's record (``kind`` and its floats) and the
        computational layers in forward order, input layer first.

    Raises:
        DlibFormatError: anything in the file this reader does not understand.
    """
    r = _Reader(Path(path).read_bytes())
    r.expect_version(1, "add_loss_layer")
    loss = DlibLayer(r.string())
    if loss.kind != "loss_metric_2":
        raise DlibFormatError(f"loss layer '{loss.kind}' is not supported by this reader")
    loss.floats["margin"], loss.floats["distance_threshold"] = r.float(), r.float()
    # versions of the nested layers, outermost first: 2 = add_layer, 1 = tag or skip,
    # 3 = the add_layer whose sub-network is the input layer (it ends the nesting)
    versions = []
    while True:
        v = r.int()
        if v == 3:
            break
        if v not in (1, 2):
            raise DlibFormatError(f"unexpected layer version {v} at byte {r.pos}")
        versions.append(v)
    layers = [_input_layer(r), _layer_details(r)]
    for _ in range(3):  # this_layer_setup_called, gradient_input_is_stale, output getters disabled
        r.bool()
    for _ in range(3):  # x_grad, cached_output, grad_final
        r.tensor()
    r.int()  # _sample_expansion_factor
    for v in reversed(versions):
        if v == 1:
            continue
        layers.append(_layer_details(r))
        for _ in range(3):
            r.bool()
        for _ in range(3):  # x_grad, cached_output, params_grad
            r.tensor()
    if r.pos != len(r.data):
        raise DlibFormatError(f"{len(r.data) - r.pos} bytes left after the network")
    return loss, layers

