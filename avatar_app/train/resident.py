"""Self-reenactment pairs drawn on the GPU from a prepared dataset held in device memory.

The loader path (:class:`~.data.PreparedDataset` + ``FlowInputs`` in DataLoader workers)
decodes JPEGs and rasterises the landmark images and triangle maps on the CPU for every
sample, so a GPU waits on it (about 100 samples/s).  Here everything a pair needs is
computed once and kept on the device:

* every 256 crop as ``uint8`` ``(N, 3, 256, 256)`` (the corpus of 23k frames is 4.6 GB);
* every frame's landmark image (``uint8``, the exact OpenCV rasterisation inference uses)
  and triangle-id map (``int16``), for the frame and for its mirror image (flip
  augmentation with mirrored landmark indices), made once by a process pool;
* landmarks, identity embeddings, and per clip the mask of crop pixels
  that lie inside the source video's frame (tight face crops reach past the frame edge,
  where :func:`~avatar_app.face.align.warp_to_crop` replicates the border: losses and
  metrics ignore those pixels).

A batch is then a handful of gathers: a person is drawn uniformly (so people with many
clips do not dominate), a clip of theirs, two frames with a face; on the training split
a flip, a colour change shared by the pair, and a small scale/shift/rotation per image
(landmarks move exactly; landmark images, triangle maps and masks are resampled with the
image, so their lines scale with it by at most 6 %); optionally, pairs of large head motion
(:mod:`.large_motion`) and pairs driven by another person's motion (:mod:`.cross_pairs`).  Batch keys
match ``inputs.FlowInputs`` plus ``mask (B, 1, S, S)`` (and ``cross (B,)`` bool where cross pairs are on).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputFileError
from ..face.mesh import topology
from ..models.conditioning import COND_CHANNELS, landmark_image
from ..models.flow import rasterize_triangles
from .clipio import BASE_SIZE
from .cross_pairs import CrossMotion, draw_cross, retarget_rows
from .data import PreparedDataset
from .large_motion import ExactDrawer, HeadPoses, draw_large_zoom, two_frames
from .manifest import read_manifest
from .split import split_clips

# A spawned rendering worker takes 2-3 s to import what it needs and a frame ~15 ms (2-core machine): with
# fewer frames than this a worker, the frames are rendered sooner in this process (a small dataset, a test's).
FRAMES_PER_WORKER = 256
log = logging.getLogger(__name__)

S = BASE_SIZE


def mirror_points(points: np.ndarray, size: int = S) -> np.ndarray:
    """Landmarks of the horizontally flipped crop: x mirrored, left/right indices swapped."""
    out = np.array(points, np.float32, copy=True)
    out[..., 0] = size - 1 - out[..., 0]
    return out[..., topology().mirror, :]


def _render_clip(args) -> None:
    """Worker: landmark images and triangle maps of frames ``[lo, hi)`` (and their mirrors) into
    the shared memmaps."""
    cond_path, tri_path, total, lo, points = args
    cond = np.memmap(cond_path, np.uint8, "r+", shape=(2, total, COND_CHANNELS, S, S))
    tri = np.memmap(tri_path, np.int16, "r+", shape=(2, total, S, S))
    triangles = topology().triangles
    for m, pts in enumerate((points, mirror_points(points))):
        for i, p in enumerate(pts):
            cond[m, lo + i] = np.rint(landmark_image(p, S) * 255.0).astype(np.uint8)
            tri[m, lo + i] = rasterize_triangles(p, triangles, S).astype(np.int16)
    cond.flush()
    tri.flush()


class ResidentPairs:
    """A split of a prepared dataset on one device, drawing pairs as whole batches.

    Args:
        root: the prepared dataset (``avatar-app prepare``).
        split: ``"train"``, ``"val"`` or ``"all"`` (:data:`~.split.SPLIT_RULE`).
        val_fraction: share of people held out.
        device: where the tensors live.
        augment: flip, colour and small geometric jitter of the source (never on ``"val"``).
        jitter_target: jitter the driving frame too. Off by default: resampling the frame the output
            is compared with blurs it, and the network learns to blur (docs/REAL_FACES.md).
        hard_pairs: share of the training pairs whose driving frame is the largest head motion from the
            source of several drawn (:mod:`.large_motion`).
        large_motion: share of the training pairs given a large zoom (1.1-1.4x either way) and roll
            (:mod:`.large_motion`).
        cross_pairs: share of the training pairs driven by another person's motion, retargeted onto the
            source (:mod:`.cross_pairs`; no ground truth: only the identity loss learns from them).
        workers: processes for the one-off rasterisation (default: all cores).
    """

    def __init__(self, root: str | Path, split: str = "train", val_fraction: float = 0.1, device="cuda",
                 augment: bool = True, workers: int | None = None, jitter_target: bool = False,
                 hard_pairs: float = 0.0, large_motion: float = 0.0, cross_pairs: float = 0.0):
        t0 = time.perf_counter()
        self.root = Path(root)
        self.device = torch.device(device)
        self.split = split
        self.augment = augment and split != "val"
        self.jitter_target = jitter_target
        self.hard_pairs = hard_pairs if self.augment else 0.0
        self.large_motion = large_motion if self.augment else 0.0
        self.cross_pairs = cross_pairs if self.augment else 0.0
        self._drawer = None
        ds = PreparedDataset(self.root, size=S, split=split, val_fraction=val_fraction, augment=False)
        clips = ds.clip_records  # checked: files there, lengths agreeing, embeddings readable
        if not clips:
            raise InputFileError(f"The {split} split of '{self.root}' holds no clips; use more people or another "
                                 "val_fraction.")
        starts = np.cumsum([0] + [c.frames for c in clips])[:-1].tolist()
        n = int(sum(c.frames for c in clips))
        self.clips, self.total = clips, n
        self.people = ds.identities
        missing = [c.key for c in clips if not c.has_embedding]
        if missing:
            log.warning("%d of %d clips have no identity embedding (dlib was missing when they were prepared); "
                        "they train with a zero identity: %s", len(missing), len(clips), ", ".join(missing[:5]))
        points = np.concatenate([c.points(np.arange(c.frames), S) for c in clips]).astype(np.float32)
        images = self._read_images(clips, n)
        cond, tri = self._render(points, starts, workers)
        dev = self.device
        self.images = torch.from_numpy(images).to(dev)  # (N, 3, S, S) uint8 RGB
        self.cond = cond  # (2, N, 6, S, S) uint8; [1] = mirrored
        self.tri = tri  # (2, N, S, S) int16
        self.points = torch.from_numpy(np.stack([points, mirror_points(points)])).to(dev)  # (2, N, 478, 3)
        topo = topology()
        self._lips = (torch.tensor(topo.lips_inner_upper[1:-1], device=dev),
                      torch.tensor(topo.lips_inner_lower[1:-1], device=dev))
        self._rigid = torch.as_tensor(topo.rigid, device=dev)
        self.masks = torch.from_numpy(np.stack([c.frame_mask(S) for c in clips]).astype(np.uint8)).to(dev)  # (C, S, S)
        self.identity = torch.from_numpy(np.stack([c.embedding for c in clips])).to(dev)
        self.has_identity = torch.tensor([c.has_embedding for c in clips], device=dev)
        self._valid = [s + c.valid_indices for s, c in zip(starts, clips)]
        self._clips_of = [np.array([i for i, c in enumerate(clips) if c.identity == p]) for p in self.people]
        self._person_of = np.array([self.people.index(c.identity) for c in clips])
        self._poses = HeadPoses(points, np.concatenate([c.valid for c in clips])) if self.hard_pairs else None
        self._hardest = self._poses.hardest if self._poses is not None else None  # picks a hard pair's second frame
        log.info("resident %s split: %d people, %d clips, %d frames on %s in %.1f s", split, len(self.people),
                 len(clips), n, dev, time.perf_counter() - t0)

    def __len__(self) -> int:
        return self.total

    # -- one-off loading ----------------------------------------------------------------------------
    @staticmethod
    def _read_images(clips: list, n: int) -> np.ndarray:
        images = np.empty((n, 3, S, S), np.uint8)
        jobs = [(c, f) for c in clips for f in range(c.frames)]

        def read(k: int) -> None:
            clip, f = jobs[k]
            images[k] = clip.image(f, S)[:, :, ::-1].transpose(2, 0, 1)  # raises a clear error for a bad file

        with ThreadPoolExecutor(min(32, os.cpu_count() or 1)) as pool:  # imdecode releases the GIL
            list(pool.map(read, range(len(jobs))))
        return images

    def _render(self, points: np.ndarray, starts: list[int], workers: int | None):
        """Every frame's landmark image and triangle map, and their mirrors, by a process pool writing into
        scratch files, then moved to the device. Under torchrun each rank of a machine renders its own copy
        at the same time, so the cores and the scratch space are shared out between them."""
        n = self.total
        ranks_here = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
        need = 2 * n * S * S * (COND_CHANNELS + 2) * 1.05
        roots = [r for r in ("/dev/shm", tempfile.gettempdir())
                 if os.path.isdir(r) and shutil.disk_usage(r).free > need * ranks_here]
        if not roots:
            raise InputFileError(f"Preparing the resident dataset needs {need * ranks_here / 2**30:.1f} GiB of scratch "
                                 f"space in /dev/shm or {tempfile.gettempdir()}; free some, or point TMPDIR elsewhere.")
        scratch = Path(tempfile.mkdtemp(prefix="avatar-resident-", dir=roots[0]))
        cond_path, tri_path = scratch / "cond.u8", scratch / "tri.i16"
        workers = workers or max(1, (os.cpu_count() or 1) // ranks_here)
        workers = min(workers, max(1, n // FRAMES_PER_WORKER))
        try:
            np.memmap(cond_path, np.uint8, "w+", shape=(2, n, COND_CHANNELS, S, S)).flush()
            np.memmap(tri_path, np.int16, "w+", shape=(2, n, S, S)).flush()
            bounds = [(s, s + c.frames) for s, c in zip(starts, self.clips)]
            step = 64  # frames per task: even load over the pool
            tasks = [(str(cond_path), str(tri_path), n, lo, points[lo:min(lo + step, hi)])
                     for a, hi in bounds for lo in range(a, hi, step)]
            if workers > 1:
                import multiprocessing

                with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                    list(pool.map(_render_clip, tasks))
            else:
                for t in tasks:
                    _render_clip(t)
            dev = self.device  # straight from the scratch files to the device, no second host copy
            cond = torch.from_numpy(np.memmap(cond_path, np.uint8, "r+", shape=(2, n, COND_CHANNELS, S, S))).to(dev)
            tri = torch.from_numpy(np.memmap(tri_path, np.int16, "r+", shape=(2, n, S, S))).to(dev)
        finally:  # nothing is left in /dev/shm, also on errors and Ctrl-C (an open CPU mapping stays valid)
            shutil.rmtree(scratch, ignore_errors=True)
        return cond, tri

    # -- batches ----------------------------------------------------------------------------------
    def draw(self, batch: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(clip, source frame, driving frame)`` indices of ``batch`` pairs (frames global)."""
        people = rng.integers(len(self.people), size=batch)
        clip = np.array([rng.choice(self._clips_of[p]) for p in people])
        src, drv = np.empty(batch, np.int64), np.empty(batch, np.int64)
        for k, c in enumerate(clip):
            src[k], drv[k] = two_frames(self._valid[c], rng, self._hardest, self.hard_pairs)
        return clip, src, drv

    def batch(self, batch: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """A batch of pairs on the device (see the module docstring for the keys)."""
        clip, src, drv = self.draw(batch, rng)
        cross = None
        if self.cross_pairs:
            cross = draw_cross(self._person_of, clip, self._clips_of, self._valid, self.cross_pairs, rng,
                               self._hardest, self.hard_pairs)
        return self.assemble(clip, src, drv, rng, cross)

    def assemble(self, clip: np.ndarray, src: np.ndarray, drv: np.ndarray,
                 rng: np.random.Generator | None = None,
                 cross: CrossMotion | None = None) -> dict[str, torch.Tensor]:
        """The batch of pairs ``(clip, src, drv)`` (augmented where ``rng`` is given); ``cross``: rows driven by
        another person instead (:func:`~.cross_pairs.draw_cross`), after the source's augmentation."""
        dev = self.device
        b = len(clip)
        aug = self.augment and rng is not None
        flip = (rng.random(b) < 0.5) if aug else np.zeros(b, bool)
        f = torch.from_numpy(flip).to(dev)
        fi = f.long()
        si, di, ci = (torch.from_numpy(np.asarray(a, np.int64)).to(dev) for a in (src, drv, clip))

        def image(idx):
            x = self.images[idx].float().div_(255.0)
            return torch.where(f[:, None, None, None], x.flip(-1), x)

        mask = self.masks[ci].float()[:, None]
        mask = torch.where(f[:, None, None, None], mask.flip(-1), mask)
        out = {
            "source": image(si), "driving": image(di),
            "source_points": self.points[fi, si].clone(), "driving_points": self.points[fi, di].clone(),
            "source_cond": self.cond[fi, si].float().div_(255.0), "driving_cond": self.cond[fi, di].float().div_(255.0),
            "tri_ids": self.tri[fi, di].long(), "mask": mask,
            "identity": self.identity[ci], "has_identity": self.has_identity[ci],
        }
        if aug:
            self._colour(out, rng)
            zoom = draw_large_zoom(b, self.large_motion, rng) if self.large_motion else None
            plain = None if zoom is None else np.setdiff1d(np.arange(b), zoom.rows)  # one resampling per image
            self._jitter(out, "source", rng, plain)
            if self.jitter_target:
                self._jitter(out, "driving", rng, plain)
            for side, rows, s, degrees, t, fine in (zoom.transforms() if zoom is not None else []):
                self._similarity(out, side, rows, s, degrees, t, exact=True, supersample=fine)
        if cross is not None:
            self._cross(out, cross, fi)
        # from the landmarks as augmented (the jitter and zoom scale the mouth too), as the app measures its own
        sp, dp = out["source_points"], out["driving_points"]
        nearer = (self._face_size(dp) / self._face_size(sp).clamp(min=1e-6)).clamp(min=1.0)
        gap = self._mouth_gap(dp) - self._mouth_gap(sp) * nearer
        out["mouth_amount"] = (gap / (3.0 * S / 256.0)).clamp(0.0, 1.0)  # = face.mesh.MouthFill
        return out

    def _cross(self, out: dict, cross: CrossMotion, fi: torch.Tensor) -> None:
        """Rows ``cross.rows`` driven by the other person's motion, retargeted onto their source as it now is
        (flipped with it); their landmark images and triangle maps drawn afresh; no ground truth (mask 0)."""
        b = out["source"].shape[0]
        out["cross"] = torch.zeros(b, dtype=torch.bool, device=self.device)
        if not len(cross.rows):
            return
        idx = torch.from_numpy(cross.rows.astype(np.int64)).to(self.device)
        flip = fi[idx]
        neutral = self.points[flip, torch.from_numpy(cross.neutral).to(self.device)]
        driving = self.points[flip, torch.from_numpy(cross.driving).to(self.device)]
        target = retarget_rows(out["source_points"][idx].cpu().numpy(), neutral.cpu().numpy(),
                               driving.cpu().numpy(), S)
        pts = torch.from_numpy(target).to(self.device)
        cond, tri = self._exact()(pts, triangles=True)
        out["driving_points"] = out["driving_points"].index_copy(0, idx, pts)
        out["driving_cond"] = out["driving_cond"].index_copy(0, idx, cond)
        out["tri_ids"] = out["tri_ids"].index_copy(0, idx, tri)
        out["mask"] = out["mask"].index_fill(0, idx, 0.0)
        out["cross"][idx] = True

    def _mouth_gap(self, points: torch.Tensor) -> torch.Tensor:
        """``(B,)`` mean gap between the inner lips of ``(B, 478, 3)`` landmarks (:func:`~avatar_app.face.mesh.mouth_opening`)."""
        up, lo = points[:, self._lips[0], :2], points[:, self._lips[1], :2]
        return (up - lo).norm(dim=-1).mean(-1)

    def _face_size(self, points: torch.Tensor) -> torch.Tensor:
        """``(B,)`` 3-D :func:`~avatar_app.face.mesh.face_size` of ``(B, 478, 3)`` landmarks."""
        x = points[:, self._rigid].double()
        return (x - x.mean(1, keepdim=True)).pow(2).sum(-1).mean(-1).sqrt().float()

    def _colour(self, out: dict, rng: np.random.Generator) -> None:
        """Brightness, contrast, saturation and gamma, the same for both images of a pair."""
        b = out["source"].shape[0]

        def col(lo, hi):
            return torch.tensor(rng.uniform(lo, hi, b), dtype=torch.float32, device=self.device)[:, None, None, None]

        bright, contrast, sat, gamma = col(-0.08, 0.08), col(0.8, 1.2), col(0.7, 1.3), col(0.8, 1.25)
        for key in ("source", "driving"):
            x = out[key]
            grey = x.mean(1, keepdim=True)
            x = grey + (x - grey) * sat
            x = (x - 0.5) * contrast + 0.5 + bright
            out[key] = x.clamp_(0.0, 1.0).pow_(gamma)

    def _jitter(self, out: dict, side: str, rng: np.random.Generator, rows: np.ndarray | None = None,
                scale=0.06, shift=0.04, degrees=4.0) -> None:
        """A small random similarity per sample (of ``rows``; default all) applied to one image of each
        pair and all that describes it."""
        rows = np.arange(out[side].shape[0]) if rows is None else rows
        b = len(rows)
        if b:
            self._similarity(out, side, rows, np.exp(rng.uniform(-scale, scale, b)),
                             rng.uniform(-degrees, degrees, b), rng.uniform(-shift, shift, (b, 2)) * 2.0)

    def _similarity(self, out: dict, side: str, rows: np.ndarray, s: np.ndarray, degrees: np.ndarray,
                    t: np.ndarray, exact: bool = False, supersample: bool = False) -> None:
        """Move image ``side`` of pairs ``rows`` by the similarity ``n' = s R(degrees) n + t`` (grid units),
        with its landmarks, landmark image and (driving side) mask and triangle map.  ``exact``: draw the
        landmark image and triangle map from the moved landmarks instead of resampling them;
        ``supersample``: sample the image and mask at 2x and average (no aliasing when they shrink)."""
        dev, k = self.device, len(rows)
        a = np.deg2rad(degrees)
        rot = np.stack([np.stack([np.cos(a), -np.sin(a)], -1), np.stack([np.sin(a), np.cos(a)], -1)], -2)  # (k,2,2)
        fwd = rot * s[:, None, None]  # input norm -> output norm: n' = fwd n + t
        inv = np.linalg.inv(fwd)
        theta = torch.tensor(np.concatenate([inv, -(inv @ t[:, :, None])], 2), dtype=torch.float32, device=dev)
        idx = torch.from_numpy(np.asarray(rows, np.int64)).to(dev)
        fine = 2 if supersample else 1

        def warp(x, mode="bilinear", pad="zeros", up=1):
            grid = F.affine_grid(theta, (k, 1, S * up, S * up), align_corners=False)
            y = F.grid_sample(x, grid, mode=mode, padding_mode=pad, align_corners=False)
            return F.avg_pool2d(y, up) if up > 1 else y

        pts = out[f"{side}_points"][idx]
        fwd_t = torch.tensor(fwd, dtype=torch.float32, device=dev)
        t_t = torch.tensor(t, dtype=torch.float32, device=dev)
        norm = (pts[..., :2] + 0.5) * (2.0 / S) - 1.0
        moved = torch.einsum("bij,bnj->bni", fwd_t, norm) + t_t[:, None]
        pts = pts.clone()
        pts[..., :2] = (moved + 1.0) * (S / 2.0) - 0.5
        pts[..., 2] = pts[..., 2] * torch.tensor(s, dtype=torch.float32, device=dev)[:, None]
        out[f"{side}_points"] = out[f"{side}_points"].index_copy(0, idx, pts)
        out[side] = out[side].index_copy(0, idx, warp(out[side][idx], pad="border", up=fine))
        cond_key = f"{side}_cond"
        # resampled with the image (lines scale with it: by at most 6 % for the small jitter), or drawn afresh
        drawn = self._exact()(pts, triangles=side == "driving") if exact else None
        cond = drawn[0] if exact else warp(out[cond_key][idx])
        out[cond_key] = out[cond_key].index_copy(0, idx, cond)
        if side == "driving":  # the source's own mask is not used: losses compare with the driving frame
            mask = (warp(out["mask"][idx], up=fine) > 0.999).float()  # pixels that left the crop or the frame
            out["mask"] = out["mask"].index_copy(0, idx, mask)
            if exact:
                tri = drawn[1]
            else:
                tri = warp(out["tri_ids"][idx][:, None].float() + 1.0, mode="nearest")[:, 0].long() - 1
            out["tri_ids"] = out["tri_ids"].index_copy(0, idx, tri)

    def _exact(self) -> ExactDrawer:
        """The app's drawing of landmark images and triangle maps, on the device (made on first use)."""
        if self._drawer is None:
            self._drawer = ExactDrawer(S, self.device)
        return self._drawer


def people_split_summary(root: str | Path, val_fraction: float) -> dict:
    """Who is in which split of a prepared dataset: ``{"train": {...}, "val": {...}}`` with people,
    clips and frames each (for docs/DATASET.md and the training log)."""
    manifest = read_manifest(root)
    entries = {str(e["key"]): e for e in manifest["clips"]}
    train, val = split_clips(list(entries.values()), val_fraction)
    out = {}
    for name, keys in (("train", train), ("val", val)):
        people = sorted({str(entries[k].get("identity") or k) for k in keys})
        out[name] = {"people": people, "clips": len(keys), "frames": int(sum(int(entries[k]["frames"]) for k in keys))}
    return out
