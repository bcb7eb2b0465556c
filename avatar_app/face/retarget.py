"""Retargeting: the driver's motion, relative to its neutral face, applied to the source.

The driver's landmarks are split into

* **head motion** — the similarity (scale, 3-D rotation, translation) that best maps
  the driver's neutral face onto its current face over the *rigid* points, and
* **expression** — what remains once that motion is undone (eyelids, lips, brows).

The source portrait receives both: the expression offsets are rotated and scaled
into the source face's own frame (so a smaller or turned source face gets
proportionate offsets), and the head motion is conjugated into that frame, so a
turn to the driver's left turns the avatar to its left, whatever the source pose.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..types import Landmarks
from .align import similarity_fit, similarity_fits
from .eyes import hold_gaze
from .folds import SkinFolds
from .lips import inner_lip_gaps, part_crossed_lips
from .mesh import eye_centers, topology


@dataclass(frozen=True)
class MotionLimits:
    """How far the avatar's head may move from its neutral (see docs/MOTION.md for the measurement).

    Attributes:
        pitch, yaw, roll: degrees of rotation (each axis of the rotation vector).
        zoom: largest scale factor either way (``zoom`` closer, ``1 / zoom`` farther).
        shift: translation in the neutral's inter-ocular distances.
        knee: fraction of each limit passed through unchanged; beyond it the motion
            bends smoothly (tanh) towards the limit, never reaching it.
        rendered_yaw: degrees the drawn head may face away from the camera: the portrait's own turn
            (:func:`portrait_yaw`) plus the motion's.  ``yaw`` was measured on frontal portraits, where the
            two are one; a portrait already turned tears sooner turning further (docs/MOTION_TRANSITIONS.md §5), so
            its motion that way stops at ``rendered_yaw`` less its own turn (never under
            :data:`MIN_TURN`), and the other way at ``yaw`` as before.
    """

    pitch: float = 25.0
    yaw: float = 30.0
    roll: float = 35.0
    zoom: float = 1.35
    shift: float = 1.0
    knee: float = 0.6
    rendered_yaw: float = 30.0


MOTION_LIMITS = MotionLimits()
MIN_TURN = 5.0  # degrees a portrait turned past ``rendered_yaw`` may still turn further (it follows a little)
# What the shipped networks were trained on (tools/pair_yaw.py on the training split, the recipe's mix of random
# and hard pairs): relative yaw under 20.3 degrees in 95 % of the pairs (31.6 at p99): past that the generator
# draws turns it rarely saw, and the face looks less like the portrait; relative zoom under 1.254x in 99.9 % (none
# past 1.297), where the analytic flow's 1.35x is beyond every pair (a tighter zoom, 1.13x, made the avatar move
# further per face size than the driver: the shift is not limited with it).  docs/MOTION_REST.md 7.1-7.3.  The
# other ranges are the analytic flow's, which the networks refine.  (Those pairs were drawn before `rendered_yaw`:
# a retrain's cross pairs, train/cross_pairs.py, now turn a turned source further by less.)
NEURAL_MOTION_LIMITS = MotionLimits(yaw=20.0, zoom=1.25)


@dataclass
class RetargetOptions:
    """How driving motion is transferred.

    Attributes:
        mode: ``"relative"`` (source keeps its own face shape and gets the driver's
            changes) or ``"absolute"`` (source takes the driver's face shape).
        expression_scale: multiplies the expression offsets (1 = as driven).
        rotation_scale: 0..1, how much head rotation is transferred.
        translation_scale: how much head translation (in face sizes) is transferred.
        transfer_scale: transfer the driver moving closer/farther as zoom.
        eye_contact: hold the avatar's gaze at its neutral (the source's own, in
            ``relative`` mode: a portrait looking into the camera keeps doing so) while
            lids, brows and everything else follow the driver.
        motion_limits: saturate head rotation, zoom and shift smoothly towards ``limits``.
        limits: the ranges the animator draws cleanly: :data:`MOTION_LIMITS` (the analytic flow's)
            by default; the pipeline and the offline render set the animator's own
            (``runtime.animator.retarget_options``: the neural animator's are :data:`NEURAL_MOTION_LIMITS`).
        brow_follow: ``(right, left)``, how much of the driver's brow motion each brow of the portrait shows
            (:func:`~avatar_app.face.brows.brow_follow`: a brow under a fringe, 0, does not move the hair over
            it: in ``relative`` mode it stays where the portrait has it, in ``absolute`` at the driver's rest
            shape); ``runtime.animator.retarget_options`` sets the portrait's.
        rest_frames: after a calibration the app made by itself (``calibrate(..., settle=True)``:
            the first face, a re-anchor on a new face), expressions are measured from the
            per-point median of the driver's first ``rest_frames`` faces, head motion undone,
            instead of from that one frame: a face caught mid-word (pursed lips, raised brows)
            is not taken for the rest, or every later frame would carry its opposite.  The
            head pose is still measured from the calibration frame.  A calibration the user
            asked for is kept as given.  0: off.
    """

    mode: str = "relative"
    expression_scale: float = 1.0
    rotation_scale: float = 1.0
    translation_scale: float = 1.0
    transfer_scale: bool = True
    eye_contact: bool = False
    motion_limits: bool = True
    rest_frames: int = 60
    limits: MotionLimits = MOTION_LIMITS
    brow_follow: tuple[float, float] = (1.0, 1.0)

    def __post_init__(self) -> None:
        if self.mode not in ("relative", "absolute"):
            raise ValueError(f"retarget mode must be 'relative' or 'absolute', not {self.mode!r}")
        if self.rest_frames < 0:
            raise ValueError(f"rest_frames must be 0 (off) or a number of frames, not {self.rest_frames}")
        follow = tuple(float(f) for f in self.brow_follow)
        if len(follow) != 2 or not all(0.0 <= f <= 1.0 for f in follow):
            raise ValueError(f"brow_follow must be two shares from 0 to 1 (right, left), not {self.brow_follow}")
        self.brow_follow = follow


REST_STEP = 0.02  # the most the settling rest moves a point in one frame, in inter-ocular distances


def soft_limit(x: np.ndarray | float, limit: float, knee: float = 0.6) -> np.ndarray | float:
    """Odd, smooth saturation: identity up to ``knee·limit``, then a tanh towards ``limit``.

    Continuous with a continuous slope (1 at the knee), so motion near the limit slows
    down instead of sticking and jumping.
    """
    a = knee * limit
    room = limit - a
    mag = np.abs(x)
    out = np.where(mag <= a, mag, a + room * np.tanh((mag - a) / max(room, 1e-12)))
    return np.sign(x) * out


def _rotation_vector(rot: np.ndarray) -> np.ndarray:
    """Axis-angle vector (radians) of a 3x3 rotation."""
    angle = np.arccos(np.clip((np.trace(rot) - 1) / 2, -1.0, 1.0))
    if angle < 1e-8:
        return np.zeros(3)
    axis = np.array([rot[2, 1] - rot[1, 2], rot[0, 2] - rot[2, 0], rot[1, 0] - rot[0, 1]]) / (2 * np.sin(angle))
    return axis * angle


def _rotation_from_vector(v: np.ndarray) -> np.ndarray:
    angle = float(np.linalg.norm(v))
    if angle < 1e-12:
        return np.eye(3)
    x, y, z = v / angle
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def rotation_yaw(rot: np.ndarray) -> float:
    """The yaw of a rotation (3x3): degrees about the face's vertical axis, the y component of its rotation vector
    (the sign of :func:`limit_motion`'s rotations)."""
    return float(np.degrees(_rotation_vector(rot))[1])


def head_pose(points: np.ndarray) -> np.ndarray:
    """The rotation (3x3) of the similarity from the frontal mesh's rigid points onto those of ``points``
    (``(478, 3)``): how the face is turned from the camera."""
    rigid = topology().rigid
    return similarity_fit(topology().neutral[rigid].astype(np.float64), np.asarray(points, np.float64)[rigid])[1]


def portrait_yaw(points: np.ndarray) -> float:
    """How far the face ``points`` is turned from the camera: the :func:`rotation_yaw` of :func:`head_pose`."""
    return rotation_yaw(head_pose(points))


def limit_motion(s: float, rot: np.ndarray, shift: np.ndarray, iod: float, limits: MotionLimits = MOTION_LIMITS,
                 own_yaw: float = 0.0, frame: np.ndarray | None = None) -> tuple[float, np.ndarray, np.ndarray]:
    """Soft-limit a head motion: scale ``s``, rotation ``rot`` (3x3, x = pitch, y = yaw,
    z = roll axes) and ``shift`` (px, of a face with inter-ocular distance ``iod`` px) of a portrait
    turned ``own_yaw`` degrees (:func:`portrait_yaw`).  ``frame``: the rotation taking ``rot``'s rotation vector
    into the head's own axes (default: ``rot`` is about them already)."""
    k = limits.knee
    frame = np.eye(3) if frame is None else np.asarray(frame, np.float64)
    deg = frame @ np.degrees(_rotation_vector(rot))
    # the portrait's own turn leaves less room turning further (rendered = own + motion), never more
    further = own_yaw if deg[1] >= 0 else -own_yaw  # the portrait's own turn in this motion's direction
    room = min(limits.yaw, max(limits.rendered_yaw - further, MIN_TURN))
    deg = np.array([soft_limit(deg[0], limits.pitch, k), soft_limit(deg[1], room, k),
                    soft_limit(deg[2], limits.roll, k)], np.float64)
    rot = _rotation_from_vector(np.radians(frame.T @ deg))
    s = float(np.exp(soft_limit(np.log(max(s, 1e-6)), np.log(limits.zoom), k)))
    norm = float(np.linalg.norm(shift[:2])) / max(iod, 1e-6)
    if norm > 1e-9:
        shift = shift * (float(soft_limit(norm, limits.shift, k)) / norm)
    return s, rot, shift


def _scaled_rotation(rot: np.ndarray, amount: float) -> np.ndarray:
    """``rot`` raised to the power ``amount`` (axis-angle scaling)."""
    return rot if amount == 1.0 else _rotation_from_vector(_rotation_vector(rot) * amount)


def inter_ocular(points: np.ndarray) -> float:
    """Distance between the eye centres of ``(478, 2|3)`` landmarks (px)."""
    right, left = eye_centers(points[:, :2])
    return float(np.linalg.norm(left - right))


def rest_frame(faces: list[np.ndarray]) -> int:
    """The index of the face nearest a clip's rest expression (a recording the app takes its neutral and
    portrait from: the first frame may be mid-word or a blink, and the avatar would carry its opposite).

    Each face is brought onto the first by the similarity of its rigid points in the image plane (zoom, roll
    and shift undone; a turned or nodding head is not, so it is not a rest either); the rest is the per-point
    median of all of them, and the face with the smallest mean point distance to it is returned."""
    pts = np.stack([np.asarray(f, np.float64)[:, :2] for f in faces])
    rigid = topology().rigid
    s, rot, t = similarity_fits(pts[0, rigid], pts[:, rigid])  # face k ≈ s R first + t
    aligned = np.einsum("knd,kde->kne", pts - t[:, None], rot) / s[:, None, None]
    off = np.linalg.norm(aligned - np.median(aligned, axis=0), axis=2).mean(1)
    return int(np.argmin(off))


class Retargeter:
    """Maps driver landmarks to target landmarks for the source crop.

    Args:
        source: the source face's landmarks (crop px).
        options: see :class:`RetargetOptions`.
    """

    def __init__(self, source: Landmarks, options: RetargetOptions | None = None):
        self.source = source
        self.options = options or RetargetOptions()
        self._rigid = topology().rigid
        self._neutral: np.ndarray | None = None  # the calibration frame: head motion is measured from it
        self._rest: np.ndarray | None = None  # the face expressions are measured from (its pose)
        self._faces: list[np.ndarray] | None = None  # settling: the faces so far, pose undone
        self._neutral_size: tuple[int, int] = (0, 0)
        self._to_source: tuple[float, np.ndarray, np.ndarray] | None = None
        self._pose = head_pose(source.points)  # how the portrait itself is turned (the motion limits)
        self._own_yaw = rotation_yaw(self._pose)
        self._folds = SkinFolds(source.points)  # the portrait's skin folds no further than the driver's

    @property
    def calibrated(self) -> bool:
        return self._neutral is not None

    @property
    def settling(self) -> bool:
        """Whether the rest expression is still being refined (see ``RetargetOptions.rest_frames``)."""
        return self._faces is not None

    @property
    def neutral(self) -> Landmarks | None:
        """The driver's neutral face, once calibrated (driver px): the calibration frame's pose
        with the rest expression (see ``RetargetOptions.rest_frames``)."""
        return None if self._rest is None else Landmarks(self._rest.astype(np.float32), self._neutral_size)

    def calibrate(self, neutral: Landmarks, settle: bool = False) -> None:
        """Take ``neutral`` as the driver's resting face (motion is measured from it).

        ``settle``: the app picked this frame itself (the first face seen, a new face after a
        jump), so the expression's rest is refined over the next ``rest_frames`` faces."""
        n = neutral.points.astype(np.float64)
        self._neutral = n
        self._rest = n
        self._faces = [] if settle and self.options.rest_frames > 1 else None
        self._neutral_size = neutral.image_size
        self._to_source = self._fit_source()

    def _fit_source(self) -> tuple[float, np.ndarray, np.ndarray]:
        """The similarity from the driver's neutral to the source face, over the rigid points."""
        assert self._neutral is not None
        return similarity_fit(self._neutral[self._rigid], self.source.points[self._rigid].astype(np.float64))

    def reset(self) -> None:
        self._neutral = self._rest = self._faces = None
        self._to_source = None

    def onto(self, source: Landmarks) -> "Retargeter":
        """A retargeter onto another source face with this one's driver calibration (neutral, rest, and
        the rest's settling if it is still under way)."""
        other = Retargeter(source, self.options)
        if self._neutral is not None:
            other._neutral, other._rest, other._neutral_size = self._neutral, self._rest, self._neutral_size
            other._faces = None if self._faces is None else list(self._faces)
            other._to_source = other._fit_source()
        return other

    def _settle_rest(self, face: np.ndarray) -> None:
        """Add one face (pose undone) to the rest estimate while it is still settling."""
        assert self._faces is not None and self._rest is not None and self._neutral is not None
        self._faces.append(face)
        # towards the median, but never by more than REST_STEP a frame: a median can flip between two
        # clusters (a pucker held for half the faces so far, then rest) and the mouth would snap with it
        step = np.median(np.stack(self._faces), axis=0) - self._rest
        cap = REST_STEP * inter_ocular(self._neutral)
        norm = np.linalg.norm(step, axis=1, keepdims=True)
        self._rest = self._rest + step * np.minimum(1.0, cap / np.maximum(norm, 1e-12))
        if len(self._faces) >= self.options.rest_frames:
            self._faces = None

    def head_motion(self, driver: Landmarks) -> tuple[float, np.ndarray, np.ndarray]:
        """``(s, R, t)`` with ``driver ≈ s R neutral + t`` over the rigid points (driver px)."""
        if self._neutral is None:
            raise RuntimeError("calibrate() must be called before retargeting")
        return similarity_fit(self._neutral[self._rigid], driver.points[self._rigid].astype(np.float64))

    def __call__(self, driver: Landmarks) -> Landmarks:
        """Target landmarks in source crop px; calibrates on the first call if needed (settling)."""
        if self._neutral is None:
            self.calibrate(driver, settle=True)
        assert self._neutral is not None and self._rest is not None and self._to_source is not None
        opt = self.options
        pts = driver.points.astype(np.float64)
        s, rot, t = self.head_motion(driver)
        face = (pts - t) @ rot / s  # the driver's face in the calibration frame's pose
        if self._faces is not None:
            self._settle_rest(face)
        expr = face - self._rest  # expression offsets, driver-neutral frame

        s_ns, r_ns, t_ns = self._to_source
        expr_src = s_ns * expr @ r_ns.T * opt.expression_scale
        if opt.brow_follow != (1.0, 1.0):  # a brow under a fringe moves the hair over it less, or not at all
            topo = topology()
            for brow, share in zip((topo.right_brow, topo.left_brow), opt.brow_follow):
                expr_src[brow] *= share
        if opt.mode == "absolute":
            base = s_ns * self._rest @ r_ns.T + t_ns  # the driver's own face: rest + (face - rest)
            shape = base + expr_src
        else:
            base = self.source.points.astype(np.float64)
            # offsets the portrait's proportions leave no room for: its skin folds no further than the driver's
            shape = self._folds(base + expr_src, self._folds.driver_ratios(face, self._rest))
        # a mouth shut past its rest: the lips meet, never cross (further than the portrait's own do)
        shape = part_crossed_lips(shape, allowed=inner_lip_gaps(base))

        rot_d = _scaled_rotation(rot, opt.rotation_scale)
        scale = s if opt.transfer_scale else 1.0
        # Driver motion p -> s R p + t, expressed in source coordinates q = s_ns R_ns p + t_ns,
        # about the source face's rigid centroid so rotation/scale do not swing the face away.
        pivot_d = self._neutral[self._rigid].mean(0)
        pivot_s = s_ns * r_ns @ pivot_d + t_ns
        moved_pivot_d = s * rot @ pivot_d + t
        shift_d = (moved_pivot_d - pivot_d) * opt.translation_scale
        if opt.motion_limits:
            # about the portrait's head axes (the driver's own, carried over): a tilted calibration turns no further
            scale, rot_d, shift_d = limit_motion(scale, rot_d, shift_d, inter_ocular(self._neutral), opt.limits,
                                                   self._own_yaw, self._pose.T @ r_ns)
        rot_src = r_ns @ rot_d @ r_ns.T
        shift = s_ns * r_ns @ shift_d
        target = (shape - pivot_s) @ rot_src.T * scale + pivot_s + shift
        if opt.eye_contact:
            # After the head motion: the irises sit between the *drawn* corners where the portrait's
            # do, as `evaluate --eye-contact` measures it.  Held before it, the 3-D turn carried the
            # irises along with the head (0.056 eye widths off at 30 degrees of yaw): eyes fixed in a
            # turning head, not looking at the camera.
            target = hold_gaze(target, base)
        return Landmarks(target.astype(np.float32), self.source.image_size, driver.confidence)
