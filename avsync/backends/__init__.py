"""Alignment backends and their registry.

Every backend implements the small :class:`Backend` protocol: features in, an
:class:`~avsync.types.Affinity` (for ``align`` / ``retarget``) or an
:class:`~avsync.types.Offset` (for ``detect-offset``) out. The monotonic DP in
:mod:`avsync.path` turns any Affinity into a Correspondence.

Backends register a factory with :func:`register`; :func:`get_backend` builds one.

The learned backends share two constructor parameters, documented here once:

device : str
    ``auto`` | ``cpu`` | ``cuda``.
checkpoint : str or None
    Registry name, file path, ``"tiny-test"`` (seeded random weights, offline) or None
    (the backend's ``DEFAULT_CHECKPOINT``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from avsync.errors import InputError
from avsync.features import AudioFeatures, VisualFeatures
from avsync.types import Affinity, Offset


class Backend(Protocol):
    name: str

    def affinity(self, audio: AudioFeatures, visual: VisualFeatures, max_shift: float) -> Affinity:
        """Banded score table over lags in [-max_shift, +max_shift] seconds."""
        ...

    def offset(self, audio: AudioFeatures, visual: VisualFeatures, max_shift: float) -> Offset:
        """Global offset (positive = audio leads picture)."""
        ...


@dataclass(frozen=True)
class BackendInfo:
    name: str
    description: str
    trainable: bool
    factory: Callable[..., Backend]
    tasks: tuple[str, ...] = ("align", "offset")


_REGISTRY: dict[str, BackendInfo] = {}


def register(info: BackendInfo) -> None:
    _REGISTRY[info.name] = info


def _load_builtin() -> None:
    # Import backend modules lazily: each registers itself. Missing optional ones are skipped.
    import importlib
    import pkgutil

    import avsync.backends as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"avsync.backends.{mod.name}")


def list_backends() -> list[BackendInfo]:
    _load_builtin()
    return sorted(_REGISTRY.values(), key=lambda b: (b.name != "classical", b.name))


def get_backend(name: str, **kwargs: object) -> Backend:
    """Build backend ``name``. kwargs: ``device`` ('auto'|'cpu'|'cuda'), ``checkpoint`` (name or path)."""
    _load_builtin()
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise InputError(f"unknown backend '{name}' (known: {known})")
    return _REGISTRY[name].factory(**kwargs)
