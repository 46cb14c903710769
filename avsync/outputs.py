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
import errno
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from avsync.errors import InputError, OutputError

PathLike = str | os.PathLike[str]

# Files a folder input is read for (batch pairs videos by these suffixes): an output that would
# replace one of them inside an input folder collides with that folder.
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mxf", ".mts", ".ts", ".mpg", ".mpeg")
AUDIO_SUFFIXES = (".wav", ".mp3", ".m4a", ".aac", ".flac", ".ogg", ".opus", ".mka")
MEDIA_SUFFIXES = frozenset(VIDEO_SUFFIXES + AUDIO_SUFFIXES)


class PathCollision(OutputError):
    """An output names an input, or another output (by real path or hard link)."""


def same_file(a: PathLike, b: PathLike) -> bool:
    """Whether ``a`` and ``b`` name one file: the same real path (symlinks and ``..``
    resolved, so also for files not written yet), or, both existing, one inode (hard links)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _inside(path: PathLike, folder: PathLike) -> bool:
    """``path`` is an existing media file somewhere under the folder ``folder``."""
    real, top = os.path.realpath(path), os.path.realpath(folder)
    return (real.startswith(top.rstrip(os.sep) + os.sep) and os.path.isfile(real)
            and os.path.splitext(real)[1].lower() in MEDIA_SUFFIXES)


def _collision_with_input(out: PathLike, inp: PathLike, in_role: str) -> str | None:
    """What ``out`` would overwrite of the input ``inp`` (None: nothing)."""
    if same_file(out, inp):
        return in_role
    if os.path.isdir(inp) and _inside(out, inp):
        return f"a file in {in_role}"
    return None


def check_distinct(inputs: Mapping[str, PathLike | None], outputs: Mapping[str, PathLike | None]) -> None:
    """Refuse, before any work, an output that would replace an input or another output.

    Parameters
    ----------
    inputs, outputs
        Role (how the user names it: ``"the input video"``, ``"-o"``, ``"--map"``) to path;
        None entries are ignored. An input may be a folder: an output collides with it when
        it is the folder or an existing media file inside it.

    Paths are compared by real path (symlinks, ``..``) and, for files that exist, by
    ``(st_dev, st_ino)`` (hard links). This holds whatever ``--overwrite`` says.

    Raises
    ------
    PathCollision
        One line naming both roles, e.g. ``--map would overwrite the input video (v.mp4)``,
        ``--map (link.json) would overwrite the input video (v.mp4)``, ``--plot and -o are the
        same file (x.mp4); give each output its own name``.
    """
    outs = [(r, p) for r, p in outputs.items() if p is not None and str(p) != ""]
    ins = [(r, p) for r, p in inputs.items() if p is not None and str(p) != ""]
    for i, (role, out) in enumerate(outs):
        for in_role, inp in ins:
            what = _collision_with_input(out, inp, in_role)
            if what is not None:
                named = role if str(out) == str(inp) else f"{role} ({out})"
                raise PathCollision(f"{named} would overwrite {what} ({inp})")
        for other_role, other in outs[:i]:
            if same_file(out, other):
                both = (f"{role} and {other_role} are the same file ({out})" if str(out) == str(other)
                        else f"{role} ({out}) and {other_role} ({other}) are the same file")
                raise PathCollision(f"{both}; give each output its own name")


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


def check_request(inputs: Mapping[str, PathLike], outputs: Mapping[str, PathLike | None], overwrite: bool,
                  video: str = "-o") -> None:
    """Refuse, before any work, what a command that writes a video must not start with: a missing
    input, an output naming an input or another output (:func:`check_distinct`), an output that
    cannot be written (:func:`check_output`), and a video output (``outputs[video]``) whose
    container cannot hold H.264 + AAC (:func:`avsync.media.check_output_container`).

    ``inputs`` maps role words ("the input video") to paths, ``outputs`` flags to paths.
    """
    for p in inputs.values():
        if not Path(p).exists():
            raise InputError(f"no such file: '{p}'")
    check_distinct(inputs, outputs)
    for o in outputs.values():
        check_output(o, overwrite)
    video_out = outputs.get(video)
    if video_out is not None:
        from avsync.media import check_output_container

        check_output_container(video_out)


def commit(tmp: str | os.PathLike[str], path: str | os.PathLike[str], mode: int | None = None, *,
           overwrite: bool = True) -> None:
    """Give ``tmp`` its final permissions, then rename it onto ``path``.

    ``mode=None``: the mode open() would have given it (``0o666`` minus the umask; mkstemp
    makes 0600). Otherwise exactly ``mode`` (e.g. ``0o644`` for published files, ``0o600``
    for private ones).

    ``overwrite=False``: never replace a file (or symlink) at ``path``, even one that appeared
    since the output was checked (another process): the temp file is hard-linked to ``path``,
    which fails if ``path`` exists, then unlinked. Raises :class:`OutputError` then (``tmp``
    is left for the caller to remove).
    """
    if mode is None:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    os.chmod(tmp, mode)
    if overwrite:
        os.replace(tmp, path)
    else:
        _commit_new(tmp, path)


# link() errors that mean "no hard links on this filesystem", not "path exists"
_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK, errno.ENOSYS}


def _commit_new(tmp: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Put ``tmp`` at ``path`` only if nothing is there (no-clobber rename)."""
    appeared = OutputError(f"output '{path}' appeared while avsync was writing it; it was not replaced "
                           "(use --overwrite to replace it)")
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise appeared from None
    except OSError as e:
        if e.errno not in _NO_LINKS:
            raise
        if os.path.lexists(path):  # no hard links here: the narrowest check-then-rename we can do
            raise appeared from None
        os.rename(tmp, path)
        return
    with contextlib.suppress(OSError):
        os.unlink(tmp)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, suffix: str | None = None,
                mode: int | None = None, overwrite: bool = True,
                verify: Callable[[str], None] | None = None) -> Iterator[str]:
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
    overwrite
        False: never replace a file at ``path``, even one that appears while writing (see
        :func:`commit`); user-facing outputs pass ``--overwrite`` here.
    verify
        Called as ``verify(tmp)`` once the temp file is complete, before the rename; an
        exception it raises (e.g. a written video that does not decode to its plan) leaves
        nothing in place.

    The temp file is removed on any failure, including KeyboardInterrupt; after a signal
    (:mod:`avsync.interrupts`) nothing is put in place.
    """
    from avsync import interrupts

    p = Path(path)
    tmp: str | None = None
    try:
        with interrupts.held():  # a signal here must not leave a temp file nobody removes
            fd, tmp = tempfile.mkstemp(prefix=f".{p.stem}.", suffix=suffix or p.suffix or ".tmp",
                                       dir=p.parent if str(p.parent) else ".")
            os.close(fd)
        yield tmp
        if verify is not None:
            verify(tmp)
        interrupts.check()  # a signal whose KeyboardInterrupt was swallowed: no output either
        commit(tmp, p, mode, overwrite=overwrite)
    except BaseException:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise


def write_atomic(path: str | os.PathLike[str], write: Callable[[str], None], *,
                 suffix: str | None = None, mode: int | None = None, overwrite: bool = True,
                 verify: Callable[[str], None] | None = None) -> None:
    """Call ``write(tmp_path)`` then rename the temp file onto ``path``; no partial file on failure.

    ``suffix``, ``mode``, ``overwrite`` and ``verify`` as in :func:`atomic_path`.
    """
    with atomic_path(path, suffix=suffix, mode=mode, overwrite=overwrite, verify=verify) as tmp:
        write(tmp)


def json_text(obj: Any, *, indent: int = 1) -> str:
    """``obj`` as :func:`write_json` writes it: JSON (numpy values converted) plus a newline."""
    return json.dumps(obj, indent=indent, default=_default) + "\n"


def write_json(path: str | os.PathLike[str], obj: Any, *, indent: int = 1, mode: int | None = None,
               overwrite: bool = True) -> None:
    """Write ``obj`` as JSON (numpy values converted) plus a newline, atomically (``overwrite``
    as in :func:`atomic_path`)."""

    def _w(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json_text(obj, indent=indent))

    write_atomic(path, _w, mode=mode, overwrite=overwrite)


def _default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
