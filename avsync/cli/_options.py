"""Options of the commands, taken from the library's option dataclasses.

Defaults come from the dataclass fields (``default=AlignOptions.max_shift``), choices from
the library's tuples (``avsync.features.MODES``, ...). Values are validated once, by the
dataclass; :func:`build` reports a refused value as one error line naming the flag.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from avsync.cli._app import fail

T = TypeVar("T")


def choice(names: Sequence[str], flag: str) -> dict[str, Any]:
    """``typer.Option`` arguments for a flag that takes one of ``names``: the choices shown in
    ``--help``, and a wrong value refused in one line (not a usage panel)."""
    allowed = tuple(names)

    def parse(value: str) -> str:
        if value not in allowed:
            fail(f"{flag} must be one of {', '.join(allowed)} (got '{value}')")
        return value

    return {"parser": parse, "metavar": "|".join(allowed)}


def build(cls: Callable[..., T], **kwargs: Any) -> T:
    """``cls(**kwargs)``; a value the options refuse is reported under its flag
    (field ``max_shift`` → ``--max-shift``) in one line, with exit code 1."""
    from avsync.options import OptionError

    try:
        return cls(**kwargs)
    except OptionError as e:
        if e.field in kwargs:
            fail(f"--{e.field.replace('_', '-')} {e.message}")
        fail(str(e))
    raise AssertionError("unreachable")
