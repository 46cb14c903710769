"""The local executor: a pool of worker processes (spawned; see :mod:`avsync.batch.worker`).

The parent hands each idle worker the next task, records what comes back, replaces a worker
that dies or overruns the timeout (its item fails), and on Ctrl-C / SIGTERM stops every
worker, recording the items that still finish (:func:`run_pool`).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import time
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from avsync.batch.commands import execute
from avsync.batch.worker import worker_main
from avsync.errors import AvsyncError

Record = Callable[[dict], None]


def remove_partials(task: dict[str, Any], since: float) -> list[str]:
    """Delete temporary files a killed command left beside its outputs.

    Commands write ``out`` through a temp file ``.<stem>.<random><suffix>`` in the same
    directory, renamed at the end. A worker killed without running its clean-up (SIGKILL, a
    crash) can leave one; only such names, modified at or after ``since`` (epoch seconds),
    are removed.
    """
    removed = []
    outs = [task.get("output")] + [task.get("options", {}).get(k) for k in ("map", "plot")]
    for o in outs:
        if not isinstance(o, str) or not o:
            continue
        p = Path(o)
        try:
            for q in p.parent.glob(f".{p.stem}.*{p.suffix}"):
                if q.is_file() and q.stat().st_mtime >= since - 1:
                    q.unlink()
                    removed.append(str(q))
        except OSError:
            continue
    return removed


class _Worker:
    """The parent's handle on one worker process."""

    def __init__(self, ctx: Any, warm: list[str], threads: int, quiet: bool) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=worker_main, args=(child, warm, threads, quiet), daemon=True)
        self.proc.start()
        child.close()
        self.ready = False
        self.task: dict[str, Any] | None = None
        self.started = 0.0  # monotonic
        self.started_wall = 0.0  # epoch, for remove_partials

    def assign(self, task: dict[str, Any]) -> None:
        self.task = task
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.conn.send(task)

    def receive(self) -> tuple | None:
        """The next message if one is waiting; ``("dead", None)`` when the pipe is broken."""
        try:
            if self.conn.poll():
                return self.conn.recv()
        except (EOFError, OSError):
            return ("dead", None)
        return None

    def exit_reason(self) -> str:
        code = self.proc.exitcode
        return f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"

    def join_or_kill(self, timeout: float) -> None:
        self.proc.join(timeout)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(2)

    def stop(self, timeout: float = 5.0) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.conn.send(None)
        self.join_or_kill(timeout)
        self.conn.close()


def run_pool(tasks: list[dict[str, Any]], jobs: int, record: Record, timeout: float | None) -> None:
    """Run ``tasks`` on ``jobs`` worker processes, calling ``record`` with every record.

    Raises
    ------
    KeyboardInterrupt
        Ctrl-C / SIGTERM (or a worker told to stop by one): the workers are stopped first,
        items that still finish are recorded and no partial outputs remain.
    AvsyncError
        Worker processes keep dying while they start.
    """
    if not tasks:
        return
    pool = _Pool(tasks, jobs, record, timeout)
    # While the pool runs, Ctrl-C / SIGTERM only raise a flag, checked between messages, so the
    # parent is never interrupted half-way through a pipe read or a results line.
    stop: list[int] = []
    old_handlers = _defer_signals(stop)
    pool.start()
    try:
        pool.serve(stop)
    except KeyboardInterrupt:
        _interrupt(pool.workers, record)
        raise
    finally:
        _restore_signals(old_handlers)
    for w in pool.workers:
        w.stop()


def _defer_signals(stop: list[int]) -> dict[signal.Signals, Any]:
    """Make SIGINT and SIGTERM append to ``stop``; the handlers they had."""
    old_handlers: dict[signal.Signals, Any] = {}
    for s in (signal.SIGINT, signal.SIGTERM):
        try:
            old_handlers[s] = signal.signal(s, lambda signum, frame: stop.append(signum))
        except ValueError:  # not the main thread: keep KeyboardInterrupt semantics
            break
    return old_handlers


def _restore_signals(old: dict[signal.Signals, Any]) -> None:
    for s, h in old.items():
        signal.signal(s, h)


