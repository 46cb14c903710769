"""Batch runs: many files, one JSON line each, resumable, failure-tolerant.

A batch is a list of :class:`BatchItem` (one command on its inputs, writing one output) read
from a manifest (:func:`read_manifest`) or built by pairing files by name
(:func:`pair_by_name`). :func:`run_batch` runs them on a pool of worker processes, each of
which imports the heavy libraries (torch, mediapipe) once and keeps whatever models the
library caches loaded for every later item. Every finished item yields one record (a dict,
one JSON line) that is appended and flushed to the results file at once, so an interrupted
run keeps what it finished and ``resume=True`` skips it next time.

Manifest format
---------------
CSV (header row) or JSONL (one object a line); ``#`` starts a comment line. Fields:

``command``
    ``align``, ``detect-offset`` or ``retarget``.
``inputs``
    A JSON list, or in CSV a ``;``-separated cell; or one field per input named as the
    command names them: ``video``, ``audio`` (align), ``clip`` (detect-offset), ``dance``,
    ``music`` (retarget).
``output``
    The file to write (required for align and retarget; for detect-offset, a corrected copy).
``id``
    Optional; default ``"<command>:<output or first input>"``. Resume keys on it.
``options``
    Optional JSON object of command options. Any other field is an option too (an empty CSV
    cell means "not set"). ``map``, ``plot`` (align, retarget) and ``check`` (detect-offset)
    are accepted besides the fields of the command's options dataclass.

Relative paths are taken relative to the manifest's directory.

Results
-------
One record per item: ``id``, ``command``, ``inputs``, ``output``, ``status`` (``ok`` or
``error``), ``error`` (one line, or None), ``error_type``, ``result`` (the command's JSON
summary, long arrays left out), ``seconds``, ``source`` (manifest line).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import importlib
import io
import json
import os
import signal
import sys
import time
import traceback
import typing
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avsync.errors import AvsyncError, InputError, OutputError

VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mxf", ".mts", ".ts", ".mpg", ".mpeg")


# --------------------------------------------------------------------------- commands


@dataclass(frozen=True)
class CommandSpec:
    """How the batch runs one command.

    Attributes
    ----------
    name : str
        The command name used in manifests.
    inputs : tuple of str
        Names of its inputs, in order (``("video", "audio")``).
    output : str
        ``"required"`` or ``"optional"``.
    runner : str
        ``"module:function"``, imported in the worker and called as
        ``fn(inputs: list[Path], output: Path | None, options: dict, overwrite: bool) -> dict``.
        It raises :class:`~avsync.errors.AvsyncError` for a user-facing failure.
    warm : tuple of str
        Modules a worker imports once at start-up (torch, mediapipe, the command's module).
    """

    name: str
    inputs: tuple[str, ...]
    output: str
    runner: str
    warm: tuple[str, ...] = ()


_COMMANDS: dict[str, CommandSpec] = {}


def register_command(spec: CommandSpec) -> None:
    """Add (or replace) a command in the dispatch table."""
    _COMMANDS[spec.name] = spec


def commands() -> dict[str, CommandSpec]:
    """The dispatch table: command name to :class:`CommandSpec`."""
    return dict(_COMMANDS)


register_command(CommandSpec("align", ("video", "audio"), "required", "avsync.batch:run_align",
                             ("avsync.align",)))
register_command(CommandSpec("detect-offset", ("clip",), "optional", "avsync.batch:run_detect_offset",
                             ("avsync.offset",)))
register_command(CommandSpec("retarget", ("dance", "music"), "required", "avsync.batch:run_retarget",
                             ("avsync.retarget",)))


def build_options(cls: type, options: dict[str, Any], command: str, extra: Iterable[str] = ()) -> tuple[
        Any, dict[str, Any]]:
    """Build a frozen options dataclass from manifest values.

    Strings (from CSV) are converted to the field's type (bool, int, float, str, Literal,
    tuples split on ``,``). Keys may use ``-`` or ``_``.

    Parameters
    ----------
    cls : type
        The options dataclass (``AlignOptions``, ...).
    options : dict
        Raw values from the manifest row.
    command : str
        For error messages.
    extra : iterable of str
        Keys handled by the adapter rather than the dataclass; returned separately.

    Returns
    -------
    (cls instance, dict)
        The options, and the extra keys' raw values.

    Raises
    ------
    InputError
        An unknown key or a value of the wrong type.
    """
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    extra = set(extra)
    kw: dict[str, Any] = {}
    rest: dict[str, Any] = {}
    for key, value in options.items():
        k = key.replace("-", "_")
        if k in extra:
            rest[k] = value
            continue
        if k not in names:
            valid = ", ".join(sorted(set(names) | extra))
            raise InputError(f"unknown option {key!r} for {command} (options: {valid})")
        kw[k] = _coerce(value, hints.get(k, Any), key)
    try:
        return cls(**kw), rest
    except (TypeError, ValueError) as e:
        raise InputError(f"invalid options for {command}: {e}") from None


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union or type(tp).__name__ == "UnionType":
        if type(None) in args and (value is None or (isinstance(value, str)
                                                      and value.lower() in ("none", "null"))):
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except InputError as e:
                errors.append(str(e))
        raise InputError(errors[0] if errors else f"option {key!r}: bad value {value!r}")
    if origin is typing.Literal:
        for a in args:
            if value == a or (isinstance(value, str) and str(a) == value):
                return a
        raise InputError(f"option {key!r} must be one of {', '.join(map(str, args))}, not {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
            return False
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise InputError(f"option {key!r} must be true or false, not {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise InputError(f"option {key!r} must be a number, not {value!r}")
        try:
            v = tp(value) if tp is float or not isinstance(value, float) else value
        except (TypeError, ValueError):
            raise InputError(f"option {key!r} must be {'an integer' if tp is int else 'a number'}, "
                             f"not {value!r}") from None
        if tp is int and (isinstance(v, float) and not float(v).is_integer()):
            raise InputError(f"option {key!r} must be an integer, not {value!r}")
        return int(v) if tp is int else float(v)
    if tp is str:
        return str(value)
    if origin in (tuple, list):
        items = value.split(",") if isinstance(value, str) else list(value)
        sub = args[0] if args else Any
        out = [_coerce(x.strip() if isinstance(x, str) else x, sub, key) for x in items]
        return tuple(out) if origin is tuple else out
    if tp is Path:
        return Path(value)
    return value


def _set_overwrite(opts: Any, overwrite: bool) -> Any:
    if any(f.name == "overwrite" for f in dataclasses.fields(opts)):
        return dataclasses.replace(opts, overwrite=overwrite)
    return opts


def _to_json(res: Any) -> dict:
    return res.to_json() if hasattr(res, "to_json") else {"result": res}


def _path_or_none(v: Any) -> Path | None:
    return None if v in (None, "") else Path(v)


def run_align(inputs: list[Path], output: Path | None, options: dict, overwrite: bool) -> dict:
    """Batch adapter for :func:`avsync.align.align` (extra options: ``map``, ``plot``)."""
    from avsync.align import AlignOptions, align

    opts, extra = build_options(AlignOptions, options, "align", ("map", "plot"))
    res = align(inputs[0], inputs[1], output, _set_overwrite(opts, overwrite),
                map_path=_path_or_none(extra.get("map")), plot_path=_path_or_none(extra.get("plot")),
                progress=None)
    return _to_json(res)


def run_retarget(inputs: list[Path], output: Path | None, options: dict, overwrite: bool) -> dict:
    """Batch adapter for :func:`avsync.retarget.retarget` (extra options: ``map``, ``plot``)."""
    from avsync.retarget import RetargetOptions, retarget

    opts, extra = build_options(RetargetOptions, options, "retarget", ("map", "plot"))
    res = retarget(inputs[0], inputs[1], output, _set_overwrite(opts, overwrite),
                   map_path=_path_or_none(extra.get("map")), plot_path=_path_or_none(extra.get("plot")),
                   progress=None)
    return _to_json(res)


def run_detect_offset(inputs: list[Path], output: Path | None, options: dict, overwrite: bool) -> dict:
    """Batch adapter for :func:`avsync.offset.detect_offset`, like ``detect-offset --json``.

    ``output`` set: write a corrected copy (``--fix``; extra option ``fix_drift``). Extra
    option ``check`` true: an item outside the in-sync window (or that cannot be told) is
    an error whose record still carries the measurement (``--check``).
    """
    from avsync.errors import CannotMeasure
    from avsync.offset import OffsetOptions, detect_offset
    from avsync.outputs import check_output
    from avsync.types import describe_offset

    opts, extra = build_options(OffsetOptions, options, "detect-offset", ("check", "fix_drift"))
    check = _coerce(extra.get("check", False), bool, "check")
    fix_drift = _coerce(extra.get("fix_drift", False), bool, "fix_drift")
    if output is not None:
        if output.resolve() == inputs[0].resolve():
            raise InputError("the output would overwrite the input clip")
        check_output(output, overwrite)
    res = detect_offset(inputs[0], opts, None)
    out = _to_json(res)
    if output is not None:
        from avsync.remux import write_shifted

        if res.verdict == "cannot tell":
            raise CannotMeasure(f"cannot fix: the offset could not be measured with confidence "
                                f"({res.confidence:.2f})")
        shift = res.offset_s
        if not fix_drift and res.verdict == "drifting":
            shift = res.offset_at(res.duration / 2)
        fixed = write_shifted(inputs[0], output, shift,
                              drift_ms_per_min=res.drift_ms_per_min if fix_drift else 0.0, overwrite=overwrite)
        out["fix"] = {**fixed, "output": str(output)}
    if check and not res.in_sync:
        words = describe_offset(res.offset_s) if res.verdict != "cannot tell" else "cannot tell"
        raise CheckFailed(f"out of sync: {words} ({res.verdict}, confidence {res.confidence:.2f})", out)
    return out


class CheckFailed(AvsyncError):
    """``check`` found the clip outside the in-sync window; carries the measurement."""

    def __init__(self, message: str, result: dict) -> None:
        super().__init__(message)
        self.result = result


# --------------------------------------------------------------------------- items


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


def item_from_row(row: dict[str, Any], source: str, base: Path | None = None) -> BatchItem:
    """Validate one manifest row (a dict) into a :class:`BatchItem`.

    A row that is wrong yields an item whose ``error`` says why, never an exception.
    """
    row = {str(k).strip(): v for k, v in row.items() if k is not None and v not in (None, "")}
    command = str(row.get("command", "")).strip()
    spec = _COMMANDS.get(command)
    ident = str(row["id"]).strip() if "id" in row else ""

    def bad(msg: str) -> BatchItem:
        guess = f"{command}:{row['output']}" if command and isinstance(row.get("output"), str) else source
        return BatchItem(ident or guess, command, [], None, {}, source, f"{source}: {msg}")

    if not command:
        return bad("no command (one of: " + ", ".join(sorted(_COMMANDS)) + ")")
    if spec is None:
        return bad(f"unknown command {command!r} (one of: {', '.join(sorted(_COMMANDS))})")
    named = [n for n in spec.inputs if n in row]
    if "inputs" in row and named:
        return bad(f"give the inputs either as 'inputs' or as {', '.join(spec.inputs)}, not both")
    if "inputs" in row:
        raw = row["inputs"]
        if isinstance(raw, str):
            raw = [s.strip() for s in raw.split(";") if s.strip()]
        if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
            return bad("'inputs' must be a list of paths")
        inputs = raw
    else:
        inputs = [str(row[n]) for n in spec.inputs if n in row]
        if len(inputs) != len(named) or (named and len(named) < len(spec.inputs)):
            missing = [n for n in spec.inputs if n not in row]
            return bad(f"{command} needs {', '.join(spec.inputs)}; missing {', '.join(missing)}")
    if len(inputs) != len(spec.inputs):
        return bad(f"{command} needs {len(spec.inputs)} input(s) ({', '.join(spec.inputs)}), "
                   f"got {len(inputs)}")
    output = row.get("output")
    if output is not None and not isinstance(output, str):
        return bad("'output' must be a path")
    if output is None and spec.output == "required":
        return bad(f"{command} needs an output")
    options = row.get("options", {})
    if isinstance(options, str):
        try:
            options = json.loads(options)
        except json.JSONDecodeError as e:
            return bad(f"'options' is not a JSON object: {e.msg}")
    if not isinstance(options, dict):
        return bad("'options' must be a JSON object")
    options = dict(options)
    for k, v in row.items():
        if k not in _RESERVED and k not in spec.inputs:
            options[k] = v

    def resolve(p: str) -> str:
        q = Path(p).expanduser()
        return str(q if q.is_absolute() or base is None else base / q)

    first = inputs[0]
    inputs = [resolve(p) for p in inputs]
    for k in ("map", "plot"):
        if isinstance(options.get(k), str):
            options[k] = resolve(options[k])
    out = resolve(output) if output else None
    if not ident:
        ident = f"{command}:{output or first}"
    return BatchItem(ident, command, inputs, out, options, source)


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
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"manifest {p} does not exist") from None
    except IsADirectoryError:
        raise InputError(f"manifest {p} is a directory") from None
    except UnicodeDecodeError:
        raise InputError(f"manifest {p} is not UTF-8 text") from None
    except OSError as e:
        raise InputError(f"cannot read manifest {p}: {e.strerror}") from None
    base = p.resolve().parent
    suffix = p.suffix.lower()
    first = next((ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")),
                 "")
    if suffix in (".jsonl", ".ndjson", ".json") or (suffix not in (".csv", ".tsv") and first.startswith("{")):
        items = _read_jsonl(text, p.name, base)
    else:
        items = _read_csv(text, p.name, base, "\t" if suffix == ".tsv" else ",")
    return dedupe(items)


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


def pair_by_name(
    command: str,
    video_dir: str | Path,
    *,
    audio: str | Path | None = None,
    audio_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    options: dict[str, Any] | None = None,
    out_ext: str | None = ".mp4",
) -> list[BatchItem]:
    """Items for every video in ``video_dir``, paired with audio by file name.

    ``take3.mp4`` pairs with ``audio_dir/take3.*`` (any extension), or with the single
    ``audio`` file for every video. Outputs go to ``out_dir/take3<out_ext>`` (``out_ext``
    None keeps the video's extension). For ``detect-offset`` no audio is needed and
    ``out_dir`` (optional) receives corrected copies.

    Returns
    -------
    list of BatchItem
        Sorted by video name; a video without (or with several) matching audio files is an
        item carrying an ``error``.

    Raises
    ------
    InputError
        A directory is missing, or the audio options do not fit the command.
    """
    spec = _COMMANDS.get(command)
    if spec is None:
        raise InputError(f"unknown command {command!r} (one of: {', '.join(sorted(_COMMANDS))})")
    vdir = Path(video_dir)
    if not vdir.is_dir():
        raise InputError(f"video directory {vdir} does not exist")
    need_audio = len(spec.inputs) == 2
    if need_audio and (audio is None) == (audio_dir is None):
        raise InputError(f"{command} by name needs exactly one of --audio FILE or --audio-dir DIR")
    if not need_audio and (audio is not None or audio_dir is not None):
        raise InputError(f"{command} takes no audio")
    if spec.output == "required" and out_dir is None:
        raise InputError(f"{command} needs an output directory (-o DIR)")
    if audio_dir is not None and not Path(audio_dir).is_dir():
        raise InputError(f"audio directory {audio_dir} does not exist")
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    by_stem: dict[str, list[Path]] = {}
    if audio_dir is not None:
        for a in sorted(Path(audio_dir).iterdir()):
            if a.is_file() and not a.name.startswith("."):
                by_stem.setdefault(a.stem, []).append(a)
    videos = sorted(v for v in vdir.iterdir()
                    if v.is_file() and not v.name.startswith(".") and v.suffix.lower() in VIDEO_EXTS)
    items = []
    for v in videos:
        src = str(v)
        out = None
        if out_dir is not None:
            out = str(Path(out_dir) / (v.stem + (out_ext if out_ext else v.suffix)))
        ident = f"{command}:{v.name}"
        inputs = [str(v)]
        err = None
        if need_audio:
            if audio is not None:
                inputs.append(str(audio))
            else:
                cands = [a for a in by_stem.get(v.stem, []) if a.resolve() != v.resolve()]
                if not cands:
                    err = f"{v.name}: no audio named {v.stem}.* in {audio_dir}"
                elif len(cands) > 1:
                    err = f"{v.name}: several audio files named {v.stem}.*: " + ", ".join(c.name for c in cands)
                else:
                    inputs.append(str(cands[0]))
        items.append(BatchItem(ident, command, inputs, out, dict(options or {}), src, err))
    return dedupe(items)


# --------------------------------------------------------------------------- execution


def _resolve(ref: str) -> Callable:
    mod, _, name = ref.partition(":")
    obj: Any = importlib.import_module(mod)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def _summarize(obj: Any, depth: int = 0) -> Any:
    """Keep scalars, short lists and small dicts of a result; drop long arrays."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            s = _summarize(v, depth + 1)
            if s is not _DROP:
                out[str(k)] = s
        return out if depth < 3 else _DROP
    if isinstance(obj, (list, tuple)):
        if len(obj) > 16:
            return _DROP
        vals = [_summarize(v, depth + 1) for v in obj]
        return _DROP if any(v is _DROP for v in vals) else vals
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if hasattr(obj, "item") and getattr(obj, "ndim", 0) == 0:
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return _DROP


_DROP = object()


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


def _one_line(msg: str) -> str:
    return " ".join(str(msg).split()) or "error"


def execute(task: dict[str, Any]) -> dict[str, Any]:
    """Run one task (a :class:`BatchItem` as a dict plus ``runner`` and ``overwrite``).

    Never raises for a failing item: the returned record says ``status: error``. Only
    KeyboardInterrupt (Ctrl-C, SIGTERM in a worker) goes through.
    """
    t0 = time.monotonic()
    rec: dict[str, Any] = {
        "id": task["id"], "command": task["command"], "inputs": task["inputs"], "output": task["output"],
        "status": "ok", "error": None, "error_type": None, "result": None, "seconds": 0.0,
        "source": task.get("source", ""),
    }
    if task.get("error"):
        rec.update(status="error", error=_one_line(task["error"]), error_type="InputError")
        return rec
    try:
        fn = _resolve(task["runner"])
        out = Path(task["output"]) if task["output"] else None
        result = fn([Path(p) for p in task["inputs"]], out, dict(task["options"]), bool(task["overwrite"]))
        rec["result"] = _summarize(result)
    except KeyboardInterrupt:
        raise
    except AvsyncError as e:
        rec.update(status="error", error=_one_line(str(e)), error_type=type(e).__name__)
        if isinstance(e, CheckFailed):
            rec["result"] = _summarize(e.result)
    except MemoryError:
        rec.update(status="error", error="out of memory", error_type="MemoryError")
    except ImportError as e:
        rec.update(status="error", error=_one_line(f"command {task['command']} is not available: {e}"),
                   error_type="ImportError")
    except Exception as e:  # noqa: BLE001 - one item's bug must not stop the batch
        rec.update(status="error", error=_one_line(f"internal error: {type(e).__name__}: {e}"),
                   error_type=type(e).__name__,
                   traceback="".join(traceback.format_exception(type(e), e, e.__traceback__))[-4000:])
    rec["seconds"] = round(time.monotonic() - t0, 3)
    return rec


# ---- worker process

_STATE: dict[str, Any] = {"busy": False, "stop": False, "output": None, "before": None}


def _stat_key(path: str | None) -> tuple[int, ...] | None:
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
    now = _stat_key(_STATE["output"])
    if now is not None and now != _STATE["before"]:
        # The item's output was already renamed into place (commands write it last but for
        # the map and plot): let the item finish and be recorded rather than leave a
        # finished file that the results file does not name. The parent then stops.
        return
    _STATE["busy"] = False  # interrupt the running item once
    raise KeyboardInterrupt


def _worker_main(conn: Any, warm: list[str], threads: int, quiet: bool) -> None:
    """Worker loop: import heavy modules once, then run tasks sent through ``conn``."""
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
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
    try:
        conn.send(("ready", os.getpid()))
        while not _STATE["stop"]:
            try:
                task = conn.recv()
            except EOFError:
                break
            if task is None:
                break
            _STATE["output"] = task.get("output")
            _STATE["before"] = _stat_key(_STATE["output"])
            _STATE["busy"] = True
            try:
                rec = execute(task)
            except KeyboardInterrupt:
                _STATE["busy"] = False
                conn.send(("interrupted", task["id"]))
                break
            _STATE["busy"] = False
            # The third field: a signal came after the output was in place and let the item
            # finish; the parent stops the run as for any other signal.
            conn.send(("done", rec, _STATE["stop"]))
    except (KeyboardInterrupt, BrokenPipeError, EOFError, OSError):
        pass


class _Worker:
    def __init__(self, ctx: Any, warm: list[str], threads: int, quiet: bool) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, warm, threads, quiet), daemon=True)
        self.proc.start()
        child.close()
        self.ready = False
        self.task: dict[str, Any] | None = None
        self.started = 0.0  # monotonic
        self.started_wall = 0.0  # epoch, for remove_partials

    def stop(self, timeout: float = 5.0) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.conn.send(None)
        self.proc.join(timeout)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(2)
        self.conn.close()


