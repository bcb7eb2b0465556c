"""Checks on an avatar's *output* under a stress driver (see :mod:`avatar_app.capture.stress`).

Every output frame is re-detected with mediapipe (static mode, up to four faces):

* ``face_found`` — fraction of frames with at least one face (want ≥ 0.99);
* ``two_faces`` — frames with a second face outside the main face's outline (want 0: no
  ghost beside the face; a "face" mediapipe finds *inside* the main one — it sees one in
  Grace Hopper's glasses at some zooms — is part of that face, not a second one);
* ``max_jump`` — the largest frame-to-frame landmark motion of the output, as the
  median point displacement in face sizes (:func:`~avatar_app.face.mesh.face_size`: the spread of the rigid
  points, the measure the retargeter transfers motion by), against ``natural_jump``,
  the same measure on the driver's own continuous motion (its largest natural motion)
  plus ``noise``, the detector's own disagreement on the output (:func:`detection_noise`, the same frame read
  a few pixels apart, on its first frame and on the frame where its largest jump starts: the two sides are
  different images, each with its own noise, and a smaller face is measured less precisely).
  Live output skips driver frames when the machine cannot keep up; there each jump is
  divided by the number of driver frames it spans (``indices``), i.e. the motion per driver
  frame is compared with the driver's own per frame;
* ``identity_p95`` — 95th percentile of the dlib identity distance between output
  frames and the source portrait (want ≤ 0.45), when dlib's models are installed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..face.tracker import FaceTracker
from ..types import Landmarks
from ..face.mesh import face_motion, topology


ROW_HEADER = ("| driver | frames | face found | two faces | max jump (face sizes) | natural + noise (face sizes) "
              "| identity p95 | verdict |\n|---|---|---|---|---|---|---|---|")


@dataclass
class StressResult:
    """What the checks measured on one output sequence."""

    name: str
    frames: int
    face_found: float
    two_faces: int
    max_jump: float
    natural_jump: float
    identity_p95: float | None = None
    noise: float = 0.0

    def failures(self, identity_limit: float = 0.45) -> list[str]:
        """The checks that do not hold, in words (empty when all hold)."""
        out = []
        if self.face_found < 0.99:
            out.append(f"face found in {self.face_found:.1%} of frames (< 99 %)")
        if self.two_faces:
            out.append(f"two faces in {self.two_faces} frames")
        if self.max_jump > self.natural_jump + self.noise:
            out.append(f"largest jump {self.max_jump:.3f} face sizes > the driver's natural {self.natural_jump:.3f} "
                       f"+ detector noise {self.noise:.3f}")
        if self.identity_p95 is not None and self.identity_p95 > identity_limit:
            out.append(f"identity distance p95 {self.identity_p95:.3f} > {identity_limit}")
        return out

    def row(self) -> str:
        """A markdown row under :data:`ROW_HEADER`; its last column is the verdict on the unrounded figures
        (a jump printed 0.072 against 0.067 + 0.004 can hold)."""
        ident = "—" if self.identity_p95 is None else f"{self.identity_p95:.3f}"
        failed = self.failures()
        verdict = "holds" if not failed else "**fails**: " + "; ".join(failed)
        return (f"| {self.name} | {self.frames} | {self.face_found:.1%} | {self.two_faces} | "
                f"{self.max_jump:.3f} | {self.natural_jump:.3f} + {self.noise:.3f} | {ident} | {verdict} |")


def detect_all(images: Sequence[np.ndarray], tracker: FaceTracker) -> list[list[Landmarks]]:
    """Every face (largest first) in each image, mediapipe static mode."""
    return [tracker.detect_faces(im) for im in images]


def _outside(face: Landmarks, main: Landmarks) -> bool:
    """Whether ``face``'s centre lies outside ``main``'s face outline."""
    oval = main.xy[topology().face_oval].astype(np.float32)
    c = face.xy.mean(0)
    return cv2.pointPolygonTest(cv2.convexHull(oval), (float(c[0]), float(c[1])), False) < 0


def second_face(faces: list[Landmarks]) -> bool:
    """More than one face, the others not inside the largest one."""
    return any(_outside(f, faces[0]) for f in faces[1:])


def _nearest(faces: list[Landmarks], previous: Landmarks | None) -> Landmarks | None:
    if not faces:
        return None
    if previous is None:
        return faces[0]
    c = previous.xy.mean(0)
    return min(faces, key=lambda f: float(np.linalg.norm(f.xy.mean(0) - c)))


def frame_jumps(sequence: Sequence[Landmarks | None]) -> np.ndarray:
    """Frame-to-frame motion (:func:`~avatar_app.face.mesh.face_motion`), for each pair
    of consecutive frames that both have a face."""
    return _pair_jumps(sequence)[1]


def _pair_jumps(sequence: Sequence[Landmarks | None]) -> tuple[list[int], np.ndarray]:
    """``(i, jump)`` for each pair ``i, i + 1`` of consecutive frames that both have a face."""
    pairs, out = [], []
    for i, (a, b) in enumerate(zip(sequence[:-1], sequence[1:])):
        if a is None or b is None:
            continue
        pairs.append(i)
        out.append(face_motion(a.xy, b.xy))
    return pairs, np.asarray(out, np.float64)


def followed(faces: Sequence[list[Landmarks]]) -> list[Landmarks | None]:
    """One face per frame: the one nearest the previous pick (the largest at the start)."""
    out: list[Landmarks | None] = []
    last = None
    for f in faces:
        pick = _nearest(f, last)
        out.append(pick)
        last = pick if pick is not None else last
    return out


def natural_jump(segments: Sequence[Sequence[np.ndarray]], tracker: FaceTracker) -> float:
    """The driver's largest natural frame-to-frame motion over unmodified clips (images)."""
    jumps = [frame_jumps(followed(detect_all(seg, tracker))) for seg in segments]
    jumps = [j for j in jumps if j.size]
    return float(max(j.max() for j in jumps)) if jumps else 0.0


