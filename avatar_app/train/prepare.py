"""``avatar-app prepare``: videos (or still portraits) → the prepared dataset of ``docs/DATASET.md``.

Real clips (:func:`prepare_dataset`): every frame of a video or of a frame folder is
tracked with mediapipe (video mode, One-Euro smoothing); one aligned crop per clip (the
median of the per-frame boxes, so head motion stays visible in the crop) is written at
each size as JPEG, with the landmarks in px of the 256 crop, which frames showed a face,
and the dlib identity embedding of the first good frame.  Clips run in worker processes;
a clip whose ``meta.json`` exists is complete and is not prepared again, so an
interrupted run resumes where it stopped.

Synthetic clips (``--synthetic``) are made by :mod:`.synthetic`; both kinds are written
through :mod:`.clipio` (clip folders) and :mod:`.manifest` (manifest.json, report.md).
The command line (``add_prepare_parser``, ``run_prepare``) is in :mod:`.commands`.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..errors import AvatarError, InputFileError
from ..face.align import CropBox, face_crop_box, transform_points, warp_to_crop
from ..types import NUM_LANDMARKS, Frame
from .clipio import (BASE_SIZE, ClipWriter, check_sizes, clip_meta, complete_meta, embed_identity, read_image_file,
                     set_identity, size_affine)
from ..people import person_of, read_people
from .manifest import PrepareReport, close_run, open_run

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")
FRAME_FOLDER_FPS = 25.0


# -- discovering clips -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClipJob:
    """One clip to prepare: ``kind`` is ``"video"`` or ``"frames"`` (a folder of images)."""

    key: str
    identity: str
    source: str  # path below the source root, '/'-separated
    path: str  # absolute
    kind: str



def discover_clips(src: str | Path, exclude: str | Path | None = None,
                   people: dict[str, str] | None = None) -> list[ClipJob]:
    """Videos and frame folders below ``src`` (or ``src`` itself, a video), sorted by key.

    A frame folder is any folder with ``.jpg``/``.png`` files (one clip, frames in name
    order).  Identity = the person ``people`` (:func:`avatar_app.people.read_people`) names for the
    clip, else the first folder level below ``src``; a video or frame folder directly in
    ``src`` is its own identity.  Hidden entries and ``exclude`` (the output folder, if it
    lies inside ``src``) are not searched.
    """
    src = Path(src).resolve()
    excl = Path(exclude).resolve() if exclude is not None else None
    if src.is_file():
        if src.suffix.lower() not in VIDEO_EXTENSIONS:
            raise InputFileError(f"'{src}' is not a video ({', '.join(VIDEO_EXTENSIONS)}); give a video file or a "
                                 "folder of videos or frame folders.")
        return [ClipJob(src.stem, src.stem, src.name, str(src), "video")]
    jobs: list[ClipJob] = []
    for dirpath, dirnames, filenames in os.walk(src):
        here = Path(dirpath)
        dirnames[:] = sorted(n for n in dirnames if not n.startswith(".") and (excl is None or here / n != excl))
        files = sorted(f for f in filenames if not f.startswith("."))
        rel_dir = here.relative_to(src)
        if any(Path(f).suffix.lower() in FRAME_EXTENSIONS for f in files):
            parts = rel_dir.parts or (src.name,)
            jobs.append(ClipJob("__".join(parts), parts[0], rel_dir.as_posix() if rel_dir.parts else ".",
                                str(here), "frames"))
        for f in files:
            if Path(f).suffix.lower() in VIDEO_EXTENSIONS:
                rel = rel_dir / f
                parts = rel.with_suffix("").parts
                jobs.append(ClipJob("__".join(parts), parts[0], rel.as_posix(), str(here / f), "video"))
    # keys must be unique: 'a/b.mp4' next to a frame folder 'a/b/' (or 'a/b.mov') would collide
    seen: dict[str, int] = {}
    unique = []
    for job in sorted(jobs, key=lambda j: (j.key, j.kind != "frames", j.source)):
        key = job.key
        if key in seen:
            key = f"{key}_{Path(job.source).suffix.lstrip('.').lower() or 'frames'}"
            n = 2
            while key in seen:
                key, n = f"{job.key}_{n}", n + 1
            job = ClipJob(key, job.identity, job.source, job.path, job.kind)
        seen[key] = 1
        person = person_of(job.source, people) if people else None
        unique.append(job if person is None else ClipJob(job.key, person, job.source, job.path, job.kind))
    return sorted(unique, key=lambda j: j.key)




# -- one clip (runs in a worker process) ---------------------------------------------------------------
class _SkipClip(Exception):
    """The clip cannot be prepared; the message is the reason for the report."""


def _frames(job: ClipJob, max_frames: int | None):
    """``(fps, iterator of (index, BGR image))``; raises _SkipClip for unusable input."""
    if job.kind == "video":
        from ..capture.video import VideoFileSource

        try:
            source = VideoFileSource(job.path)
        except InputFileError:
            raise _SkipClip("could not be decoded (not a video, empty or truncated)") from None

        def gen():
            with source:
                for frame in source:
                    if max_frames is not None and frame.index >= max_frames:
                        return
                    yield frame.index, frame.image

        return source.fps, gen()
    folder = Path(job.path)
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                   and p.suffix.lower() in FRAME_EXTENSIONS)
    if max_frames is not None:
        files = files[:max_frames]

    def gen_files():
        shape = None
        for i, p in enumerate(files):
            image = read_image_file(p)
            if image is None:
                raise _SkipClip(f"frame '{p.name}' could not be read as an image")
            if shape is None:
                shape = image.shape
            elif image.shape != shape:
                raise _SkipClip(f"frame '{p.name}' is {image.shape[1]}x{image.shape[0]} while the first frame is "
                                f"{shape[1]}x{shape[0]}; all frames of a clip must have one size")
            yield i, image

    return FRAME_FOLDER_FPS, gen_files()


def median_crop_box(boxes: list[CropBox]) -> CropBox:
    """One box for a clip: median centre (per coordinate), median side, and the median of
    the angles' deviations from their circular mean (robust, wrap-safe)."""
    centers = np.array([b.center for b in boxes], np.float64)
    sides = np.array([b.side for b in boxes], np.float64)
    angles = np.array([b.angle for b in boxes], np.float64)
    ref = float(np.angle(np.exp(1j * angles).mean()))
    dev = np.angle(np.exp(1j * (angles - ref)))
    angle = float(np.angle(np.exp(1j * (ref + np.median(dev)))))
    cx, cy = np.median(centers, axis=0)
    return CropBox((float(cx), float(cy)), float(np.median(sides)), angle)



