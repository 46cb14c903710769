"""The Typer app, error handling and Rich progress shared by every command module.

Command modules (every module in this package whose name does not start with ``_``) are
imported by :func:`main` and register themselves with ``@app.command()``. They must keep
heavy imports (torch, mediapipe, av) inside the command function, after parsing.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

import typer
from typer.core import TyperCommand, TyperGroup


def _usage_error_class() -> type[Exception]:
    """click's ``UsageError`` (vendored by recent typer, a separate package before)."""
    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


class _State:
    """Whether the running command was given ``--json``: its errors then also go to stdout as JSON."""

    json = False


def _command_words(ctx: Any) -> str:
    """``avsync align``: the command path of ``ctx`` under the name users type."""
    words = []
    while ctx is not None:
        words.append(ctx.info_name or "")
        ctx = ctx.parent
    words[-1] = "avsync"
    return " ".join(w for w in reversed(words) if w)


def usage_line(e: Any, words: str = "avsync") -> str:
    """One line for a click usage error: ``no such option --foo (try 'avsync align --help')``;
    ``words``: the command, when the error does not carry its context."""
    if hasattr(e, "option_name") and hasattr(e, "possibilities"):  # NoSuchOption
        msg = f"no such option {e.option_name}"
        near = _near(e.option_name, e.possibilities or ())
        if near:
            msg += f" (did you mean {' or '.join(near)}?)"
    else:
        msg = " ".join(e.format_message().split()).rstrip(".")
        msg = msg[:1].lower() + msg[1:]
    if getattr(e, "ctx", None) is not None:
        words = _command_words(e.ctx)
    return f"{msg} (try '{words} --help')"


def _near(name: str, candidates: Iterable[str]) -> list[str]:
    """The candidates that are plausibly a typo of ``name`` (``--jsn`` -> ``--json``, not ``--foo`` -> ``--crf``)."""
    import difflib

    bare = {c.lstrip("-"): c for c in candidates}
    return [bare[c] for c in difflib.get_close_matches(name.lstrip("-"), list(bare), n=2, cutoff=0.75)]


