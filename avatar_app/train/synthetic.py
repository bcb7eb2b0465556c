"""``avatar-app prepare --synthetic``: still portraits → a prepared dataset of animated clips.

Each clip is one still portrait animated by the geometric animator along the synthetic
driver's timeline; its landmarks are the exact targets.  These clips teach geometry only.
The folder layout is the one :mod:`.prepare` writes for real videos (``docs/DATASET.md``),
written through :mod:`.clipio` and :mod:`.manifest`, with ``"synthetic": true`` in the manifest.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..errors import AvatarError, InputFileError
from ..face.align import CropBox, transform_points, warp_to_crop
from ..types import NUM_LANDMARKS, Landmarks
from .clipio import (BASE_SIZE, ClipWriter, check_sizes, clip_meta, complete_meta, embed_identity, points_for_size,
                     points_to_base, size_affine)
from .manifest import PrepareReport, close_run, open_run

PORTRAIT_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
SYNTHETIC_FPS = 25.0


def _portrait_paths(portraits) -> tuple[list[Path], Path]:
    items = [portraits] if isinstance(portraits, (str, Path)) else list(portraits)
    paths: list[Path] = []
    for item in items:
        p = Path(item)
        if not p.exists():
            raise InputFileError(f"Portrait '{p}' does not exist; give an image file or a folder of portraits.")
        if p.is_dir():
            paths += sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")
                            and f.suffix.lower() in PORTRAIT_EXTENSIONS)
        else:
            paths.append(p)
    if not paths:
        raise InputFileError(f"No portrait images ({' '.join(PORTRAIT_EXTENSIONS)}) were found in "
                             f"{', '.join(repr(str(i)) for i in items) or 'the list'}; give portrait photos.")
    paths = [p.resolve() for p in paths]
    if len(items) == 1 and Path(items[0]).is_dir():
        root = Path(items[0]).resolve()
    else:
        root = Path(os.path.commonpath([str(p.parent) for p in paths]))
    return paths, root


def _color_jitter(image: np.ndarray, brightness: float, contrast: float, saturation: float) -> np.ndarray:
    img = image.astype(np.float32)
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32)[..., None]
    img = grey + saturation * (img - grey)
    mean = float(grey.mean())
    img = (img - mean) * contrast + mean + brightness
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def _crop_box_from_affine(crop_to_image: np.ndarray, size: int) -> CropBox:
    a = np.asarray(crop_to_image, np.float64)
    c = a @ np.array([size / 2.0, size / 2.0, 1.0])
    return CropBox((float(c[0]), float(c[1])), float(size * np.hypot(a[0, 0], a[1, 0])),
                   float(np.arctan2(a[1, 0], a[0, 0])))


def _stem_key(stem: str) -> str:
    return stem.replace("/", "_").replace("\\", "_") or "portrait"


def _plan(paths: list[Path], root: Path) -> list[tuple[Path, str, str]]:
    """``(path, identity, source)`` per portrait: identity = the file stem, made unique."""
    stems: dict[str, int] = {}
    plan = []
    for p in paths:
        stem = _stem_key(p.stem)
        if stem in stems:
            stems[stem] += 1
            stem = f"{stem}_{stems[stem]}"
        stems.setdefault(stem, 1)
        try:
            rel = p.relative_to(root).as_posix()
        except ValueError:  # not below the common folder
            rel = str(p)
        plan.append((p, stem, rel))
    return plan


def generate_synthetic_dataset(portraits: list[Path] | Path, out: str | Path, clips_per_portrait: int = 4,
                               frames: int = 48, sizes=(256,), seed: int = 0, progress: bool = True) -> PrepareReport:
    """A prepared dataset made from still portraits animated by the geometric animator.

    **This teaches geometry only**: every clip is one still portrait warped by the
    analytic flow along the synthetic driver's timeline (``timeline_pose`` from a random
    offset, retargeted from the synthetic neutral face), so nothing in it shows how a
    real face changes appearance (teeth, wrinkles, lighting on a turning head).  The
    clip's landmarks are the exact targets the animator was driven with.  Each clip gets
    its own colour jitter (brightness, contrast, saturation) and a small scale/shift of
    the whole crop (applied to images and landmarks alike).

    Args:
        portraits: an image, a folder of images, or a list of either.
        out: the prepared folder (same layout as :func:`.prepare.prepare_dataset`, ``"synthetic": true``).
        clips_per_portrait: clips per portrait.
        frames: frames per clip (25 fps).
        sizes: crop sizes from (256, 512); with 512 the frames are rendered at 512 and
            the 256 crops are their area-downsampled copies.
        seed: varies each clip's timeline offset, blinks, syllables and augmentation.
        progress: show a progress bar over clips.

    Identity = the portrait's file stem; identity.npy = the portrait's dlib embedding
    (skipped, with a note, without dlib).  Portraits without a usable face are skipped.
    """
    import torch

    from ..capture.synthetic import FacePose, synthetic_landmarks
    from ..face.source import prepare_source
    from ..face.tracker import FaceTracker
    from ..runtime.animator import GeometricAnimator
    from ..types import SourcePortrait

    out = Path(out)
    paths, root = _portrait_paths(portraits)
    sizes = check_sizes(sizes)
    if clips_per_portrait < 1 or frames < 1:
        raise AvatarError("Synthetic clips need at least one clip per portrait and one frame per clip.")
    report, earlier_skips, want_identity = open_run(out, synthetic=True)
    render = max(sizes)
    skipped: dict[str, str] = {}
    plan = _plan(paths, root)
    keys_of = {stem: [f"{stem}__synth{j:02d}" for j in range(clips_per_portrait)] for _, stem, _ in plan}

    neutral = synthetic_landmarks(FacePose())
    start = time.perf_counter()
    torch_threads = torch.get_num_threads()
    # the flow of one small crop gains nothing from more threads, and several of them
    # slow it down many times over when other processes keep the cores busy
    torch.set_num_threads(1)
    try:
        with FaceTracker() as tracker, tqdm(total=len(plan) * clips_per_portrait, unit="clip", desc="synthetic",
                                            disable=not progress, leave=False) as bar:
            for p_index, (path, stem, rel) in enumerate(plan):
                todo = []
                for j, key in enumerate(keys_of[stem]):
                    if complete_meta(out / "clips" / key, sizes) is not None:
                        report.clips_already_done.append(key)
                        bar.update(1)
                    else:
                        todo.append(j)
                if not todo:
                    continue
                try:
                    src256 = prepare_source(path, BASE_SIZE, tracker=tracker)
                except AvatarError as exc:
                    skipped[rel] = str(exc)
                    bar.update(len(todo))
                    continue
                if render == BASE_SIZE:
                    src_r = src256
                else:
                    a_r = size_affine(cv2.invertAffineTransform(src256.crop_to_image), render)
                    src_r = SourcePortrait(
                        crop=warp_to_crop(src256.image, a_r, render),
                        landmarks=Landmarks(points_for_size(src256.landmarks.points, render), (render, render)),
                        size=render, image=src256.image, crop_to_image=cv2.invertAffineTransform(a_r), path=str(path))
                embedding, id_note = (embed_identity(src256.crop, src256.landmarks.points) if want_identity
                                      else (None, None))
                report.note(id_note)
                animator = GeometricAnimator(src_r)
                box = _crop_box_from_affine(src256.crop_to_image, BASE_SIZE)
                for j in todo:
                    key = keys_of[stem][j]
                    writer = ClipWriter(out / "clips" / key, sizes)
                    try:
                        lms, params = _render_clip(writer, animator, src_r, neutral, sizes, render, frames,
                                                   np.random.default_rng([seed, p_index, j]))
                        meta = clip_meta(key, stem, frames, frames, SYNTHETIC_FPS, rel, box=box, reference_frame=0,
                                         sizes=sizes, has_identity=embedding is not None, synthetic=params)
                        writer.finish(lms, np.ones(frames, bool), embedding, meta)
                    except BaseException:
                        writer.abort()
                        raise
                    report.clips_done.append(key)
                    report.frames += frames
                    bar.update(1)
    finally:
        torch.set_num_threads(torch_threads)
        source_of = {key: rel for _, stem, rel in plan for key in keys_of[stem]}
        close_run(report, str(root), sizes, True, skipped, earlier_skips, source_of, start)
    return report


def _render_clip(writer: ClipWriter, animator, source, neutral, sizes: tuple[int, ...], render: int, frames: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Animate one clip into ``writer``'s crops; returns its 256-crop landmarks and its parameters."""
    from ..capture.synthetic import synthetic_landmarks, timeline_pose
    from ..face.retarget import Retargeter

    clip_seed = int(rng.integers(0, 2**31 - 1))
    t0 = float(rng.uniform(1.0, 13.0))
    k = float(rng.uniform(0.92, 1.08))
    shift = rng.uniform(-0.04, 0.04, size=2) * render
    jitter = {"brightness": float(rng.uniform(-20, 20)), "contrast": float(rng.uniform(0.8, 1.2)),
              "saturation": float(rng.uniform(0.75, 1.25))}
    c = (render - 1) / 2.0
    sim = np.array([[k, 0.0, c * (1 - k) + shift[0]], [0.0, k, c * (1 - k) + shift[1]]])
    retarget = Retargeter(source.landmarks)
    retarget.calibrate(neutral)
    lms = np.empty((frames, NUM_LANDMARKS, 3), np.float32)
    for i in range(frames):
        target = retarget(synthetic_landmarks(timeline_pose(t0 + i / SYNTHETIC_FPS, seed=clip_seed)))
        image = animator.animate(target)
        image = cv2.warpAffine(image, sim, (render, render), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        image = _color_jitter(image, **jitter)
        for s in sizes:
            writer.frame(i, s, image if s == render else cv2.resize(image, (s, s), interpolation=cv2.INTER_AREA))
        lms[i] = points_to_base(transform_points(target.points, sim), render)
    params = {"timeline_seed": clip_seed, "t0": round(t0, 4), "scale": round(k, 4),
              "shift_px": [round(float(v), 3) for v in shift], "render_size": render,
              **{n: round(v, 4) for n, v in jitter.items()}}
    return lms, params
