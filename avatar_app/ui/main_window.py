"""The main window: camera and avatar side by side, the controls, profiles, status and stats.

The Profiles menu is :class:`~avatar_app.ui.profiles_menu.ProfilesMenu`; the window acts on
what it chooses (:meth:`MainWindow.use_profile`) and opens the personalize wizard.

The window only draws and forwards choices: :class:`~avatar_app.ui.worker.LiveController`
does the work on its worker thread and answers through signals.  Every choice is saved
to the settings file as it is made.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QByteArray, Qt
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFileDialog, QGridLayout, QHBoxLayout, QLabel, QMainWindow,
                               QMessageBox, QPushButton, QVBoxLayout, QWidget)

from ..capture.base import FrameSource
from ..inference.backend import BACKEND_CHOICES
from ..inference.default_animator import MachineDefault, machine_default
from .settings import (ANIMATORS, PORTRAITS, SIZES, SYNTHETIC, Settings, bundled_portraits, load_settings, resolved,
                       save_settings)
from .profiles_menu import ProfilesMenu
from .recording import recording_camera
from .widgets import ImageView, StatusArea, format_stats
from .worker import LiveConfig, LiveController

log = logging.getLogger(__name__)

IMAGE_FILTER = "Images (*.jpg *.jpeg *.png *.bmp *.webp);;All files (*)"


class MainWindow(QMainWindow):
    """The desktop app's window.

    Args:
        config_dir: where settings live (default: ``$AVATAR_APP_CONFIG`` or the user config folder).
        driver_factory: replaces the chosen camera/synthetic driver (tests).
        driver_paced: play ``driver_factory``'s frames at their own rate (sources that do not keep time).
        recording_source: what the personalize wizard records from (default: the chosen camera).
        cameras: the camera devices to offer (default: those found on this machine).
    """

    def __init__(self, config_dir=None, driver_factory: Callable[[], FrameSource] | None = None,
                 recording_source: Callable[[], FrameSource] | None = None, cameras: list[str] | None = None,
                 driver_paced: bool = False):
        super().__init__()
        self.config_dir = config_dir
        self.settings: Settings = load_settings(config_dir)
        self.machine: MachineDefault = machine_default(self.settings.size)  # what "auto" is here, and why
        self.driver_factory = driver_factory
        self.driver_paced = driver_paced
        self.recording_source = recording_source
        self.controller = LiveController(self)
        self.state = "stopped"
        self.start_clicked_at: float | None = None
        self.first_frame_ms: float | None = None  # Start pressed -> first avatar frame drawn
        if self.settings.source is None and bundled_portraits():
            self.settings.source = str(bundled_portraits()[0])
        self.setWindowTitle("avatar-app")
        self.setAcceptDrops(True)
        self._build(cameras)
        self._connect()
        self._load_choices()
        self.refresh_profiles()
        if self.settings.geometry:
            self.restoreGeometry(QByteArray.fromHex(self.settings.geometry.encode()))
        if self.settings.source:
            self.controller.prepare(self.settings.source, self.settings.size)

    # -- building ------------------------------------------------------------------------------
    def _build(self, cameras: list[str] | None) -> None:
        from ..capture.camera import list_cameras

        self.camera_view = ImageView("Camera preview: starts with the avatar.")
        self.avatar_view = ImageView("The avatar appears here: choose a portrait and press Start.")
        views = QHBoxLayout()
        views.addWidget(self.camera_view)
        views.addWidget(self.avatar_view)

        self.source_box = QComboBox()
        self.source_box.setMinimumContentsLength(24)
        self.browse_button = QPushButton("Browse…")
        self.driver_box = QComboBox()
        for device in (list_cameras() if cameras is None else cameras):
            self.driver_box.addItem(f"Camera {device}", device)
        self.driver_box.addItem("Synthetic driver (no camera)", SYNTHETIC)
        self.animator_box = QComboBox()
        for name in ANIMATORS:
            self.animator_box.addItem(name, name)
        self._show_auto()
        self.backend_box = QComboBox()
        for name in BACKEND_CHOICES:
            self.backend_box.addItem(name, name)
        self.backend_box.setToolTip("Where the neural animator runs (the geometric one runs on the CPU).")
        self.size_box = QComboBox()
        for size in SIZES:
            self.size_box.addItem(f"{size} px", size)
        self.start_button = QPushButton("Start")
        self.start_button.setDefault(True)
        self.calibrate_button = QPushButton("Calibrate neutral (C)")
        self.calibrate_button.setToolTip("Look at the camera with a relaxed face and press C.")
        self.eye_contact_box = QCheckBox("Eye contact")
        self.eye_contact_box.setToolTip("Keep the avatar looking into the camera while you read the screen; "
                                        "blinks and expressions still follow.")
        self.vcam_box = QCheckBox("Virtual camera")
        self.vcam_label = QLabel("off")
        self.vcam_help = QPushButton("Setup help")
        self.stats_label = QLabel("stopped")
        self.stats_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status = StatusArea()

        grid = QGridLayout()
        grid.addWidget(QLabel("Source"), 0, 0)
        grid.addWidget(self.source_box, 0, 1, 1, 3)
        grid.addWidget(self.browse_button, 0, 4)
        grid.addWidget(QLabel("Driver"), 1, 0)
        grid.addWidget(self.driver_box, 1, 1)
        grid.addWidget(QLabel("Size"), 1, 2)
        grid.addWidget(self.size_box, 1, 3)
        grid.addWidget(QLabel("Animator"), 2, 0)
        grid.addWidget(self.animator_box, 2, 1)
        grid.addWidget(QLabel("Backend"), 2, 2)
        grid.addWidget(self.backend_box, 2, 3)
        buttons = QHBoxLayout()
        for w in (self.start_button, self.calibrate_button, self.eye_contact_box, self.vcam_box, self.vcam_label):
            buttons.addWidget(w)
        buttons.addStretch(1)
        buttons.addWidget(self.vcam_help)

        layout = QVBoxLayout()
        layout.addLayout(views, 1)
        layout.addLayout(grid)
        layout.addLayout(buttons)
        layout.addWidget(self.stats_label)
        layout.addWidget(self.status)
        central = QWidget()
        central.setLayout(layout)
        self.setCentralWidget(central)
        self.resize(980, 700)

        file_menu = self.menuBar().addMenu("&File")
        file_menu.addAction("Open portrait…", QKeySequence.StandardKey.Open, self.browse_source)
        file_menu.addAction("Neural weights…", self.browse_weights)
        file_menu.addAction("Untrained neural model (no weights)", lambda: self.set_weights(None))
        file_menu.addAction("Quit", QKeySequence.StandardKey.Quit, self.close)
        self.profiles_menu = ProfilesMenu(self.open_wizard, self.refresh_profiles, self)
        self.profiles_menu.chosen.connect(self.use_profile)
        self.menuBar().addMenu(self.profiles_menu)
        help_menu = self.menuBar().addMenu("&Help")
        help_menu.addAction("Virtual camera setup…", self.show_vcam_help)
        QShortcut(QKeySequence("C"), self, self.calibrate)

    def _connect(self) -> None:
        c = self.controller
        c.avatar.ready.connect(self._draw_avatar)
        c.camera.ready.connect(lambda: self.camera_view.show_image(c.camera.take()))
        c.state_changed.connect(self._on_state)
        c.source_ready.connect(self._on_source_ready)
        c.stats_ready.connect(lambda stats: self.stats_label.setText(format_stats(stats)))
        c.message.connect(self.status.add)
        c.vcam_status.connect(self._on_vcam_status)
        self.browse_button.clicked.connect(self.browse_source)
        self.source_box.activated.connect(lambda i: self.set_source(self.source_box.itemData(i)))
        for box in (self.driver_box, self.animator_box, self.backend_box, self.size_box):
            box.activated.connect(self._choices_changed)
        self.start_button.clicked.connect(self.toggle_running)
        self.calibrate_button.clicked.connect(self.calibrate)
        self.vcam_box.toggled.connect(self._vcam_toggled)
        self.eye_contact_box.toggled.connect(self._eye_contact_toggled)
        self.vcam_help.clicked.connect(self.show_vcam_help)

    def _load_choices(self) -> None:
        s = self.settings
        self._fill_sources()
        for box, value in ((self.driver_box, s.driver), (self.animator_box, s.animator),
                           (self.backend_box, s.backend), (self.size_box, s.size)):
            i = box.findData(value)
            if i < 0 and box is self.driver_box:  # a camera that is not plugged in now
                box.insertItem(0, f"Camera {value} (not found)", value)
                i = 0
            box.setCurrentIndex(max(i, 0))
        self.backend_box.setEnabled(self._neural())
        for box, on in ((self.vcam_box, s.virtual_camera), (self.eye_contact_box, s.eye_contact)):
            box.blockSignals(True)
            box.setChecked(on)
            box.blockSignals(False)
        self.vcam_label.setText("on: opens when the avatar starts" if s.virtual_camera else "off")

    def _fill_sources(self) -> None:
        box, s = self.source_box, self.settings
        box.clear()
        bundled = {str(p) for p in bundled_portraits()}
        for path in s.recent_sources:
            if path not in bundled and Path(path).exists():
                box.addItem(Path(path).name, path)
        for path in sorted(bundled):
            box.addItem(f"{Path(path).stem} (bundled)", path)
        if s.source and box.findData(s.source) < 0:
            box.insertItem(0, Path(s.source).name, s.source)
        box.setCurrentIndex(max(0, box.findData(s.source)))

    # -- the live avatar ------------------------------------------------------------------------
    def resolved(self) -> Settings:
        """A copy of the settings with ``auto`` animator and preset made this machine's (:attr:`machine`)."""
        return resolved(self.settings, self.machine.animator, self.machine.preset)

    def _show_auto(self, again: bool = False) -> None:
        """The animator box's *auto* entry and tooltip: what it is on this machine at this size, and why (``again``:
        ask again, after a size change or a live start that measured the networks' speed)."""
        if again:
            self.machine = machine_default(self.settings.size, on_backend=self.settings.backend)
        self.animator_box.setItemText(self.animator_box.findData("auto"), f"auto ({self.machine.animator} here)")
        why = self.machine.why
        self.animator_box.setToolTip(f"Auto: {why[0].upper() + why[1:]}.")

    def _neural(self) -> bool:
        """Whether the avatar runs networks (the neural animator, or a profile's weights)."""
        s = self.resolved()
        return s.animator == "neural" or s.profile is not None

    def live_config(self) -> LiveConfig:
        return LiveConfig(self.resolved(), driver_factory=self.driver_factory, pace=self.driver_paced,
                          auto=self.settings.animator == "auto")

    def toggle_running(self) -> None:
        if self.state in ("running", "starting"):
            self.controller.stop()
        else:
            self.start_clicked_at = time.monotonic()
            self.first_frame_ms = None
            self.controller.start(self.live_config())

    def calibrate(self) -> None:
        if self.state == "running":
            self.controller.calibrate()
            self.status.add("Neutral pose: your next face is taken as neutral.")

    def set_source(self, path: str | None) -> None:
        """Animate the portrait at ``path`` (from the picker, the file dialog or a drop)."""
        if not path:
            return
        self.settings.remember_source(str(path))
        had_profile, self.settings.profile = self.settings.profile, None
        self._save()
        self._fill_sources()
        self.profiles_menu.check(None)
        if had_profile and self.state == "running":
            self.controller.restart(self.live_config())
        else:
            self.controller.prepare(str(path), self.settings.size)

    def browse_source(self) -> None:
        start = str(Path(self.settings.source).parent) if self.settings.source else str(PORTRAITS)
        path, _ = QFileDialog.getOpenFileName(self, "Choose a portrait", start, IMAGE_FILTER)
        if path:
            self.set_source(path)

    def browse_weights(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose neural weights", "", "Weights (*.safetensors)")
        if path:
            self.set_weights(path)

    def set_weights(self, path: str | None) -> None:
        """The checkpoint the neural animator (and the personalize wizard) starts from; ``None``: untrained."""
        self.settings.weights = path
        self._save()
        self.status.add(f"Neural weights: {path}." if path else "Neural weights: none (the untrained model).")
        if self.state == "running" and self.resolved().animator == "neural":
            self.controller.restart(self.live_config())

    def _choices_changed(self) -> None:
        s = self.settings
        old_size = s.size
        s.driver = self.driver_box.currentData()
        s.animator = self.animator_box.currentData()
        s.backend = self.backend_box.currentData()
        s.size = self.size_box.currentData()
        self._show_auto(again=True)
        self.backend_box.setEnabled(self._neural())
        self._save()
        if self.state == "running":
            self.controller.restart(self.live_config())
        elif s.size != old_size and s.source:
            self.controller.prepare(s.source, s.size)

    def _vcam_toggled(self, on: bool) -> None:
        self.settings.virtual_camera = on
        self._save()
        self.controller.set_virtual_camera(on)

    def _eye_contact_toggled(self, on: bool) -> None:
        self.settings.eye_contact = on
        self._save()
        self.controller.set_eye_contact(on)

    def show_vcam_help(self) -> None:
        from ..sinks.virtualcam import setup_help

        QMessageBox.information(self, "Virtual camera setup", setup_help())

    # -- signals from the worker -------------------------------------------------------------------
    def _draw_avatar(self) -> None:
        self.avatar_view.show_image(self.controller.avatar.take())
        if self.first_frame_ms is None and self.start_clicked_at is not None and self.state == "running":
            self.first_frame_ms = (time.monotonic() - self.start_clicked_at) * 1e3

    def _on_state(self, state: str) -> None:
        self.state = state
        running = state in ("running", "starting")
        self.start_button.setText("Stop" if running else "Start")
        self.start_button.setEnabled(state != "stopping")
        self.calibrate_button.setEnabled(state == "running")
        if state == "starting":
            self.stats_label.setText("starting…")
        elif state == "stopped":
            self.camera_view.clear()
            self.controller.avatar.take()
            self._show_auto(again=True)  # a live start may have found the networks too slow here

    def _on_source_ready(self, portrait) -> None:
        if self.state == "stopped":
            from .bridge import to_qimage

            self.avatar_view.show_image(to_qimage(portrait.crop))

    def _on_vcam_status(self, streaming: bool, text: str) -> None:
        self.vcam_label.setText(text)
        self.vcam_label.setStyleSheet("" if streaming or text == "off" or text.startswith("on:") else "color: #b03a2e")

    # -- profiles ----------------------------------------------------------------------------------
    def refresh_profiles(self) -> None:
        self.profiles_menu.refresh(self.settings.profile)

    def use_profile(self, name: str | None) -> None:
        """Animate with a personalized profile (its portrait and adapted weights), or none."""
        self.settings.profile = name
        self._save()
        self.profiles_menu.check(name)
        self.backend_box.setEnabled(self._neural())
        self.status.add(f"Profile: {name}." if name else "Profile: none (the plain portrait).")
        if self.state == "running":
            self.controller.switch_profile(self.live_config())
        elif name is None and self.settings.source:
            self.controller.prepare(self.settings.source, self.settings.size)

    def open_wizard(self, **options):
        """Open the personalize wizard (stops the live avatar: the camera is needed for recording).

        ``options`` go to :class:`~avatar_app.ui.wizard.PersonalizeWizard` (``record_s``, ``countdown_s``).
        """
        from .wizard import PersonalizeWizard

        if self.state != "stopped":
            self.controller.stop()
        source = self.recording_source or (lambda: recording_camera(self.settings.driver))
        wizard = PersonalizeWizard(self, source, budget_s=self.settings.budget_s, weights=self.settings.weights,
                                   preset=self.resolved().preset, **options)
        wizard.profile_saved.connect(self._profile_saved)
        wizard.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        wizard.show()
        return wizard

    def _profile_saved(self, name: str) -> None:
        self.status.add(f"Profile '{name}' saved; the avatar now uses it.")
        self.refresh_profiles()
        self.use_profile(name)

    # -- window ----------------------------------------------------------------------------------
    def _save(self) -> None:
        from ..errors import AvatarError

        try:
            save_settings(self.settings, self.config_dir)
        except AvatarError as exc:
            self.status.add(str(exc))

    def dragEnterEvent(self, event) -> None:
        if any(url.isLocalFile() for url in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        files = [url.toLocalFile() for url in event.mimeData().urls() if url.isLocalFile()]
        if files:
            event.acceptProposedAction()
            self.set_source(files[0])

    def closeEvent(self, event) -> None:
        self.settings.geometry = bytes(self.saveGeometry().toHex()).decode()
        self._save()
        self.controller.shutdown()
        super().closeEvent(event)
