"""The one atomic writer (temp file beside the destination, then rename) and output checks.

Every file avsync writes goes through :func:`atomic_path` (directly, or via
:func:`write_atomic` / :func:`write_json` / :func:`avsync.media.atomic_output`): the data is
written to ``.<stem>.<random><suffix>`` in the destination's directory and renamed onto the
destination only once complete, so a reader never sees a partial file and a failure (or
Ctrl-C) leaves nothing behind. ``avsync.batch`` relies on that temp-name pattern to clean up
after a killed worker.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from avsync.errors import OutputError


def check_output(path: str | os.PathLike[str] | None, overwrite: bool) -> None:
    """Refuse, before any work is done, an output that exists (without overwrite) or whose
    directory does not exist."""
    if path is None:
        return
    p = Path(path)
    if p.exists() and p.is_dir():
        raise OutputError(f"output '{p}' is a directory")
    if p.exists() and not overwrite:
        raise OutputError(f"output '{p}' exists (use --overwrite to replace it)")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"output directory '{parent}' does not exist")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"output directory '{parent}' is not writable")


def commit(tmp: str | os.PathLike[str], path: str | os.PathLike[str], mode: int | None = None) -> None:
    """Give ``tmp`` its final permissions, then rename it onto ``path``.

    ``mode=None``: the mode open() would have given it (``0o666`` minus the umask; mkstemp
    makes 0600). Otherwise exactly ``mode`` (e.g. ``0o644`` for published files, ``0o600``
    for private ones).
    """
    if mode is None:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    os.chmod(tmp, mode)
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, suffix: str | None = None,
                mode: int | None = None, verify: Callable[[str], None] | None = None) -> Iterator[str]:
    """Yield a temp path beside ``path``; on success :func:`commit` it onto ``path``.

    Parameters
    ----------
    path
        Destination. Its directory must exist.
    suffix
        Ending of the temp name (default: ``path``'s suffix, so writers that pick a format
        from the extension still do; ``.tmp`` when it has none). The temp name is
        ``.<stem>.<random><suffix>``.
    mode
        Final permissions, see :func:`commit`.
    verify
        Called as ``verify(tmp)`` once the temp file is complete, before the rename; an
        exception it raises (e.g. a written video that does not decode to its plan) leaves
        nothing in place.

    The temp file is removed on any failure, including KeyboardInterrupt.
    """
    p = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.stem}.", suffix=suffix or p.suffix or ".tmp",
                               dir=p.parent if str(p.parent) else ".")
    os.close(fd)
    try:
        yield tmp
        if verify is not None:
            verify(tmp)
        commit(tmp, p, mode)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_atomic(path: str | os.PathLike[str], write: Callable[[str], None], *,
                 suffix: str | None = None, mode: int | None = None,
                 verify: Callable[[str], None] | None = None) -> None:
    """Call ``write(tmp_path)`` then rename the temp file onto ``path``; no partial file on failure.

    ``suffix``, ``mode`` and ``verify`` as in :func:`atomic_path`.
    """
    with atomic_path(path, suffix=suffix, mode=mode, verify=verify) as tmp:
        write(tmp)


def json_text(obj: Any, *, indent: int = 1) -> str:
    """``obj`` as :func:`write_json` writes it: JSON (numpy values converted) plus a newline."""
    return json.dumps(obj, indent=indent, default=_default) + "\n"


def write_json(path: str | os.PathLike[str], obj: Any, *, indent: int = 1, mode: int | None = None) -> None:
    """Write ``obj`` as JSON (numpy values converted) plus a newline, atomically."""

    def _w(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json_text(obj, indent=indent))

    write_atomic(path, _w, mode=mode)


def _default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