class _Pool:
    """The parent's side of the workers: dispatch, messages, crashes, timeouts."""

    def __init__(self, tasks: list[dict[str, Any]], jobs: int, record: Record, timeout: float | None) -> None:
        self.ctx = multiprocessing.get_context("spawn")
        self.size = max(1, min(jobs, len(tasks)))
        self.threads = max(1, (os.cpu_count() or 1) // self.size)
        self.warm = sorted({m for t in tasks for m in t["warm"]})
        self.quiet = not os.environ.get("AVSYNC_DEBUG")
        self.pending = deque(tasks)
        self.record = record
        self.timeout = timeout
        self.workers: list[_Worker] = []
        self.failed_starts = 0

    def spawn(self) -> _Worker:
        return _Worker(self.ctx, self.warm, self.threads, self.quiet)

    def start(self) -> None:
        self.workers = [self.spawn() for _ in range(self.size)]

    def serve(self, stop: list[int]) -> None:
        """Until every task is recorded; KeyboardInterrupt as soon as ``stop`` is set."""
        while self.pending or any(w.task is not None for w in self.workers):
            if stop:
                raise KeyboardInterrupt
            self.dispatch()
            wait_for = self.wait_time()
            wait([w.conn for w in self.workers] + [w.proc.sentinel for w in self.workers], timeout=wait_for)
            for i, w in enumerate(self.workers):
                self.handle(i, w, w.receive() or ())

    def dispatch(self) -> None:
        for w in self.workers:
            if w.ready and w.task is None and self.pending:
                w.assign(self.pending.popleft())

    def wait_time(self) -> float:
        """Seconds to wait for messages: a quarter second, or until the next timeout is due."""
        wait_for = 0.25
        if self.timeout:
            busy = [w.started + self.timeout - time.monotonic() for w in self.workers if w.task is not None]
            if busy:
                wait_for = max(0.01, min(wait_for, min(busy)))
        return wait_for

    def handle(self, i: int, w: _Worker, msg: tuple) -> None:
        """Act on worker ``i``'s message (``()``: none came), or on its death or timeout."""
        kind = msg[0] if msg else None
        if kind == "ready":
            w.ready = True
        elif kind == "done":
            w.task = None
            self.record(msg[1])
            if msg[2]:
                raise KeyboardInterrupt  # the worker finished its item, then obeys the signal
        elif kind == "interrupted":
            raise KeyboardInterrupt  # a worker was told to stop by a signal
        elif kind == "dead" or not w.proc.is_alive():
            self.died(i, w)
        elif self.timeout and w.task is not None and time.monotonic() - w.started > self.timeout:
            self.timed_out(i, w)

    def died(self, i: int, w: _Worker) -> None:
        w.proc.join(1)
        if not w.ready:
            self.failed_starts += 1
            if self.failed_starts > 3:
                raise AvsyncError("worker processes die while starting "
                                  f"(exit code {w.proc.exitcode}); set AVSYNC_DEBUG=1 to see why")
        self.replace(i, w, f"the worker process died ({w.exit_reason()}) while running this item")

    def timed_out(self, i: int, w: _Worker) -> None:
        w.proc.terminate()  # SIGTERM: the command cleans up its temporary output
        w.join_or_kill(5)
        self.replace(i, w, f"timed out after {self.timeout:g} s")

    def replace(self, i: int, w: _Worker, why: str) -> None:
        """Record worker ``i``'s item (if any) as failed for ``why``; start a new worker."""
        t = w.task
        w.task = None
        if t is not None:
            remove_partials(t, w.started_wall)
            rec = execute({**t, "error": why})
            rec["error_type"] = "WorkerError"
            self.record(rec)
        w.conn.close()
        self.workers[i] = self.spawn()


def _interrupt(workers: list[_Worker], record: Record, grace: float = 10.0) -> None:
    """Stop every worker; record items that still finish; no partial outputs remain.

    Busy workers are waited for together (up to ``grace`` seconds in all): one that is slow
    to stop must not use up the time in which another reports the item it just finished.
    Idle workers are sent the stop message, as the signal alone does not wake them.
    """
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in old:
        signal.signal(s, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
    try:
        _tell_to_stop(workers)
        deadline = time.monotonic() + grace
        _collect([w for w in workers if w.task is not None], record, deadline)
        for w in workers:
            w.join_or_kill(max(0.1, deadline - time.monotonic()))
            if w.task is not None:
                remove_partials(w.task, w.started_wall)
            w.conn.close()
    finally:
        _restore_signals(old)


def _tell_to_stop(workers: list[_Worker]) -> None:
    """SIGTERM to every live worker, and the stop message to idle ones."""
    for w in workers:
        if w.proc.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(w.proc.pid, signal.SIGTERM)
        if w.task is None:
            with contextlib.suppress(OSError, ValueError):
                w.conn.send(None)


def _collect(busy: list[_Worker], record: Record, deadline: float) -> None:
    """Until ``deadline``, record what the ``busy`` workers report until each has answered."""
    while busy and time.monotonic() < deadline:
        wait([w.conn for w in busy] + [w.proc.sentinel for w in busy],
             timeout=max(0.0, deadline - time.monotonic()))
        for w in list(busy):
            if _settled(w, record):
                busy.remove(w)


def _settled(w: _Worker, record: Record) -> bool:
    """Take worker ``w``'s last word after a stop: True once it finished, stopped or died."""
    msg: Any  # a message tuple, ("dead", None), or None (nothing yet)
    try:
        msg = w.conn.recv() if w.conn.poll() else (None if w.proc.is_alive() else ("dead", None))
    except Exception:  # noqa: BLE001 - a dead or half-read pipe: give up on this worker
        msg = ("dead", None)
    if msg is None:
        return False
    if msg[0] == "done":
        record(msg[1])
        w.task = None
    elif msg[0] == "interrupted":
        w.task = None
    return w.task is None or msg[0] == "dead"
