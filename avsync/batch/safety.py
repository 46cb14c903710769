"""What keeps a batch from losing a file: paths that collide across items, and one lock per
output folder and per results file.

:func:`mark_collisions` runs before anything is written: an item whose output (video, ``map``
or ``plot``) is another item's input or output fails without running, and a results file
that names an input or an output (or the manifest) refuses the whole run. Within one item
the command's own check (:func:`avsync.outputs.check_distinct`) applies.

:func:`batch_lock` holds an exclusive ``flock`` on ``DIR/.avsync-batch.lock`` for every
folder an item writes into, and on ``.<results name>.lock`` beside the results file, for the
whole run. A second run on the same folder or results file *refuses* at once (it does not
wait): ``another avsync batch is writing to DIR (lock FILE)``. Lock files are removed when
the run ends; a run killed with SIGKILL leaves its lock file behind, which is harmless (the
kernel drops the lock with the process).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from avsync.batch.manifest import BatchItem
from avsync.errors import OutputError
from avsync.outputs import PathCollision

LOCK_NAME = ".avsync-batch.lock"
SIDE_OUTPUTS = ("map", "plot")


def item_outputs(it: BatchItem) -> dict[str, str]:
    """The files item ``it`` writes, by manifest field: ``output``, ``map``, ``plot``."""
    outs = {"output": it.output}
    outs.update({k: it.options.get(k) for k in SIDE_OUTPUTS})
    return {k: v for k, v in outs.items() if isinstance(v, str) and v}


def _keys(path: str | os.PathLike[str]) -> list[tuple[Any, ...]]:
    """What identifies a file: its real path and, when it exists, its inode."""
    keys: list[tuple[Any, ...]] = [("path", os.path.realpath(path))]
    with contextlib.suppress(OSError):
        st = os.stat(path)
        keys.append(("inode", st.st_dev, st.st_ino))
    return keys


def mark_collisions(items: list[BatchItem], results: str | os.PathLike[str] | None = None,
                    manifest: str | os.PathLike[str] | None = None) -> None:
    """Give every item that would write over another item's input or output an ``error``.

    Raises
    ------
    PathCollision
        ``results`` is the manifest, an input or an output of some item.
    """
    inputs: dict[tuple[Any, ...], tuple[str, str]] = {}  # key -> (item id, what)
    if manifest is not None:
        for k in _keys(manifest):
            inputs[k] = ("", "the manifest")
    for it in items:
        for p in it.inputs:
            for k in _keys(p):
                inputs.setdefault(k, (it.id, f"an input of item {it.id}"))
    outputs: dict[tuple[Any, ...], tuple[str, str]] = {}
    for it in items:
        if it.error is None:
            it.error = _item_collision(it, inputs, outputs)
    if results is not None:
        for k in _keys(results):
            hit = inputs.get(k) or outputs.get(k)
            if hit is not None:
                raise PathCollision(f"--results would overwrite {hit[1]} ({results})")


def _item_collision(it: BatchItem, inputs: dict[tuple[Any, ...], tuple[str, str]],
                    outputs: dict[tuple[Any, ...], tuple[str, str]]) -> str | None:
    """Why ``it`` collides with another item (None: it does not); registers its outputs."""
    mine = item_outputs(it)
    for role, p in mine.items():
        for k in _keys(p):
            owner = inputs.get(k)
            if owner is not None and owner[0] != it.id:  # its own inputs: the command's check says it
                return f"{it.source}: {role} {p} would overwrite {owner[1]}"
            if k in outputs:
                return f"{it.source}: {role} {p} is also written by {outputs[k][1]}"
    for role, p in mine.items():
        for k in _keys(p):
            outputs[k] = (it.id, f"item {it.id} ({role})")
    return None


def _lock_targets(items: list[BatchItem], results: str | os.PathLike[str] | None) -> list[tuple[str, Path]]:
    """(what is protected, lock file) for every folder written into, and the results file."""
    targets: dict[Path, str] = {}
    for it in items:
        if it.error is not None:
            continue
        for p in item_outputs(it).values():
            d = Path(os.path.realpath(Path(p).parent if str(Path(p).parent) else "."))
            if d.is_dir() and os.access(d, os.W_OK):  # else nothing can be written there anyway
                targets[d / LOCK_NAME] = str(d)
    if results is not None:
        r = Path(os.path.realpath(results))
        if r.parent.is_dir():
            targets[r.parent / f".{r.name}.lock"] = str(results)
    return sorted(((what, lock) for lock, what in targets.items()), key=lambda t: str(t[1]))


def _acquire(what: str, lock: Path) -> int:
    """An exclusive, non-blocking flock on ``lock`` (created if missing); its descriptor."""
    busy = OutputError(f"another avsync batch is writing to {what} (lock {lock})")
    for _ in range(10):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise OutputError(f"cannot create the batch lock {lock}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise busy from None
        try:
            st = os.stat(lock)
        except FileNotFoundError:
            st = None
        mine = os.fstat(fd)
        if st is not None and (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino):
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)  # the holder removed the file between our open and flock: take the new one
    raise busy


@contextlib.contextmanager
def batch_lock(items: list[BatchItem], results: str | os.PathLike[str] | None = None) -> Iterator[None]:
    """Hold the locks of every folder ``items`` write into and of ``results`` while the block runs.

    Raises
    ------
    OutputError
        Another run holds one of them: ``another avsync batch is writing to DIR (lock FILE)``.
    """
    held: list[tuple[int, Path]] = []
    try:
        for what, lock in _lock_targets(items, results):
            held.append((_acquire(what, lock), lock))
        yield
    finally:
        for fd, lock in reversed(held):
            with contextlib.suppress(OSError):
                os.unlink(lock)  # while still held, so a waiter sees a different file and retries
            os.close(fd)
