"""Cut long synced footage into short clips for benchmarking and training.

One streaming pass over the source: frames are downscaled and re-encoded, the matching
audio is re-encoded to AAC, clip by clip. Nothing is held beyond the current clip's audio.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from avsync.errors import InputError
from avsync.outputs import commit
from avsync.progress import Progress


def cut_clips(
    src: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    start: float,
    end: float,
    clip_seconds: float = 11.0,
    max_side: int = 640,
    prefix: str = "clip",
    skip: tuple[tuple[float, float], ...] = (),
    progress: Progress | None = None,
) -> list[Path]:
    """Cut ``src`` between ``start`` and ``end`` seconds into consecutive clips.

    Parameters
    ----------
    src : path
        A video with an audio stream.
    out_dir : path
        Where ``{prefix}_{start:04d}.mp4`` files are written (existing ones are kept).
    start, end : float
        Source range in seconds.
    clip_seconds : float
        Length of each clip.
    max_side : int
        Frames are downscaled so that the longest side is at most this.
    skip : tuple of (a, b)
        Source ranges (seconds) that no clip may overlap (e.g. end credits).

    Returns
    -------
    list of Path
        The clips, in time order.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bounds = _clip_bounds(start, end, clip_seconds, skip)
    paths = [out / f"{prefix}_{int(round(a)):04d}.mp4" for a, _ in bounds]
    todo = [(b, p) for b, p in zip(bounds, paths, strict=True) if not p.exists()]
    if todo:
        _write_clips(str(src), todo, max_side, progress)
    return paths


def _clip_bounds(start: float, end: float, clip_seconds: float,
                 skip: tuple[tuple[float, float], ...]) -> list[tuple[float, float]]:
    """Consecutive ``clip_seconds`` spans from ``start`` to ``end``, less those overlapping ``skip``."""
    bounds = []
    t = start
    while t + clip_seconds <= end + 1e-6:
        if not any(t < b and t + clip_seconds > a for a, b in skip):
            bounds.append((t, t + clip_seconds))
        t += clip_seconds
    return bounds


def _write_clips(src: str, todo: list[tuple[tuple[float, float], Path]], max_side: int,
                 progress: Progress | None) -> None:
    """One decode pass over ``src`` writing every (span, path) of ``todo`` (in time order)."""
    import av

    try:
        cin = av.open(src)
    except (av.error.FFmpegError, OSError) as e:
        raise InputError(f"cannot read '{src}': {e}") from None
    try:
        vs = cin.streams.video[0]
        rate = vs.average_rate or Fraction(25)
        w, h = vs.codec_context.width, vs.codec_context.height
        scale = min(1.0, max_side / max(w, h))
        size = (int(round(w * scale / 2)) * 2, int(round(h * scale / 2)) * 2)
        sr = 44100
        a0 = todo[0][0][0]
        audio = _load_audio_range(src, a0, todo[-1][0][1])
        cin.seek(int(max(0.0, a0 - 1.0) / vs.time_base), stream=vs)

        def open_clip(i: int) -> _ClipWriter:
            (ca, cb), cpath = todo[i]
            writer = _ClipWriter(cpath, rate, *size, sr)
            writer.write_audio(audio[int(round((ca - a0) * sr)): int(round((cb - a0) * sr))])
            return writer

        _decode_into_clips(cin, vs, todo, open_clip, progress)
    finally:
        cin.close()


def _decode_into_clips(cin: Any, vs: Any, todo: list[tuple[tuple[float, float], Path]],
                       open_clip: Callable[[int], _ClipWriter], progress: Progress | None) -> None:
    """Frames of ``vs`` into clip after clip (``open_clip(i)`` starts clip i); nothing half-written."""
    i = 0
    writer: _ClipWriter | None = open_clip(0)
    (ca, cb), _ = todo[0]
    try:
        for frame in cin.decode(vs):
            ts = float(frame.pts * vs.time_base) if frame.pts is not None else None
            if ts is None or ts < ca - 1e-6:
                continue
            while ts >= cb - 1e-6:
                assert writer is not None
                writer.close()
                writer = None
                i += 1
                if progress:
                    progress("cut clips", i, len(todo))
                if i == len(todo):
                    return
                writer = open_clip(i)
                (ca, cb), _ = todo[i]
            if ts >= ca - 1e-6:
                assert writer is not None
                writer.write_frame(frame.reformat(width=writer.v.width, height=writer.v.height, format="yuv420p"))
        assert writer is not None
        writer.close()
        writer = None
    finally:
        if writer is not None:
            writer.abort()


