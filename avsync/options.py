"""Checks shared by the option dataclasses (``AlignOptions``, ``RetargetOptions``, ...).

Every options dataclass validates itself once, in ``__post_init__``, with these helpers; the
flows trust their options and the CLI takes its defaults and choices from the dataclasses.
Messages name the library's field (``max_shift``), never a command-line flag: the CLI turns
the field into its flag when it reports the error.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from avsync.errors import InputError

# libx264 presets, fastest first.
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
DEVICES = ("auto", "cpu", "cuda")  # plus "cuda:N"


class OptionError(InputError, ValueError):
    """An option value the library cannot use. ``field`` names the dataclass field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field} {message}")
        self.field = field
        self.message = message


def _number(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def one_of(field: str, value: Any, choices: Iterable[str]) -> None:
    """``value`` must be one of ``choices``."""
    names = tuple(choices)
    if value not in names:
        raise OptionError(field, f"must be one of {', '.join(names)} (got '{value}')")


def positive(field: str, value: Any, unit: str = "seconds") -> None:
    """``value`` must be a finite number > 0 (``inf`` and ``nan`` are refused)."""
    x = _number(value)
    if x is None or not x > 0:
        raise OptionError(field, f"must be a positive number of {unit} (got {value})")


def at_least(field: str, value: Any, low: float, unit: str = "") -> None:
    """``value`` must be a finite number >= ``low``."""
    x = _number(value)
    if x is None or not x >= low:
        what = f" of {unit}" if unit else ""
        raise OptionError(field, f"must be a finite number{what} >= {low:g} (got {value})")


def within(field: str, value: Any, low: float, high: float) -> None:
    """``value`` must be a finite number in ``[low, high]``."""
    x = _number(value)
    if x is None or not low <= x <= high:
        raise OptionError(field, f"must be a number within {low:g}..{high:g} (got {value})")


def whole_within(field: str, value: Any, low: int, high: int | None = None) -> None:
    """``value`` must be a whole number in ``[low, high]`` (no upper bound when ``high`` is None)."""
    x = _number(value)
    if x is None or isinstance(value, bool) or x != int(x) or x < low or (high is not None and x > high):
        span = f"within {low}..{high}" if high is not None else f">= {low}"
        raise OptionError(field, f"must be a whole number {span} (got {value})")


def device(field: str, value: Any) -> None:
    """``value`` must be auto, cpu, cuda or cuda:N (N is checked when the device is opened)."""
    v = str(value)
    if not (v in DEVICES or v.startswith("cuda:")):
        raise OptionError(field, f"must be auto, cpu, cuda or cuda:N (got '{value}')")
