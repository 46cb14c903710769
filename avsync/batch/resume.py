"""The results file: one JSON line per finished item, appended and fsynced at once, and what
it says is done (what ``--resume`` skips)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from avsync.batch.manifest import BatchItem
from avsync.errors import OutputError


def load_results(path: str | Path) -> dict[str, dict[str, Any]]:
    """Last record per id in a results file (lines that do not parse are ignored)."""
    out: dict[str, dict[str, Any]] = {}
    p = Path(path)
    if not p.exists():
        return out
    with open(p, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and "id" in rec:
                out[str(rec["id"])] = rec
    return out


def plan_resume(items: list[BatchItem], done: dict[str, dict[str, Any]]) -> tuple[list[BatchItem], int]:
    """Items still to run, and how many are skipped because they are recorded ok.

    An item is skipped when its id is recorded with ``status: ok`` for the same output and
    that output exists (items without an output only need the ok record).
    """
    todo, skipped = [], 0
    for it in items:
        rec = done.get(it.id)
        if (rec and rec.get("status") == "ok" and it.error is None and rec.get("output") == it.output
                and (it.output is None or Path(it.output).exists())):
            skipped += 1
        else:
            todo.append(it)
    return todo, skipped


class ResultsFile:
    """Append-only JSONL file, flushed and fsynced after every record.

    Appending (rather than writing a temp file and renaming it) is what keeps every finished
    item on disk when a run is killed; a line cut short by a kill is ignored by
    :func:`load_results`, and the next run starts a fresh line after it.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.parent and not self.path.parent.exists():
            raise OutputError(f"directory {self.path.parent} of the results file does not exist")
        try:
            self.f = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - closed by close()
        except OSError as e:
            raise OutputError(f"cannot write results file {self.path}: {e.strerror}") from None
        self.f.seek(0, os.SEEK_END)
        if self.f.tell() > 0:  # a run killed mid-line leaves no newline: start a fresh line
            self.f.seek(self.f.tell() - 1)
            last = self.f.read(1)
            self.f.seek(0, os.SEEK_END)
            if last != "\n":
                self.f.write("\n")

    def write(self, rec: dict[str, Any]) -> None:
        self.f.write(json.dumps(rec, default=str) + "\n")
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self) -> None:
        self.f.close()
