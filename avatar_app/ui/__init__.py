"""The desktop app (PySide6): main window, personalize wizard, and their workers.

Importing this package needs no Qt; :func:`~avatar_app.ui.app.run_app` checks for it and
raises a :class:`~avatar_app.errors.DependencyError` with the install command when it is
missing.
"""
