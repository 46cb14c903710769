"""Domain errors. The CLI turns each into one line on stderr and an exit code."""


class AvsyncError(Exception):
    """Base of every error meant for the user. ``exit_code`` is what the CLI returns."""

    exit_code = 1


class InputError(AvsyncError):
    """The input is missing, unreadable, or not what the command needs."""


class OutputError(AvsyncError):
    """The output cannot be written (exists without --overwrite, no directory, ...)."""


class CannotMeasure(AvsyncError):
    """The input is valid but carries nothing to measure (silence, no motion, too short)."""

    exit_code = 2


class ModelError(AvsyncError):
    """A checkpoint is missing, corrupt, fails its sha256, or cannot be downloaded."""
