"""Turning a ``--device`` option into a torch device string."""

from __future__ import annotations

import re

from avsync.errors import InputError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N")
"""What ``--device`` accepts (N is a CUDA device index)."""

_CUDA_RE = re.compile(r"^cuda(?::(\d+))?$")


def is_device_spec(spec: object) -> bool:
    """Whether ``spec`` is a device spec :func:`resolve_device` accepts (one of
    :data:`DEVICE_CHOICES`; case and surrounding spaces ignored). Syntax only: torch is not
    imported and CUDA is not looked for."""
    if not isinstance(spec, str):
        return False
    s = spec.strip().lower()
    return s in ("auto", "cpu") or _CUDA_RE.match(s) is not None


def resolve_device(spec: str = "auto") -> str:
    """Validate a device spec and resolve ``auto``.

    Parameters
    ----------
    spec
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``;
        case and surrounding spaces are ignored.

    Returns
    -------
    str
        ``"cpu"``, ``"cuda"`` or ``"cuda:N"``, ready for ``torch.device``.

    Raises
    ------
    InputError
        Unknown spec, CUDA requested without a CUDA device, or a device index out of range.
    """
    if not is_device_spec(str(spec)):
        raise InputError(f"invalid --device '{spec}': expected one of {', '.join(DEVICE_CHOICES)}")
    s = str(spec).strip().lower()
    if s == "cpu":
        return "cpu"
    m = _CUDA_RE.match(s)

    import torch  # lazily: only once a device is actually needed

    available = bool(torch.cuda.is_available())
    if s == "auto":
        return "cuda" if available else "cpu"
    if not available:
        raise InputError(
            f"--device {s} requested but no CUDA device is available (torch.cuda.is_available() is False)"
        )
    assert m is not None
    if m.group(1) is not None:
        index = int(m.group(1))
        count = int(torch.cuda.device_count())
        if index >= count:
            raise InputError(
                f"--device {s} requested but only {count} CUDA device(s) exist (valid: 0..{count - 1})"
            )
    return s
