"""Correspondence → frame plan → encoded file.

A *plan* is an int array ``plan[k]`` = index (into the source's presentation-ordered
frames, see :func:`avsync.media.frame_times`) of the source frame shown as output frame
``k``, at time ``k / out_rate`` on the reference audio's clock. Plans are monotonic
non-decreasing: frames are dropped (jumps) or duplicated (repeats), never reordered.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from fractions import Fraction

import av
import numpy as np

from avsync import media
from avsync.errors import InputError
from avsync.outputs import check_distinct
from avsync.progress import Progress
from avsync.types import Correspondence

# Output containers into which an AAC stream is copied without re-encoding.
AAC_COPY_EXTS = {".mp4", ".m4v", ".mov", ".mkv"}


def frame_plan(corr: Correspondence, src_frame_times: np.ndarray) -> np.ndarray:
    """Source frame to show for every output frame: the frame nearest to ``src_time[k]``.

    Nearest presentation time (ties go to the earlier frame) keeps the picture within half
    a frame interval of the wanted source time, which is what lip sync needs; "last frame
    whose pts <= t" would add up to a whole frame of lag and flip on rounding noise. On
    constant-rate input ``src_time = i / fps`` maps to frame ``i`` exactly, and any time
    within ±half a frame of it does too. Variable frame rate is honoured (real times).

    Parameters
    ----------
    corr : Correspondence
        ``src_time`` (K,) in seconds on the source's clock (first frame at 0).
    src_frame_times : ndarray, shape (N,)
        Source presentation times in seconds, ascending (:func:`avsync.media.frame_times`).

    Returns
    -------
    ndarray, shape (K,), int64
        Indices in [0, N-1], monotonic non-decreasing.
    """
    ft = np.asarray(src_frame_times, dtype=np.float64).reshape(-1)
    t = np.asarray(corr.src_time, dtype=np.float64).reshape(-1)
    if ft.size == 0:
        raise ValueError("no source frames")
    if not np.all(np.isfinite(t)):
        raise ValueError("correspondence has non-finite source times")
    if t.size == 0:
        return np.zeros(0, np.int64)
    j = np.clip(np.searchsorted(ft, t, side="left"), 1, max(1, ft.size - 1))
    if ft.size == 1:
        return np.zeros(t.size, np.int64)
    before, after = ft[j - 1], ft[j]
    idx = np.where(after - t < t - before, j, j - 1)
    idx = np.clip(idx, 0, ft.size - 1)
    return np.maximum.accumulate(idx).astype(np.int64)


@dataclass(frozen=True)
class PlanStats:
    """Frame-level statistics of a plan (cf. the temporal-autoencoder lip-sync paper, Table 5).

    Attributes
    ----------
    duplicated : int
        Output frames that repeat the previous output frame's source (``plan[k]==plan[k-1]``).
    dropped : int
        Source frames in ``[min(plan), max(plan)]`` never shown.
    consecutive : int
        Output frames whose source follows the previous one's (``plan[k]==plan[k-1]+1``).
    unique : int
        Distinct source frames shown.
    n_out : int
        Output frames (len(plan)).
    n_src : int
        Source frames available.
    """

    duplicated: int
    dropped: int
    consecutive: int
    unique: int
    n_out: int
    n_src: int

    def to_dict(self) -> dict:
        return asdict(self)


def plan_stats(plan: np.ndarray, n_src: int) -> PlanStats:
    """Count duplicated / dropped / consecutive / unique frames of ``plan`` (K,) int."""
    p = np.asarray(plan, dtype=np.int64).reshape(-1)
    if p.size == 0:
        return PlanStats(0, 0, 0, 0, 0, int(n_src))
    d = np.diff(p)
    unique = int(np.unique(p).size)
    return PlanStats(
        duplicated=int(np.sum(d == 0)),
        dropped=int(p.max() - p.min() + 1 - unique),
        consecutive=int(np.sum(d == 1)),
        unique=unique,
        n_out=int(p.size),
        n_src=int(n_src),
    )


class _SourceFrames:
    """Sequential access to source frames by (monotonic) index, holding one frame."""

    def __init__(self, container, stream, src_pts: np.ndarray) -> None:
        self.src_pts = src_pts
        self.stats = media.DecodeStats()
        self._it = media.iter_video_frames(container, stream, self.stats)
        self._count = 0
        self.held: tuple[int, av.VideoFrame] | None = None
        self.ahead: tuple[int, av.VideoFrame] | None = self._next()

    def _next(self) -> tuple[int, av.VideoFrame] | None:
        fr = next(self._it, None)
        if fr is None:
            return None
        idx = self._count
        if fr.pts is not None:  # map by timestamp, so skipped corrupt frames do not shift indices
            j = int(np.searchsorted(self.src_pts, fr.pts))
            if j < self.src_pts.size and self.src_pts[j] == fr.pts:
                idx = max(j, self._count)
        self._count = idx + 1
        return idx, fr

    def get(self, want: int) -> av.VideoFrame:
        """The last decoded frame with index <= ``want`` (the first frame if there is none)."""
        while self.ahead is not None and (self.held is None or self.ahead[0] <= want):
            self.held, self.ahead = self.ahead, self._next()
        if self.held is None:
            raise InputError("cannot decode any video frame")
        return self.held[1]


def _audio_source(audio_path: str, out_ext: str, audio_sr: int | None):
    """Describe how to bring the reference audio in: (template stream or None, rate, layout)."""
    info = media.probe(audio_path)
    if not info.has_audio:
        raise InputError(f"no audio stream in '{audio_path}'")
    copy = (info.audio_codec == "aac" and out_ext in AAC_COPY_EXTS
            and (audio_sr is None or int(audio_sr) == info.audio_rate))
    layout = "mono" if info.audio_channels == 1 else "stereo"
    return copy, int(audio_sr or info.audio_rate) if copy else media.aac_rate(audio_sr or info.audio_rate), layout


def _copy_packets(audio_path: str) -> Iterator[tuple[av.container.InputContainer, object]]:
    """Yield the input container once (to take the stream template), then AAC packets."""
    with media.open_container(audio_path) as c:
        st = c.streams.audio[0]
        yield c, st
        origin = media.audio_origin(c)
        if origin is None:  # audio-only: its own start (after any edit list)
            origin = float(st.start_time * st.time_base) if st.start_time is not None else 0.0
        for pk in c.demux(st):
            if pk.size == 0 or pk.pts is None:
                continue
            yield origin, pk


def render(video_path: str | os.PathLike, plan: np.ndarray, out_rate: float | Fraction,
           out_path: str | os.PathLike, *, audio_path: str | os.PathLike | None = None,
           audio_sr: int | None = None, crf: int = 18, preset: str = "veryfast",
           overwrite: bool = False, progress: Progress | None = None,
           expect_audio_s: float | None = None) -> Rendered:
    """Write the source frames ``plan`` at ``out_rate`` (libx264) with the reference audio.

    Before the output is put in place it is re-opened and decoded
    (:func:`avsync.media.verify_output`): its frame count and video duration must be what was
    encoded, its audio duration what was written (and ``expect_audio_s`` when given), each
    within a frame / an audio frame; otherwise nothing is written and OutputError is raised.

    The source is decoded once, sequentially; only the current frame is held. Width,
    height (rounded down to even), pixel aspect ratio and display rotation are kept.

    Parameters
    ----------
    video_path : str or PathLike
        Source video.
    plan : ndarray, shape (K,), int
        Source frame index per output frame, monotonic, in [0, N-1].
    out_rate : float or Fraction
        Output frame rate; 23.976 / 29.97 / 59.94 are taken as n*1000/1001.
    out_path : str or PathLike
        Output file (extension picks the container). Written atomically.
    audio_path : str or PathLike, optional
        Reference audio (any container); its sample 0 (see :func:`avsync.media.load_audio`)
        is at output time 0. AAC is stream-copied into mp4/mov/mkv, else it is decoded
        and encoded to AAC. The output video then lasts ``ceil(audio_duration*out_rate)``
        frames: a shorter plan is padded with its last frame, a longer one is cut. Without
        audio the output has exactly K frames and no audio stream.
    audio_sr : int, optional
        Output audio rate (forces re-encoding when it differs from the source's).
    crf, preset : libx264 settings.
    overwrite : bool
        Replace an existing ``out_path``.
    progress : Progress, optional
        Called as ``progress("render", k, K)``.
    expect_audio_s : float, optional
        The reference audio's decoded duration (s, on the output clock) the caller planned
        for; the written audio is checked against it.

    Returns
    -------
    Rendered
        Frames and seconds written (as verified).

    Raises
    ------
    InputError
        Unreadable inputs, no video / no audio stream.
    OutputError
        Output exists (without ``overwrite``), would replace an input, or cannot be written.
    ValueError
        Empty, non-monotonic or out-of-range plan.
    """
    plan = _checked_plan(plan)
    media.check_output_container(out_path)
    vpath = str(video_path)
    info = _checked_source(vpath, plan)
    check_distinct({"the input video": video_path, "the reference audio": audio_path}, {"the output": out_path})
    rate = media.as_fraction(out_rate)
    ext = os.path.splitext(str(out_path))[1].lower()
    copy, a_rate, a_layout = (False, 0, "")
    if audio_path is not None:
        copy, a_rate, a_layout = _audio_source(str(audio_path), ext, audio_sr)

    with media.open_container(vpath) as vc:
        src_pts = np.sort(media.video_pts(vc, vc.streams.video[0], vpath))

    done: list[Rendered] = []

    def verify(tmp: str) -> None:
        r = done[0]
        media.verify_output(tmp, media.OutputPlan(
            n_frames=r.n_frames, video_seconds=r.n_frames / float(rate), frame_s=1.0 / float(rate),
            audio_seconds=r.audio_seconds if expect_audio_s is None else expect_audio_s), out_path)

    with media.atomic_output(out_path, overwrite, verify) as tmp, media.open_container(vpath) as dc:
        ds = dc.streams.video[0]
        ds.thread_type = "AUTO"
        frames = _SourceFrames(dc, ds, src_pts)
        items, template = _audio_items(audio_path, copy, a_rate, a_layout)
        writer = media.MediaWriter(
            tmp, width=info.width, height=info.height, rate=rate, sar=info.sar,
            rotation=info.rotation, crf=crf, preset=preset,
            audio_rate=a_rate if (items is not None and not copy) else None,
            audio_layout=a_layout or "stereo", audio_template=template)
        try:
            k = _encode(writer, frames, _AudioFeed(items, copy), plan, rate, progress)
            a_s = writer.audio_time() if items is not None else None
            writer.close()
            done.append(Rendered(k, k / float(rate), a_s))
        except BaseException:
            writer.abort()
            raise
        finally:
            if items is not None:
                items.close()
        if progress is not None:
            progress("render", k, k)
    return done[0]


@dataclass(frozen=True)
class Rendered:
    """What :func:`render` wrote (and verified by decoding it).

    Attributes
    ----------
    n_frames : int
        Output video frames.
    video_seconds : float
        ``n_frames / out_rate``.
    audio_seconds : float or None
        Audio written (s); None without audio.
    """

    n_frames: int
    video_seconds: float
    audio_seconds: float | None


def _checked_plan(plan: np.ndarray) -> np.ndarray:
    """The plan as a flat integer array; ValueError when empty, not integer or not monotonic."""
    plan = np.asarray(plan).reshape(-1)
    if plan.size == 0:
        raise ValueError("empty frame plan")
    if not np.issubdtype(plan.dtype, np.integer):
        raise ValueError("frame plan must hold integer frame indices")
    if np.any(np.diff(plan) < 0):
        raise ValueError("frame plan must be monotonic non-decreasing")
    return plan


def _checked_source(vpath: str, plan: np.ndarray) -> media.MediaInfo:
    """The source's MediaInfo; refuse a source without video or a plan outside its frames."""
    info = media.probe(vpath)
    if not info.has_video:
        raise InputError(f"no video stream in '{vpath}'")
    if plan.min() < 0 or plan.max() >= info.n_frames:
        raise ValueError(f"frame plan indices must be in [0, {info.n_frames - 1}]")
    return info


def _audio_items(audio_path: str | os.PathLike | None, copy: bool, rate: int,
                 layout: str) -> tuple[Iterator | None, object]:
    """The reference audio as items for :class:`_AudioFeed` (AAC packets when copied, else
    decoded chunks) and the stream template of a copy (None otherwise)."""
    if audio_path is None:
        return None, None
    if copy:
        items = _copy_packets(str(audio_path))
        _, template = next(items)
        return items, template
    return media.iter_audio(str(audio_path), rate=rate, layout=layout), None


class _AudioFeed:
    """Writes the reference audio ahead of the video, so that the muxer interleaves cheaply."""

    def __init__(self, items: Iterator | None, copy: bool) -> None:
        self.items, self.copy = items, copy
        self.done = items is None
        self.n_target: int | None = None  # output frames the audio covers, once it has ended

    def feed(self, writer: media.MediaWriter, until: float, rate: Fraction) -> None:
        """Write audio until the writer's audio time reaches ``until`` seconds (or the audio ends)."""
        assert self.items is not None or self.done
        while not self.done and writer.audio_time() < until:
            item = next(self.items, None)  # type: ignore[arg-type]  # items is set while not done
            if item is None:
                self.done = True
                self.n_target = max(1, math.ceil(writer.audio_time() * rate - 1e-6))
                return
            if self.copy:
                origin, pk = item
                tb = pk.time_base
                end = float((pk.pts + (pk.duration or 0)) * tb) - origin
                if end > 0 or pk.is_discard:
                    writer.copy_audio_packet(pk, offset=origin)
            else:
                writer.write_audio(item)


def _encode(writer: media.MediaWriter, frames: _SourceFrames, audio: _AudioFeed, plan: np.ndarray,
            rate: Fraction, progress: Progress | None) -> int:
    """Write output frames (the plan's source frames) until the plan — or, with audio, the audio —
    is covered: a shorter plan is padded with its last frame, a longer one cut. Returns the count."""
    K = int(plan.size)
    k = 0
    if progress is not None:
        progress("render", 0, K)
    while True:
        # keep audio ~0.5 s ahead of the video so the muxer interleaves cheaply
        audio.feed(writer, (k + 1) / rate + 0.5, rate)
        n_target = K if audio.n_target is None else audio.n_target
        if audio.done and k >= n_target:
            return k
        writer.write_video(frames.get(int(plan[min(k, K - 1)])))
        k += 1
        if progress is not None and k % 10 == 0:
            progress("render", k, max(K, k))