def landmark_jump(segments: Sequence[Sequence[Landmarks]]) -> float:
    """The largest frame-to-frame motion within landmark sequences (e.g. a synthetic driver's own)."""
    jumps = [frame_jumps(list(seg)) for seg in segments]
    return float(max((j.max() for j in jumps if j.size), default=0.0))


def rendered_jump(segments: Sequence[Sequence[Landmarks]], source, tracker: FaceTracker) -> float:
    """The largest frame-to-frame motion of ``source`` animated by each landmark segment on
    its own (calibrated on the segment's first frame as the guard calibrates a face it picked, the
    rest settling over the next frames; default retargeting, nothing between the retargeter and the
    animator): the driver's natural motion as the avatar shows it, measured by re-detection like
    the output, so both carry the detector's own noise."""
    from ..runtime.animator import GeometricAnimator, retarget_options

    animator = GeometricAnimator(source)
    options = retarget_options(animator)  # as the output's: the analytic flow's limits, a brow under a fringe held
    worst = 0.0
    for seg in segments:
        images = [animator.animate(pose) for pose in natural_poses(seg, source.landmarks, options)]
        j = frame_jumps(followed(detect_all(images, tracker)))
        worst = max(worst, float(j.max()) if j.size else 0.0)
    return worst


def natural_poses(segment: Sequence[Landmarks], source: Landmarks, options) -> list[Landmarks]:
    """:func:`rendered_jump`'s poses for one segment: retargeted onto ``source`` with ``options``, calibrated on
    the segment's first face as the guard calibrates a face it picked (``settle``)."""
    from ..face.retarget import Retargeter

    rt = Retargeter(source, options)
    rt.calibrate(segment[0], settle=True)
    return [rt(lm) for lm in segment]


