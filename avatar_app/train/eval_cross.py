"""Cross-identity reenactment for ``avatar-app evaluate --cross``: what the app does for a user.

Each validation clip drives the first frame of another validation person's clip: the motion is
taken relative to the driver's first frame (the calibrated neutral face) and retargeted onto
the source within each animator's motion limits, as the live app does. There is no ground
truth, so the scores are how the output keeps the *source's* identity (dlib distance to the
source face), how well it follows the retargeted landmarks (mediapipe on the output) and the
mouth (correlation of mouth openings).
"""

from __future__ import annotations

import time

import numpy as np

from .clipio import embed_identity
from .eval_eyes import detect_all
from .eval_clips import Context, EvalClip, drive_indices, score, source_portrait


def partner(clips: list[EvalClip], k: int) -> EvalClip | None:
    """The next clip after ``k`` (wrapping) that shows another person: the source ``clips[k]`` drives."""
    n = len(clips)
    for j in range(1, n):
        other = clips[(k + j) % n]
        if other.identity != clips[k].identity:
            return other
    return None


def cross_clip(ctx: Context, driver: EvalClip, source: EvalClip, frames: int, animators_for) -> tuple[dict, dict]:
    """Metrics of every animator with ``source``'s first frame driven by ``driver``'s frames.

    ``animators_for(portrait, identity)`` builds the animators (as self-reenactment does).
    """
    from ..face.retarget import RetargetOptions, Retargeter
    from ..runtime.animator import retarget_options
    from ..types import Landmarks

    valid = np.flatnonzero(driver.valid)
    drive = drive_indices(ctx, valid, frames)
    s_i = int(np.flatnonzero(source.valid)[0])
    src_img = source.image(s_i)
    portrait = source_portrait(src_img, source.landmarks[s_i])
    size = source.size

    by_limits: dict = {}  # animators with the same motion limits share their targets

    def targets_for(animator) -> list[np.ndarray]:
        """The driver's frames retargeted onto the portrait within ``animator``'s motion limits, as live."""
        options = retarget_options(animator, RetargetOptions(eye_contact=ctx.eye_contact))
        if options.limits not in by_limits:
            retarget = Retargeter(portrait.landmarks, options)
            retarget.calibrate(Landmarks(driver.landmarks[int(valid[0])], (size, size)))
            by_limits[options.limits] = [retarget(Landmarks(driver.landmarks[i], (size, size))).points for i in drive]
        return by_limits[options.limits]
    reference = [driver.image(i) for i in drive]
    eyes = (detect_all(ctx.tracker, reference), detect_all(ctx.tracker, [src_img])[0])
    picks = sorted({int(round(x)) for x in np.linspace(0, len(drive) - 1, min(4, len(drive)))})
    src_emb = embed_identity(src_img, source.landmarks[s_i])[0] if ctx.identity else None
    identity = src_emb if src_emb is not None else source.embedding
    result = {"key": driver.key, "identity": driver.identity, "source_clip": source.key,
              "source_identity": source.identity, "source_frame": s_i, "frames": drive,
              "ground_truth": {"jitter": None, "identity_distance": None}, "animators": {}}
    images = {"driver": reference}
    for anim in animators_for(portrait, identity):
        targets = targets_for(anim)
        outputs, times = [], []
        for t in targets:
            t0 = time.perf_counter()
            outputs.append(anim.animate(Landmarks(t, (size, size))))
            times.append(time.perf_counter() - t0)
        result["animators"][anim.name] = score(ctx, outputs, None, targets, src_emb, picks, times,
                                               reference=reference, eyes=eyes)
        if anim.name != "static":
            images[anim.name] = outputs
    return result, images
