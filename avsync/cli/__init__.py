"""Command-line interface. Thin: parse options, call one library function, render the result.

Each command lives in its own module and registers itself on ``app``.
"""

from __future__ import annotations

from avsync.cli._app import app, main

__all__ = ["app", "main"]
