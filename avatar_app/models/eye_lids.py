"""Where a closing eye's lid skin comes from, chosen once per source portrait from its image.

A closed eye shows the upper lid's skin, which an open eye keeps folded away. The eye flow
(:func:`.eye_flow.eye_remap`) draws it by stretching the source's skin just above the eye:
by default the row at the ring of mesh points around the upper lid. On many faces that row is
not lid skin but the crease's shadow, the lashes' or a low brow; stretched over the whole
eye it draws a dark, streaky band that reads as an open eye (mediapipe re-detects such
"closed" eyes at 0.10–0.14 of their width, docs/EYES.md).

:func:`closed_lid_lift` looks at the source image instead: for each eye it compares rows above
the ring (0 to :data:`MAX_LIFT` eye widths up, along the middle of the eye) with the skin below
the eye (the lower ring plus :data:`BELOW`: the lower lid and cheek, which are lit skin on
nearly every face), and picks the row closest in colour, preferring the nearest
(:data:`LIFT_COST`). Colour distances are Euclidean in OpenCV's 8-bit Lab (L scaled to 0–255,
a and b offset by 128), so one unit is about 0.4 CIELab units in L and one in a and b. A face whose ring row already is lid skin keeps 0; one with a dark
crease or brow there gets its lids from the lit skin above. Only rows within :data:`MAX_DISTANCE`
of the skin count; when none does (a thick, low brow fills them all), the ring's row is kept.
The row is chosen over the middle of the eye and used along the whole lid.
Landmark-only maths cannot tell these faces apart, so the choice is the image's.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
import torch

from .eye_flow import KNOT_SPAN, KNOTS, eye_curves, eye_parts

MAX_LIFT = 0.25  # highest row tried above the upper ring, eye widths (the brow is about 0.3–0.5 up)
LIFT_STEPS = 11  # rows tried, 0 .. MAX_LIFT
BELOW = (0.15, 0.2, 0.25)  # the reference skin: these distances below the lower ring, eye widths
LIFT_COST = 20.0  # colour distance per eye width of lift: among rows of alike colour, the nearest wins
SPAN = 0.3  # the rows are compared over |u| < SPAN (the middle of the eye, away from the corners)
MAX_DISTANCE = 50.0  # colour distance: a row further than this from the skin below is no skin (a brow)


@functools.lru_cache(maxsize=1)
def _eye_geometry() -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """:func:`~.eye_flow.eye_parts` and the flow's knots: constants of the mesh, built once (about 2 ms; read,
    never changed here)."""
    return eye_parts(), torch.linspace(-KNOT_SPAN, KNOT_SPAN, KNOTS)


def closed_lid_lift(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``(2,) float32`` eye widths (subject's right eye, left eye) for ``lid_lift``.

    Args:
        image: the source crop ``(S, S, 3) uint8`` BGR.
        points: its landmarks ``(478, 2|3)``, px of ``image``.
    """
    parts, knots = _eye_geometry()
    xy = torch.as_tensor(np.asarray(points, np.float32)[None, :, :2])
    frames, _, _, _, curves = eye_curves(xy, parts, knots)
    lab = cv2.cvtColor(image, cv2.COLOR_BGR2LAB).astype(np.float32)
    middle = (knots.abs() < SPAN).numpy()
    u = knots.numpy()[middle]
    lifts = np.linspace(0.0, MAX_LIFT, LIFT_STEPS)
    out = np.zeros(2, np.float32)
    for e in range(2):
        o = np.array([float(frames.ox[0, e, 0]), float(frames.oy[0, e, 0])])
        a = np.array([float(frames.ax[0, e, 0]), float(frames.ay[0, e, 0])])
        c = np.array([float(frames.cx[0, e, 0]), float(frames.cy[0, e, 0])])
        ring_up, ring_low = curves[0, e, :, 2].numpy()[middle], curves[0, e, :, 3].numpy()[middle]

        def colours(v: np.ndarray) -> np.ndarray:  # Lab at (u, v) of this eye, (n, 3)
            px = (o + u[:, None] * a + v[:, None] * c).astype(np.float32)
            return cv2.remap(lab, px[None, :, 0], px[None, :, 1], cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REPLICATE)[0]

        skin = np.median(np.concatenate([colours(ring_low + d) for d in BELOW]), 0)
        distance = np.array([np.linalg.norm(colours(ring_up - lift).mean(0) - skin) for lift in lifts])
        cost = np.where(distance <= MAX_DISTANCE, distance + LIFT_COST * lifts, np.inf)
        out[e] = lifts[int(np.argmin(cost))] if np.isfinite(cost).any() else 0.0
    return out