def shifted(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``image`` moved by ``(dx, dy)`` px, its edge pixels repeated into what the move uncovers."""
    h, w = image.shape[:2]
    return cv2.warpAffine(image, np.float32([[1, 0, dx], [0, 1, dy]]), (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


# where the noise probe places the face again (px, x and y): mediapipe's read of a face depends on where the face
# sits on the pixel grid and in its detector's crop, so reads of one face a pixel or a few apart disagree
NOISE_OFFSETS = ((1, 0), (2, 0), (3, 0), (0, 1), (0, 2), (0, 3), (1, 1), (2, 2), (3, 3))


def detection_noise(image: np.ndarray, tracker: FaceTracker, offsets=NOISE_OFFSETS) -> float:
    """The jump measure's own noise on ``image``: the largest "motion" between the detector's read of
    ``image`` and its read of the same image moved by each of ``offsets`` (px), the move taken off.  (A
    drift of 0.1 px a frame, the probe until the thirty-fifth session, seldom moves the detector's crop and
    saw a third to a half of this: docs/MOTION_MATRIX.md §5.)"""
    reads = followed(detect_all([image, *(shifted(image, dx, dy) for dx, dy in offsets)], tracker))
    if reads[0] is None:
        return 0.0
    return max((face_motion(reads[0].xy + np.float32(o), r.xy) for o, r in zip(offsets, reads[1:]) if r is not None),
               default=0.0)


def driver_natural_jump(driver, tracker: FaceTracker, source=None) -> float:
    """A :class:`~avatar_app.capture.stress.StressDriver`'s own largest natural motion.

    Real drivers: measured by re-detection on their own frames, as the output is.
    Synthetic drivers (exact landmarks, no real images): :func:`rendered_jump` on
    ``source``, or the landmarks' own motion when no source is given."""
    if driver.natural:
        return natural_jump(driver.natural, tracker)
    if source is not None:
        return rendered_jump(driver.natural_landmarks, source, tracker)
    return landmark_jump(driver.natural_landmarks)


def check_output(name: str, images: Sequence[np.ndarray], natural: float, tracker: FaceTracker,
                 identity=None, source_embedding: np.ndarray | None = None, identity_every: int = 6,
                 indices: Sequence[int] | None = None) -> StressResult:
    """Run the checks on output ``images`` (BGR).  ``identity`` (an
    :class:`~avatar_app.models.identity.IdentityEncoder`) and ``source_embedding`` enable the
    identity check, on every ``identity_every``-th frame with a face.  ``indices``: the
    driver frame each image was made from (live output, which skips frames when it cannot
    keep up); each jump is then divided by the driver frames it spans, and the identity is
    measured once every ``identity_every`` *driver* frames."""
    faces = detect_all(images, tracker)
    seq = followed(faces)
    pairs, jumps = _pair_jumps(seq)
    if indices is not None and jumps.size:
        if len(indices) != len(images):
            raise ValueError(f"{len(indices)} driver indices for {len(images)} images")
        steps = np.diff(np.asarray(indices, np.float64))[pairs]
        if (steps < 1).any():
            raise ValueError("driver indices must increase from one image to the next")
        jumps = jumps / steps
    ident = None
    if identity is not None and source_embedding is not None:
        from ..models.identity import identity_distance

        if indices is None:
            picked = range(0, len(images), identity_every)
        else:  # the first image in each run of ``identity_every`` driver frames
            picked = [k for k, i in enumerate(indices)
                      if k == 0 or i // identity_every != indices[k - 1] // identity_every]
        dists = [identity_distance(identity.embed(images[k], seq[k]), source_embedding)
                 for k in picked if seq[k] is not None]
        ident = float(np.percentile(dists, 95)) if dists else None
    return StressResult(
        name=name, frames=len(images), face_found=float(np.mean([bool(f) for f in faces])) if faces else 0.0,
        two_faces=int(sum(second_face(f) for f in faces)), max_jump=float(jumps.max()) if jumps.size else 0.0,
        natural_jump=natural, identity_p95=ident, noise=_output_noise(images, pairs, jumps, tracker),
    )


def _output_noise(images: Sequence[np.ndarray], pairs: Sequence[int], jumps: np.ndarray,
                  tracker: FaceTracker) -> float:
    """The detector's jitter on the output: on its first frame and on the frame where its largest
    jump starts (a face shown smaller is measured less precisely, in face sizes)."""
    if not len(images):
        return 0.0
    noise = detection_noise(images[0], tracker)
    if jumps.size and pairs[int(jumps.argmax())] != 0:
        noise = max(noise, detection_noise(images[pairs[int(jumps.argmax())]], tracker))
    return noise


def validation_rows(folder: str | Path, count: int = 3) -> list[dict[str, str]]:
    """The manifest rows of :func:`validation_portraits`' clips (one a person, ``count`` at most)."""
    from ..capture import stress
    from .split import split_clips

    rows = stress.manifest_rows(folder)
    people = {r["file"]: stress.person_of_row(r) for r in rows}
    _, val = split_clips([{"key": f, "identity": p} for f, p in people.items()])
    drivers = {people[p.name] for p in stress.clips_of_different_people(folder, 3, min_frames=1)}
    chosen: dict[str, dict[str, str]] = {}
    for row in sorted((r for r in rows if r["file"] in set(val)), key=lambda r: -int(r["orig_width"])):
        person = people[row["file"]]
        if person not in chosen and person not in drivers and float(row["face_fraction"]) >= 1.0 \
                and (Path(folder) / row["file"]).is_file():
            chosen[person] = row
    return list(chosen.values())[:count]


def validation_portraits(folder: str | Path, count: int = 3) -> list[tuple[str, np.ndarray]]:
    """``(person, BGR image)``: the first frame of a clip of ``count`` validation people.

    Validation people by the training split's rule (:func:`~avatar_app.train.split.split_clips`,
    by person), never among the stress drivers' people; the clips of the largest frames
    first (so a 512 px crop is not an upscale), one clip a person.  Read from ``folder``,
    never copied."""
    from ..capture import stress

    out = []
    for row in validation_rows(folder, count):
        cap = cv2.VideoCapture(str(Path(folder) / row["file"]))
        ok, image = cap.read()
        cap.release()
        if ok:
            out.append((stress.person_of_row(row), image))
    return out
