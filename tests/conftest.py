"""Shared fixtures: real public-domain faces and a real mediapipe tracker."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")
# Engines and ONNX exports built by tests go to a throw-away folder, never the checkout's engines/;
# removed when the test process ends (each run's exports are about 35 MB).
_ENGINES = tempfile.mkdtemp(prefix="avatar-engines-")
os.environ["AVATAR_APP_ENGINES"] = _ENGINES
atexit.register(shutil.rmtree, _ENGINES, ignore_errors=True)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from avatar_app.face.source import prepare_source, read_image  # noqa: E402
from avatar_app.face.tracker import FaceTracker  # noqa: E402

PORTRAITS = Path(__file__).resolve().parents[1] / "assets" / "portraits"


@pytest.fixture(scope="session")
def astronaut_path() -> Path:
    return PORTRAITS / "astronaut.jpg"


@pytest.fixture(scope="session")
def hopper_path() -> Path:
    return PORTRAITS / "grace_hopper.jpg"


@pytest.fixture(scope="session")
def astronaut(astronaut_path) -> np.ndarray:
    """skimage.data.astronaut() (public domain, NASA), BGR."""
    return read_image(astronaut_path)


@pytest.fixture(scope="session")
def hopper(hopper_path) -> np.ndarray:
    """matplotlib's grace_hopper.jpg (public domain), BGR."""
    return read_image(hopper_path)


@pytest.fixture(scope="session")
def still_tracker():
    """A tracker for still images (detect_faces); shared to save start-up time."""
    with FaceTracker() as tracker:
        yield tracker


@pytest.fixture(scope="session")
def astronaut_source(astronaut, still_tracker):
    return prepare_source(astronaut, 256, tracker=still_tracker)


@pytest.fixture(scope="session")
def hopper_source(hopper, still_tracker):
    return prepare_source(hopper, 256, tracker=still_tracker)


# Qt widgets in tests draw offscreen (no window pops up; CI has no display) unless told otherwise.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def load_tool(name: str):
    """The module of ``tools/NAME.py`` (the tools are scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def three_portrait_dataset(tmp_path_factory, frames: int, sizes=(256,)) -> Path:
    """A synthetic prepared dataset of three people (astronaut, Grace Hopper, a mirrored astronaut),
    two clips of ``frames`` frames each."""
    import shutil

    import cv2

    from avatar_app.train.synthetic import generate_synthetic_dataset

    portraits = tmp_path_factory.mktemp("portraits")
    shutil.copy(PORTRAITS / "astronaut.jpg", portraits / "astronaut.jpg")
    shutil.copy(PORTRAITS / "grace_hopper.jpg", portraits / "grace_hopper.jpg")
    cv2.imwrite(str(portraits / "mirrored.png"), cv2.imread(str(PORTRAITS / "astronaut.jpg"))[:, ::-1])
    out = tmp_path_factory.mktemp("data") / "prepared"
    report = generate_synthetic_dataset(portraits, out, clips_per_portrait=2, frames=frames, sizes=sizes,
                                        progress=False)
    assert len(report.clips_done) == 6 and not report.clips_skipped
    return out