class _OneVoice:
    """Mixin of the app's click commands and groups: boolean flags shown as plain flags in
    ``--help`` (not ``--json <bool>``), usage errors in one line plus a hint (exit 2)."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # type: ignore[misc]
        for p in params:
            if getattr(p, "is_flag", False) and p.metavar is None:
                p.metavar = ""  # the rich help shows the metavar; a flag takes no value
        return params

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        words = " ".join(w for w in (_command_words(parent) if parent is not None else "", info_name or "") if w)
        with _one_line_usage_errors("avsync" if parent is None else words):
            return super().make_context(info_name, args, parent=parent, **extra)  # type: ignore[misc]

    def invoke(self, ctx: Any) -> Any:
        with _one_line_usage_errors(_command_words(ctx)):
            return super().invoke(ctx)  # type: ignore[misc]


@contextmanager
def _one_line_usage_errors(words: str) -> Iterator[None]:
    try:
        yield
    except _usage_error_class() as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # bare `avsync`: the help, as asked
            raise
        fail(usage_line(e, words), getattr(e, "exit_code", 2))


class CommandGroup(_OneVoice, TyperGroup):
    """The click group of every avsync Typer app (see :class:`App`)."""

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        if parent is None:  # the whole command line: does it ask for JSON?
            given = args[: args.index("--")] if "--" in args else args
            _State.json = "--json" in given
        return super().make_context(info_name, args, parent=parent, **extra)


class Command(_OneVoice, TyperCommand):
    """The click command of every avsync command (see :class:`App`)."""


class App(typer.Typer):
    """``typer.Typer`` whose groups and commands speak with one voice (:class:`CommandGroup`)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("cls", CommandGroup)
        super().__init__(**kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("cls", Command)
        return super().command(*args, **kwargs)


app = App(
    name="avsync",
    help="Re-time video to audio: measure audio/picture misalignment and write the corrected file.\n\n"
    "Sign convention: a positive offset means the audio leads (comes before) the picture.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

T = TypeVar("T")


def fail(message: str, code: int = 1, **json_fields: Any) -> NoReturn:
    """Print one error line on stderr and exit with ``code``.

    Under ``--json`` stdout also gets ``{"ok": false, "error": message, **json_fields}``, so
    that a script reading stdout sees every outcome."""
    if _State.json:
        extra = {k: v for k, v in json_fields.items() if k not in ("ok", "error")}
        print_json({"ok": False, "error": message, **extra})
    sys.stderr.write(f"avsync: error: {message}\n")
    sys.stderr.flush()
    raise typer.Exit(code)


def run(fn: Callable[[], T]) -> T:
    """Run a library call, turning domain errors into one line and an exit code.

    AVSYNC_DEBUG=1 re-raises unexpected exceptions with their traceback.
    """
    from avsync import interrupts
    from avsync.errors import AvsyncError, CannotMeasure

    held = _HeldWarnings()
    try:
        result = fn()
        interrupts.check()  # a signal whose KeyboardInterrupt a library swallowed
        held.release()
        return result
    except CannotMeasure as e:
        fail(str(e), e.exit_code, verdict="cannot tell")
    except AvsyncError as e:
        fail(str(e), e.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("avsync: interrupted\n")
        raise typer.Exit(130) from None
    except MemoryError:
        fail("out of memory")
    except Exception as e:  # noqa: BLE001 - the user gets one line, developers set AVSYNC_DEBUG
        if os.environ.get("AVSYNC_DEBUG"):
            raise
        fail(f"internal error: {type(e).__name__}: {e} (set AVSYNC_DEBUG=1 for the traceback)")
    raise AssertionError("unreachable")


class _HeldWarnings:
    """Collect the library's log warnings during a command.

    They are printed ("avsync: warning: ...") only when the command succeeds, so that a
    failing command prints exactly one line: its error.
    """

    def __init__(self) -> None:
        import logging

        self.records: list[str] = []
        outer = self

        class _H(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                outer.records.append(record.getMessage())

        self.logger = logging.getLogger("avsync")
        self.handler = _H(level=logging.WARNING)
        self.logger.addHandler(self.handler)
        self.logger.propagate = False

    def release(self) -> None:
        self.logger.removeHandler(self.handler)
        for m in dict.fromkeys(self.records):
            sys.stderr.write(f"avsync: warning: {m}\n")


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, default=_json_default) + "\n")
    sys.stdout.flush()


def report(result: Any, json_out: bool, summary: Callable[[Any], None]) -> None:
    """Print a command's result: ``{"ok": true, ...}`` JSON with ``--json``, else its ``summary`` table."""
    if json_out:
        print_json({"ok": True, **result.to_json()})
        return
    summary(result)


def add_output_rows(table: Any, r: Any) -> None:
    """The summary rows of the side outputs of an align / retarget result (map, plot, timeline)."""
    if r.map_path:
        table.add_row("map", r.map_path)
    if r.plot_path:
        table.add_row("plot", r.plot_path)
    if r.export:
        table.add_row("timeline", f"{r.export['path']} ({r.export['format']}, {r.export['segments']} segments)")


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


@contextmanager
def rich_progress(enabled: bool = True) -> Iterator[Callable[[str, float, float | None], None] | None]:
    """A :class:`avsync.progress.Progress` drawing one Rich bar per stage on stderr."""
    if not enabled or not sys.stderr.isatty() or os.environ.get("AVSYNC_NO_PROGRESS"):
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    tasks: dict[str, Any] = {}
    with Progress(
        TextColumn("[bold]{task.description:<12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    ) as bar:

        def report(stage: str, done: float, total: float | None) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield report


def _install_signal_handlers() -> None:
    # SIGTERM behaves like Ctrl-C so that temp files are cleaned up by the same finally blocks;
    # both go through avsync.interrupts (held off while an output's temp file is created, and
    # remembered when a library swallows the KeyboardInterrupt).
    from avsync import interrupts

    def _on_signal(signum: int, frame: Any) -> None:
        interrupts.interrupt()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    interrupts.quiet_swallowed()


def _load_commands() -> None:
    import avsync.cli as pkg

    for mod in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if not mod.name.startswith("_"):
            importlib.import_module(f"avsync.cli.{mod.name}")


def _print_version(value: bool) -> None:
    if value:
        from avsync import __version__

        typer.echo(f"avsync {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True,
                                 callback=_print_version, expose_value=True),
) -> None:
    del version  # handled by its callback


def _warning_to_log(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                    file: Any = None, line: str | None = None) -> None:
    """Python warnings go through the tool's own warning line (held like the library's log
    warnings, so a failing command still prints one line). numpy's floating-point
    RuntimeWarnings ("Mean of empty slice", "invalid value encountered") say nothing a user
    can act on: debug log only."""
    import logging

    log = logging.getLogger("avsync")
    if issubclass(category, RuntimeWarning):
        log.debug("%s:%d: %s", filename, lineno, message)
    else:
        log.warning("%s", " ".join(str(message).split()))


def main() -> None:
    import warnings

    warnings.showwarning = _warning_to_log
    # mediapipe 0.10.14 calls a deprecated protobuf API on every frame: not the user's concern.
    warnings.filterwarnings("ignore", message=r"SymbolDatabase\.GetPrototype\(\) is deprecated")
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _install_signal_handlers()
    _load_commands()
    app()
