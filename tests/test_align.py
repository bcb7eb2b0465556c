"""Crop geometry: similarity fits, face crop boxes on real faces, stabiliser, paste-back."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from avatar_app.face.align import (
    CropBox,
    CropStabilizer,
    face_crop_box,
    feather_mask,
    paste_back,
    similarity_fit,
    similarity_fits,
    transform_points,
    warp_to_crop,
)
from avatar_app.face.mesh import eye_centers


def rot2(theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


def rot3(axis, theta: float) -> np.ndarray:
    r, _ = cv2.Rodrigues(np.asarray(axis, np.float64) / np.linalg.norm(axis) * theta)
    return r


def sample(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Bilinear colour of ``image`` at ``(N, 2)`` px (pixel centres at integers)."""
    mx = np.ascontiguousarray(xy[:, 0:1], np.float32)
    my = np.ascontiguousarray(xy[:, 1:2], np.float32)
    return cv2.remap(image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)[:, 0].astype(np.float64)


@pytest.fixture(scope="module")
def astro_points(astronaut, still_tracker) -> np.ndarray:
    faces = still_tracker.detect_faces(astronaut)
    assert len(faces) == 1
    return faces[0].points


# -- similarity_fit ---------------------------------------------------------------------------


@pytest.mark.parametrize("scale,theta", [(1.0, 0.0), (1.7, 0.6), (0.3, -2.5), (2.0, np.pi * 0.99)])
def test_similarity_fit_recovers_2d(scale, theta):
    rng = np.random.default_rng(0)
    src = rng.uniform(-50, 50, size=(30, 2))
    t = np.array([12.5, -40.0])
    dst = scale * src @ rot2(theta).T + t
    s, r, tt = similarity_fit(src, dst)
    assert s == pytest.approx(scale, rel=1e-9)
    np.testing.assert_allclose(r, rot2(theta), atol=1e-9)
    np.testing.assert_allclose(tt, t, atol=1e-8)
    np.testing.assert_allclose(s * src @ r.T + tt, dst, atol=1e-8)


def test_similarity_fit_recovers_3d():
    rng = np.random.default_rng(1)
    src = rng.normal(0, 30, size=(50, 3))
    rot = rot3([0.3, -1.0, 0.5], 0.9)
    t = np.array([100.0, -20.0, 5.0])
    dst = 0.8 * src @ rot.T + t
    s, r, tt = similarity_fit(src, dst)
    assert r.shape == (3, 3) and tt.shape == (3,)
    assert s == pytest.approx(0.8, rel=1e-9)
    np.testing.assert_allclose(r, rot, atol=1e-9)
    np.testing.assert_allclose(tt, t, atol=1e-8)


@pytest.mark.parametrize("dim", [2, 3])
def test_similarity_fit_never_returns_a_reflection(dim):
    """A mirrored point set cannot be matched by a proper rotation; the fit must stay proper."""
    rng = np.random.default_rng(2)
    src = rng.normal(0, 10, size=(40, dim)) * np.arange(1, dim + 1)  # anisotropic, no symmetry
    mirror = np.eye(dim)
    mirror[0, 0] = -1
    dst = src @ mirror.T + 3.0
    s, r, t = similarity_fit(src, dst)
    np.testing.assert_allclose(r @ r.T, np.eye(dim), atol=1e-9)
    assert np.linalg.det(r) == pytest.approx(1.0, abs=1e-9)
    assert np.isfinite(s) and np.isfinite(t).all()
    # best proper fit of a reflection leaves a residual (an improper fit would leave none)
    assert np.abs(s * src @ r.T + t - dst).max() > 1.0


def test_similarity_fits_is_each_fit_at_once():
    """The batched fit (HeadPoses fits every frame of the corpus with it) equals the single fits,
    a mirrored set (a sign flip in the SVD) among them."""
    rng = np.random.default_rng(3)
    src = rng.normal(0, 20, size=(30, 3)) * np.array([1.0, 2.0, 3.0])
    dst = np.stack([1.1 * src @ rot3([0.2, 1.0, -0.4], 0.7).T + 4.0, src * np.array([-1.0, 1.0, 1.0]),
                    rng.normal(0, 20, size=(30, 3))])
    s, r, t = similarity_fits(src, dst)
    for i in range(len(dst)):
        si, ri, ti = similarity_fit(src, dst[i])
        assert s[i] == pytest.approx(si, rel=1e-12)
        np.testing.assert_allclose(r[i], ri, atol=1e-12)
        np.testing.assert_allclose(t[i], ti, atol=1e-9)
    assert s[0] == pytest.approx(1.1, rel=1e-9) and np.linalg.det(r[1]) == pytest.approx(1.0)


