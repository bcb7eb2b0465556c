"""The Profiles menu: the plain portrait and every saved profile, the one in use checked,
then Personalize… and Refresh.

It only shows and reports: choosing an entry emits :attr:`ProfilesMenu.chosen` (a profile's
name, ``None`` for the plain portrait); the window decides what that does.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Signal
from PySide6.QtGui import QActionGroup
from PySide6.QtWidgets import QMenu, QWidget


class ProfilesMenu(QMenu):
    """The ``&Profiles`` menu.

    Args:
        personalize: what Personalize… runs (the window opens the wizard).
        refresh: what Refresh runs (the window calls :meth:`refresh` with the profile in use).
    """

    chosen = Signal(object)  # a profile name, or None: the plain portrait

    def __init__(self, personalize: Callable[[], object], refresh: Callable[[], object], parent: QWidget | None = None):
        super().__init__("&Profiles", parent)
        self._personalize, self._refresh = personalize, refresh
        self.actions_group: QActionGroup | None = None

    def refresh(self, current: str | None) -> None:
        """List the saved profiles again (from disk), ``current`` checked."""
        from ..profiles import list_profiles

        self.clear()
        if self.actions_group is not None:
            self.actions_group.deleteLater()
        self.actions_group = QActionGroup(self)
        plain = self.addAction("Plain portrait (no profile)")
        entries = [(plain, None)] + [(None, p.name) for p in list_profiles()]
        if len(entries) > 1:
            self.addSeparator()
        for action, name in entries:
            action = action or self.addAction(name)
            action.setCheckable(True)
            action.setData(name)
            action.setChecked(name == current)
            self.actions_group.addAction(action)
            action.triggered.connect(lambda _=False, n=name: self.chosen.emit(n))
        self.addSeparator()
        self.addAction("Personalize…", self._personalize)
        self.addAction("Refresh", self._refresh)

    def check(self, name: str | None) -> None:
        """Mark ``name`` (``None``: the plain portrait) as the one in use."""
        for action in self.actions_group.actions():
            action.setChecked(action.data() == name)
