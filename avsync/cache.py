"""On-disk cache of computed features, keyed by file content and parameters.

Location: ``$AVSYNC_CACHE`` if set, else ``$XDG_CACHE_HOME/avsync``, else
``~/.cache/avsync``. Features live under ``<cache_dir>/features/<key>.npz``.

Keys hash the file *content*, not its name or mtime, so a renamed copy hits and an
edited file misses. For speed only a sample is read (see :func:`file_key`): the size plus
the first, middle and last MiB. Two files of equal size that differ only outside those
samples would share a key; for encoded media that does not happen in practice (any edit
rewrites the container index at one end).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from avsync.outputs import write_atomic

# Bump whenever a feature's definition changes, so old cache entries stop matching.
FEATURE_VERSION = 5

_CHUNK = 1 << 20  # bytes read at each sampled position

PRIVATE_MODE = 0o600
"""Permissions of cache entries: the owner's only (as mkstemp makes them)."""


def cache_dir() -> Path:
    """Root cache directory (not created)."""
    env = os.environ.get("AVSYNC_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "avsync"
    return Path.home() / ".cache" / "avsync"


def _content_digest(path: Path) -> str:
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        if size <= 3 * _CHUNK:
            h.update(f.read())
        else:
            for pos in (0, size // 2 - _CHUNK // 2, size - _CHUNK):
                f.seek(pos)
                h.update(f.read(_CHUNK))
    return h.hexdigest()


def file_key(path: str | os.PathLike, **params: object) -> str:
    """Cache key of a file's content plus the parameters that shaped the result.

    Parameters
    ----------
    path : path-like
        The input file. Hashed by content: size + first, middle and last MiB (the whole
        file when it is under 3 MiB), sha256.
    **params
        JSON-serialisable parameters (mode, sample rate, ...); order does not matter.

    Returns
    -------
    str
        64 hex digits.
    """
    p = Path(path)
    payload = json.dumps(
        {"content": _content_digest(p), "params": params, "version": FEATURE_VERSION},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def _entry(key: str) -> Path:
    return cache_dir() / "features" / f"{key}.npz"


def load_npz(key: str) -> dict[str, np.ndarray] | None:
    """Arrays stored under ``key``, or None when absent or unreadable (corrupt entries are
    deleted so they get rewritten)."""
    p = _entry(key)
    if not p.is_file():
        return None
    try:
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception:
        with contextlib.suppress(OSError):
            p.unlink()
        return None


def save_npz(key: str, arrays: dict[str, np.ndarray]) -> Path | None:
    """Store ``arrays`` under ``key`` atomically (write to a temp file, then rename).

    Returns the entry path, or None if the cache is not writable (caching is best effort).
    """
    p = _entry(key)

    payload: dict[str, Any] = {k: np.asarray(v) for k, v in arrays.items()}

    def save(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **payload)

    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(p, save, suffix=".tmp", mode=PRIVATE_MODE)
    except OSError:
        return None
    return p