def test_similarity_fit_with_noise_is_close():
    rng = np.random.default_rng(3)
    src = rng.uniform(-100, 100, size=(200, 2))
    dst = 1.3 * src @ rot2(0.2).T + [5.0, 7.0] + rng.normal(0, 0.5, size=src.shape)
    s, r, t = similarity_fit(src, dst)
    assert s == pytest.approx(1.3, rel=0.01)
    assert np.arctan2(r[1, 0], r[0, 0]) == pytest.approx(0.2, abs=0.01)


# -- face_crop_box on a real face ---------------------------------------------------------------


def test_crop_box_upright_face(astronaut, astro_points):
    box = face_crop_box(astro_points)
    assert abs(np.degrees(box.angle)) < 6.0
    eye_r, eye_l = eye_centers(astro_points[:, :2])
    e2e = np.linalg.norm(eye_l - eye_r)
    assert 4.0 * e2e <= box.side + 1e-3  # FFHQ framing: half-side >= 2 eye distances
    assert box.side < 0.8 * max(astronaut.shape[:2])
    # the centre is between the eyes horizontally and below them
    assert eye_r[0] < box.center[0] < eye_l[0]
    assert box.center[1] > (eye_r[1] + eye_l[1]) / 2
    size = 256
    crop_pts = transform_points(astro_points, box.image_to_crop(size))
    assert crop_pts[:, :2].min() >= 0 and crop_pts[:, :2].max() < size
    # scale=1.5 makes the box proportionally bigger around the same centre
    big = face_crop_box(astro_points, scale=1.5)
    assert big.side == pytest.approx(1.5 * box.side, rel=1e-6)
    assert big.center == pytest.approx(box.center)


