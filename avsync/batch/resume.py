"""The results file: one JSON line per finished item, appended and fsynced at once, and what
it says is done (what ``--resume`` skips)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from avsync.batch.manifest import BatchItem
from avsync.errors import OutputError


def load_results(path: str | Path, prefer_ok: bool = False) -> dict[str, dict[str, Any]]:
    """Last record per id in a results file (lines that do not parse are ignored).

    ``prefer_ok``: the last ``ok`` record of an id wins over later failures (a run that found
    the output already there, e.g. written by a concurrent run, does not undo it)."""
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
            if not (isinstance(rec, dict) and "id" in rec):
                continue
            key = str(rec["id"])
            if not (prefer_ok and rec.get("status") != "ok" and out.get(key, {}).get("status") == "ok"):
                out[key] = rec
    return out


def plan_resume(items: list[BatchItem], done: dict[str, dict[str, Any]]) -> tuple[list[BatchItem], int]:
    """Items still to run, and how many are skipped because they are recorded ok.

    An item is skipped when its id is recorded with ``status: ok`` for the same output and
    that output exists (items without an output only need the ok record). See
    :func:`resume_actions` for how the rest are run.
    """
    todo, skipped = resume_actions(items, done)
    return [it for it, _ in todo], skipped


SIDES = ("map", "plot")


def resume_actions(items: list[BatchItem],
                   done: dict[str, dict[str, Any]]) -> tuple[list[tuple[BatchItem, dict[str, Any]]], int]:
    """Items still to run, each with how (extra task fields), and how many are skipped.

    An item is judged by its primary output (the video; for detect-offset the corrected copy),
    for an id recorded ``ok`` with that output:

    - it exists and so do the item's ``map`` / ``plot``: skipped;
    - it exists, a side output is missing: only the missing ones are written again
      (``{"sides_only": [...]}``; the video is kept, never re-encoded);
    - it is missing (deleted since): the item runs again, and may replace the side outputs
      that same ok record says it wrote (``{"replace_recorded": True}``), never other files.

    Anything else (no ok record, another output, a validation error) runs as new (``{}``).
    """
    todo: list[tuple[BatchItem, dict[str, Any]]] = []
    skipped = 0
    for it in items:
        rec = done.get(it.id)
        if not (rec and rec.get("status") == "ok" and it.error is None and rec.get("output") == it.output):
            todo.append((it, {}))
            continue
        sides = {k: it.options[k] for k in SIDES if isinstance(it.options.get(k), str) and it.options[k]}
        if it.output is None or Path(it.output).exists():
            missing = [k for k, p in sides.items() if not os.path.lexists(p)]
            if missing:
                todo.append((it, {"sides_only": missing}))
            else:
                skipped += 1
            continue
        ours = _recorded_sides(rec)
        present = {k: p for k, p in sides.items() if os.path.lexists(p)}
        replace = bool(present) and all(ours.get(k) == p for k, p in present.items())
        todo.append((it, {"replace_recorded": True} if replace else {}))
    return todo, skipped


def _recorded_sides(rec: dict[str, Any]) -> dict[str, str]:
    """The side outputs an ok record says it wrote (``map`` / ``plot`` of its result; records
    written before the JSON vocabulary named them ``map_path`` / ``plot_path``)."""
    res = rec.get("result")
    if not isinstance(res, dict):
        return {}
    out: dict[str, str] = {}
    for k in SIDES:
        v = res.get(k, res.get(f"{k}_path"))
        if isinstance(v, str):
            out[k] = v
    return out


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
