"""Training the temporal enhancer on the app's own 512 path.

At run time the enhancer refines a ``base`` that :class:`~avatar_app.inference.networks.EnhancerStage`
builds: the generator's 256 output upsampled, its warped source swapped for the 512 source warped with
the final flow (mouth painted).  Training it on a bilinear upscale of the 256 ground truth
instead taught it to sharpen images it never sees (measured: it made the 512 output worse,
docs/REAL_FACES.md).  Here the frozen warp network and generator animate a source frame of the clip to
each frame of a window (inputs from :class:`.inputs.WindowFlowInputs`), and the enhancer —
the very ``EnhancerStage`` the app runs, history and reset included — is trained against the
real 512 frames.
"""

from __future__ import annotations

import torch

from ..models.flow import AnalyticFlow
from ..models.portrait import PortraitModel
from ..inference.networks import EnhancerStage


def enhanced_window(model: PortraitModel, flow: AnalyticFlow, stage: EnhancerStage, b: dict) -> torch.Tensor:
    """``(B, T, 3, 512, 512)``: the app's 512 output for each frame of a batch of windows, the
    warp network and generator frozen (no gradient), the enhancer trained through ``stage``."""
    enh = stage.enhancer  # the one that runs (validation swaps in an untrained one for its baseline)
    t_len = b["points_256"].shape[1]
    with torch.no_grad():
        src = model.encode_source(b["source_256"], b["source_cond"], b["identity"])
    outs, history = [], None
    for t in range(t_len):
        with torch.no_grad():
            grid, mouth, coord, big = flow.for_networks(b["source_points"][..., :2], b["points_256"][:, t, :, :2],
                                                        b["tri_ids"][:, t])
            f = model.forward_frame(src, b["driving_cond"][:, t], grid, mouth, coord, b["mouth_amount"][:, t], big)
        if history is None:  # the first frame starts the ring buffer afresh (reset), as the app's first frame does
            n = b["points_256"].shape[0]
            history = f["image"].new_zeros(n, enh.neighbours, enh.channels, enh.feature_size, enh.feature_size)
        reset = f["image"].new_tensor(1.0 if t == 0 else 0.0)
        out, history = stage(f["image"], f["mask"], f["warped"], f["grid"], mouth, coord, b["mouth_amount"][:, t],
                             b["source_512"], history, reset)
        outs.append(out)
    return torch.stack(outs, 1)
