"""The desktop app's settings: saved and restored through the window, their file's bad values and old versions,
a folder that cannot be written; with real widgets (offscreen)."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

pytest.importorskip("PySide6.QtWidgets", exc_type=ImportError)

from avatar_app.ui.settings import SYNTHETIC, Settings, load_settings, save_settings  # noqa: E402
from gui_helpers import make_window, start, stop  # noqa: E402,F401  (make_window is a fixture)


def test_settings_round_trip_through_the_window(make_window, qtbot, tmp_path, hopper_path):
    w = make_window()
    w.set_source(str(hopper_path))
    for box, value in ((w.animator_box, "neural"), (w.backend_box, "onnxruntime"), (w.size_box, 512)):
        box.setCurrentIndex(box.findData(value))
        box.activated.emit(box.currentIndex())
    w.vcam_box.setChecked(True)
    assert w.backend_box.isEnabled()
    w.close()
    saved = json.loads((tmp_path / "config" / "settings.json").read_text())
    assert saved["animator"] == "neural" and saved["size"] == 512 and saved["virtual_camera"] is True
    again = make_window()
    assert again.source_box.currentData() == str(hopper_path)
    assert (again.animator_box.currentData(), again.backend_box.currentData(), again.size_box.currentData()) == \
        ("neural", "onnxruntime", 512)
    assert again.vcam_box.isChecked() and again.driver_box.currentData() == SYNTHETIC


def test_settings_file_round_trip_and_bad_values(tmp_path, caplog):
    s = Settings(driver="/dev/video3", animator="neural", backend="tensorrt", preset="full",
                 weights="/w.safetensors", size=512, virtual_camera=True, profile="me", budget_s=12.5, geometry="ab")
    s.remember_source("/x/a.jpg")
    s.remember_source("/x/b.jpg")
    path = save_settings(s, tmp_path)
    assert load_settings(tmp_path) == s
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind
    data = json.loads(path.read_text())
    data.update(size=300, backend="cuda-magic", virtual_camera="yes", unknown_key=1)
    path.write_text(json.dumps(data))
    loaded = load_settings(tmp_path)
    assert (loaded.size, loaded.backend, loaded.virtual_camera) == (256, "auto", False)  # bad ones: defaults
    assert loaded.animator == "neural" and loaded.recent_sources == ["/x/b.jpg", "/x/a.jpg"]
    path.write_text("{ not json")
    assert load_settings(tmp_path) == Settings()
    assert "unreadable settings" in caplog.text


def test_settings_of_the_previous_version_take_the_machine_default(tmp_path):
    """Files written before "auto" stored the old defaults (geometric, lite) with every other field: those are
    not choices, so they load as "auto"; a choice the old app offered (neural) is kept, and so is geometric
    chosen in a file of this version."""
    old = {k: v for k, v in asdict(Settings(size=512)).items()}
    old.update(animator="geometric", preset="lite")
    (tmp_path / "settings.json").write_text(json.dumps(old))
    loaded = load_settings(tmp_path)
    assert (loaded.animator, loaded.preset, loaded.size) == ("auto", "auto", 512)
    (tmp_path / "settings.json").write_text(json.dumps({**old, "animator": "neural"}))
    assert load_settings(tmp_path).animator == "neural"
    save_settings(Settings(animator="geometric", preset="lite"), tmp_path)
    loaded = load_settings(tmp_path)
    assert (loaded.animator, loaded.preset) == ("geometric", "lite")


def test_eye_contact_toggle_reaches_the_running_avatar_and_is_remembered(make_window, qtbot, tmp_path):
    """The Eye contact box (issue 16): off by default; ticked while running, the pipeline's retargeting
    holds the gaze from then on; the choice is saved and restored."""
    w = make_window()
    assert not w.eye_contact_box.isChecked() and not w.settings.eye_contact
    start(qtbot, w)
    pipeline = w.controller._pipeline
    assert pipeline is not None and not pipeline._retarget.options.eye_contact
    w.eye_contact_box.setChecked(True)
    assert pipeline._retarget.options.eye_contact
    shown = w.avatar_view.frames_shown
    qtbot.waitUntil(lambda: w.avatar_view.frames_shown > shown + 5, timeout=5000)  # the avatar runs on
    stop(qtbot, w)
    w.close()
    assert json.loads((tmp_path / "config" / "settings.json").read_text())["eye_contact"] is True
    again = make_window()
    assert again.eye_contact_box.isChecked()


def test_settings_that_cannot_be_saved_are_told_and_the_app_works_on(make_window, qtbot, tmp_path, monkeypatch):
    """README: errors are one sentence in the status area; a settings folder that cannot be written (here a file
    stands where it should be) says so and how to fix it, and the avatar still starts."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the settings folder should be")
    monkeypatch.setenv("AVATAR_APP_CONFIG", str(blocker))
    w = make_window()
    w.eye_contact_box.setChecked(True)  # a choice the window saves at once
    qtbot.waitUntil(lambda: any("Could not save the settings" in m for m in w.status.messages()), timeout=5000)
    assert any("AVATAR_APP_CONFIG to a writable folder" in m for m in w.status.messages())
    assert all("Traceback" not in m for m in w.status.messages())
    start(qtbot, w)
    stop(qtbot, w)
