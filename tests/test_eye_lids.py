"""A closing eye's lid skin, taken from the source row that looks like skin (models/eye_lids.py)."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from avatar_app.capture.synthetic import FacePose, synthetic_landmarks
from avatar_app.face.mesh import topology
from avatar_app.face.retarget import Retargeter
from avatar_app.models import eye_lids
from avatar_app.models.eye_flow import eye_parts
from avatar_app.models.eye_lids import closed_lid_lift
from avatar_app.models.flow import AnalyticFlow, rasterize_triangles

SIZE = 256


def _eye_width(points: np.ndarray) -> float:
    topo = topology()
    return float(np.linalg.norm(points[topo.right_eye_upper[0], :2] - points[topo.right_eye_upper[-1], :2]))


def test_a_ring_of_lid_skin_keeps_its_row_and_a_dark_crease_is_skipped(astronaut_source, monkeypatch):
    """On a face of one skin colour the row at the ring is as good as any: no lift. Paint a dark band
    (0.12 eye widths tall) along each upper ring, as a deep crease or a low brow shows, and the lids
    come from above it; paint it over every row tried (a thick, low brow) and the ring's row stays."""
    points = astronaut_source.landmarks.points
    crop = astronaut_source.crop
    below = points[topology().right_eye_lower, :2].mean(0) + [0, 0.4 * _eye_width(points)]
    skin = crop[int(below[1]), int(below[0])].astype(np.uint8)
    plain = np.empty_like(crop)
    plain[:] = skin
    assert (closed_lid_lift(plain, points) == 0).all()

    creased = plain.copy()
    thick = max(2, int(round(0.12 * _eye_width(points))))
    for ring in eye_parts()["ring_up"].numpy():
        path = np.round(points[ring, :2]).astype(np.int32)
        cv2.polylines(creased, [path], False, (40, 30, 30), thickness=thick)
    lift = closed_lid_lift(creased, points)
    assert (lift >= 0.06).all(), lift

    # dark from the ring to past the highest row tried, a little less dark higher up (a brow's upper
    # edge): the highest row is the nearest to skin, but no row is skin, so none is taken
    browed = plain.copy()
    top = int(0.35 * _eye_width(points)) + 1
    for ring in eye_parts()["ring_up"].numpy():
        for k in range(top, -1, -1):
            path = np.round(points[ring, :2] - [0, k]).astype(np.int32)
            cv2.polylines(browed, [path], False, (30 + 2 * k, 25 + 2 * k, 25 + 2 * k), thickness=2)
    assert (closed_lid_lift(browed, points) == 0).all()
    monkeypatch.setattr(eye_lids, "MAX_DISTANCE", np.inf)  # without that guard the brow's edge would be taken
    assert (closed_lid_lift(browed, points) > 0.1).all()


def _flow(source, target, lid_lift):
    ids = torch.from_numpy(rasterize_triangles(target, topology().triangles, SIZE))[None]
    lift = None if lid_lift is None else torch.full((1, 2, 1), lid_lift)
    src, tgt = (torch.from_numpy(p[None, :, :2].copy()) for p in (source, target))
    grid = AnalyticFlow(SIZE)(src, tgt, ids, lid_lift=lift)[0]
    return ((grid[0].double() + 1) * SIZE / 2 - 0.5).numpy()  # source px per target px


def test_a_closing_lid_samples_the_lifted_row_and_an_open_eye_is_unchanged(astronaut_source):
    source = astronaut_source.landmarks.points.astype(np.float32)
    retarget = Retargeter(astronaut_source.landmarks)
    retarget.calibrate(synthetic_landmarks(FacePose()))
    width = _eye_width(source)
    topo = topology()

    open_eyes = retarget(synthetic_landmarks(FacePose(gaze=(0.3, 0.0)))).points.astype(np.float32)
    np.testing.assert_array_equal(_flow(source, open_eyes, 0.2), _flow(source, open_eyes, None))

    shut = retarget(synthetic_landmarks(FacePose(blink_left=1.0, blink_right=1.0))).points.astype(np.float32)
    rise = (_flow(source, shut, None)[..., 1] - _flow(source, shut, 0.2)[..., 1]) / width  # eye widths higher up
    assert 0.15 < rise.max() < 0.25, rise.max()  # the lid's skin from the lifted row (0.2 at full closure)
    assert rise.min() > -1e-6  # never lower
    ring = np.concatenate([eye_parts()["ring_up"][e].numpy()[1:-1] for e in range(2)])
    at_ring = cv2.remap(rise.astype(np.float32), *(shut[ring, k][None] for k in (0, 1)), cv2.INTER_LINEAR)[0]
    assert at_ring.max() < 0.03, at_ring  # reached within the lid band: no seam where it meets the mesh's map
    # (taken at once below the ring, the lift showed there as a 0.055 step)
    ys, xs = np.nonzero(rise > 1e-6)
    centres = np.stack([shut[topo.right_iris[0], :2], shut[topo.left_iris[0], :2]])
    near = np.linalg.norm(np.stack([xs, ys], 1)[:, None] - centres[None], axis=-1).min(1)
    assert near.max() < width  # only the eyes change
