"""The Ray executor: tasks handed to Ray's scheduler (``RAY_ADDRESS`` or a local cluster).

What travels to the workers is the task dict (paths and options, never media): every worker
must see the same storage, at the same paths, as the machine that runs ``avsync batch``.
Records come back as they finish and go through the same ``record`` callback as the local
pool (:func:`avsync.batch.pool.run_pool`), so the results file, resume and failure records are
the same.

A worker that dies mid-item (killed, out of memory, its node lost) leaves no partial output:
the temporary files it left beside the item's outputs are removed
(:func:`avsync.batch.pool.remove_partials`) and the item runs once more; if it dies again the
item is recorded as failed. ``timeout`` is enforced inside the worker (an alarm), so time an
item spends queued does not count.

``ray`` is imported only when this executor runs, so the package imports without it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from avsync.batch.commands import execute
from avsync.batch.pool import remove_partials
from avsync.batch.worker import stat_key
from avsync.errors import AvsyncError

Record = Callable[[dict], None]

RETRIES = 1  # extra attempts for an item whose worker died
GRACE = 10.0  # seconds running items get to stop after Ctrl-C / SIGTERM
OBJECT_STORE_BYTES = 100 * 1024**2  # a local cluster only passes small task dicts and records
CONNECT_TIMEOUT = 5.0  # seconds to reach RAY_ADDRESS before giving up


def run_ray(tasks: list[dict[str, Any]], jobs: int, record: Record, timeout: float | None) -> None:
    """Run ``tasks`` on Ray, calling ``record`` with every record.

    Connects to ``RAY_ADDRESS`` when it is set (``jobs`` is then ignored: the cluster's CPUs
    decide), reuses Ray when this process already initialised it, and otherwise starts a
    local cluster bound to 127.0.0.1 with ``jobs`` CPUs, shut down at the end.

    Raises
    ------
    KeyboardInterrupt
        Ctrl-C / SIGTERM: running items are cancelled (their temporary files removed),
        items that still finish are recorded.
    """
    if not tasks:
        return
    # Ray's driver, once it prints a worker's log line, replaces builtins.print for the whole
    # process (for its progress bars) unless told not to; avsync's callers keep their print.
    os.environ.setdefault("RAY_TQDM_PATCH_PRINT", "0")
    # Ray prints to stdout (worker deaths, from a thread of its own and at shutdown): only the
    # records may go there.
    with _stdout_for_this_thread():
        with contextlib.redirect_stdout(sys.stderr):
            ray, started = _connect(jobs)
        try:
            with _sigterm_as_interrupt():  # after ray.init, which installs a SIGTERM handler of its own
                _RayRun(ray, record, timeout).serve(tasks)
        finally:
            if started:
                with contextlib.redirect_stdout(sys.stderr):
                    ray.shutdown()


def _connect(jobs: int) -> tuple[Any, bool]:
    """Import and initialise Ray; the module, and whether it was initialised here."""
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        return sys.modules["ray"], False
    address = os.environ.get("RAY_ADDRESS", "")
    host, port = _host_port(address)
    if address and port is not None:
        _check_reachable(address, host, port)
    if not address or host in LOOPBACK:
        # Read by Ray at import: keep a cluster on this machine on loopback (Ray otherwise
        # swaps 127.0.0.1 for this machine's reachable address, where nothing listens).
        # Without effect when this process imported ray already.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if not address:
        os.environ.setdefault("RAY_AUTH_MODE", "token")  # Ray's default for a local cluster, stated: no warning
    import ray

    kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if not address:
        kw.update(address=None, _node_ip_address="127.0.0.1", num_cpus=max(1, jobs),
                  object_store_memory=OBJECT_STORE_BYTES)
    try:
        ray.init(**kw)
    except Exception as e:  # noqa: BLE001 - Ray raises many kinds; the user gets one line
        where = f"connect to the Ray cluster at RAY_ADDRESS={address}" if address else "start a local Ray cluster"
        first = " ".join(str(e).split("\n")[0].split())
        raise AvsyncError(f"cannot {where}: {type(e).__name__}: {first}"[:400]) from None
    return ray, True


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _host_port(address: str) -> tuple[str, int | None]:
    """``host`` and ``port`` of a ``RAY_ADDRESS`` (``[ray://]host:port``); port None for
    ``auto`` and other forms."""
    rest = address.split("://", 1)[-1]
    host, _, port = rest.rpartition(":")
    return (host.strip("[]"), int(port)) if host and port.isdigit() else ("", None)


def _check_reachable(address: str, host: str, port: int) -> None:
    """Fail in a few seconds, in one line, when nothing listens at ``RAY_ADDRESS`` (Ray itself
    retries for minutes)."""
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT).close()
    except OSError as e:
        raise AvsyncError(f"cannot reach the Ray cluster at RAY_ADDRESS={address}: "
                          f"{e.strerror or type(e).__name__}") from None


class _ThreadStdout:
    """``sys.stdout`` while Ray runs: the thread running the batch writes to the real stdout
    (the JSON lines of ``avsync batch`` without ``--results``); any other thread (Ray's driver
    prints worker deaths to stdout from a thread of its own) writes to stderr."""

    def __init__(self, out: Any, err: Any) -> None:
        self.out, self.err, self.owner = out, err, threading.current_thread()

    def _sink(self) -> Any:
        return self.out if threading.current_thread() is self.owner else self.err

    def write(self, s: str) -> int:
        return int(self._sink().write(s))

    def flush(self) -> None:
        self._sink().flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.out, name)


@contextlib.contextmanager
def _stdout_for_this_thread() -> Iterator[None]:
    saved = sys.stdout
    sys.stdout = _ThreadStdout(saved, sys.stderr)
    try:
        yield
    finally:
        sys.stdout = saved


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt while Ray runs the items (as Ctrl-C does)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


class _RayRun:
    """The driver's side: submit, collect, retry items whose worker died, stop on interrupt."""

    def __init__(self, ray: Any, record: Record, timeout: float | None) -> None:
        self.ray = ray
        self.record = record
        self.timeout = timeout
        self.remote = ray.remote(num_cpus=1, max_retries=0)(run_item)
        self.live: dict[Any, tuple[dict[str, Any], int, float]] = {}  # ref -> task, attempt, submitted

    def submit(self, task: dict[str, Any], attempt: int) -> None:
        self.live[self.remote.remote(task, self.timeout)] = (task, attempt, time.time())

    def serve(self, tasks: list[dict[str, Any]]) -> None:
        for t in tasks:
            self.submit(t, 1)
        try:
            while self.live:
                ready, _ = self.ray.wait(list(self.live), num_returns=1, timeout=1.0)
                for ref in ready:
                    self.finish(ref)
        except KeyboardInterrupt:
            self.interrupt()
            raise

    def finish(self, ref: Any) -> None:
        """Record what ``ref`` gave; resubmit (once) an item whose worker died."""
        task, attempt, since = self.live.pop(ref)
        try:
            rec = self.ray.get(ref)
        except self.ray.exceptions.TaskCancelledError:  # (also as a RayTaskError) only by interrupt()
            return
        except self.ray.exceptions.RayTaskError as e:  # raised inside the task, outside execute's net
            rec = failed(task, f"the Ray task failed: {type(e.cause).__name__}: {e.cause}")
        except self.ray.exceptions.RayError as e:  # the worker (or its node) died
            remove_partials(task, since)
            if attempt <= RETRIES:
                self.submit(task, attempt + 1)
                return
            rec = failed(task, f"the Ray worker died while running this item ({type(e).__name__}; "
                               f"tried {attempt} times)")
        self.record(rec)

    def interrupt(self) -> None:
        """Cancel every item (running ones get KeyboardInterrupt; commands write atomically),
        record those that still finish, then kill what has not stopped after ``GRACE`` s."""
        old = signal.getsignal(signal.SIGINT)
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut this short
        try:
            for ref in self.live:
                self.ray.cancel(ref, force=False)
            deadline = time.monotonic() + GRACE
            while self.live and time.monotonic() < deadline:
                ready, _ = self.ray.wait(list(self.live), num_returns=len(self.live), timeout=0.5)
                for ref in ready:
                    self._settle(ref)
            for ref, (task, _, since) in self.live.items():
                with contextlib.suppress(Exception):
                    self.ray.cancel(ref, force=True)
                remove_partials(task, since)
            self.live.clear()
        finally:
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(signal.SIGINT, old)

    def _settle(self, ref: Any) -> None:
        task, _, since = self.live.pop(ref)
        try:
            self.record(self.ray.get(ref))
        except Exception:  # noqa: BLE001 - cancelled or died: nothing to record, resume redoes it
            remove_partials(task, since)


def failed(task: dict[str, Any], why: str) -> dict[str, Any]:
    """The record of ``task`` failed for ``why`` outside the command (as the local pool writes it)."""
    rec = execute({**task, "error": why})
    rec["error_type"] = "WorkerError"
    return rec


class ItemTimeout(BaseException):
    """Raised in a Ray worker when an item overruns ``timeout`` (not an Exception, so no
    handler inside the command swallows it; temporary outputs are removed on the way out)."""


def run_item(task: dict[str, Any], timeout: float | None) -> dict[str, Any]:
    """In a Ray worker: run one task into one record, cut at ``timeout`` seconds.

    A stop (the timeout, or Ray's cancel, which arrives as SIGINT) interrupts the item unless
    its output was already renamed into place: then the item finishes and is recorded, rather
    than leave a finished file that the results file does not name.
    """
    before = stat_key(task.get("output"))

    def committed() -> bool:
        now = stat_key(task.get("output"))
        return now is not None and now != before

    def on_alarm(signum: int, frame: Any) -> None:
        if not committed():
            raise ItemTimeout

    def on_int(signum: int, frame: Any) -> None:
        if not committed():
            raise KeyboardInterrupt

    main = threading.current_thread() is threading.main_thread()
    old = (signal.signal(signal.SIGALRM, on_alarm), signal.signal(signal.SIGINT, on_int)) if main else None
    rec: dict[str, Any] | None = None
    try:
        try:
            if main and timeout:
                signal.setitimer(signal.ITIMER_REAL, timeout)
            rec = execute(task)
        finally:
            if old is not None:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, old[0])
                signal.signal(signal.SIGINT, old[1])
    except ItemTimeout:
        pass
    return rec if rec is not None else failed(task, f"timed out after {timeout:g} s")
