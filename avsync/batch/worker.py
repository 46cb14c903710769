"""Inside a worker process: import the heavy modules once, then run the tasks the parent sends.

Messages to the parent: ``("ready", pid)`` once, then per task ``("done", record, stopping)``
or ``("interrupted", id)``. The parent sends a task dict, or None to stop.

Signals (Ctrl-C reaches the whole process group; the parent sends SIGTERM on interrupt): an
idle worker only notes the stop; a busy one interrupts its item (commands write atomically,
so no partial output remains) unless the item's output was already renamed into place, in
which case the item finishes, is reported with ``stopping`` true, and the worker exits.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
from typing import Any

from avsync import interrupts
from avsync.batch.commands import execute

_STATE: dict[str, Any] = {"busy": False, "stop": False, "output": None, "before": None}


def stat_key(path: str | None) -> tuple[int, ...] | None:
    """What identifies the file at ``path`` (None when there is none)."""
    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


def _on_signal(signum: int, frame: Any) -> None:
    _STATE["stop"] = True
    if not _STATE["busy"]:
        return
    now = stat_key(_STATE["output"])
    if now is not None and now != _STATE["before"]:
        # The item's output was already renamed into place (commands write it last but for
        # the map and plot): let the item finish and be recorded rather than leave a
        # finished file that the results file does not name. The parent then stops.
        return
    _STATE["busy"] = False  # interrupt the running item once
    interrupts.interrupt()  # now, or once its output's temp file is created


def worker_main(conn: Any, warm: list[str], threads: int, quiet: bool) -> None:
    """Worker loop: import heavy modules once, then run tasks sent through ``conn``."""
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    interrupts.quiet_swallowed()
    _prepare(warm, threads, quiet)
    try:
        conn.send(("ready", os.getpid()))
        _serve(conn)
    except (KeyboardInterrupt, BrokenPipeError, EOFError, OSError):
        pass


def _prepare(warm: list[str], threads: int, quiet: bool) -> None:
    """Thread limits, quiet logs, and the modules every item needs imported once."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if quiet:
        # Libraries that print (C-level logs, stray prints) must not corrupt the JSONL on stdout
        # nor the progress bar on stderr: every error reaches the parent in the record.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.close(devnull)
    for mod in warm:
        # Import failures are reported by the item that needs the module.
        with contextlib.suppress(Exception):
            importlib.import_module(mod)
    if "torch" in sys.modules:
        with contextlib.suppress(Exception):
            sys.modules["torch"].set_num_threads(threads)


def _serve(conn: Any) -> None:
    while not _STATE["stop"]:
        try:
            task = conn.recv()
        except EOFError:
            break
        if task is None or not _run_one(conn, task):
            break


def _run_one(conn: Any, task: dict[str, Any]) -> bool:
    """Run one task and report it; False when a signal interrupted it."""
    _STATE["output"] = task.get("output")
    _STATE["before"] = stat_key(_STATE["output"])
    _STATE["busy"] = True
    try:
        rec = execute(task)
    except KeyboardInterrupt:
        _STATE["busy"] = False
        conn.send(("interrupted", task["id"]))
        return False
    _STATE["busy"] = False
    # The third field: a signal came after the output was in place and let the item
    # finish; the parent stops the run as for any other signal.
    conn.send(("done", rec, _STATE["stop"]))
    return True
