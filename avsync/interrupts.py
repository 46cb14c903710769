"""Ctrl-C and SIGTERM as a command sees them: raised as KeyboardInterrupt, never lost, never
half-way through creating an output's temp file.

A signal handler calls :func:`interrupt` instead of raising KeyboardInterrupt itself:

- inside :func:`held` (an output's temp file being created) the interrupt waits until the
  section ends, so a temp file never exists without the code that removes it on failure
  knowing its name;
- the interrupt is remembered (:func:`signalled`): a KeyboardInterrupt swallowed on the way
  (a C library calling back into Python where exceptions are "ignored", which PyAV's logging
  and I/O callbacks do) still stops the command, as :func:`avsync.outputs.atomic_path` refuses
  to put an output in place after a signal and the CLI exits 130.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

_STATE = {"held": 0, "pending": False, "signalled": False}


def interrupt() -> None:
    """Record a signal; raise KeyboardInterrupt now, or at the end of the :func:`held` section."""
    _STATE["signalled"] = True
    if _STATE["held"]:
        _STATE["pending"] = True
        return
    raise KeyboardInterrupt


def signalled() -> bool:
    """True once :func:`interrupt` has been called in this process."""
    return bool(_STATE["signalled"])


def check() -> None:
    """Raise KeyboardInterrupt if a signal came (even one whose exception was swallowed)."""
    if _STATE["signalled"]:
        raise KeyboardInterrupt


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Hold interrupts off for a short section; one that came meanwhile is raised at its end."""
    _STATE["held"] += 1
    try:
        yield
    finally:
        _STATE["held"] -= 1
        if not _STATE["held"] and _STATE["pending"]:
            _STATE["pending"] = False
            raise KeyboardInterrupt  # the signal outranks whatever else was raised


def reset() -> None:
    """Forget past signals (a long-lived process, e.g. a test, that handled one)."""
    _STATE.update(held=0, pending=False, signalled=False)
