"""Reptile's tasks when its inner loop is a cached personalization plan (``inner_plan``): recordings.

A task is what personalization gets from a user: a recording of ``record_s`` seconds of one person's
clip (a random window of a random clip of a random training person), animating the recording's reference
frame (the profile's portrait: its rest frame, as the app takes it, or its first frame) into its training
frames — every frame but every 10th (held out, as :func:`~.personalize.personalize` holds them out), of
which the plan caches :data:`~.adapt_cached.CACHE_FRAMES` spread over the recording
(:func:`~.adapt_cached.cache_picks`).

Which task step ``s`` of rank ``r`` gets is a pure function of ``(seed, s, r)``; :class:`TaskInputs`
loads it (the frames it caches, their landmark images and triangle maps drawn) so that a
``DataLoader``'s workers can prepare the next tasks while the model adapts to this one.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from ..errors import InputFileError
from ..face.retarget import rest_frame
from .adapt_cached import CACHE_FRAMES, cache_picks, pair_items
from .config import INNER_REFERENCES
from .personalize import ClipFrames, training_indices


class PersonClip(Protocol):
    """One prepared clip of a person (:class:`~.eval_clips.EvalClip` is one)."""

    key: str
    identity: str
    landmarks: np.ndarray  # (N, 478, 3) float32, px of the 256 crop
    valid: np.ndarray  # (N,) bool
    embedding: np.ndarray | None  # (128,) identity embedding, or None

    def image(self, index: int) -> np.ndarray:
        """Frame ``index`` as a 256 crop, BGR uint8."""


@dataclass
class Recording:
    """One task: ``frames`` (indices into the clip ``key``) are the recording, ``frames[reference]`` its reference."""

    key: str
    person: str
    frames: list[int]
    train: list[int]  # positions in ``frames`` the plan caches, picked as personalize picks them
    reference: int = 0  # position in ``frames`` of the portrait


class _LazyCrops:
    """``clip``'s crops of ``frames``, read only when asked for (a plan reads the reference and the cached frames)."""

    def __init__(self, clip: PersonClip, frames: list[int]):
        self.clip, self.frames = clip, frames

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.clip.image(self.frames[i])


class RecordingTasks:
    """The recordings Reptile adapts to: ``people`` maps each training person to their clips, each with its
    frame rate (frames/s).  ``reference``: which frame of a recording is the portrait, ``"rest"`` (the one nearest
    the recording's rest expression, :func:`~avatar_app.face.retarget.rest_frame`, as the app takes a profile's
    portrait) or ``"first"``."""

    def __init__(self, people: dict[str, list[tuple[PersonClip, float]]], record_s: float = 10.0,
                 cache_frames: int = CACHE_FRAMES, seed: int = 0, reference: str = "first"):
        if reference not in INNER_REFERENCES:
            raise InputFileError(f"A recording's reference is one of {', '.join(INNER_REFERENCES)}, not '{reference}'.")
        self.reference = reference
        self.people = {p: clips for p, clips in sorted(people.items()) if clips}
        if not self.people:
            raise InputFileError("No training person has a usable clip; prepare some clips first.")
        self.persons = sorted(self.people)
        self.record_s, self.cache_frames, self.seed = record_s, cache_frames, seed
        self.clips = {c.key: c for clips in self.people.values() for c, _ in clips}

    @classmethod
    def from_prepared(cls, data: str | Path, val_fraction: float, record_s: float = 10.0, seed: int = 0,
                      cache_frames: int = CACHE_FRAMES, reference: str = "first") -> "RecordingTasks":
        """The training people's clips of a prepared folder (split by person as training splits it)."""
        from .eval_clips import load_clip
        from .manifest import read_manifest
        from .split import split_clips

        entries = {str(e["key"]): e for e in read_manifest(data)["clips"]}
        people: dict[str, list] = defaultdict(list)
        for key in split_clips(list(entries.values()), val_fraction)[0]:
            clip, _why = load_clip(Path(data), entries[key])
            if clip is not None and int(clip.valid.sum()) >= 20:
                people[clip.identity].append((clip, float(entries[key].get("fps") or 25.0)))
        return cls(people, record_s, cache_frames, seed, reference)

    def recording(self, step: int, rank: int = 0) -> Recording:
        """Step ``step``'s task of rank ``rank``: a person, one of their clips, a window of ``record_s`` seconds of
        its valid frames (the whole clip when shorter), and its reference frame."""
        rng = np.random.default_rng((self.seed, step, rank))
        person = self.persons[int(rng.integers(len(self.persons)))]
        clip, fps = self.people[person][int(rng.integers(len(self.people[person])))]
        valid = np.flatnonzero(clip.valid)
        n = min(max(2, int(round(self.record_s * fps))), len(valid))
        start = int(rng.integers(len(valid) - n + 1))
        frames = valid[start:start + n].tolist()
        ref = rest_frame([clip.landmarks[f] for f in frames]) if self.reference == "rest" else 0
        train = cache_picks(training_indices(n, ref), self.cache_frames)
        return Recording(clip.key, person, frames, train, ref)

    def clip_frames(self, task: Recording) -> ClipFrames:
        """The task's recording as personalization holds it (crops read when used)."""
        clip = self.clips[task.key]
        return ClipFrames(_LazyCrops(clip, task.frames), [clip.landmarks[f] for f in task.frames],
                          reference=task.reference)

    def identity(self, task: Recording) -> np.ndarray:
        emb = self.clips[task.key].embedding
        return np.asarray(emb, np.float32) if emb is not None else np.zeros(128, np.float32)

    def inputs(self, task: Recording):
        """The cached plan's inputs of ``task`` (:func:`~.adapt_cached.pair_items`), every frame's landmark image
        and triangle map drawn now."""
        items = pair_items(self.clip_frames(task), task.train, self.identity(task))
        for k in range(len(items)):
            items[k]
        return items


class TaskInputs(torch.utils.data.Dataset):
    """``dataset[step]``: ``(Recording, inputs)`` of rank ``rank``'s task at ``step`` (for a ``DataLoader``)."""

    def __init__(self, tasks: RecordingTasks, rank: int = 0):
        self.tasks, self.rank = tasks, rank

    def __len__(self) -> int:
        return 10**12

    def __getitem__(self, step: int):
        task = self.tasks.recording(int(step), self.rank)
        return task, self.tasks.inputs(task)
