"""Signals during an atomic write: no temp file left behind, no output put in place after a
signal even when a library swallowed its KeyboardInterrupt, and the CLI exits 130.

Deterministic counterparts of tests/test_malformed.py's timing-based signal tests: the
signal is sent from inside the code under test, at exactly the moment that used to race.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer

from avsync import interrupts, outputs


@pytest.fixture()
def handler() -> Iterator[None]:
    """SIGTERM handled as the CLI handles it, for this test only."""
    old = signal.signal(signal.SIGTERM, lambda signum, frame: interrupts.interrupt())
    interrupts.reset()
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
        interrupts.reset()


def _term_self() -> None:
    os.kill(os.getpid(), signal.SIGTERM)  # the handler runs at the next bytecode


def test_signal_while_the_temp_file_is_created_leaves_nothing(handler: None, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    real = tempfile.mkstemp

    def mkstemp_then_signal(*a: Any, **k: Any) -> tuple[int, str]:
        made = real(*a, **k)
        _term_self()  # after the file exists, before atomic_path has its name
        return made

    monkeypatch.setattr(outputs.tempfile, "mkstemp", mkstemp_then_signal)
    body_ran = []
    with pytest.raises(KeyboardInterrupt), outputs.atomic_path(tmp_path / "out.mp4") as tmp:
        body_ran.append(tmp)
    assert body_ran == []
    assert list(tmp_path.iterdir()) == []


def test_swallowed_interrupt_still_puts_no_output_in_place(handler: None, tmp_path: Path) -> None:
    dest = tmp_path / "out.json"
    with pytest.raises(KeyboardInterrupt), outputs.atomic_path(dest) as tmp:
        Path(tmp).write_text("{}")
        # a C callback that "ignores" the exception (PyAV's logging and I/O callbacks do)
        with contextlib.suppress(KeyboardInterrupt):
            _term_self()
    assert list(tmp_path.iterdir()) == []


def test_held_section_raises_at_its_end(handler: None) -> None:
    reached = []
    with pytest.raises(KeyboardInterrupt), interrupts.held():
        _term_self()
        reached.append(1)  # the section is not cut short
    assert reached == [1]
    assert interrupts.signalled()


def test_cli_exits_130_after_a_swallowed_interrupt(handler: None, capsys: pytest.CaptureFixture[str]) -> None:
    from avsync.cli._app import run

    def command() -> int:
        with contextlib.suppress(KeyboardInterrupt):
            _term_self()
        return 0

    with pytest.raises(typer.Exit) as e:
        run(command)
    assert e.value.exit_code == 130
    assert capsys.readouterr().err.splitlines() == ["avsync: interrupted"]


def test_writes_work_again_without_a_signal(handler: None, tmp_path: Path) -> None:
    outputs.write_json(tmp_path / "a.json", {"ok": 1})
    assert (tmp_path / "a.json").read_text().strip().startswith("{")
    assert not interrupts.signalled()


_SWALLOWED = """
import sys, weakref
from avsync import interrupts
if sys.argv[1] == "quiet":
    interrupts.quiet_swallowed()
    interrupts.quiet_swallowed()  # twice: still one hook

class Obj:
    pass

def raiser(exc):
    def cb(ref):
        raise exc
    return cb

o = Obj(); r = weakref.ref(o, raiser(KeyboardInterrupt())); del o   # a signal landing in a weakref callback
o = Obj(); r2 = weakref.ref(o, raiser(ValueError("other"))); del o   # any other swallowed error
print("done")
"""


@pytest.mark.parametrize("mode", ["quiet", "default"])
def test_a_keyboardinterrupt_python_swallows_stays_off_stderr_and_other_errors_do_not(mode):
    r = subprocess.run([sys.executable, "-c", _SWALLOWED, mode], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "done"
    assert "ValueError: other" in r.stderr  # still reported
    assert ("KeyboardInterrupt" in r.stderr) == (mode == "default")
