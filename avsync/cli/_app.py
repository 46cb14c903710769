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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

import typer

app = typer.Typer(
    name="avsync",
    help="Re-time video to audio: measure audio/picture misalignment and write the corrected file.\n\n"
    "Sign convention: a positive offset means the audio leads (comes before) the picture.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

T = TypeVar("T")


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one error line on stderr and exit with ``code``."""
    sys.stderr.write(f"avsync: error: {message}\n")
    sys.stderr.flush()
    raise typer.Exit(code)


def run(fn: Callable[[], T]) -> T:
    """Run a library call, turning domain errors into one line and an exit code.

    AVSYNC_DEBUG=1 re-raises unexpected exceptions with their traceback.
    """
    from avsync.errors import AvsyncError

    held = _HeldWarnings()
    try:
        result = fn()
        held.release()
        return result
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
    # SIGTERM behaves like Ctrl-C so that temp files are cleaned up by the same finally blocks.
    def _term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)


def _load_commands() -> None:
    import avsync.cli as pkg

    for mod in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if not mod.name.startswith("_"):
            importlib.import_module(f"avsync.cli.{mod.name}")


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True),
) -> None:
    if version:
        from avsync import __version__

        typer.echo(f"avsync {__version__}")
        raise typer.Exit(0)


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
