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
import sys
from collections.abc import Iterator
from typing import Any

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


def quiet_swallowed() -> None:
    """Keep a KeyboardInterrupt that Python itself swallows off stderr.

    A signal that lands while Python runs a callback whose exceptions it cannot propagate (a
    weakref's, a ``__del__``, a garbage-collection callback) makes :func:`interrupt`'s
    KeyboardInterrupt "unraisable": Python prints "Exception ignored in ..." and a traceback,
    which broke the one-line message of an interrupted batch (seen once in a fresh-clone run).
    The signal is already remembered (:func:`signalled`), so the command stops at its next check;
    this hook drops that report and hands every other unraisable exception to the hook before it.
    Called by the processes that install the signal handlers (the CLI, batch workers).
    """
    previous = sys.unraisablehook
    if getattr(previous, "_avsync_quiet", False):
        return

    def hook(unraisable: Any) -> None:
        if issubclass(unraisable.exc_type, KeyboardInterrupt):
            return
        previous(unraisable)

    hook._avsync_quiet = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook
