"""avsync: re-time video to audio."""

__version__ = "0.1.0"
