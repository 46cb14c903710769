"""Small atomic writers for the evidence files (JSON maps, PNG plots)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
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


def commit(tmp: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Give ``tmp`` the mode open() would have given it (mkstemp makes 0600), then rename it
    onto ``path``."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def write_atomic(path: str | os.PathLike[str], write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then rename the temp file onto ``path``; no partial file on failure."""
    p = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.stem}.", suffix=p.suffix or ".tmp", dir=p.parent or ".")
    os.close(fd)
    try:
        write(tmp)
        commit(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    def _w(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1, default=_default)
            f.write("\n")

    write_atomic(path, _w)


def _default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
