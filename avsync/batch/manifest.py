"""Manifests: CSV / TSV / JSONL rows to :class:`BatchItem`; a wrong row is an item carrying
its error, never an exception (see :mod:`avsync.batch` for the format)."""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avsync.batch.commands import CommandSpec, commands
from avsync.errors import InputError


@dataclass
class BatchItem:
    """One unit of work.

    Attributes
    ----------
    id : str
        Unique within the batch; what ``--resume`` keys on.
    command : str
    inputs : list of str
        Paths, in the order the command takes them.
    output : str or None
    options : dict
        Raw option values (converted in the worker).
    source : str
        Where the item came from (``manifest.csv:12``), for messages.
    error : str or None
        A validation error: the item is recorded as failed without running.
    """

    id: str
    command: str
    inputs: list[str]
    output: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    error: str | None = None


_RESERVED = {"id", "command", "inputs", "output", "options"}


class _BadRow(Exception):
    """What is wrong with a row (becomes the item's ``error``)."""


def item_from_row(row: dict[str, Any], source: str, base: Path | None = None) -> BatchItem:
    """Validate one manifest row (a dict) into a :class:`BatchItem`.

    A row that is wrong yields an item whose ``error`` says why, never an exception.
    """
    row = {str(k).strip(): v for k, v in row.items() if k is not None and v not in (None, "")}
    command = str(row.get("command", "")).strip()
    ident = str(row["id"]).strip() if "id" in row else ""
    try:
        spec = _row_command(command)
        inputs = _row_inputs(row, spec)
        output = _row_output(row, spec)
        options = _row_options(row, spec)
    except _BadRow as e:
        guess = f"{command}:{row['output']}" if command and isinstance(row.get("output"), str) else source
        return BatchItem(ident or guess, command, [], None, {}, source, f"{source}: {e}")
    if not ident:
        ident = f"{command}:{output or inputs[0]}"
    return _resolved(BatchItem(ident, command, inputs, output, options, source), base)


def _row_command(command: str) -> CommandSpec:
    table = commands()
    if not command:
        raise _BadRow("no command (one of: " + ", ".join(sorted(table)) + ")")
    spec = table.get(command)
    if spec is None:
        raise _BadRow(f"unknown command {command!r} (one of: {', '.join(sorted(table))})")
    return spec


def _row_inputs(row: dict[str, Any], spec: CommandSpec) -> list[str]:
    named = [n for n in spec.inputs if n in row]
    if "inputs" in row and named:
        raise _BadRow(f"give the inputs either as 'inputs' or as {', '.join(spec.inputs)}, not both")
    if "inputs" in row:
        inputs = _listed_inputs(row["inputs"])
    else:
        inputs = [str(row[n]) for n in named]
        if named and len(named) < len(spec.inputs):
            missing = [n for n in spec.inputs if n not in row]
            raise _BadRow(f"{spec.name} needs {', '.join(spec.inputs)}; missing {', '.join(missing)}")
    if len(inputs) != len(spec.inputs):
        raise _BadRow(f"{spec.name} needs {len(spec.inputs)} input(s) ({', '.join(spec.inputs)}), "
                      f"got {len(inputs)}")
    return inputs


def _listed_inputs(raw: Any) -> list[str]:
    if isinstance(raw, str):
        raw = [s.strip() for s in raw.split(";") if s.strip()]
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise _BadRow("'inputs' must be a list of paths")
    return raw


def _row_output(row: dict[str, Any], spec: CommandSpec) -> str | None:
    output = row.get("output")
    if output is not None and not isinstance(output, str):
        raise _BadRow("'output' must be a path")
    if output is None and spec.output == "required":
        raise _BadRow(f"{spec.name} needs an output")
    return output


def _row_options(row: dict[str, Any], spec: CommandSpec) -> dict[str, Any]:
    options = row.get("options", {})
    if isinstance(options, str):
        try:
            options = json.loads(options)
        except json.JSONDecodeError as e:
            raise _BadRow(f"'options' is not a JSON object: {e.msg}") from None
    if not isinstance(options, dict):
        raise _BadRow("'options' must be a JSON object")
    options = dict(options)
    for k, v in row.items():
        if k not in _RESERVED and k not in spec.inputs:
            options[k] = v
    return options


