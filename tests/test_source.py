"""Reading and preparing source portraits, on real faces (no mocks)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from avatar_app.errors import InputFileError, NoFaceError
from avatar_app.face.align import affine_after, transform_points, warp_to_crop
from avatar_app.face.mesh import eye_centers
from avatar_app.face.source import prepare_source, read_image
from avatar_app.face.tracker import FaceTracker
from avatar_app.types import SourcePortrait

# -- read_image ---------------------------------------------------------------------------------


def test_read_image_reads_real_files(astronaut_path, astronaut, tmp_path):
    assert astronaut.shape == (512, 512, 3) and astronaut.dtype == np.uint8
    # round trip through PNG (lossless), including a non-ASCII file name
    out = tmp_path / "pörträt ü.png"
    ok, buf = cv2.imencode(".png", astronaut)
    assert ok
    out.write_bytes(buf.tobytes())
    np.testing.assert_array_equal(read_image(out), astronaut)
    np.testing.assert_array_equal(read_image(str(out)), astronaut)
    # a grayscale file comes back as 3-channel BGR
    gray = tmp_path / "gray.png"
    cv2.imwrite(str(gray), cv2.cvtColor(astronaut, cv2.COLOR_BGR2GRAY))
    img = read_image(gray)
    assert img.shape == (512, 512, 3)


def _bad_inputs(tmp_path: Path) -> dict[str, Path]:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a picture\n" * 20)
    folder = tmp_path / "folder.jpg"
    folder.mkdir()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 10)
    return {
        "missing": tmp_path / "missing.jpg",
        "directory": folder,
        "empty": empty,
        "text": text,
        "truncated": truncated,
    }


@pytest.mark.parametrize("kind", ["missing", "directory", "empty", "text", "truncated"])
def test_read_image_bad_inputs(tmp_path, kind):
    path = _bad_inputs(tmp_path)[kind]
    with pytest.raises(InputFileError) as err:
        read_image(path)
    assert path.name in str(err.value)


@pytest.mark.parametrize("kind", ["missing", "text"])
def test_prepare_source_bad_path(tmp_path, still_tracker, kind):
    path = _bad_inputs(tmp_path)[kind]
    with pytest.raises(InputFileError) as err:
        prepare_source(path, tracker=still_tracker)
    assert path.name in str(err.value)


# -- prepare_source -----------------------------------------------------------------------------


def check_portrait(src: SourcePortrait, size: int) -> None:
    assert isinstance(src, SourcePortrait)
    assert src.size == size
    assert src.crop.shape == (size, size, 3) and src.crop.dtype == np.uint8
    assert src.landmarks.image_size == (size, size)
    xy = src.landmarks.xy
    assert np.isfinite(src.landmarks.points).all()
    assert xy.min() >= 0 and xy.max() < size
    eye_r, eye_l = eye_centers(xy)
    d = eye_l - eye_r
    dist = float(np.linalg.norm(d))
    assert d[0] > 0  # subject's right eye on the crop's left
    assert abs(d[1]) < 0.1 * dist, "eyes not level in the aligned crop"
    assert 0.15 * size < dist < 0.35 * size
    # face roughly centred horizontally, eyes in the upper half
    assert abs((eye_r[0] + eye_l[0]) / 2 - size / 2) < 0.1 * size
    assert 0.2 * size < (eye_r[1] + eye_l[1]) / 2 < 0.5 * size
    assert src.crop_to_image.shape == (2, 3)
    # crop landmarks mapped back land on the face's landmarks in the original image
    back = transform_points(src.landmarks.points, src.crop_to_image)[:, :2]
    assert back.min() >= -1 and back[:, 0].max() < src.image.shape[1] + 1 and back[:, 1].max() < src.image.shape[0] + 1
    # the crop shows the image: colours at the crop landmarks match the image at the mapped points
    crop_col = src.crop[np.round(xy[:, 1]).astype(int), np.round(xy[:, 0]).astype(int)].astype(float)
    bx = np.clip(np.round(back).astype(int), 0, [src.image.shape[1] - 1, src.image.shape[0] - 1])
    img_col = src.image[bx[:, 1], bx[:, 0]].astype(float)
    assert np.abs(crop_col - img_col).mean() < 15.0


@pytest.mark.parametrize("name", ["astronaut", "hopper"])
def test_prepare_source_256(request, name):
    src = request.getfixturevalue(f"{name}_source")
    check_portrait(src, 256)
    assert src.face_index == 0 and src.path is None
    image = request.getfixturevalue(name)
    assert src.image.shape == image.shape


def test_prepare_source_512_matches_256(astronaut, astronaut_source, still_tracker):
    big = prepare_source(astronaut, 512, tracker=still_tracker)
    check_portrait(big, 512)
    # the same face, twice the resolution: landmarks scale by 2
    np.testing.assert_allclose(big.landmarks.xy, 2 * astronaut_source.landmarks.xy, atol=0.05)
    np.testing.assert_allclose(big.crop_to_image[:, :2], astronaut_source.crop_to_image[:, :2] / 2, atol=1e-6)


def test_prepare_source_rejects_other_sizes(astronaut, still_tracker):
    with pytest.raises(ValueError):
        prepare_source(astronaut, 300, tracker=still_tracker)


def test_prepare_source_without_a_face(still_tracker):
    rng = np.random.default_rng(0)
    noise = cv2.resize(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), (640, 480), interpolation=cv2.INTER_CUBIC)
    with pytest.raises(NoFaceError) as err:
        prepare_source(noise, tracker=still_tracker)
    assert "No face" in str(err.value)


def test_prepare_source_without_a_face_named_file(tmp_path, still_tracker):
    path = tmp_path / "landscape.png"
    cv2.imwrite(str(path), np.full((120, 160, 3), 90, np.uint8))
    with pytest.raises(NoFaceError) as err:
        prepare_source(path, tracker=still_tracker)
    assert "landscape.png" in str(err.value)


ASTRO_SIDE = 480  # the astronaut fills x < ASTRO_SIDE of the two-face canvas


@pytest.fixture(scope="module")
def two_faces(astronaut, hopper) -> np.ndarray:
    """The astronaut (large) with Grace Hopper at half size to her right.

    The astronaut's face is small in her photo (about 92 px wide, the same as Grace
    Hopper's at half size), so her head is cut out and enlarged 1.5x to make her face
    clearly (about 2.3x in area) the larger one.  Enlarging the whole photo instead
    would shrink Grace Hopper relative to the canvas below mediapipe's detection limit.
    """
    big = cv2.resize(astronaut[0:320, 64:384], (ASTRO_SIDE, ASTRO_SIDE), interpolation=cv2.INTER_CUBIC)
    small = cv2.resize(hopper, (hopper.shape[1] // 2, hopper.shape[0] // 2), interpolation=cv2.INTER_AREA)
    h = max(ASTRO_SIDE, small.shape[0])
    canvas = np.full((h, ASTRO_SIDE + small.shape[1], 3), 40, np.uint8)
    canvas[:ASTRO_SIDE, :ASTRO_SIDE] = big
    canvas[: small.shape[0], ASTRO_SIDE:] = small
    return canvas


def crop_center_in_image(src: SourcePortrait) -> np.ndarray:
    c = np.array([[src.size / 2, src.size / 2]])
    return transform_points(c, src.crop_to_image)[0]


def test_two_faces_choose_by_index(two_faces, still_tracker):
    split = ASTRO_SIDE
    default = prepare_source(two_faces, tracker=still_tracker)
    first = prepare_source(two_faces, face_index=0, tracker=still_tracker)
    second = prepare_source(two_faces, face_index=1, tracker=still_tracker)
    assert default.face_index == 0 and first.face_index == 0 and second.face_index == 1
    assert crop_center_in_image(default)[0] < split
    np.testing.assert_array_equal(default.crop, first.crop)
    assert crop_center_in_image(second)[0] > split
    # the smaller face really is smaller in the image
    assert np.linalg.det(second.crop_to_image[:, :2]) < np.linalg.det(first.crop_to_image[:, :2])
    check_portrait(first, 256)
    check_portrait(second, 256)


def test_two_faces_index_out_of_range(two_faces, still_tracker):
    with pytest.raises(NoFaceError) as err:
        prepare_source(two_faces, face_index=2, tracker=still_tracker)
    msg = str(err.value)
    assert "2 face" in msg
    with pytest.raises(NoFaceError):
        prepare_source(two_faces, face_index=-1, tracker=still_tracker)


def test_grayscale_array_input(astronaut, astronaut_source, still_tracker):
    gray = cv2.cvtColor(astronaut, cv2.COLOR_BGR2GRAY)
    src = prepare_source(gray, tracker=still_tracker)
    check_portrait(src, 256)
    assert src.image.shape == (512, 512, 3)
    # same face as the colour version, within a few px
    assert np.abs(src.landmarks.xy - astronaut_source.landmarks.xy).mean() < 3.0


def test_path_input_records_path(astronaut_path, astronaut_source, still_tracker):
    src = prepare_source(astronaut_path, tracker=still_tracker)
    assert src.path == str(astronaut_path)
    check_portrait(src, 256)
    np.testing.assert_array_equal(src.crop, astronaut_source.crop)
    src2 = prepare_source(str(astronaut_path), tracker=still_tracker)
    assert src2.path == str(astronaut_path)


def test_prepare_source_makes_and_closes_its_own_tracker(hopper, hopper_source, monkeypatch):
    import avatar_app.face.source as source_module

    made: list[FaceTracker] = []

    class Recorded(FaceTracker):  # the real tracker, remembered so that the test can look at it afterwards
        def detect_faces(self, image):
            made.append(self)
            faces = super().detect_faces(image)
            assert not self.closed  # a mediapipe graph was open while it worked
            return faces

    monkeypatch.setattr(source_module, "FaceTracker", Recorded)
    src = prepare_source(hopper)  # no tracker given
    check_portrait(src, 256)
    np.testing.assert_allclose(src.landmarks.xy, hopper_source.landmarks.xy, atol=0.5)
    with pytest.raises(NoFaceError):
        prepare_source(np.full((200, 200, 3), 128, np.uint8))  # the failing path closes it too
    assert len(made) == 2 and made[0] is not made[1] and all(t.closed for t in made)


def test_crop_scale_widens_the_framing(hopper, hopper_source, still_tracker):
    wide = prepare_source(hopper, crop_scale=1.5, tracker=still_tracker)
    er, el = eye_centers(wide.landmarks.xy)
    er0, el0 = eye_centers(hopper_source.landmarks.xy)
    assert np.linalg.norm(el - er) == pytest.approx(np.linalg.norm(el0 - er0) / 1.5, rel=1e-3)


def test_single_channel_3d_grayscale_array(astronaut, still_tracker):
    gray = cv2.cvtColor(astronaut, cv2.COLOR_BGR2GRAY)[..., None]  # (H, W, 1)
    src = prepare_source(gray, tracker=still_tracker)
    assert src.crop.shape == (256, 256, 3)
    assert src.image.shape == (512, 512, 3)


def test_bgra_array_gives_bgr_portrait(astronaut, still_tracker):
    bgra = cv2.cvtColor(astronaut, cv2.COLOR_BGR2BGRA)
    src = prepare_source(bgra, tracker=still_tracker)
    assert src.crop.shape == (256, 256, 3)
    assert src.image.shape == (512, 512, 3)


@pytest.mark.parametrize("size", [256, 512])
def test_a_large_photo_gives_the_crop_its_small_copy_gives(hopper, still_tracker, size):
    """A phone photo is several times the crop's size: its crop averages the pixels it covers instead of sampling
    a few of them, so the photo's fine texture and noise do not alias into the portrait.  The photo here is the
    portrait enlarged 6x with sensor-like noise (its own average at the small size is the portrait itself)."""
    big = cv2.resize(hopper, None, fx=6, fy=6, interpolation=cv2.INTER_CUBIC).astype(np.float32)
    big = np.clip(big + np.random.default_rng(0).normal(0, 12, big.shape), 0, 255).astype(np.uint8)
    small = prepare_source(hopper, size, tracker=still_tracker)
    db = lambda a: 10 * np.log10(255 ** 2 / np.mean((a.astype(np.float64) - small.crop) ** 2))  # noqa: E731
    # with the small copy's geometry carried over (big px x is small px (x + 0.5) / 6 - 0.5): the averaging alone
    to_small = np.array([[1 / 6, 0, 0.5 / 6 - 0.5], [0, 1 / 6, 0.5 / 6 - 0.5]])
    affine = affine_after(cv2.invertAffineTransform(small.crop_to_image), to_small)
    averaged, sampled = (db(warp_to_crop(big, affine, size, antialias=aa)) for aa in (True, False))
    assert averaged > sampled + 4 and averaged > 32, (averaged, sampled)
    # and end to end, the photo's own landmarks placing its crop (they differ a little on the noisy photo)
    assert db(prepare_source(big, size, tracker=still_tracker).crop) > 25.2  # 26.7 / 26.1; 24.3 / 24.3 sampled