def _load_audio_range(path: str, a: float, b: float, sr: int = 44100) -> np.ndarray:
    """Stereo-or-mono float32 audio (C, N) between a and b seconds, relative to the video start."""
    import av

    c = av.open(path)
    s = c.streams.audio[0]
    res = av.AudioResampler(format="fltp", layout="stereo", rate=sr)
    chunks = []
    v0 = c.streams.video[0].start_time * c.streams.video[0].time_base if c.streams.video else 0
    c.seek(int(max(0.0, a - 1.0) / s.time_base), stream=s)
    first_t = None
    got = 0
    for frame in c.decode(s):
        for f in res.resample(frame):
            if first_t is None:
                first_t = float(f.pts * f.time_base) - float(v0) if f.pts is not None else a
            chunks.append(f.to_ndarray())
            got += chunks[-1].shape[1]
        if first_t is not None and first_t + got / sr > b + 1:
            break
    c.close()
    y = np.concatenate(chunks, axis=1)
    off = int(round((a - first_t) * sr))
    if off < 0:
        y = np.pad(y, ((0, 0), (-off, 0)))
        off = 0
    return y[:, off:].T.copy()


class _ClipWriter:
    def __init__(self, path: Path, rate: Fraction, w: int, h: int, sr: int) -> None:
        import av

        self.path = path
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".mp4", dir=path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        self.c = av.open(tmp, "w")
        self.rate = Fraction(rate)
        self.v = self.c.add_stream("libx264", rate=rate)
        self.v.width, self.v.height, self.v.pix_fmt = w, h, "yuv420p"
        self.v.options = {"crf": "20", "preset": "veryfast"}
        self.a = self.c.add_stream("aac", rate=sr)
        self.a.layout = "stereo"
        self.sr = sr
        self.n = 0

    def write_audio(self, y: np.ndarray) -> None:
        import av

        y = np.ascontiguousarray(y.T.astype(np.float32))  # (2, N)
        hop = 1024
        for i in range(0, y.shape[1], hop):
            f = av.AudioFrame.from_ndarray(np.ascontiguousarray(y[:, i: i + hop]), format="fltp", layout="stereo")
            f.sample_rate = self.sr
            f.pts = i
            for p in self.a.encode(f):
                self.c.mux(p)
        for p in self.a.encode(None):
            self.c.mux(p)

    def write_frame(self, frame) -> None:  # type: ignore[no-untyped-def]
        frame.pts = self.n
        frame.time_base = Fraction(1) / self.rate
        for p in self.v.encode(frame):
            self.c.mux(p)
        self.n += 1

    def close(self) -> None:
        for p in self.v.encode(None):
            self.c.mux(p)
        self.c.close()
        commit(self.tmp, self.path)

    def abort(self) -> None:
        try:
            self.c.close()
        finally:
            if self.tmp.exists():
                self.tmp.unlink()


def bbb_splits(media_dir: str | os.PathLike[str], data_dir: str | os.PathLike[str],
               progress: Progress | None = None) -> dict[str, list[Path]]:
    """The project's splits of Big Buck Bunny: ``dev`` = 0–400 s (tuning/training),
    ``heldout`` = 400–490 s (reporting only; the end credits from ~490 s carry no
    picture-sound link and are left out)."""
    src = Path(media_dir) / "bbb.mp4"
    if not src.exists():
        raise InputError(f"'{src}' is missing: run ../shared/media/fetch.sh first")
    dev = cut_clips(src, Path(data_dir) / "dev", start=0.0, end=396.0, clip_seconds=11.0, prefix="bbb",
                    progress=progress)
    held = cut_clips(src, Path(data_dir) / "heldout", start=401.0, end=489.0, clip_seconds=11.0, prefix="bbb",
                     progress=progress)
    return {"dev": dev, "heldout": held}
