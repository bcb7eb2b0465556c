"""User-facing errors.

Every error a person can cause (a bad file, no face, no camera) is raised as an
``AvatarError`` subclass whose message is one sentence saying what went wrong and
what to do.  The CLI prints that sentence and exits with the class's ``exit_code``;
tracebacks appear only with ``--debug``.
"""

from __future__ import annotations


class AvatarError(Exception):
    """Base class: a problem the user can act on."""

    exit_code = 1


class UsageError(AvatarError):
    """A flag, or a combination of flags, the command cannot take (those argparse cannot check itself); the same
    exit code as argparse's own usage errors."""

    exit_code = 2


class InputFileError(AvatarError):
    """A file is missing, unreadable or not what it should be."""

    exit_code = 3


class NoFaceError(AvatarError):
    """No (usable) face was found where one was required."""

    exit_code = 4


class CameraError(AvatarError):
    """A camera could not be opened or stopped delivering frames."""

    exit_code = 5


class DependencyError(AvatarError):
    """An optional package or runtime is missing for the requested feature."""

    exit_code = 6


class OutputError(AvatarError):
    """An output (video file, virtual camera) could not be written."""

    exit_code = 7


def describe_error(exc: BaseException) -> str:
    """The sentence the app's status area shows for an exception from a worker (thread or process)."""
    if isinstance(exc, AvatarError):
        return str(exc)
    return f"Something went wrong inside the app ({type(exc).__name__}: {exc}); details are in the log."
