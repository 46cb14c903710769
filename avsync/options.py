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


class OptionError(InputError, ValueError):
    """An option value the library cannot use. ``field`` names the dataclass field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field} {message}")
        self.field = field
        self.message = message


def _number(value: Any) -> float | None:
    """``value`` as a finite float; None for anything else (strings and booleans included)."""
    if isinstance(value, (bool, str, bytes)):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def one_of(field: str, value: Any, choices: Iterable[str]) -> None:
    """``value`` must be one of ``choices``."""
    names = tuple(choices)
    if value not in names:
        raise OptionError(field, f"must be one of {', '.join(names)} (got {value!r})")


def positive(field: str, value: Any, unit: str = "seconds") -> None:
    """``value`` must be a finite number > 0 (``inf`` and ``nan`` are refused)."""
    x = _number(value)
    if x is None or not x > 0:
        what = f" of {unit}" if unit else ""
        raise OptionError(field, f"must be a positive number{what} (got {value!r})")


def at_least(field: str, value: Any, low: float, unit: str = "") -> None:
    """``value`` must be a finite number >= ``low``."""
    x = _number(value)
    if x is None or not x >= low:
        what = f" of {unit}" if unit else ""
        raise OptionError(field, f"must be a finite number{what} >= {low:g} (got {value!r})")


def within(field: str, value: Any, low: float, high: float) -> None:
    """``value`` must be a finite number in ``[low, high]``."""
    x = _number(value)
    if x is None or not low <= x <= high:
        raise OptionError(field, f"must be a number within {low:g}..{high:g} (got {value!r})")


def whole_within(field: str, value: Any, low: int, high: int | None = None) -> None:
    """``value`` must be a whole number in ``[low, high]`` (no upper bound when ``high`` is None)."""
    x = _number(value)
    if x is None or isinstance(value, bool) or x != int(x) or x < low or (high is not None and x > high):
        span = f"within {low}..{high}" if high is not None else f">= {low}"
        raise OptionError(field, f"must be a whole number {span} (got {value!r})")


def device(field: str, value: Any) -> None:
    """``value`` must be a device spec (:data:`avsync.device.DEVICE_CHOICES`; syntax only,
    whether the device exists is checked when it is opened)."""
    from avsync.device import DEVICE_CHOICES, is_device_spec

    if not is_device_spec(value):
        raise OptionError(field, f"must be one of {', '.join(DEVICE_CHOICES)} (got {value!r})")


def flag(field: str, value: Any) -> None:
    """``value`` must be True or False."""
    if not isinstance(value, bool):
        raise OptionError(field, f"must be true or false (got {value!r})")


def name(field: str, value: Any, what: str) -> None:
    """``value`` must be a non-empty string."""
    if not isinstance(value, str) or not value.strip():
        raise OptionError(field, f"must be {what} (got {value!r})")