# ---- results file


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


class ResultsFile:
    """Append-only JSONL file, flushed and fsynced after every record."""

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


def run_batch(
    items: list[BatchItem],
    *,
    jobs: int = 1,
    results: str | Path | None = None,
    emit: Callable[[dict[str, Any]], None] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    timeout: float | None = None,
    executor: str = "local",
    progress: Callable[[str, float, float | None], None] | None = None,
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
        Skip items recorded ok in ``results`` whose output exists.
    overwrite : bool
        Let commands replace existing outputs.
    timeout : float, optional
        Seconds one item may take; past it its worker is killed and the item fails.
    executor : {"local", "ray"}
        ``ray`` hands the items to Ray's scheduler (``RAY_ADDRESS`` or a local cluster).
    progress : callable, optional
        :class:`avsync.progress.Progress`; reports stage ``"items"``.

    Returns
    -------
    BatchSummary
        On Ctrl-C / SIGTERM, running items are stopped (commands write atomically, so no
        partial outputs remain), finished ones are recorded, and ``interrupted`` is set.
    """
    t0 = time.monotonic()
    if resume and results is None:
        raise InputError("--resume needs --results FILE (the record of what is done)")
    if executor not in ("local", "ray"):
        raise InputError(f"unknown executor {executor!r} (local or ray)")
    if executor == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise InputError("ray is not installed: pip install ray") from None
    if jobs < 0:
        raise InputError("--jobs must be 0 or more")
    done = load_results(results) if (resume and results is not None) else {}
    todo, skipped = plan_resume(items, done)
    summary = BatchSummary(skipped=skipped, total=len(items))
    sink = ResultsFile(results) if results is not None else None
    finished = [skipped]

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
            progress("items", finished[0], len(items))

    tasks = [_task(it, overwrite) for it in todo]
    if progress is not None:
        progress("items", skipped, len(items))
    try:
        # Items that failed validation need no worker.
        for t in [t for t in tasks if t.get("error")]:
            record(execute(t))
        tasks = [t for t in tasks if not t.get("error")]
        if executor == "ray":
            _run_ray(tasks, jobs, record, timeout)
        elif jobs == 0:
            for t in tasks:
                record(execute(t))
        else:
            _run_pool(tasks, jobs, record, timeout)
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        if sink is not None:
            sink.close()
        summary.seconds = round(time.monotonic() - t0, 2)
    return summary


def _task(it: BatchItem, overwrite: bool) -> dict[str, Any]:
    spec = _COMMANDS.get(it.command)
    return {
        "id": it.id, "command": it.command, "inputs": list(it.inputs), "output": it.output,
        "options": dict(it.options), "source": it.source, "error": it.error, "overwrite": overwrite,
        "runner": spec.runner if spec else "", "warm": list(spec.warm) if spec else [],
    }


def _run_pool(tasks: list[dict[str, Any]], jobs: int, record: Callable[[dict], None],
              timeout: float | None) -> None:
    import multiprocessing as mp
    from multiprocessing.connection import wait

    if not tasks:
        return
    ctx = mp.get_context("spawn")
    n = max(1, min(jobs, len(tasks)))
    threads = max(1, (os.cpu_count() or 1) // n)
    warm = sorted({m for t in tasks for m in t["warm"]})
    quiet = not os.environ.get("AVSYNC_DEBUG")
    pending = deque(tasks)
    # While the pool runs, Ctrl-C / SIGTERM only raise a flag, checked between messages, so the
    # parent is never interrupted half-way through a pipe read or a results line.
    stop: list[int] = []
    old_handlers = {}
    for s in (signal.SIGINT, signal.SIGTERM):
        try:
            old_handlers[s] = signal.signal(s, lambda signum, frame: stop.append(signum))
        except ValueError:  # not the main thread: keep KeyboardInterrupt semantics
            break
    workers = [_Worker(ctx, warm, threads, quiet) for _ in range(n)]
    failed_starts = 0

    def crash(w: _Worker, why: str) -> None:
        t = w.task
        w.task = None
        if t is not None:
            remove_partials(t, w.started_wall)
            rec = execute({**t, "error": why})
            rec["error_type"] = "WorkerError"
            record(rec)

    try:
        while pending or any(w.task is not None for w in workers):
            if stop:
                raise KeyboardInterrupt
            for w in workers:
                if w.ready and w.task is None and pending:
                    w.task = pending.popleft()
                    w.started = time.monotonic()
                    w.started_wall = time.time()
                    w.conn.send(w.task)
            wait_for = 0.25
            if timeout:
                busy = [w.started + timeout - time.monotonic() for w in workers if w.task is not None]
                if busy:
                    wait_for = max(0.01, min(wait_for, min(busy)))
            wait([w.conn for w in workers] + [w.proc.sentinel for w in workers], timeout=wait_for)
            for i, w in enumerate(workers):
                msg = None
                try:
                    if w.conn.poll():
                        msg = w.conn.recv()
                except (EOFError, OSError):
                    msg = ("dead", None)
                if msg is not None and msg[0] == "ready":
                    w.ready = True
                elif msg is not None and msg[0] == "done":
                    w.task = None
                    record(msg[1])
                    if msg[2]:
                        raise KeyboardInterrupt  # the worker finished its item, then obeys the signal
                elif msg is not None and msg[0] == "interrupted":
                    raise KeyboardInterrupt  # a worker was told to stop by a signal
                elif (msg is not None and msg[0] == "dead") or not w.proc.is_alive():
                    w.proc.join(1)
                    if not w.ready:
                        failed_starts += 1
                        if failed_starts > 3:
                            raise AvsyncError("worker processes die while starting "
                                              f"(exit code {w.proc.exitcode}); set AVSYNC_DEBUG=1 to see why")
                    code = w.proc.exitcode
                    how = (f"signal {signal.Signals(-code).name}" if code is not None and code < 0
                           else f"exit code {code}")
                    crash(w, f"the worker process died ({how}) while running this item")
                    w.conn.close()
                    workers[i] = _Worker(ctx, warm, threads, quiet)
                elif timeout and w.task is not None and time.monotonic() - w.started > timeout:
                    w.proc.terminate()  # SIGTERM: the command cleans up its temporary output
                    w.proc.join(5)
                    if w.proc.is_alive():
                        w.proc.kill()
                        w.proc.join(2)
                    crash(w, f"timed out after {timeout:g} s")
                    w.conn.close()
                    workers[i] = _Worker(ctx, warm, threads, quiet)
    except KeyboardInterrupt:
        _interrupt(workers, record)
        raise
    finally:
        for s, h in old_handlers.items():
            signal.signal(s, h)
    for w in workers:
        w.stop()


def _interrupt(workers: list[_Worker], record: Callable[[dict], None], grace: float = 10.0) -> None:
    """Stop every worker; record items that still finish; no partial outputs remain.

    Busy workers are waited for together (up to ``grace`` seconds in all): one that is slow
    to stop must not use up the time in which another reports the item it just finished.
    Idle workers are sent the stop message, as the signal alone does not wake them.
    """
    from multiprocessing.connection import wait

    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in old:
        signal.signal(s, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
    try:
        for w in workers:
            if w.proc.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.proc.pid, signal.SIGTERM)
            if w.task is None:
                with contextlib.suppress(OSError, ValueError):
                    w.conn.send(None)
        deadline = time.monotonic() + grace
        busy = [w for w in workers if w.task is not None]
        while busy and time.monotonic() < deadline:
            wait([w.conn for w in busy] + [w.proc.sentinel for w in busy],
                 timeout=max(0.0, deadline - time.monotonic()))
            for w in list(busy):
                try:
                    msg = w.conn.recv() if w.conn.poll() else (None if w.proc.is_alive() else ("dead",))
                except Exception:  # noqa: BLE001 - a dead or half-read pipe: give up on this worker
                    msg = ("dead",)
                if msg is None:
                    continue
                if msg[0] == "done":
                    record(msg[1])
                    w.task = None
                elif msg[0] == "interrupted":
                    w.task = None
                if w.task is None or msg[0] == "dead":
                    busy.remove(w)
        for w in workers:
            w.proc.join(max(0.1, deadline - time.monotonic()))
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join(2)
            if w.task is not None:
                remove_partials(w.task, w.started_wall)
            w.conn.close()
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _run_ray(tasks: list[dict[str, Any]], jobs: int, record: Callable[[dict], None],
             timeout: float | None) -> None:
    """Hand tasks to Ray: its scheduler places them; worker processes are reused, so
    modules and cached models stay loaded between tasks."""
    import ray

    if not tasks:
        return
    if not ray.is_initialized():
        kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                              "configure_logging": False}
        if not os.environ.get("RAY_ADDRESS") and jobs:
            kw["num_cpus"] = jobs
        ray.init(**kw)
    remote = ray.remote(num_cpus=1, max_retries=0)(execute)
    refs = {remote.remote(t): t for t in tasks}
    try:
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=1.0)
            for r in ready:
                t = refs.pop(r)
                try:
                    record(ray.get(r))
                except Exception as e:  # noqa: BLE001 - a lost worker is one item's failure
                    rec = execute({**t, "error": f"ray task failed: {type(e).__name__}: {e}"})
                    rec["error_type"] = "WorkerError"
                    record(rec)
    except KeyboardInterrupt:
        for r in refs:
            ray.cancel(r, force=True)
        raise
