"""Pairs driven by another person (issue 13): the source's face must survive someone else's motion.

Every other training pair is self-reenactment: the source and the driving frame show the same
person, so the output can be compared with a real frame.  The app, though, animates a portrait with
*another* person's motion, retargeted onto it (:class:`~avatar_app.face.retarget.Retargeter`,
relative mode, motion limits on), and that is where the full network painted another face
(docs/MOTION_IDENTITY.md §7; these pairs: docs/MOTION_CROSS_PAIRS.md).  A cross pair takes the
source of a training pair and, instead of a frame of the same clip, the motion of a training person
of *another* identity between two frames of one of their clips (the first as their neutral face, the
second as the driving frame; with ``hard_pairs``, as often as there, one of the furthest in head
pose), retargeted as the app retargets it.  Its landmark image and triangle map are drawn from the
retargeted landmarks as the app draws them.

There is no ground truth for such a frame: its pixels are left out of every image loss (its mask
is 0; the unmasked perceptual loss is refused with cross pairs) and its rows out of the discriminator
(:func:`self_rows`), and the identity loss compares the output with the *source* (dlib's embedding
of each image, each cut to the face chip by its own landmarks: :func:`identity_target`).  So these
pairs teach one thing: under motion that is not the source person's own, keep the source's face.  They teach
it to the generator only in the full stage (``cross_warp`` off, the default): the warp network learns motion from
real frames, since taught by these rows it likely learnt to follow less (docs/MOTION_CROSS_PAIRS.md §7.6).
A clip without a person label counts as its own person, so a "cross" row may then show the same
human.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..face.retarget import Retargeter
from ..types import Landmarks
from .large_motion import two_frames


@dataclass(frozen=True)
class CrossMotion:
    """Which rows of a batch are driven by another person, and by which frames (global indices)."""

    rows: np.ndarray  # (k,) rows of the batch
    neutral: np.ndarray  # (k,) the other person's frame taken as their neutral face
    driving: np.ndarray  # (k,) their frame whose motion drives the row


def draw_cross(person_of_clip: np.ndarray, clip: np.ndarray, clips_of: list[np.ndarray], valid: list[np.ndarray],
               share: float, rng: np.random.Generator, hardest=None, hard_share: float = 0.0) -> CrossMotion:
    """For ``share`` of the rows of a batch of clips ``clip``, another person's clip and two of its frames.

    ``person_of_clip``: the person index of each clip; ``clips_of``: each person's clips; ``valid``: each clip's
    frames with a face (global indices); ``hardest(neutral, choices, rng)``: picks a frame of large head motion
    from ``neutral``, taken for ``hard_share`` of the cross rows.  Rows whose clip's person is the only one are
    left self-driven."""
    people = len(clips_of)
    rows = np.flatnonzero(rng.random(len(clip)) < share) if people > 1 else np.zeros(0, np.int64)
    neutral, driving = np.empty(len(rows), np.int64), np.empty(len(rows), np.int64)
    for k, row in enumerate(rows):
        own = int(person_of_clip[clip[row]])
        other = int(rng.integers(people - 1))
        other += other >= own  # any person but the source's
        c = int(rng.choice(clips_of[other]))
        neutral[k], driving[k] = two_frames(valid[c], rng, hardest, hard_share)
    return CrossMotion(rows, neutral, driving)


def retarget_rows(source: np.ndarray, neutral: np.ndarray, driving: np.ndarray, size: int) -> np.ndarray:
    """``(k, 478, 3)`` target landmarks: the motion from ``neutral`` to ``driving`` (another person's
    ``(k, 478, 3)`` landmarks) retargeted onto ``source`` ``(k, 478, 3)``, as the app does (relative mode,
    motion limits), all in px of ``size`` crops."""
    out = np.empty_like(source, dtype=np.float32)
    for k in range(len(source)):
        retarget = Retargeter(Landmarks(source[k].astype(np.float32), (size, size)))
        retarget.calibrate(Landmarks(neutral[k].astype(np.float32), (size, size)))
        out[k] = retarget(Landmarks(driving[k].astype(np.float32), (size, size))).points
    return out


def identity_target(b: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """What a batch's output should look like to the identity loss, and its landmarks: the driving
    frame, or for rows driven by another person (``b["cross"]``) the source."""
    target, points = b["driving"], b["driving_points"]
    if "cross" in b:
        c = b["cross"]
        target = torch.where(c[:, None, None, None], b["source"], target)
        points = torch.where(c[:, None, None], b["source_points"], points)
    return target, points


def self_rows(b: dict, *tensors: torch.Tensor | None) -> tuple:
    """``tensors`` (batch-first, or None) without the rows driven by another person: those have no real
    frame for a discriminator to compare with."""
    if "cross" not in b:
        return tensors
    keep = ~b["cross"]
    return tuple(None if t is None else t[keep] for t in tensors)