def _worker_init() -> None:
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cv2.setNumThreads(1)


def prepare_clip(job: ClipJob, out: str | Path, sizes: tuple[int, ...] = (BASE_SIZE,), min_valid: float = 0.5,
                 min_frames: int = 8, max_frames: int | None = None, identity: bool = True) -> dict:
    """Prepare one clip into ``out/clips/<key>``; never raises for bad input.

    Returns ``{"status": "done", "key", "frames", "note"}`` or
    ``{"status": "skipped", "source", "reason"}``.
    """
    clip_dir = Path(out) / "clips" / job.key
    try:
        return _prepare_clip(job, clip_dir, sizes, min_valid, min_frames, max_frames, identity)
    except _SkipClip as exc:
        reason = str(exc)
    except AvatarError as exc:
        reason = str(exc)
    except Exception as exc:  # noqa: BLE001 - one bad clip must not end the run; the log keeps the detail
        log.warning("preparing %s failed:\n%s", job.source, traceback.format_exc())
        reason = f"failed with {type(exc).__name__}: {exc}"
    shutil.rmtree(clip_dir, ignore_errors=True)
    return {"status": "skipped", "source": job.source, "reason": reason}


def _prepare_clip(job: ClipJob, clip_dir: Path, sizes, min_valid, min_frames, max_frames, want_identity) -> dict:
    from ..face.tracker import FaceTracker

    t_start = time.perf_counter()
    fps, frames = _frames(job, max_frames)
    # pass 1: track every frame (fresh tracker: video mode + One-Euro smoothing)
    raw: list[np.ndarray | None] = []
    frame_size = None
    with FaceTracker() as tracker:
        for index, image in frames:
            frame_size = (image.shape[1], image.shape[0])
            res = tracker.track(Frame(image=image, timestamp=index / fps, index=index))
            raw.append(res.landmarks.points.copy() if res.found else None)
    n = len(raw)
    if n == 0:
        raise _SkipClip("has no frames")
    valid = np.array([p is not None for p in raw])
    n_valid = int(valid.sum())
    if n_valid == 0:
        raise _SkipClip(f"no face was found in any of its {n} frames")
    if n_valid < min_frames:
        raise _SkipClip(f"a face was found in only {n_valid} of {n} frames (at least {min_frames} needed)")
    if n_valid / n < min_valid:
        raise _SkipClip(f"a face was found in only {n_valid} of {n} frames ({n_valid / n:.0%}; at least "
                        f"{min_valid:.0%} needed)")
    first = int(np.argmax(valid))
    points = np.empty((n, NUM_LANDMARKS, 3), np.float32)
    last = raw[first]
    for i, p in enumerate(raw):  # frames without a face keep the last good landmarks
        last = p if p is not None else last
        points[i] = last
    box = median_crop_box([face_crop_box(points[i]) for i in np.flatnonzero(valid)])
    a256 = box.image_to_crop(BASE_SIZE)
    affines = {s: size_affine(a256, s) for s in sizes}
    lm256 = transform_points(points.reshape(-1, 3), a256).reshape(n, NUM_LANDMARKS, 3)

    # pass 2: decode again and write the crops (keeps memory flat for long videos)
    writer = ClipWriter(clip_dir, sizes)
    ref_crop = None
    written = 0
    _, frames2 = _frames(job, max_frames)
    for index, image in frames2:
        if index >= n:
            break
        for s in sizes:
            crop = warp_to_crop(image, affines[s], s)
            writer.frame(index, s, crop)
            if s == BASE_SIZE and index == first:
                ref_crop = crop
        written += 1
    if written != n:
        raise _SkipClip(f"decoded {n} frames the first time but {written} the second; the file may be damaged")

    embedding, note = embed_identity(ref_crop, lm256[first]) if want_identity else (None, None)
    meta = clip_meta(job.key, job.identity, n, n_valid, fps, job.source, box=box, reference_frame=first, sizes=sizes,
                     has_identity=embedding is not None, frame_size=list(frame_size),
                     seconds=round(time.perf_counter() - t_start, 3))
    writer.finish(lm256, valid, embedding, meta)
    return {"status": "done", "key": job.key, "frames": n, "note": note}


