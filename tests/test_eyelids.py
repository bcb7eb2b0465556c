"""Eyelids in full (issue 16): the lid's margin slides over the eyeball, blinks close, closed
portraits are named.

Before this, the analytic flow stretched the thin band of lashes above the opening with the lid:
a full blink read as a half-open eye (re-detected openness about 0.14 on the astronaut)."""

from __future__ import annotations

import logging

import numpy as np
import torch

from avatar_app.capture.synthetic import FacePose, synthetic_landmarks
from avatar_app.face.eyes import eye_openness
from avatar_app.face.mesh import topology
from avatar_app.face.retarget import Retargeter
from avatar_app.face.source import CLOSED_EYES, prepare_source
from avatar_app.models.eye_flow import LASH, LID_GAIN
from avatar_app.models.flow import AnalyticFlow, rasterize_triangles
from avatar_app.runtime.animator import GeometricAnimator
from avatar_app.types import Landmarks

SIZE = 256


def _blink(source, amount: float) -> Landmarks:
    retarget = Retargeter(source.landmarks)
    retarget.calibrate(synthetic_landmarks(FacePose()))
    return retarget(synthetic_landmarks(FacePose(blink_left=amount, blink_right=amount)))


def _sampled(source_xy: np.ndarray, target: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Source px sampled by the analytic flow at the target pixels nearest ``points (N, 2)``."""
    ids = rasterize_triangles(target, topology().triangles, SIZE)
    grid, _, _ = AnalyticFlow(SIZE)(torch.from_numpy(source_xy[None].copy()),
                                    torch.from_numpy(target[None, :, :2].copy()), torch.from_numpy(ids)[None])
    xs, ys = np.round(points).astype(int).T
    return ((grid[0, ys, xs].double() + 1) * SIZE / 2 - 0.5).numpy()


def test_the_lash_line_moves_with_the_lid_instead_of_stretching(astronaut_source):
    """Upper lids lowered by 3 px: just above the drawn lid line (the source's moved by ``LID_GAIN``
    times the target's change) the flow samples just above the source's lid line, one to one."""
    src = astronaut_source.landmarks.points.astype(np.float64)
    topo = topology()
    target = src.copy()
    mids = np.array([topo.right_eye_upper[4], topo.left_eye_upper[4]])
    for upper in (topo.right_eye_upper, topo.left_eye_upper):
        target[upper[1:-1], 1] += 3.0
    drawn = src[mids, :2] + LID_GAIN * (target[mids, :2] - src[mids, :2])
    width = np.linalg.norm(src[topo.right_eye_upper[0], :2] - src[topo.right_eye_upper[-1], :2])
    up = np.array([0.0, 0.5 * LASH * width])  # half-way up the lash band
    got = _sampled(astronaut_source.landmarks.xy, target.astype(np.float32), drawn - up)
    np.testing.assert_allclose(got, src[mids, :2] - up, atol=0.75)


def test_a_full_blink_reads_closed(astronaut_source, still_tracker):
    animator = GeometricAnimator(astronaut_source)
    faces = still_tracker.detect_faces(animator.animate(_blink(astronaut_source, 1.0)))
    assert faces
    assert eye_openness(faces[0].points) < CLOSED_EYES < eye_openness(astronaut_source.landmarks.points)


def test_a_portrait_with_closed_eyes_is_named(astronaut, astronaut_source, still_tracker, caplog):
    with caplog.at_level(logging.WARNING, logger="avatar_app.face.source"):
        prepare_source(astronaut, SIZE, tracker=still_tracker)
    assert "closed" not in caplog.text
    closed = GeometricAnimator(astronaut_source).animate(_blink(astronaut_source, 1.0))
    with caplog.at_level(logging.WARNING, logger="avatar_app.face.source"):
        prepare_source(closed, SIZE, tracker=still_tracker)
    assert "closed" in caplog.text and "open eyes" in caplog.text


def test_at_512_the_eyes_are_drawn_at_512(astronaut_source):
    """The 512 flow is computed at 256 and upsampled, but its eye windows are re-mapped at 512: in the
    eye regions of a blinking target it matches the flow computed at 512 throughout. Upsampling the 256
    eyes (as before) sampled midway between the lids across a closed lid line: a line of eyeball showed
    through (a full blink read 0.14 at 512, 0.08 at 256)."""
    from avatar_app.face.align import rescale_points
    from avatar_app.face.mesh import eye_region_triangles

    size = 512
    src = rescale_points(astronaut_source.landmarks.points, SIZE, size).astype(np.float32)
    retarget = Retargeter(Landmarks(src, (size, size)))
    retarget.calibrate(synthetic_landmarks(FacePose()))
    target = retarget(synthetic_landmarks(FacePose(blink_left=1.0, blink_right=1.0))).points.astype(np.float32)
    topo = topology()
    s, t = torch.from_numpy(src[None, :, :2].copy()), torch.from_numpy(target[None, :, :2].copy())
    grids = []
    for res in (256, 512):
        ids = torch.from_numpy(rasterize_triangles(target, topo.triangles, size, res))[None]
        grids.append(AnalyticFlow(size, resolution=res)(s, t, ids)[0][0].numpy() * size / 2)  # px
    full_ids = rasterize_triangles(target, topo.triangles, size, size)
    eye_tri = eye_region_triangles(topo).any(axis=1)
    inside = (full_ids >= 0) & eye_tri[np.maximum(full_ids, 0)]
    err = np.linalg.norm(grids[0] - grids[1], axis=-1)[inside]
    assert np.percentile(err, 95) < 0.5, np.percentile(err, 95)


def test_a_full_blink_reads_closed_at_512(astronaut, still_tracker):
    """The live animator at 512 (the OpenCV warp, which upsamples the 256 flow itself) closes the eyes
    as at 256: before the eyes were re-mapped at 512, a full blink read 0.14, an eye a fifth open."""
    source = prepare_source(astronaut, 512, tracker=still_tracker)
    faces = still_tracker.detect_faces(GeometricAnimator(source).animate(_blink(source, 1.0)))
    assert faces
    assert eye_openness(faces[0].points) < CLOSED_EYES


def test_the_compact_eye_remap_is_the_windowed_one(astronaut_source, monkeypatch):
    """On the CPU the eye re-map works only on each eye region's box inside its window (issue 16: the
    512 eyes were the live path's extra cost); exports and GPUs run the whole window. Both give the
    same source positions, at 256 (the eyes in the flow) and at 512 (re-mapped at 512), open or blinking."""
    from avatar_app.face.align import rescale_points
    from avatar_app.models import eye_flow, flow

    topo = topology()
    for size in (256, 512):
        src = rescale_points(astronaut_source.landmarks.points, SIZE, size).astype(np.float32)
        retarget = Retargeter(Landmarks(src, (size, size)))
        retarget.calibrate(synthetic_landmarks(FacePose()))
        model = AnalyticFlow(size, upsample=False)
        for pose in (FacePose(yaw=12.0, gaze=(0.4, 0.1)), FacePose(pitch=-8.0, blink_left=1.0, blink_right=0.6)):
            target = retarget(synthetic_landmarks(pose)).points.astype(np.float32)
            ids = torch.from_numpy(rasterize_triangles(target, topo.triangles, size, model.resolution))[None]
            out = []
            for compact in (False, True):
                monkeypatch.setattr(eye_flow, "can_compact", lambda field, c=compact: c)
                monkeypatch.setattr(flow, "can_compact", lambda field, c=compact: c)
                grid, _, _, eyes = model(torch.from_numpy(src[None, :, :2].copy()),
                                         torch.from_numpy(target[None, :, :2].copy()), ids, fine_eyes=True,
                                         lid_lift=torch.tensor([[[0.2], [0.1]]]))  # closing lids' skin lifted
                if eyes is not None:  # 512: the re-map, as the animator adds it to its upsampled grid
                    grid = torch.zeros(1, 2, size * size).scatter_add(2, eyes[0], eyes[1])
                out.append(grid)
            assert out[0].abs().max() > 0.1  # the eyes are re-mapped at all
            torch.testing.assert_close(out[1], out[0], rtol=0, atol=1e-5)
