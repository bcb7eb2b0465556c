"""Small widgets of the desktop app: image views, the status area, the stats readout."""

from __future__ import annotations

import time

from PySide6.QtCore import QRect, Qt
from PySide6.QtGui import QColor, QImage, QPainter
from PySide6.QtWidgets import QPlainTextEdit, QSizePolicy, QWidget

from ..runtime.stats import PipelineStats


class ImageView(QWidget):
    """Shows the newest image, scaled to fit with its aspect ratio kept, or a placeholder line.

    It only paints: images arrive through :meth:`show_image` (from a
    :class:`~avatar_app.ui.worker.FrameRelay`) and are drawn at the next repaint.
    """

    def __init__(self, placeholder: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.placeholder = placeholder
        self._image: QImage | None = None
        self.frames_shown = 0
        self.setMinimumSize(240, 240)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    @property
    def image(self) -> QImage | None:
        return self._image

    def show_image(self, image: QImage | None) -> None:
        if image is None or image.isNull():
            return
        self._image = image
        self.frames_shown += 1
        self.update()

    def clear(self, placeholder: str | None = None) -> None:
        self._image = None
        if placeholder is not None:
            self.placeholder = placeholder
        self.update()

    def image_rect(self) -> QRect:
        """Where the image is drawn (widget px)."""
        if self._image is None:
            return QRect()
        size = self._image.size().scaled(self.size(), Qt.AspectRatioMode.KeepAspectRatio)
        return QRect((self.width() - size.width()) // 2, (self.height() - size.height()) // 2,
                     size.width(), size.height())

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(32, 32, 36))
        if self._image is None:
            painter.setPen(QColor(170, 170, 178))
            painter.drawText(self.rect().adjusted(12, 12, -12, -12), Qt.AlignmentFlag.AlignCenter
                             | Qt.TextFlag.TextWordWrap, self.placeholder)
            return
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        painter.drawImage(self.image_rect(), self._image)


class StatusArea(QPlainTextEdit):
    """The app's messages, newest last (errors included: never a traceback dialog)."""

    def __init__(self, parent: QWidget | None = None, max_lines: int = 200):
        super().__init__(parent)
        self.setReadOnly(True)
        self.setMaximumBlockCount(max_lines)
        self.setMaximumHeight(90)
        self.setPlaceholderText("Messages appear here.")

    def add(self, text: str) -> None:
        self.appendPlainText(f"{time.strftime('%H:%M:%S')}  {text}")

    def messages(self) -> list[str]:
        return [line.split("  ", 1)[-1] for line in self.toPlainText().splitlines()]


def format_stats(stats: PipelineStats) -> str:
    """The fps and per-stage latency readout (ms are medians; latency also its 95th percentile)."""
    stages = "  ".join(f"{name} {p50:.1f}" for name, (p50, _) in stats.stage_ms.items())
    return (f"{stats.output_fps:.1f} fps   latency {stats.latency_ms[0]:.0f} ms (p95 {stats.latency_ms[1]:.0f})   "
            f"face: {stats.face_state}   source: {stats.source_state}\nstage ms: {stages or '-'}")
