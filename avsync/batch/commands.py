"""The commands a batch can run, and running one task into one record.

The registry maps a command name to a :class:`CommandSpec`: its inputs, whether it needs an
output, the adapter a worker calls (``"module:function"``) and the modules a worker imports
once at start-up. :func:`execute` runs one task (an item as a dict, see
:func:`avsync.batch.run.make_task`) and turns whatever happens into a record; it never raises
for a failing item.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avsync.batch.options import build_options, coerce
from avsync.errors import AvsyncError


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


# --------------------------------------------------------------------------- adapters


def _set_overwrite(opts: Any, overwrite: bool) -> Any:
    if any(f.name == "overwrite" for f in dataclasses.fields(opts)):
        return dataclasses.replace(opts, overwrite=overwrite)
    return opts


def _to_json(res: Any) -> dict:
    return res.to_json() if hasattr(res, "to_json") else {"result": res}


def _path_or_none(v: Any) -> Path | None:
    return None if v in (None, "") else Path(v)


def _run_warp(command: str, fn: Callable[..., Any], options_cls: type, inputs: list[Path], output: Path | None,
              options: dict, overwrite: bool) -> dict:
    """Align and retarget: two inputs, one output, extra options ``map`` and ``plot``."""
    opts, extra = build_options(options_cls, options, command, ("map", "plot"))
    res = fn(inputs[0], inputs[1], output, _set_overwrite(opts, overwrite),
             map_path=_path_or_none(extra.get("map")), plot_path=_path_or_none(extra.get("plot")),
             progress=None)
    return _to_json(res)


def run_align(inputs: list[Path], output: Path | None, options: dict, overwrite: bool) -> dict:
    """Batch adapter for :func:`avsync.align.align` (extra options: ``map``, ``plot``)."""
    from avsync.align import AlignOptions, align

    return _run_warp("align", align, AlignOptions, inputs, output, options, overwrite)


def run_retarget(inputs: list[Path], output: Path | None, options: dict, overwrite: bool) -> dict:
    """Batch adapter for :func:`avsync.retarget.retarget` (extra options: ``map``, ``plot``)."""
    from avsync.retarget import RetargetOptions, retarget

    return _run_warp("retarget", retarget, RetargetOptions, inputs, output, options, overwrite)


def run_detect_offset(inputs: list[Path], output: Path | None, options: dict, overwrite: bool) -> dict:
    """Batch adapter for :func:`avsync.offset.detect_offset`, like ``detect-offset --json``.

    ``output`` set: write a corrected copy (``--fix``; extra option ``fix_drift``). Extra
    option ``check`` true: an item outside the in-sync window (or that cannot be told) is
    an error whose record still carries the measurement (``--check``).
    """
    from avsync.offset import OffsetOptions, detect_offset
    from avsync.outputs import check_distinct, check_output

    opts, extra = build_options(OffsetOptions, options, "detect-offset", ("check", "fix_drift"))
    check = coerce(extra.get("check", False), bool, "check")
    fix_drift = coerce(extra.get("fix_drift", False), bool, "fix_drift")
    if output is not None:
        check_distinct({"the input clip": inputs[0]}, {"output": output})
        check_output(output, overwrite)
    res = detect_offset(inputs[0], opts, None)
    out = _to_json(res)
    if output is not None:
        out["fix"] = _write_fix(res, inputs[0], output, fix_drift, overwrite)
    if check and not res.in_sync:
        _fail_check(res, out)
    return out


def _write_fix(res: Any, clip: Path, output: Path, fix_drift: bool, overwrite: bool) -> dict:
    """The corrected copy of ``clip`` (``--fix``), from the measurement ``res``."""
    from avsync.offset import fix_json, fix_plan
    from avsync.remux import write_shifted

    plan = fix_plan(res, fix_drift=fix_drift)  # the one --fix policy (refuses "cannot tell")
    fixed = write_shifted(clip, output, plan.shift_s, drift_ms_per_min=plan.drift_ms_per_min, overwrite=overwrite)
    return fix_json(fixed, output)


def _fail_check(res: Any, out: dict) -> None:
    from avsync.types import describe_offset

    words = describe_offset(res.offset_s) if res.verdict != "cannot tell" else "cannot tell"
    raise CheckFailed(f"out of sync: {words} ({res.verdict}, confidence {res.confidence:.2f})", out)


class CheckFailed(AvsyncError):
    """``check`` found the clip outside the in-sync window; carries the measurement."""

    def __init__(self, message: str, result: dict) -> None:
        super().__init__(message)
        self.result = result


register_command(CommandSpec("align", ("video", "audio"), "required", "avsync.batch.commands:run_align",
                             ("avsync.align",)))
register_command(CommandSpec("detect-offset", ("clip",), "optional", "avsync.batch.commands:run_detect_offset",
                             ("avsync.offset",)))
register_command(CommandSpec("retarget", ("dance", "music"), "required", "avsync.batch.commands:run_retarget",
                             ("avsync.retarget",)))


# --------------------------------------------------------------------------- one task, one record


def _resolve(ref: str) -> Callable:
    mod, _, name = ref.partition(":")
    obj: Any = importlib.import_module(mod)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


_DROP = object()


def _summarize(obj: Any, depth: int = 0) -> Any:
    """Keep scalars, short lists and small dicts of a result; drop long arrays."""
    if isinstance(obj, dict):
        return _summarize_dict(obj, depth)
    if isinstance(obj, (list, tuple)):
        return _summarize_list(obj, depth)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if hasattr(obj, "item") and getattr(obj, "ndim", 0) == 0:
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return _DROP


def _summarize_dict(obj: dict, depth: int) -> Any:
    out = {}
    for k, v in obj.items():
        s = _summarize(v, depth + 1)
        if s is not _DROP:
            out[str(k)] = s
    return out if depth < 3 else _DROP


def _summarize_list(obj: list | tuple, depth: int) -> Any:
    if len(obj) > 16:
        return _DROP
    vals = [_summarize(v, depth + 1) for v in obj]
    return _DROP if any(v is _DROP for v in vals) else vals


def _one_line(msg: str) -> str:
    return " ".join(str(msg).split()) or "error"


def _resumed(task: dict[str, Any], rec: dict[str, Any]) -> tuple[Path | None, dict, bool]:
    """The output, options and overwrite the runner is called with, after what resume says.

    ``sides_only``: no video (output None), only the listed side outputs; ``replace_recorded``
    (the video is gone, the side outputs left are the ones its ok record wrote): they may
    be replaced."""
    out = Path(task["output"]) if task["output"] else None
    options, overwrite = dict(task["options"]), bool(task["overwrite"])
    sides = task.get("sides_only")
    if sides:
        for k in ("map", "plot"):
            if k not in sides:
                options.pop(k, None)
        rec["regenerated"] = list(sides)
        return None, options, overwrite
    if task.get("replace_recorded") and out is not None and not os.path.lexists(out):
        return out, options, True
    return out, options, overwrite


def execute(task: dict[str, Any]) -> dict[str, Any]:
    """Run one task (a :class:`~avsync.batch.manifest.BatchItem` as a dict plus ``runner`` and
    ``overwrite``).

    Never raises for a failing item: the returned record says ``status: error``. Only
    KeyboardInterrupt (Ctrl-C, SIGTERM in a worker) goes through.
    """
    t0 = time.monotonic()
    rec: dict[str, Any] = {
        "id": task["id"], "command": task["command"], "inputs": task["inputs"], "output": task["output"],
        "status": "ok", "error": None, "error_type": None, "result": None, "seconds": 0.0,
        "manifest": task.get("source", ""),
    }
    if task.get("error"):
        rec.update(status="error", error=_one_line(task["error"]), error_type="InputError")
        return rec
    try:
        fn = _resolve(task["runner"])
        out, options, overwrite = _resumed(task, rec)
        result = fn([Path(p) for p in task["inputs"]], out, options, overwrite)
        rec["result"] = _summarize(result)
        if task.get("sides_only") and isinstance(rec["result"], dict):  # the kept ones are this item's too
            rec["result"].update({f"{k}_path": task["options"][k] for k in ("map", "plot") if task["options"].get(k)})
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
