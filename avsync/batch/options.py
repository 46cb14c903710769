"""Manifest values to command options: a frozen options dataclass from strings and JSON values.

CSV cells are strings (``"1.5"``, ``"true"``, ``"pose,lips"``); JSONL values may be numbers,
booleans or lists. :func:`build_options` converts either to the types of the command's options
dataclass; :func:`coerce` converts one value to one type.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from avsync.errors import InputError

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_NULL = ("none", "null")


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
        kw[k] = coerce(value, hints.get(k, Any), key)
    try:
        return cls(**kw), rest
    except (TypeError, ValueError) as e:
        raise InputError(f"invalid options for {command}: {e}") from None


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert one manifest value to the type ``tp`` (a type hint: ``float | None``, a
    ``Literal``, ``tuple[str, ...]``, ...); other types pass the value through.

    Raises
    ------
    InputError
        The value does not fit the type; the message names the option ``key``.
    """
    origin = typing.get_origin(tp)
    if origin is typing.Union or type(tp).__name__ == "UnionType":
        return _coerce_union(value, typing.get_args(tp), key)
    if origin is typing.Literal:
        return _coerce_literal(value, typing.get_args(tp), key)
    if tp is bool:
        return _coerce_bool(value, key)
    if tp in (int, float):
        return _coerce_number(value, tp, key)
    if tp is str:
        return str(value)
    if origin in (tuple, list):
        return _coerce_sequence(value, origin, typing.get_args(tp), key)
    if tp is Path:
        return Path(value)
    return value


def _coerce_union(value: Any, args: tuple[Any, ...], key: str) -> Any:
    if type(None) in args and (value is None or (isinstance(value, str) and value.lower() in _NULL)):
        return None
    errors = []
    for a in args:
        if a is type(None):
            continue
        try:
            return coerce(value, a, key)
        except InputError as e:
            errors.append(str(e))
    raise InputError(errors[0] if errors else f"option {key!r}: bad value {value!r}")


def _coerce_literal(value: Any, args: tuple[Any, ...], key: str) -> Any:
    for a in args:
        if value == a or (isinstance(value, str) and str(a) == value):
            return a
    raise InputError(f"option {key!r} must be one of {', '.join(map(str, args))}, not {value!r}")


def _coerce_bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE:
        return True
    if isinstance(value, str) and value.strip().lower() in _FALSE:
        return False
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise InputError(f"option {key!r} must be true or false, not {value!r}")


def _coerce_number(value: Any, tp: type, key: str) -> int | float:
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


def _coerce_sequence(value: Any, origin: type, args: tuple[Any, ...], key: str) -> tuple | list:
    items = value.split(",") if isinstance(value, str) else list(value)
    sub = args[0] if args else Any
    out = [coerce(x.strip() if isinstance(x, str) else x, sub, key) for x in items]
    return tuple(out) if origin is tuple else out
