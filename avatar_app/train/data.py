"""Training data: a prepared dataset (docs/DATASET.md) as a torch ``Dataset``.

Two sampling modes:

* ``"pairs"`` (warp and full stages, self-reenactment): a source and a driving frame
  of the same clip, with their landmarks and the clip's identity embedding;
* ``"window"`` (enhancer stage): ``window`` consecutive frames of a clip at 512 and 256
  with the 256 landmarks.

Samples are a pure function of ``(seed, epoch, index)`` (``np.random.default_rng``), so
any sampler order, any number of loader workers and any number of ranks give the same
sample for the same index; :meth:`PreparedDataset.set_epoch` draws new frames for the
next epoch.  Items hold tensors only, so torch's default collate batches them.

The split (:data:`~.split.SPLIT_RULE`, :mod:`.split`) is by identity, stable across runs and
machines, and the same rule ``avatar-app evaluate`` uses for two or more identities; the
manifest is read checked by :func:`~.manifest.read_manifest`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import InputFileError
from ..face.mesh import topology
from ..models.identity import IDENTITY_DIM
from .clipio import BASE_SIZE, clip_frame_mask, clip_meta_of, frame_name, points_for_size, read_image_file
from .manifest import read_manifest
from .split import split_clips

log = logging.getLogger(__name__)


@dataclass
class _Clip:
    key: str
    identity: str
    folder: Path
    frames: int
    valid: np.ndarray  # (N,) bool
    embedding: np.ndarray  # (128,) float32, zeros if absent
    has_embedding: bool

    @property
    def valid_indices(self) -> np.ndarray:
        idx = np.flatnonzero(self.valid)
        return idx if len(idx) else np.arange(self.frames)

    def points(self, indices, size: int) -> np.ndarray:
        """``(len(indices), 478, 3) float32`` landmarks in px of the ``size`` crop."""
        lm = np.load(self.folder / "landmarks.npy", mmap_mode="r")
        return points_for_size(np.asarray(lm[np.asarray(indices)]), size)

    def frame_mask(self, size: int) -> np.ndarray:
        """``(size, size) float32`` 1 where the crop shows the clip's video (all 1 when unknown)."""
        mask = clip_frame_mask(clip_meta_of(self.folder), size)
        return np.ones((size, size), np.float32) if mask is None else mask.astype(np.float32)

    def image(self, index: int, size: int) -> np.ndarray:
        path = self.folder / str(size) / frame_name(int(index))
        image = read_image_file(path)
        if image is None or image.shape[:2] != (size, size):
            raise InputFileError(f"Frame '{path}' of the prepared dataset is missing or damaged; delete the folder "
                                 f"'{self.folder}' and run `avatar-app prepare` again to redo that clip.")
        return image


_PLAIN_LUT = np.arange(256, dtype=np.float32) / 255.0


def _to_chw(image_bgr: np.ndarray, lut: np.ndarray = _PLAIN_LUT) -> np.ndarray:
    """``(S, S, 3) uint8`` BGR → ``(3, S, S) float32`` RGB in [0, 1] through a 256-entry table.

    Images are assembled in numpy and handed to torch once: torch's multi-threaded
    element-wise ops and ``stack`` crawl in loader code on a machine whose cores are busy.
    """
    return lut[np.ascontiguousarray(image_bgr[:, :, ::-1].transpose(2, 0, 1))]


@dataclass(frozen=True)
class _Augment:
    flip: bool
    contrast: float
    brightness: float