# -- the whole dataset ---------------------------------------------------------------------------------
def prepare_dataset(src: str | Path, out: str | Path, sizes=(256,), workers: int = 2, min_valid: float = 0.5,
                    min_frames: int = 8, max_frames: int | None = None, progress: bool = True,
                    people: str | Path | None = None) -> PrepareReport:
    """Prepare every video and frame folder below ``src`` into ``out`` (see docs/DATASET.md).

    Args:
        src: a folder laid out as ``identity/clip.mp4`` or ``identity/clip/000.jpg ...``
            (videos: .mp4 .avi .mov .mkv .webm; frames: .jpg .png at 25 fps), or one video.
        out: the prepared folder (created; may lie inside ``src``, it is not searched).
        sizes: crop sizes, from (256, 512); 256 is always written.
        workers: processes preparing clips in parallel (1 = in this process).
        min_valid: skip a clip where a face was found in less than this fraction of frames.
        min_frames: skip a clip with fewer frames showing a face.
        max_frames: use at most this many frames of each clip.
        progress: show a progress bar over clips.
        people: a people file (:mod:`avatar_app.people`) saying who each clip shows; clips already
            prepared take the person it names too.

    Clips that cannot be used (undecodable, too few faces) are skipped and listed with
    the reason in the manifest and report.md; complete clips are not prepared again.

    With ``workers > 1`` clips run in *spawned* processes (forking a process that already
    runs torch or mediapipe threads can hang), so a script that calls this must do so
    under ``if __name__ == "__main__":``, as multiprocessing requires.

    Raises:
        InputFileError: ``src`` is missing or holds no videos or frame folders, or ``out``
            holds something else.
    """
    src, out = Path(src), Path(out)
    if not src.exists():
        raise InputFileError(f"Source '{src}' does not exist; give a folder of videos (one folder per person) "
                             "or a video file.")
    if out.resolve() == src.resolve():
        raise InputFileError(f"The output folder must differ from the source folder '{src}'; choose a new folder "
                             "for the prepared dataset.")
    sizes = check_sizes(sizes)
    jobs = discover_clips(src, exclude=out, people=read_people(people) if people else None)
    if not jobs:
        raise InputFileError(
            f"'{src}' holds no videos ({' '.join(VIDEO_EXTENSIONS)}) and no folders of frame images; put one video "
            "or one folder of frames per clip in it, grouped in one folder per person.")
    report, earlier_skips, want_identity = open_run(out, synthetic=False)
    todo = []
    for job in jobs:
        done = complete_meta(out / "clips" / job.key, sizes)
        if done is not None:
            if people and done["identity"] != job.identity:  # without --people earlier labels stand
                set_identity(out / "clips" / job.key, done, job.identity)
            report.clips_already_done.append(job.key)
        else:
            todo.append(job)
    skipped: dict[str, str] = {}
    workers = max(1, int(workers))

    def handle(result: dict) -> None:
        if result["status"] == "done":
            report.clips_done.append(result["key"])
            report.frames += result["frames"]
            report.note(result.get("note"))
        else:
            skipped[result["source"]] = result["reason"]

    start = time.perf_counter()
    args = (str(out), sizes, min_valid, min_frames, max_frames, want_identity)
    try:
        with tqdm(total=len(todo), unit="clip", desc="prepare", disable=not progress, leave=False) as bar:
            if workers == 1 or len(todo) <= 1:
                for job in todo:
                    handle(prepare_clip(job, *args))
                    bar.update(1)
            else:
                ctx = multiprocessing.get_context("spawn")  # fork after torch/mediapipe threads can hang
                with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=ctx,
                                         initializer=_worker_init) as pool:
                    futures = {pool.submit(prepare_clip, job, *args): job for job in todo}
                    try:
                        for fut in as_completed(futures):
                            try:
                                handle(fut.result())
                            except BrokenProcessPool:
                                job = futures[fut]
                                shutil.rmtree(out / "clips" / job.key, ignore_errors=True)
                                skipped[job.source] = ("the worker process preparing it died (out of memory, or a "
                                                       "script called prepare_dataset outside "
                                                       "`if __name__ == '__main__':`)")
                            bar.update(1)
                    except BaseException:
                        pool.shutdown(wait=True, cancel_futures=True)
                        raise
    finally:  # also on Ctrl-C: the manifest lists what is complete
        report.clips_done.sort()
        close_run(report, str(src.resolve()), sizes, False, skipped, earlier_skips, {j.key: j.source for j in jobs},
                  start, workers)
    return report
