"""The one-click personalize wizard: explain, record with guidance, adapt, compare, save.

Pages: what will happen → a recording with a countdown and live guidance → adaptation
in the background (progress bar, time left, Cancel) → before/after on held-out frames
with the metric, and Save under a name or Discard.  The work happens in
:mod:`avatar_app.ui.recording`'s workers; the pages only draw what they report.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (QGridLayout, QHBoxLayout, QLabel, QLineEdit, QProgressBar, QPushButton, QVBoxLayout,
                               QWizard, QWizardPage)

from ..capture.base import FrameSource
from ..train.personalize import held_out_indices
from .bridge import call_reporting, emit_safely, to_qimage
from .recording import Adapter, Recorder, save_adapted
from .widgets import ImageView

INTRO = (
    "<p>The avatar app can adapt its model to <b>your</b> face in about half a minute, so that the avatar "
    "looks more like you.</p>"
    "<ol><li><b>Record about {seconds:.0f} seconds</b> of yourself: after a short countdown, look at the camera, "
    "talk, turn your head and move it about a little (the adapted model learns where your head goes). "
    "The page tells you whether your face is found, centred and lit well enough.</li>"
    "<li><b>Adapt</b>: the model is fine-tuned on your recording for {budget:.0f} seconds, in the background "
    "(you can cancel).</li>"
    "<li><b>Compare</b> before and after on frames the model did not train on, then save the result under a "
    "name (a <i>profile</i>, chosen from the Profiles menu) or discard it.</li></ol>"
    "<p>Nothing leaves this computer.</p>"
)


def _tick(ok: bool, text: str) -> str:
    return f"{'✔' if ok else '✘'} {text}"


class IntroPage(QWizardPage):
    def __init__(self, seconds: float, budget: float):
        super().__init__()
        self.setTitle("Personalize the avatar")
        label = QLabel(INTRO.format(seconds=seconds, budget=budget))
        label.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(label)


class RecordPage(QWizardPage):
    """Counts down, records, and shows the camera with guidance; complete once a recording exists."""

    def __init__(self, wizard: "PersonalizeWizard"):
        super().__init__()
        self.w = wizard
        self.setTitle("Record yourself")
        self.view = ImageView("Opening the camera…")
        self.phase_label = QLabel("")
        self.face_label, self.centre_label, self.light_label = QLabel(), QLabel(), QLabel()
        self.advice_label = QLabel("Talk, turn your head and move it about a little while recording.")
        self.again_button = QPushButton("Record again")
        self.again_button.clicked.connect(self.record)
        checks = QVBoxLayout()
        for w in (self.phase_label, self.face_label, self.centre_label, self.light_label, self.advice_label):
            w.setWordWrap(True)
            checks.addWidget(w)
        checks.addStretch(1)
        checks.addWidget(self.again_button)
        layout = QHBoxLayout(self)
        layout.addWidget(self.view, 2)
        layout.addLayout(checks, 1)
        self.recorder: Recorder | None = None
        self.images: list | None = None
        self.fps = 30.0
        self.last_guidance = None

    def initializePage(self) -> None:
        if self.images is None:
            self.record()

    def record(self) -> None:
        self.stop()
        self.images = None
        self.completeChanged.emit()
        self.again_button.setEnabled(False)
        self.recorder = r = Recorder(self.w.source_factory, self.w.record_s, self.w.countdown_s, self)
        r.frames.ready.connect(lambda: self.view.show_image(r.frames.take()))
        r.phase.connect(self._on_phase)
        r.guidance.connect(self._on_guidance)
        r.finished.connect(self._on_finished)
        r.failed.connect(self._on_failed)
        r.start()

    def stop(self) -> None:
        if self.recorder is not None:
            self.recorder.stop()

    def _on_phase(self, phase: str, left: float) -> None:
        if phase == "countdown":
            self.phase_label.setText(f"<b>Recording starts in {left:.0f}…</b>" if left >= 0.5 else "<b>Go!</b>")
        else:
            self.phase_label.setText(f"<b>● Recording: {left:.0f} s left</b>: talk and turn a little")

    def _on_guidance(self, g) -> None:
        self.last_guidance = g
        self.face_label.setText(_tick(g.face, "face found"))
        self.centre_label.setText(_tick(g.centred, "face centred"))
        self.light_label.setText(_tick(g.bright, f"light enough (brightness {g.brightness:.0f})"))
        self.advice_label.setText(g.advice())

    def _on_finished(self, images: list) -> None:
        self.images = images
        self.fps = self.recorder.fps
        self.phase_label.setText(f"<b>Recorded {len(images)} frames.</b> Press Next to adapt.")
        self.again_button.setEnabled(True)
        self.completeChanged.emit()

    def _on_failed(self, text: str) -> None:
        self.phase_label.setText(text)
        self.w.messages.append(text)
        self.again_button.setEnabled(True)

    def isComplete(self) -> bool:
        return self.images is not None


class AdaptPage(QWizardPage):
    """Runs the adaptation with a progress bar, time left and Cancel; complete when it succeeded."""

    def __init__(self, wizard: "PersonalizeWizard"):
        super().__init__()
        self.w = wizard
        self.setTitle("Adapting the model to you")
        self.stage_label = QLabel("")
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.time_label = QLabel("")
        self.estimate_label = QLabel("Measuring what the budget buys on this computer…")
        self.estimate_label.setWordWrap(True)
        self.cancel_button = QPushButton("Cancel adaptation")
        self.cancel_button.clicked.connect(self.cancel)
        layout = QVBoxLayout(self)
        for w in (self.stage_label, self.bar, self.time_label, self.estimate_label, self.cancel_button):
            layout.addWidget(w)
        layout.addStretch(1)
        self.adapter: Adapter | None = None
        self.adapted = None
        self.steps_seen = 0
        self.estimate = None

    def initializePage(self) -> None:
        record = self.w.record_page
        self.adapted = None
        self.steps_seen = 0
        self.estimate = None
        self.estimate_label.setText("Measuring what the budget buys on this computer…")
        self.bar.setValue(0)
        self.time_label.setText(f"about {self.w.budget_s:.0f} s of adaptation")
        self.cancel_button.setEnabled(True)
        self.adapter = a = Adapter(record.images, record.fps, self.w.budget_s, self.w.weights, self.w.preset, self)
        a.stage.connect(self.stage_label.setText)
        a.estimate.connect(self._on_estimate)
        a.progress.connect(self._on_progress)
        a.finished.connect(self._on_finished)
        a.failed.connect(self._on_failed)
        a.start()

    def cleanupPage(self) -> None:  # Back: stop adapting
        self.cancel()

    def cancel(self) -> None:
        if self.adapter is not None:
            self.adapter.cancel()

    def _on_estimate(self, estimate) -> None:
        self.estimate = estimate
        self.estimate_label.setText(estimate.message()[0].upper() + estimate.message()[1:] + ".")

    def _on_progress(self, info: dict) -> None:
        self.steps_seen = info["step"]
        self.bar.setValue(round(1000 * min(1.0, info["elapsed"] / max(self.w.budget_s, 1e-6))))
        of = f" of about {info['expected_steps']}" if info.get("expected_steps") else ""
        self.time_label.setText(f"{info['eta']:.0f} s left · step {info['step']}{of} · loss {info['loss']:.4f}")

    def _on_finished(self, adapted) -> None:
        self.adapted = adapted
        self.bar.setValue(1000)
        self.stage_label.setText("Done. Press Next to compare before and after.")
        self.time_label.setText(f"{adapted.result.steps} steps in {adapted.result.seconds:.1f} s")
        self.cancel_button.setEnabled(False)
        self.completeChanged.emit()

    def _on_failed(self, text: str) -> None:
        self.stage_label.setText(f"{text} Press Back to record again.")
        self.w.messages.append(text)
        self.cancel_button.setEnabled(False)

    def isComplete(self) -> bool:
        return self.adapted is not None


class ResultPage(QWizardPage):
    """Held-out frames with the avatar before and after adaptation, the metric, and Save / Discard."""

    def __init__(self, wizard: "PersonalizeWizard"):
        super().__init__()
        self.w = wizard
        self.setTitle("Before and after")
        self.grid = QGridLayout()
        for col, text in enumerate(("held-out frame (you)", "before adapting", "after adapting")):
            self.grid.addWidget(QLabel(text), 0, col)
        self.views: list[ImageView] = []
        self.metric_label = QLabel("")
        self.metric_label.setWordWrap(True)
        self.name_edit = QLineEdit("me")
        self.save_button = QPushButton("Save profile")
        self.discard_button = QPushButton("Discard")
        self.save_button.clicked.connect(self.save)
        self.discard_button.clicked.connect(self.w.reject)
        self.state_label = QLabel("")
        row = QHBoxLayout()
        row.addWidget(QLabel("Profile name"))
        row.addWidget(self.name_edit, 1)
        row.addWidget(self.save_button)
        row.addWidget(self.discard_button)
        layout = QVBoxLayout(self)
        layout.addLayout(self.grid, 1)
        layout.addWidget(self.metric_label)
        layout.addLayout(row)
        layout.addWidget(self.state_label)
        self.saved_profile = None

    def initializePage(self) -> None:
        adapted = self.w.adapt_page.adapted
        for view in self.views:
            view.deleteLater()
        self.views = []
        for row, images in enumerate(adapted.previews, start=1):
            for col, image in enumerate(images):
                view = ImageView("")
                view.setMinimumSize(160, 160)
                view.show_image(to_qimage(image))
                self.grid.addWidget(view, row, col)
                self.views.append(view)
        m = adapted.result.metrics()
        held = len(held_out_indices(len(adapted.clip.crops), adapted.clip.reference))
        self.metric_label.setText(
            f"On the {held} recorded frames it never trained on ({len(adapted.previews)} shown): PSNR "
            f"{m['psnr']['before']:.2f} → <b>{m['psnr']['after']:.2f} dB</b> (higher is better), L1 "
            f"{m['l1']['before']:.4f} → <b>{m['l1']['after']:.4f}</b> (lower is better), after "
            f"{m['steps']} training step{'s' if m['steps'] != 1 else ''} in {m['seconds']:.1f} s.")

    def save(self) -> None:
        """Save on a worker thread; the wizard closes once the profile is in place."""
        name = self.name_edit.text().strip()
        adapted = self.w.adapt_page.adapted
        self.save_button.setEnabled(False)
        self.state_label.setText(f"Saving '{name}'…")

        def work() -> None:
            ok, profile = call_reporting(lambda: save_adapted(name, adapted, self.w.budget_s), self.w.save_failed,
                                         "saving the profile")
            if ok:
                emit_safely(self.w.saved_internal, profile.name)

        threading.Thread(target=work, name="avatar-ui-save", daemon=True).start()


class PersonalizeWizard(QWizard):
    """The personalize wizard.

    Args:
        source_factory: makes the frame source to record from (the camera; tests pass a clip).
        budget_s: seconds of adaptation.  weights/preset: the model to start from.
        record_s, countdown_s: seconds recorded, and of countdown before.

    Signals:
        profile_saved(str): a profile of that name was saved.
    """

    profile_saved = Signal(str)
    saved_internal = Signal(str)
    save_failed = Signal(str)

    def __init__(self, parent, source_factory: Callable[[], FrameSource], budget_s: float = 30.0,
                 weights: str | None = None, preset: str = "lite", record_s: float = 10.0, countdown_s: float = 3.0):
        super().__init__(parent)
        self.source_factory = source_factory
        self.budget_s, self.weights, self.preset = budget_s, weights, preset
        self.record_s, self.countdown_s = record_s, countdown_s
        self.messages: list[str] = []
        self.setWindowTitle("Personalize")
        self.setOption(QWizard.WizardOption.NoBackButtonOnLastPage, False)
        self.setOption(QWizard.WizardOption.HaveFinishButtonOnEarlyPages, False)
        self.intro_page = IntroPage(record_s, budget_s)
        self.record_page = RecordPage(self)
        self.adapt_page = AdaptPage(self)
        self.result_page = ResultPage(self)
        for page in (self.intro_page, self.record_page, self.adapt_page, self.result_page):
            self.addPage(page)
        # Save / Discard live on the last page; Cancel discards too, so there is no Finish button
        self.setButtonLayout([QWizard.WizardButton.Stretch, QWizard.WizardButton.BackButton,
                              QWizard.WizardButton.NextButton, QWizard.WizardButton.CancelButton])
        self.resize(760, 520)
        self.saved_internal.connect(self._saved)
        self.save_failed.connect(self._save_failed)

    def _saved(self, name: str) -> None:
        self.result_page.state_label.setText(f"Saved profile '{name}'.")
        self.result_page.saved_profile = name
        self.profile_saved.emit(name)
        self.accept()

    def _save_failed(self, text: str) -> None:
        self.result_page.state_label.setText(text)
        self.result_page.save_button.setEnabled(True)
        self.messages.append(text)

    def done(self, result: int) -> None:
        """Closing (Save, Discard, Cancel, the window's X) stops any recording or adaptation."""
        self.record_page.stop()
        self.adapt_page.cancel()
        super().done(result)