class PreparedDataset(Dataset):
    """A prepared dataset folder as training samples.

    Args:
        root: the folder ``avatar-app prepare`` wrote.
        size: crop size of ``"pairs"`` samples (must have been prepared).
        split: ``"train"``, ``"val"`` or ``"all"`` (see :data:`~.split.SPLIT_RULE`).
        val_fraction: share of identities held out for validation.
        mode: ``"pairs"`` or ``"window"`` (needs 512 crops).
        window: consecutive frames per ``"window"`` sample.
        samples_per_clip: samples drawn per clip per epoch (``len`` = clips × this).
        seed: sampling seed.
        augment: random horizontal flip (landmarks mirrored and re-indexed) and
            brightness/contrast, the same for every image of a sample; never applied to
            ``split="val"``.
        min_crop_side: use only clips whose crop spans at least this many source pixels
            (the enhancer learns detail only from video sharper than its 256 input; a
            512 crop of a 256 px video is an upsampled copy).
        window_source: window samples also carry a random source frame of the clip
            (``source_512``, ``source_256``, ``source_points``) and ``mask_512 (1, 512, 512)``,
            the crop pixels that show the video: what the enhancer needs to be trained on
            the app's own 512 path.

    Items (all tensors):

    * pairs: ``source``, ``driving`` ``(3, S, S) float32`` RGB in [0, 1];
      ``source_points``, ``driving_points`` ``(478, 3) float32`` px of the S crop;
      ``identity`` ``(128,) float32`` (zeros when the clip has none) and
      ``has_identity`` (bool); ``clip`` (int64 index into :attr:`clips`);
      ``frame_indices`` ``(2,) int64``.
    * window: ``frames_512`` ``(T, 3, 512, 512)``, ``frames_256`` ``(T, 3, 256, 256)``,
      ``points_256`` ``(T, 478, 3)``, ``valid`` ``(T,) bool``, ``identity``,
      ``has_identity``, ``clip``, ``frame_indices`` ``(T,)``: T consecutive frames, all
      with a face when the clip has such a run.
    """

    def __init__(self, root: str | Path, size: int = 256, split: str = "train", val_fraction: float = 0.1,
                 mode: str = "pairs", window: int = 3, samples_per_clip: int = 64, seed: int = 0,
                 augment: bool = True, min_crop_side: float = 0.0, window_source: bool = False):
        if split not in ("train", "val", "all"):
            raise ValueError(f"split must be 'train', 'val' or 'all', not {split!r}")
        if mode not in ("pairs", "window"):
            raise ValueError(f"mode must be 'pairs' or 'window', not {mode!r}")
        if window < 1 or samples_per_clip < 1:
            raise ValueError("window and samples_per_clip must be at least 1")
        if not 0.0 <= val_fraction <= 1.0:
            raise ValueError(f"val_fraction must be within 0..1, not {val_fraction}")
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        sizes = set(self.manifest.get("sizes", [BASE_SIZE]))
        if mode == "pairs" and size not in sizes:
            raise InputFileError(f"'{self.root}' was prepared with crop sizes {sorted(sizes)}, not {size}; prepare it "
                                 f"again with --sizes {' '.join(map(str, sorted(sizes | {size})))}.")
        if mode == "window" and 512 not in sizes:
            raise InputFileError(f"'{self.root}' has no 512 crops, which window samples (the enhancer stage) need; "
                                 "prepare it again with --sizes 256 512.")
        self.size = int(size)
        self.split = split
        self.val_fraction = float(val_fraction)
        self.mode = mode
        self.window = int(window)
        self.window_source = bool(window_source)
        self.samples_per_clip = int(samples_per_clip)
        self.seed = int(seed) % 2**63
        self.augment = bool(augment) and split != "val"
        self.epoch = 0
        self._mirror = np.asarray(topology().mirror)

        entries = {str(e["key"]): e for e in self.manifest["clips"]}
        for key in entries:
            folder = self.root / "clips" / key
            if not (folder / "landmarks.npy").is_file() or not (folder / "valid.npy").is_file():
                raise InputFileError(f"Clip '{key}' listed in '{self.root / 'manifest.json'}' is missing or incomplete "
                                     f"in '{folder}'; run `avatar-app prepare` again into '{self.root}' to redo it.")
        self._train_keys, self._val_keys = split_clips(list(entries.values()), self.val_fraction)
        keys = {"train": self._train_keys, "val": self._val_keys, "all": sorted(entries)}[split]
        if min_crop_side > 0:
            keys = [k for k in keys if _crop_side(self.root / "clips" / k) >= min_crop_side]
            if not keys:
                raise InputFileError(f"No {split} clip of '{self.root}' was cropped from at least {min_crop_side:g} source "
                                     "pixels across; the enhancer needs video sharper than its 256 input.")
        self._entries = entries
        self._clips = [self._load_clip(entries[k]) for k in keys]
        without = [c.key for c in self._clips if not c.has_embedding]
        if without:
            log.warning("%d of %d %s clips of '%s' have no identity.npy (prepared without dlib), e.g. '%s': the "
                        "generator gets a zero identity embedding for them; install avatar-app[neural] and run "
                        "`avatar-app prepare` again to give them one", len(without), len(self._clips), split,
                        self.root, without[0])

    def _load_clip(self, entry: dict) -> _Clip:
        key = str(entry["key"])
        folder = self.root / "clips" / key
        try:
            valid = np.load(folder / "valid.npy").astype(bool).reshape(-1)
        except (OSError, ValueError) as exc:
            raise InputFileError(f"'{folder / 'valid.npy'}' cannot be read ({exc}); delete '{folder}' and run "
                                 "`avatar-app prepare` again to redo that clip.") from exc
        frames = int(entry["frames"])
        try:
            shape = np.load(folder / "landmarks.npy", mmap_mode="r").shape
        except (OSError, ValueError) as exc:
            raise InputFileError(f"'{folder / 'landmarks.npy'}' cannot be read ({exc}); delete '{folder}' and run "
                                 "`avatar-app prepare` again to redo that clip.") from exc
        if len(valid) != frames or shape[0] != frames:
            raise InputFileError(f"Clip '{key}' has {len(valid)} entries in valid.npy and {shape[0]} in landmarks.npy "
                                 f"but {frames} frames in the manifest; delete '{folder}' and run `avatar-app prepare` "
                                 "again to redo it.")
        emb_path = folder / "identity.npy"
        embedding = np.zeros(IDENTITY_DIM, np.float32)
        has = emb_path.is_file()
        if has:
            try:
                embedding = np.load(emb_path).astype(np.float32).reshape(IDENTITY_DIM)
            except (OSError, ValueError) as exc:
                raise InputFileError(f"'{emb_path}' is not a {IDENTITY_DIM}-d identity embedding ({exc}); delete "
                                     f"'{folder}' and run `avatar-app prepare` again to redo that clip.") from exc
        return _Clip(key, str(entry.get("identity") or key), folder, frames, valid, embedding, has)

    # -- bookkeeping ------------------------------------------------------------------------------
    @property
    def clips(self) -> list[str]:
        """Keys of this split's clips; a sample's ``clip`` indexes this list."""
        return [c.key for c in self._clips]

    @property
    def clip_records(self) -> list[_Clip]:
        """This split's clips, checked: landmarks, valid flags, identity embedding and frame access."""
        return list(self._clips)

    @property
    def identities(self) -> list[str]:
        return sorted({c.identity for c in self._clips})

    @property
    def clip_identities(self) -> list[str]:
        """The identity of each clip, in :attr:`clips` order (sample ``i`` is clip ``i % len(clips)``)."""
        return [c.identity for c in self._clips]

    def train_clips(self) -> list[str]:
        """Keys of the training split (whatever split this dataset reads)."""
        return list(self._train_keys)

    def val_clips(self) -> list[str]:
        """Keys of the validation split (whatever split this dataset reads)."""
        return list(self._val_keys)

    def set_epoch(self, epoch: int) -> None:
        """Draw different frames from now on (call once per epoch, like DistributedSampler)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self._clips) * self.samples_per_clip

    # -- evaluation access ------------------------------------------------------------------------
    def _clip_by_key(self, key: str) -> _Clip:
        for c in self._clips:
            if c.key == key:
                return c
        if key not in self._entries:
            raise KeyError(f"no clip {key!r} in {self.root}")
        return self._load_clip(self._entries[key])

    def clip_valid(self, key: str) -> np.ndarray:
        """``(N,) bool``: which frames of clip ``key`` show a face."""
        return self._clip_by_key(key).valid.copy()

    def clip_frames(self, key: str, size: int = 256) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every frame of clip ``key`` (any split) in order: ``(BGR uint8 (S, S, 3), points (478, 3) px)``.

        An iterator, so long clips are not held in memory; wrap in ``list`` if needed.
        """
        clip = self._clip_by_key(key)
        sizes = set(self.manifest.get("sizes", [BASE_SIZE]))
        if size not in sizes:
            raise InputFileError(f"'{self.root}' has no {size} crops (it has {sorted(sizes)}); prepare it again with "
                                 f"--sizes {' '.join(map(str, sorted(sizes | {size})))}.")
        points = clip.points(np.arange(clip.frames), size)

        def gen():
            for i in range(clip.frames):
                yield clip.image(i, size), points[i]

        return gen()

    # -- samples ----------------------------------------------------------------------------------
    def _draw_augment(self, rng: np.random.Generator) -> _Augment | None:
        if not self.augment:
            return None
        return _Augment(bool(rng.random() < 0.5), float(rng.uniform(0.8, 1.2)), float(rng.uniform(-0.08, 0.08)))

    def _image(self, clip: _Clip, index: int, size: int, aug: _Augment | None) -> np.ndarray:
        image = clip.image(index, size)
        if aug is None:
            return _to_chw(image)
        if aug.flip:
            image = image[:, ::-1]
        lut = np.clip((_PLAIN_LUT - 0.5) * aug.contrast + 0.5 + aug.brightness, 0.0, 1.0).astype(np.float32)
        return _to_chw(image, lut)

    def _points(self, clip: _Clip, indices, size: int, aug: _Augment | None) -> torch.Tensor:
        pts = clip.points(indices, size)
        if aug is not None and aug.flip:
            pts[..., 0] = size - 1 - pts[..., 0]
            pts = pts[:, self._mirror]  # the subject's left becomes their right
        return torch.from_numpy(np.ascontiguousarray(pts, dtype=np.float32))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        n = len(self)
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {i} out of range for {n} samples")
        ci = i % len(self._clips)
        clip = self._clips[ci]
        rng = np.random.default_rng((self.seed, self.epoch, i))
        common = {"identity": torch.from_numpy(clip.embedding.copy()),
                  "has_identity": torch.tensor(clip.has_embedding), "clip": torch.tensor(ci, dtype=torch.int64)}
        if self.mode == "pairs":
            return {**self._pair(clip, rng), **common}
        return {**self._window(clip, rng), **common}

    def _pair(self, clip: _Clip, rng: np.random.Generator) -> dict:
        choices = clip.valid_indices
        if len(choices) >= 2:
            s, d = (int(v) for v in rng.choice(choices, size=2, replace=False))
        else:
            s = d = int(choices[0])
        aug = self._draw_augment(rng)
        pts = self._points(clip, [s, d], self.size, aug)
        return {"source": torch.from_numpy(self._image(clip, s, self.size, aug)),
                "driving": torch.from_numpy(self._image(clip, d, self.size, aug)),
                "source_points": pts[0], "driving_points": pts[1],
                "frame_indices": torch.tensor([s, d], dtype=torch.int64)}

    def _window(self, clip: _Clip, rng: np.random.Generator) -> dict:
        t, n = self.window, clip.frames
        if n >= t:
            counts = np.convolve(clip.valid.astype(np.int64), np.ones(t, np.int64), mode="valid")  # per start
            starts = np.flatnonzero(counts == counts.max())
            start = int(rng.choice(starts))
            idx = np.arange(start, start + t)
        else:
            idx = np.minimum(np.arange(t), n - 1)
        aug = self._draw_augment(rng)
        item = {
            "frames_512": torch.from_numpy(np.stack([self._image(clip, k, 512, aug) for k in idx])),
            "frames_256": torch.from_numpy(np.stack([self._image(clip, k, BASE_SIZE, aug) for k in idx])),
            "points_256": self._points(clip, idx, BASE_SIZE, aug),
            "valid": torch.from_numpy(clip.valid[idx].copy()),
            "frame_indices": torch.from_numpy(idx.astype(np.int64)),
        }
        if self.window_source:  # what the app's 512 path needs: a source frame of the same clip, and the mask
            s = int(rng.choice(clip.valid_indices))
            mask = clip.frame_mask(512)
            if aug is not None and aug.flip:
                mask = mask[:, ::-1]
            item.update(source_512=torch.from_numpy(self._image(clip, s, 512, aug)),
                        source_256=torch.from_numpy(self._image(clip, s, BASE_SIZE, aug)),
                        source_points=self._points(clip, [s], BASE_SIZE, aug)[0],
                        mask_512=torch.from_numpy(np.ascontiguousarray(mask, np.float32))[None])
        return item


def _crop_side(folder: Path) -> float:
    """Side of a clip's crop in source-video pixels (0 when its meta.json says nothing)."""
    try:
        return float(clip_meta_of(folder)["crop"]["side"])
    except (KeyError, TypeError, ValueError):
        return 0.0


def collate(batch: list[dict]) -> dict:
    """Batch items (torch's default collate; items hold tensors only)."""
    return torch.utils.data.default_collate(batch)


def worker_init(_worker_id: int = 0) -> None:
    """``DataLoader(worker_init_fn=worker_init)``: one OpenCV thread per loader worker."""
    cv2.setNumThreads(1)