def _resolved(item: BatchItem, base: Path | None) -> BatchItem:
    """``item`` with its paths (inputs, output, ``map``, ``plot``) taken relative to ``base``."""

    def resolve(p: str) -> str:
        q = Path(p).expanduser()
        return str(q if q.is_absolute() or base is None else base / q)

    item.inputs = [resolve(p) for p in item.inputs]
    for k in ("map", "plot"):
        if isinstance(item.options.get(k), str):
            item.options[k] = resolve(item.options[k])
    item.output = resolve(item.output) if item.output else None
    return item


def read_manifest(path: str | Path) -> list[BatchItem]:
    """Read a CSV or JSONL manifest.

    Parameters
    ----------
    path : str or Path
        ``.csv`` / ``.tsv`` / ``.jsonl`` / ``.ndjson``; other names are sniffed.

    Returns
    -------
    list of BatchItem
        One per row, in order; rows that are wrong carry an ``error``.

    Raises
    ------
    InputError
        The manifest itself cannot be read (missing, not text, no header).
    """
    p = Path(path)
    text = _read_text(p)
    base = p.resolve().parent
    suffix = p.suffix.lower()
    if _is_jsonl(text, suffix):
        items = _read_jsonl(text, p.name, base)
    else:
        items = _read_csv(text, p.name, base, "\t" if suffix == ".tsv" else ",")
    return dedupe(items)


def _read_text(p: Path) -> str:
    try:
        return p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"manifest {p} does not exist") from None
    except IsADirectoryError:
        raise InputError(f"manifest {p} is a directory") from None
    except UnicodeDecodeError:
        raise InputError(f"manifest {p} is not UTF-8 text") from None
    except OSError as e:
        raise InputError(f"cannot read manifest {p}: {e.strerror}") from None


def _is_jsonl(text: str, suffix: str) -> bool:
    """JSONL by name, or (a name that is not CSV / TSV) by its first line being an object."""
    first = next((ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")),
                 "")
    return suffix in (".jsonl", ".ndjson", ".json") or (suffix not in (".csv", ".tsv") and first.startswith("{"))


def _read_jsonl(text: str, name: str, base: Path) -> list[BatchItem]:
    items = []
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        src = f"{name}:{n}"
        try:
            row = json.loads(s)
        except json.JSONDecodeError as e:
            items.append(BatchItem(src, "", [], None, {}, src, f"{src}: not valid JSON ({e.msg})"))
            continue
        if not isinstance(row, dict):
            items.append(BatchItem(src, "", [], None, {}, src, f"{src}: a line must be a JSON object"))
            continue
        items.append(item_from_row(row, src, base))
    return items


def _read_csv(text: str, name: str, base: Path, delimiter: str) -> list[BatchItem]:
    lines = [(n, ln) for n, ln in enumerate(text.splitlines(), 1) if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        return []
    reader = csv.reader(io.StringIO("\n".join(ln for _, ln in lines)), delimiter=delimiter)
    rows = list(reader)
    header = [h.strip() for h in rows[0]]
    if "command" not in header:
        raise InputError(f"manifest {name}: the first row must be a header with a 'command' column "
                         f"(got: {', '.join(header) or 'nothing'})")
    items = []
    for (n, _), row in zip(lines[1:], rows[1:], strict=False):
        src = f"{name}:{n}"
        if len(row) > len(header):
            items.append(BatchItem(src, "", [], None, {}, src,
                                   f"{src}: {len(row)} cells but the header has {len(header)} columns"))
            continue
        items.append(item_from_row(dict(zip(header, (c.strip() for c in row), strict=False)), src, base))
    return items


def dedupe(items: list[BatchItem]) -> list[BatchItem]:
    """Mark items that repeat an earlier item's id or output as failed."""
    seen_id: dict[str, str] = {}
    seen_out: dict[str, str] = {}
    for it in items:
        if it.error:
            continue
        key = os.path.normpath(it.output) if it.output else None
        if key is not None and key in seen_out:
            it.error = f"{it.source}: output {it.output} is also written by {seen_out[key]}"
        elif it.id in seen_id:
            it.error = f"{it.source}: id {it.id!r} already used at {seen_id[it.id]}"
        if it.error:
            if it.id in seen_id:
                it.id = f"{it.id}@{it.source}"
            continue
        seen_id[it.id] = it.source
        if key is not None:
            seen_out[key] = it.source
    return items