@pytest.mark.parametrize("degrees", [20.0, -20.0])
def test_crop_box_follows_image_rotation(astronaut, astro_points, still_tracker, degrees):
    h, w = astronaut.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    rotated = cv2.warpAffine(astronaut, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
    faces = still_tracker.detect_faces(rotated)
    assert faces, "no face in the rotated astronaut"
    box = face_crop_box(faces[0].points)
    # the direction the image's x axis takes under the rotation (y down): the expected box angle
    expected = np.degrees(np.arctan2(m[1, 0], m[0, 0]))
    assert np.sign(expected) == -np.sign(degrees)  # OpenCV's positive angle is counter-clockwise
    upright = np.degrees(face_crop_box(astro_points).angle)
    assert np.degrees(box.angle) == pytest.approx(upright + expected, abs=3.0)
    # the aligned crop of the rotated image has level eyes again
    crop_pts = transform_points(faces[0].points, box.image_to_crop(256))
    er, el = eye_centers(crop_pts[:, :2])
    assert abs(np.degrees(np.arctan2(el[1] - er[1], el[0] - er[0]))) < 6.0


def test_image_to_crop_and_back_are_inverse():
    box = CropBox((300.0, 200.0), 180.0, 0.4)
    fwd, inv = box.image_to_crop(256), box.crop_to_image(256)
    pts = np.array([[300.0, 200.0], [10.0, 20.0], [500.0, 7.0]])
    np.testing.assert_allclose(transform_points(transform_points(pts, fwd), inv), pts, atol=1e-3)
    # centre -> crop centre, side -> crop size
    np.testing.assert_allclose(transform_points(pts[:1], fwd)[0], [128.0, 128.0], atol=1e-4)
    assert np.sqrt(abs(np.linalg.det(fwd[:, :2]))) == pytest.approx(256 / 180.0)
    # a point along the box's x axis lands on the crop's horizontal mid-line
    along = np.array([[300 + 90 * np.cos(0.4), 200 + 90 * np.sin(0.4)]])
    np.testing.assert_allclose(transform_points(along, fwd)[0], [256.0, 128.0], atol=1e-3)


# -- CropStabilizer -------------------------------------------------------------------------------


def test_stabilizer_identical_boxes_give_identical_crops(astronaut, astro_points):
    box = face_crop_box(astro_points)
    st = CropStabilizer()
    crops = []
    for _ in range(5):
        out = st.update(CropBox(box.center, box.side, box.angle))
        assert out == box
        crops.append(warp_to_crop(astronaut, out.image_to_crop(256), 256))
    for c in crops[1:]:
        assert np.array_equal(c, crops[0])


def test_stabilizer_ignores_tiny_perturbations(astro_points):
    box = face_crop_box(astro_points)
    st = CropStabilizer()
    first = st.update(box)
    rng = np.random.default_rng(4)
    for _ in range(50):
        d = rng.uniform(-1, 1, size=4)
        jittered = CropBox(
            (box.center[0] + d[0] * 0.01 * box.side, box.center[1] + d[1] * 0.01 * box.side),
            box.side * (1 + 0.01 * d[2]),
            box.angle + 0.01 * d[3],
        )
        assert st.update(jittered) == first
    assert st.box == first


def test_stabilizer_follows_large_moves(astro_points):
    box = face_crop_box(astro_points)
    st = CropStabilizer()
    st.update(box)
    target = CropBox((box.center[0] + 0.3 * box.side, box.center[1] - 0.1 * box.side), box.side * 1.2, box.angle + 0.2)
    out = st.update(target)
    # moved strictly part of the way
    assert box.center[0] < out.center[0] < target.center[0]
    assert target.center[1] < out.center[1] < box.center[1]
    assert box.side < out.side < target.side
    assert box.angle < out.angle < target.angle
    # and converges (into the dead band) when the target stays
    for _ in range(20):
        out = st.update(target)
    assert abs(out.center[0] - target.center[0]) < 0.02 * target.side
    assert abs(out.side - target.side) < 0.02 * target.side
    assert abs(out.angle - target.angle) < 0.02
    # reset forgets the held box
    st.reset()
    assert st.update(box) == box


def test_stabilizer_angle_wraps_around():
    st = CropStabilizer()
    held = st.update(CropBox((0.0, 0.0), 100.0, np.pi - 0.005))
    # 0.01 rad away across the +-pi wrap: inside the dead band
    assert st.update(CropBox((0.0, 0.0), 100.0, -np.pi + 0.005)) == held
    # 0.4 rad away across the wrap: follows the short way round (angle grows past pi)
    out = st.update(CropBox((0.0, 0.0), 100.0, -np.pi + 0.195))
    assert out.angle == pytest.approx(np.pi - 0.005 + 0.6 * 0.2, abs=1e-9)


# -- transform_points / warp_to_crop / paste_back ---------------------------------------------------


def test_transform_points_matches_warp_to_crop(astronaut, astro_points):
    size = 256
    affine = face_crop_box(astro_points).image_to_crop(size)
    crop = warp_to_crop(astronaut, affine, size)
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
    crop_pts = transform_points(astro_points, affine)
    in_image = sample(astronaut, astro_points[:, :2])
    in_crop = sample(crop, crop_pts[:, :2])
    err = np.abs(in_image - in_crop).mean()
    assert err < 4.0, err
    # a control: the same comparison 6 crop px off is clearly worse
    off = np.abs(in_image - sample(crop, crop_pts[:, :2] + [6.0, 6.0])).mean()
    assert off > 2 * err + 2.0
    # z is scaled like x and y
    k = np.sqrt(abs(np.linalg.det(affine[:, :2])))
    np.testing.assert_allclose(crop_pts[:, 2], astro_points[:, 2] * k, rtol=1e-5, atol=1e-4)


def test_feather_mask_shape():
    m = feather_mask(64)
    assert m.shape == (64, 64) and m.dtype == np.float32
    assert m[32, 32] == pytest.approx(1.0) and m[0, 0] < 0.05
    assert 0.0 <= m.min() and m.max() <= 1.0
    np.testing.assert_allclose(m, m.T)
    np.testing.assert_allclose(m, m[::-1, ::-1])


def test_paste_back_unmodified_crop_reproduces_image(astronaut_source):
    src = astronaut_source
    image, size = src.image, src.size
    out = paste_back(src.crop, image, src.crop_to_image)
    assert out.shape == image.shape and out.dtype == np.uint8
    h, w = image.shape[:2]
    # where each image pixel falls in the crop
    to_crop = cv2.invertAffineTransform(src.crop_to_image)
    ys, xs = np.mgrid[0:h, 0:w]
    grid = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
    cxy = (grid @ to_crop[:, :2].T + to_crop[:, 2]).reshape(h, w, 2)
    inside = (cxy > 0.25 * size).all(-1) & (cxy < 0.75 * size).all(-1)
    far = (cxy < -2).any(-1) | (cxy > size + 2).any(-1)
    assert inside.sum() > 1000 and far.sum() > 1000
    diff = np.abs(out.astype(np.int16) - image.astype(np.int16))
    assert diff[inside].mean() < 4.0
    # pixels far outside the crop are untouched, bit for bit
    assert np.array_equal(out[far], image[far])


def test_paste_back_really_pastes(astronaut_source):
    src = astronaut_source
    white = np.full_like(src.crop, 255)
    out = paste_back(white, src.image, src.crop_to_image)
    cx, cy = transform_points(np.array([[src.size / 2, src.size / 2]]), src.crop_to_image)[0]
    cx, cy = int(round(cx)), int(round(cy))
    assert (out[cy - 3 : cy + 4, cx - 3 : cx + 4] >= 254).all()
    # the soft border blends: somewhere between the centre and the outside the values are mixed
    assert not np.array_equal(out, src.image)


def test_an_antialiased_crop_averages_the_pixels_it_shrinks(hopper):
    """``antialias``: where the crop shrinks the image more than 1.5x, the same geometry, the texture averaged;
    at milder scales the crop is the plain one, bit for bit."""
    big = cv2.resize(hopper, None, fx=6, fy=6, interpolation=cv2.INTER_CUBIC)

    def affine(side: float, centre=(1500.0, 1700.0)) -> np.ndarray:
        a = cv2.getRotationMatrix2D(centre, 10.0, 256 / side)
        a[:, 2] = 128 - a[:, :2] @ np.array(centre)
        return a

    smooth = cv2.GaussianBlur(big, (0, 0), 24)  # nothing finer than the crop's pixels to alias
    for a in (affine(1800), affine(500)):
        diff = np.abs(warp_to_crop(smooth, a, 256, antialias=True).astype(float) - warp_to_crop(smooth, a, 256))
        assert diff.mean() < 0.3 and diff.max() <= 3, (diff.mean(), diff.max())
    # a ramp (averaging a linear image changes nothing), the crop reaching past each side and corner: the image's
    # own edge is repeated beyond it, as before (a block's mean there is within (k - 1) / 2 px of the last pixel)
    h, w = big.shape[:2]
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = np.dstack([x * 0.08, y * 0.07, 255 - x * 0.04 - y * 0.03]).round().astype(np.uint8)
    for centre in ((200.0, 300.0), (w - 200.0, h - 300.0), (w - 150.0, h / 2), (w / 2, h - 100.0), (w / 2, 150.0)):
        a = affine(1800, centre)
        diff = np.abs(warp_to_crop(ramp, a, 256, antialias=True).astype(float) - warp_to_crop(ramp, a, 256))
        assert diff.max() <= 2, (centre, diff.mean(), diff.max())
    mild = affine(300)  # shrinks 1.2x: left to bilinear sampling
    np.testing.assert_array_equal(warp_to_crop(big, mild, 256, antialias=True), warp_to_crop(big, mild, 256))
    noisy = np.clip(big + np.random.default_rng(0).normal(0, 12, big.shape), 0, 255).astype(np.uint8)
    clean = warp_to_crop(big, affine(1800), 256, antialias=True).astype(float)
    psnr = {aa: 10 * np.log10(255 ** 2 / np.mean((warp_to_crop(noisy, affine(1800), 256, antialias=aa) - clean) ** 2))
            for aa in (False, True)}
    assert psnr[True] > psnr[False] + 10, psnr
