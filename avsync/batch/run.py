"""A batch run: what to skip, where records go, which executor runs the rest."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avsync.batch.commands import commands, execute
from avsync.batch.manifest import BatchItem
from avsync.batch.pool import run_pool
from avsync.batch.ray_executor import run_ray
from avsync.batch.resume import ResultsFile, load_results, resume_actions
from avsync.batch.safety import batch_lock, mark_collisions
from avsync.errors import InputError

Record = Callable[[dict[str, Any]], None]
Progress = Callable[[str, float, float | None], None]


@dataclass
class BatchSummary:
    """Counts of a finished (or interrupted) run."""

    ok: int = 0
    failed: int = 0
    skipped: int = 0
    total: int = 0
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        """0 when every item succeeded (or was skipped), 1 when some failed, 130 if interrupted."""
        return 130 if self.interrupted else (1 if self.failed else 0)


def run_batch(
    items: list[BatchItem],
    *,
    jobs: int = 1,
    results: str | Path | None = None,
    emit: Record | None = None,
    resume: bool = False,
    overwrite: bool = False,
    timeout: float | None = None,
    executor: str = "local",
    progress: Progress | None = None,
    manifest: str | Path | None = None,
) -> BatchSummary:
    """Run ``items`` and record one result per item.

    Parameters
    ----------
    items : list of BatchItem
    jobs : int
        Worker processes. 0 runs every item in this process (no isolation from crashes).
    results : path, optional
        JSONL file the records are appended to (flushed per item). Needed for ``resume``.
    emit : callable, optional
        Also called with every record (the CLI prints it when there is no results file).
    resume : bool
        Skip items recorded ok in ``results`` whose output exists; write again the missing
        side outputs of those, and run again those whose output is gone
        (:func:`avsync.batch.resume.resume_actions`).
    overwrite : bool
        Let commands replace existing outputs. Without it no output is ever replaced, not
        even one that appears while the item runs.
    timeout : float, optional
        Seconds one item may take; past it its worker is killed and the item fails.
    executor : {"local", "ray"}
        ``ray`` hands the items to Ray's scheduler (``RAY_ADDRESS`` or a local cluster).
    progress : callable, optional
        :class:`avsync.progress.Progress`; reports stage ``"items"``.
    manifest : path, optional
        The manifest the items come from (``results`` must not name it).

    Before anything runs, items that would write over another item's input or output fail
    (:func:`avsync.batch.safety.mark_collisions`), and the run takes a lock on every output
    folder and on ``results`` (:func:`avsync.batch.safety.batch_lock`): a second run on the
    same folder or results file refuses with ``OutputError``.

    Returns
    -------
    BatchSummary
        On Ctrl-C / SIGTERM, running items are stopped (commands write atomically, so no
        partial outputs remain), finished ones are recorded, and ``interrupted`` is set.
    """
    t0 = time.monotonic()
    _check_arguments(resume, results, executor, jobs)
    mark_collisions(items, results, manifest)
    with batch_lock(items, results):
        done = load_results(results, prefer_ok=True) if (resume and results is not None) else {}
        todo, skipped = resume_actions(items, done)
        summary = BatchSummary(skipped=skipped, total=len(items))
        sink = ResultsFile(results) if results is not None else None
        record = _recorder(summary, sink, emit, progress)
        tasks = [make_task(it, overwrite, **how) for it, how in todo]
        if progress is not None:
            progress("items", skipped, len(items))
        try:
            _run_tasks(tasks, jobs, record, timeout, executor)
        except KeyboardInterrupt:
            summary.interrupted = True
        finally:
            if sink is not None:
                sink.close()
            summary.seconds = round(time.monotonic() - t0, 2)
    return summary


def _check_arguments(resume: bool, results: str | Path | None, executor: str, jobs: int) -> None:
    if resume and results is None:
        raise InputError("--resume needs --results FILE (the record of what is done)")
    if executor not in ("local", "ray"):
        raise InputError(f"unknown executor {executor!r} (local or ray)")
    if executor == "ray" and importlib.util.find_spec("ray") is None:  # not imported here: see ray_executor
        raise InputError("ray is not installed: pip install 'avsync[ray]'")
    if jobs < 0:
        raise InputError("--jobs must be 0 or more")


def _recorder(summary: BatchSummary, sink: ResultsFile | None, emit: Record | None,
              progress: Progress | None) -> Record:
    """The callback every record goes through: counts, results file, ``emit``, progress."""
    finished = [summary.skipped]

    def record(rec: dict[str, Any]) -> None:
        if rec["status"] == "ok":
            summary.ok += 1
        else:
            summary.failed += 1
        if sink is not None:
            sink.write(rec)
        if emit is not None:
            emit(rec)
        finished[0] += 1
        if progress is not None:
            progress("items", finished[0], summary.total)

    return record


def make_task(it: BatchItem, overwrite: bool, **how: Any) -> dict[str, Any]:
    """What a worker is sent for item ``it``: the item as a dict, its runner and warm-up modules.

    ``how``: what :func:`avsync.batch.resume.resume_actions` says (``sides_only``,
    ``replace_recorded``)."""
    spec = commands().get(it.command)
    return {
        "id": it.id, "command": it.command, "inputs": list(it.inputs), "output": it.output,
        "options": dict(it.options), "source": it.source, "error": it.error, "overwrite": overwrite,
        "runner": spec.runner if spec else "", "warm": list(spec.warm) if spec else [], **how,
    }


def _run_tasks(tasks: list[dict[str, Any]], jobs: int, record: Record, timeout: float | None,
               executor: str) -> None:
    # Items that failed validation need no worker.
    for t in [t for t in tasks if t.get("error")]:
        record(execute(t))
    tasks = [t for t in tasks if not t.get("error")]
    if executor == "ray":
        run_ray(tasks, jobs, record, timeout)
    elif jobs == 0:
        for t in tasks:
            record(execute(t))
    else:
        run_pool(tasks, jobs, record, timeout)
