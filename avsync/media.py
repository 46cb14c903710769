"""Media I/O on PyAV: probe, packet times, streaming decode, audio load, writing.

The only module (with :mod:`avsync.remux`, which re-muxes) that opens media files; every
other module asks it for plain values (times, arrays, :class:`MediaInfo`).

Clocks
------
Every time this module returns is in seconds. Video times are relative to the first
video frame's presentation time (the first frame is at 0.0). Audio returned by
:func:`load_audio` / :func:`iter_audio` is placed on the same clock: sample 0 is at the
*video's* start when the container has a video stream (audio that starts later is padded
with zeros in front, audio that starts earlier is cut), and at the audio's own first
sample otherwise. Gaps in the audio timestamps are filled with zeros; overlaps are cut.

Nothing here modifies an input file. Outputs go through :func:`atomic_output`: a temp file
in the destination directory, renamed into place only on success (:mod:`avsync.outputs`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from avsync.errors import InputError, OutputError
from avsync.outputs import atomic_path
from avsync.progress import Progress

log = logging.getLogger(__name__)

# Packet-time deltas deviating from the median by more than this fraction (plus one tick of
# the stream time base) mark a stream as variable frame rate.
VFR_TOLERANCE = 0.1

# The largest picture avsync decodes: DCI 8K (8192x4320, 35.4 megapixels). A bigger one (or a
# header that claims one) is refused from the stream header, before any frame is decoded.
MAX_PICTURE = (8192, 4320)
MAX_PIXELS = MAX_PICTURE[0] * MAX_PICTURE[1]


# --------------------------------------------------------------------------------------
# probing


@dataclass(frozen=True)
class MediaInfo:
    """What :func:`probe` finds in a media file.

    Attributes
    ----------
    path : str
    duration : float
        Container duration in seconds (longest stream).
    has_video : bool
    width, height : int
        Coded picture size in pixels (0 without video).
    fps : float
        Average frame rate, frames per second (0.0 without video).
    n_frames : int
        Exact number of video frames: counted by demuxing every video packet (no decode).
    rotation : int
        Display rotation in degrees counter-clockwise, one of 0/90/180/270, from the
        display-matrix side data of the first decoded frame (or the legacy 'rotate' tag).
    sar : tuple of int
        Sample (pixel) aspect ratio ``(num, den)``; ``(1, 1)`` when unset.
    vfr : bool
        True when the packet presentation-time deltas are not constant (see
        :data:`VFR_TOLERANCE`).
    video_codec, pix_fmt : str
        Empty strings without video.
    has_audio : bool
    audio_rate : int
        Samples per second (0 without audio).
    audio_channels : int
    audio_codec : str
    audio_duration : float
        Duration of the audio stream in seconds (0.0 without audio).
    """

    path: str
    duration: float
    has_video: bool
    width: int = 0
    height: int = 0
    fps: float = 0.0
    n_frames: int = 0
    rotation: int = 0
    sar: tuple[int, int] = (1, 1)
    vfr: bool = False
    video_codec: str = ""
    pix_fmt: str = ""
    has_audio: bool = False
    audio_rate: int = 0
    audio_channels: int = 0
    audio_codec: str = ""
    audio_duration: float = 0.0


def _why(exc: BaseException) -> str:
    """One short line out of an FFmpeg / OS error."""
    if isinstance(exc, av.error.FFmpegError):
        msg = exc.strerror or str(exc)
    elif isinstance(exc, OSError) and exc.strerror:
        msg = exc.strerror
    else:
        msg = str(exc) or type(exc).__name__
    return " ".join(str(msg).split()).rstrip(".").lower()


def _check_readable(path: str | os.PathLike) -> str:
    """Raise InputError unless ``path`` is an existing, readable, non-empty file."""
    p = str(path)
    if not os.path.exists(p):
        raise InputError(f"cannot read '{p}': no such file")
    if os.path.isdir(p):
        raise InputError(f"cannot read '{p}': is a directory")
    if not os.access(p, os.R_OK):
        raise InputError(f"cannot read '{p}': permission denied")
    if os.path.getsize(p) == 0:
        raise InputError(f"cannot read '{p}': file is empty")
    return p


@contextlib.contextmanager
def open_container(path: str | os.PathLike) -> Iterator[av.container.InputContainer]:
    """Open ``path`` for reading (a context manager); every failure becomes a one-line InputError.

    For the modules that must walk a container's packets themselves (rendering, re-muxing).
    """
    p = _check_readable(path)
    try:
        container = av.open(p, "r")
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise InputError(f"cannot read '{p}': {_why(exc)}") from None
    try:
        yield container
    finally:
        container.close()


@contextlib.contextmanager
def open_stream(path: str, kind: str) -> Iterator[tuple[av.container.InputContainer, av.stream.Stream]]:
    """:func:`open_container` and its first ``kind`` (``'audio'`` | ``'video'``) stream;
    InputError when the file has none."""
    with open_container(path) as c:
        streams = c.streams.audio if kind == "audio" else c.streams.video
        if not streams:
            raise InputError(f"no {kind} stream in '{path}'")
        yield c, streams[0]




def check_picture_size(stream: av.video.stream.VideoStream, path: str | os.PathLike) -> None:
    """Refuse, from the stream header, a picture larger than :data:`MAX_PIXELS` (or one whose
    header gives no size): decoding it would take gigabytes before failing."""
    cc = stream.codec_context
    w, h = int(cc.width or 0), int(cc.height or 0)
    if w <= 0 or h <= 0:
        raise InputError(f"cannot read '{path}': its video stream gives no picture size")
    if w * h > MAX_PIXELS or max(w, h) > 2 * MAX_PICTURE[0]:
        raise InputError(f"cannot read '{path}': its picture is {w}x{h} ({w * h / 1e6:.0f} megapixels); "
                         f"avsync takes at most {MAX_PIXELS / 1e6:.1f} megapixels "
                         f"({MAX_PICTURE[0]}x{MAX_PICTURE[1]})")


def _rotation_from_metadata(stream: av.stream.Stream) -> int | None:
    tag = stream.metadata.get("rotate")
    if tag is None:
        return None
    try:
        # The legacy tag is clockwise; we report counter-clockwise like VideoFrame.rotation.
        return int(-float(tag)) % 360
    except ValueError:
        return None


def _norm_rotation(deg: float) -> int:
    return int(round(deg / 90.0)) * 90 % 360


def video_pts(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
              path: str, first_frame: list | None = None) -> np.ndarray:
    """Presentation timestamps (stream ticks, int64, demux order) of every video packet.

    If ``first_frame`` is a list, the first decodable frame is appended to it on the way.
    """
    pts: list[int] = []
    try:
        for packet in container.demux(stream):
            if packet.size == 0 and packet.pts is None:
                continue  # flush packet
            if packet.is_discard:
                continue  # dropped by an edit list, never presented
            ts = packet.pts if packet.pts is not None else packet.dts
            if ts is None:
                ts = pts[-1] + 1 if pts else 0
            pts.append(int(ts))
            if first_frame is not None and not first_frame:
                with contextlib.suppress(av.error.FFmpegError):
                    first_frame.extend(stream.decode(packet)[:1])
    except av.error.FFmpegError as exc:
        raise InputError(f"cannot read '{path}': truncated or corrupt ({_why(exc)})") from None
    return np.asarray(pts, dtype=np.int64)




def _is_vfr(pts_sorted: np.ndarray) -> bool:
    if pts_sorted.size < 3:
        return False
    d = np.diff(pts_sorted).astype(np.float64)
    med = float(np.median(d))
    if med <= 0:
        return True
    return bool(np.any(np.abs(d - med) > VFR_TOLERANCE * med + 1.0))


def _stream_fps(vs: av.video.stream.VideoStream, pts: np.ndarray, tb: float, vfr: bool) -> float:
    """Frame rate of a video stream with sorted presentation times ``pts``.

    The container's declared rate, unless the timestamps disagree with it by more than 0.5 %:
    then the timestamps' own rate (``(n - 1) / span``), or the guessed rate where that agrees
    with them. (A stream copied from AVI into mp4 declares 3125/126 = 24.8 fps for frames
    spaced exactly 40 ms apart: the mp4 duration counts the AVI's start delay.)
    """
    rate = vs.average_rate or vs.guessed_rate
    n = int(pts.size)
    if n < 2 or pts[-1] <= pts[0]:
        return float(rate) if rate else 0.0
    own = (n - 1) / ((pts[-1] - pts[0]) * tb)
    if vfr or not rate:
        return float(own)
    if abs(float(rate) / own - 1.0) <= 0.005:
        return float(rate)
    guess = vs.guessed_rate
    if guess and abs(float(guess) / own - 1.0) <= 0.005:
        return float(guess)
    return float(own)


def probe(path: str | os.PathLike) -> MediaInfo:
    """Describe a media file without decoding it (one frame is decoded for the rotation).

    Parameters
    ----------
    path : str or PathLike

    Returns
    -------
    MediaInfo

    Raises
    ------
    InputError
        Missing file, directory, permission denied, empty, unreadable or truncated
        container, or no audio and no video stream.
    """
    p = str(path)
    with open_container(p) as c:
        vs = c.streams.video[0] if c.streams.video else None
        aus = c.streams.audio[0] if c.streams.audio else None
        if vs is None and aus is None:
            raise InputError(f"cannot read '{p}': no audio or video stream")
        duration = c.duration / av.time_base if c.duration is not None else 0.0
        fields: dict = {"path": p, "duration": float(duration), "has_video": vs is not None}
        if aus is not None:
            cc = aus.codec_context
            a_dur = (float(aus.duration * aus.time_base)
                     if aus.duration is not None and aus.time_base else float(duration))
            fields.update(has_audio=True, audio_rate=int(cc.sample_rate or aus.rate or 0),
                          audio_channels=int(cc.channels or 0), audio_codec=cc.name or "",
                          audio_duration=a_dur)
        if vs is not None:
            check_picture_size(vs, p)
            cc = vs.codec_context
            first: list = []
            pts = np.sort(video_pts(c, vs, p, first_frame=first))
            tb = float(vs.time_base) if vs.time_base else 1.0
            vfr = _is_vfr(pts)
            n = int(pts.size)
            if n == 0:
                raise InputError(f"cannot read '{p}': video stream has no frames")
            fps = _stream_fps(vs, pts, tb, vfr)
            rot = _rotation_from_metadata(vs)
            if first and first[0].rotation:
                rot = int(first[0].rotation)
            sar = vs.sample_aspect_ratio or cc.sample_aspect_ratio
            sar_t = (sar.numerator, sar.denominator) if sar else (1, 1)
            if duration <= 0 and n > 1:
                duration = (pts[-1] - pts[0]) * tb + 1.0 / max(fps, 1e-9)
                fields["duration"] = float(duration)
            fields.update(width=int(cc.width), height=int(cc.height), fps=float(fps), n_frames=n,
                          rotation=_norm_rotation(rot or 0), sar=sar_t, vfr=vfr,
                          video_codec=cc.name or "", pix_fmt=cc.pix_fmt or "")
        return MediaInfo(**fields)


def frame_times(path: str | os.PathLike) -> np.ndarray:
    """Presentation times of every video frame, from packets only (no decode).

    Returns
    -------
    ndarray, shape (N,), float64
        Seconds, sorted ascending, relative to the first frame (``t[0] == 0.0``).

    Raises
    ------
    InputError
        Unreadable file or no video stream.
    """
    p = str(path)
    with open_stream(p, "video") as (c, vs):
        pts = np.sort(video_pts(c, vs, p))
        if pts.size == 0:
            raise InputError(f"cannot read '{p}': video stream has no frames")
        tb = vs.time_base or Fraction(1, 1)
        return ((pts - pts[0]) * float(tb)).astype(np.float64)


# --------------------------------------------------------------------------------------
# streaming video decode


def _scaled_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    if not max_side or max(width, height) <= max_side:
        return width, height
    s = max_side / max(width, height)
    return max(1, int(round(width * s))), max(1, int(round(height * s)))


@dataclass
class DecodeStats:
    """Counters filled while decoding."""

    n_corrupt: int = 0  # packets that failed to decode (or a read error) and were skipped


class FrameReader:
    """Iterator over decoded frames, made by :func:`iter_frames`.

    Yields ``(index, time, image)``: ``index`` counts the frames decoded so far (0, 1, ...),
    ``time`` is seconds relative to the first decoded frame, ``image`` is
    ``(H, W, 3) uint8`` RGB or ``(H, W) uint8`` gray.

    Attributes
    ----------
    n_corrupt : int
        Packets that failed to decode and were skipped (their frames are missing).
    stats : DecodeStats
    """

    def __init__(self, path: str, max_side: int | None, gray: bool, progress: Progress | None,
                 upright: bool) -> None:
        self.path = path
        self.max_side = max_side
        self.gray = gray
        self.progress = progress
        self.upright = upright
        self.stats = DecodeStats()
        self._gen = self._run()

    @property
    def n_corrupt(self) -> int:
        return self.stats.n_corrupt

    def __iter__(self) -> FrameReader:
        return self

    def __next__(self) -> tuple[int, float, np.ndarray]:
        return next(self._gen)

    def close(self) -> None:
        """Stop decoding and release the file."""
        self._gen.close()

    def _run(self) -> Iterator[tuple[int, float, np.ndarray]]:
        p = self.path
        with open_stream(p, "video") as (c, vs):
            check_picture_size(vs, p)
            vs.thread_type = "AUTO"
            total = vs.frames or None
            fps = float(vs.average_rate or vs.guessed_rate or 25)
            fmt = "gray" if self.gray else "rgb24"
            t0: float | None = None
            i = 0
            for frame in iter_video_frames(c, vs, self.stats):
                t = float(frame.time) if frame.pts is not None else i / fps
                if t0 is None:
                    t0 = t
                w, h = _scaled_size(frame.width, frame.height, self.max_side)
                img = frame.to_ndarray(width=w, height=h, format=fmt, interpolation="FAST_BILINEAR")
                if self.upright and frame.rotation:
                    img = np.ascontiguousarray(np.rot90(img, k=_norm_rotation(frame.rotation) // 90))
                yield i, t - t0, img
                i += 1
                if self.progress is not None and i % 25 == 0:
                    self.progress("decode", i, total)
            if self.progress is not None:
                self.progress("decode", i, i)
            if self.n_corrupt:
                log.warning("%s: skipped %d corrupt video packet(s)", p, self.n_corrupt)


def iter_video_frames(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                      counter: DecodeStats | None = None) -> Iterator[av.VideoFrame]:
    """Decoded frames of ``stream`` in presentation order, skipping undecodable packets.

    ``counter.n_corrupt`` (if given) is incremented for every packet that fails.
    """
    try:
        for packet in container.demux(stream):
            try:
                frames = stream.decode(packet)
            except av.error.InvalidDataError:
                if counter is not None:
                    counter.n_corrupt += 1
                continue
            yield from frames
    except av.error.FFmpegError as exc:  # truncated container: stop where the data ends
        if counter is not None:
            counter.n_corrupt += 1
        log.warning("%s: stopped reading video early (%s)", container.name, _why(exc))
        with contextlib.suppress(av.error.FFmpegError):
            yield from stream.decode(None)


def iter_frames(path: str | os.PathLike, *, max_side: int | None = None, gray: bool = False,
                progress: Progress | None = None, upright: bool = False) -> FrameReader:
    """Stream the video frames of a file, one at a time (never the whole video).

    Parameters
    ----------
    path : str or PathLike
    max_side : int, optional
        Downscale (fast bilinear) so that the longest side is at most this many pixels.
    gray : bool
        Yield ``(H, W) uint8`` luma instead of ``(H, W, 3) uint8`` RGB.
    progress : Progress, optional
        Called as ``progress("decode", i, n_frames)``.
    upright : bool
        Apply the display rotation (multiples of 90°) to each image.

    Returns
    -------
    FrameReader
        Iterator of ``(index, time_s, image)``; ``time_s`` is relative to the first frame.
        Corrupt packets are skipped and counted in ``reader.n_corrupt``.
    """
    return FrameReader(str(path), max_side, gray, progress, upright)


# --------------------------------------------------------------------------------------
# audio


def audio_origin(container: av.container.InputContainer) -> float | None:
    """The time (s, container clock) that audio sample 0 is aligned to.

    The presentation time of the first video frame when there is video (the same origin as
    :func:`frame_times` and :func:`iter_frames`, which count from the first frame — a
    stream's declared start time can differ from it, e.g. AVI files whose first frame is
    at one frame period), else None (= the audio's own first decoded sample).
    """
    if not container.streams.video:
        return None
    vs = container.streams.video[0]
    tb = float(vs.time_base) if vs.time_base else 0.0
    first: int | None = None
    with contextlib.suppress(av.error.FFmpegError, OSError), av.open(container.name) as c2:
        s2 = c2.streams.video[0]
        for i, packet in enumerate(c2.demux(s2)):
            ts = packet.pts if packet.pts is not None else packet.dts
            if ts is not None and not packet.is_discard:
                first = ts if first is None else min(first, ts)
            if i >= 32:  # B-frame reordering never reaches this far
                break
    if first is not None and tb:
        return float(first * tb)
    if vs.start_time is not None and tb:
        return float(vs.start_time * tb)
    return 0.0


def _trim_frame(frame: av.AudioFrame, keep: int) -> av.AudioFrame:
    """First ``keep`` samples of an audio frame (for end-padding declared by the container)."""
    arr = frame.to_ndarray()
    planar = frame.format.is_planar
    arr = arr[:, :keep] if planar else arr[:, : keep * len(frame.layout.channels)]
    out = av.AudioFrame.from_ndarray(np.ascontiguousarray(arr), format=frame.format.name,
                                     layout=frame.layout.name)
    out.sample_rate = frame.sample_rate
    out.pts = frame.pts
    out.time_base = frame.time_base
    return out


def iter_audio(path: str | os.PathLike, *, rate: int | None = None, layout: str | None = None,
               align_to_video: bool = True) -> Iterator[np.ndarray]:
    """Decode the first audio stream in chunks, resampled and placed on the video's clock.

    Parameters
    ----------
    path : str or PathLike
        Any container PyAV reads (mp4, mkv, avi, mov, wav, mp3, ogg, flac, ...).
    rate : int, optional
        Output sample rate (Hz); the stream's own rate by default.
    layout : str, optional
        'mono', 'stereo', ...; the stream's layout by default.
    align_to_video : bool
        Put sample 0 at the video stream's start (see module docstring). If False, or the
        file has no video, sample 0 is the first decoded sample.

    Yields
    ------
    ndarray, shape (C, n), float32
        Consecutive chunks; concatenated along axis 1 they form the whole track.

    Raises
    ------
    InputError
        Unreadable file or no audio stream.
    """
    p = str(path)
    with open_stream(p, "audio") as (c, st):
        st.thread_type = "AUTO"
        rate = int(rate or st.codec_context.sample_rate or st.rate)
        layout = layout or st.codec_context.layout.name or "stereo"
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        placer = _AudioPlacer(rate, audio_origin(c) if align_to_video else None)
        for fr in _audio_frames(c, st, p):
            for o in resampler.resample(fr):
                yield from placer.place(o)
        for o in resampler.resample(None):
            yield from placer.place(o)


class _AudioPlacer:
    """Puts resampled audio frames on the output clock: sample index 0 is at ``origin``
    (container seconds; None = the first frame's time). Gaps become zeros, overlaps are cut."""

    def __init__(self, rate: int, origin: float | None) -> None:
        self.rate = rate
        self.origin = origin
        self.pos = 0  # samples emitted so far
        self.tol = max(2, rate // 1000)  # timestamp jitter treated as contiguous (~1 ms)

    def place(self, o: av.AudioFrame) -> Iterator[np.ndarray]:
        chunk = o.to_ndarray().astype(np.float32, copy=False)
        if o.pts is not None and o.time_base:
            t = float(o.pts * o.time_base)
            if self.origin is None:
                self.origin = t
            start = int(round((t - self.origin) * self.rate))
            if start > self.pos + self.tol:  # gap (or late start): fill with silence
                yield np.zeros((chunk.shape[0], start - self.pos), np.float32)
                self.pos = start
            elif start < self.pos - self.tol:  # overlap (or early start): cut the head
                chunk = chunk[:, self.pos - start:]
        if chunk.shape[1]:
            self.pos += chunk.shape[1]
            yield chunk


def _audio_frames(c: av.container.InputContainer, st: av.audio.stream.AudioStream,
                  p: str) -> Iterator[av.AudioFrame]:
    """Decoded frames of audio stream ``st``: undecodable packets skipped, declared end
    padding trimmed, a container that stops demuxing ends the stream (with a warning)."""
    try:
        for packet in c.demux(st):
            try:
                decoded = st.decode(packet)
            except av.error.InvalidDataError:
                continue
            for fr in decoded:
                yield _drop_end_padding(fr)
    except av.error.FFmpegError as exc:
        log.warning("%s: stopped reading audio early (%s)", p, _why(exc))


def _drop_end_padding(fr: av.AudioFrame) -> av.AudioFrame:
    """Containers may declare end padding through a short packet duration; a coarse time
    base (Matroska's 1 ms) only rounds it: not padding."""
    if fr.duration and fr.time_base and fr.sample_rate:
        keep = int(round(fr.duration * fr.time_base * fr.sample_rate))
        tick = float(fr.time_base) * fr.sample_rate
        if 0 < keep < fr.samples - tick:
            return _trim_frame(fr, keep)
    return fr


def load_audio(path: str | os.PathLike, sr: int = 22050) -> np.ndarray:
    """The whole first audio track as mono float32 at ``sr`` Hz, on the video's clock.

    Sample 0 is at the video stream's start when the file has video: if the audio stream
    starts later than the video, zeros are padded in front; if it starts earlier, the
    leading samples are dropped. Without video, sample 0 is the first decoded sample.

    Parameters
    ----------
    path : str or PathLike
    sr : int
        Sample rate in Hz.

    Returns
    -------
    ndarray, shape (S,), float32
        Samples in [-1, 1] (roughly; not clipped).

    Raises
    ------
    InputError
        Unreadable file, or "no audio stream in 'x'".
    """
    chunks = [ch[0] for ch in iter_audio(path, rate=sr, layout="mono")]
    if not chunks:
        return np.zeros(0, np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)


def decoded_audio_seconds(path: str | os.PathLike) -> float:
    """Seconds of the first audio track as :func:`load_audio` places it (on the video's clock),
    counted from its decoded samples in a streaming pass (a container's duration field can be
    missing or wrong)."""
    rate = 0
    n = 0
    for ch in iter_audio(path, layout="mono"):
        n += ch.shape[1]
    with open_container(path) as c:
        st = c.streams.audio[0]
        rate = int(st.codec_context.sample_rate or st.rate or 0)
    return n / rate if rate else 0.0


def decode_skipping(container: av.container.InputContainer, stream: av.stream.Stream,
                    path: str | os.PathLike) -> Iterator[av.frame.Frame]:
    """Decoded frames of ``stream`` as they come: packets that fail to decode are skipped
    (and counted in one warning), a container that stops demuxing ends the stream."""
    bad = 0
    try:
        for packet in container.demux(stream):
            try:
                yield from packet.decode()
            except av.error.InvalidDataError:
                bad += 1
    except av.error.FFmpegError as exc:
        log.warning("%s: stopped reading early (%s)", path, exc)
    if bad:
        log.warning("%s: skipped %d undecodable packet(s)", path, bad)


def first_frame_time(container: av.container.InputContainer, stream: av.stream.Stream) -> float | None:
    """Time (s, container clock) of the first frame of ``stream`` that decodes; None if none does."""
    for f in decode_skipping(container, stream, Path(container.name)):
        return float(f.time or 0.0)
    return None


@dataclass(frozen=True)
class StreamStarts:
    """Where a file's first video and audio streams start, on the container clock.

    Attributes
    ----------
    duration : float
        Container duration in seconds (0.0 when the container does not say).
    has_video, has_audio : bool
    video, audio : float or None
        Time (s) of the first frame of the stream that decodes; None without the stream or
        when none of its packets decodes.
    """

    duration: float
    has_video: bool
    has_audio: bool
    video: float | None
    audio: float | None


def stream_starts(path: str | os.PathLike) -> StreamStarts:
    """First decodable frame times of the first video and audio streams (one frame each).

    Raises
    ------
    InputError
        Missing, empty or unreadable file.
    """
    with open_container(path) as c:
        dur = float(c.duration / 1e6) if c.duration else 0.0
        v0 = a0 = None
        if c.streams.video:
            v0 = first_frame_time(c, c.streams.video[0])
            c.seek(0)
        if c.streams.audio:
            a0 = first_frame_time(c, c.streams.audio[0])
        return StreamStarts(dur, bool(c.streams.video), bool(c.streams.audio), v0, a0)


def load_raw_audio(path: str | os.PathLike) -> tuple[np.ndarray, int, float]:
    """The first audio stream exactly as decoded: mono, the stream's own rate, no clock
    placement (unlike :func:`load_audio`: no padding, no cutting, no gap filling).

    Returns
    -------
    samples : ndarray, shape (S,), float32
        Empty when nothing decodes.
    rate : int
        Samples per second.
    start : float
        Time (s, container clock) of sample 0 (0.0 when nothing decodes).

    Raises
    ------
    InputError
        Unreadable file or no audio stream.
    """
    p = str(path)
    with open_stream(p, "audio") as (c, s):
        sr = int(s.codec_context.sample_rate or s.rate)
        res = av.AudioResampler(format="flt", layout="mono", rate=sr)
        chunks: list[np.ndarray] = []
        t0: float | None = None
        for fr in decode_skipping(c, s, Path(p)):
            if t0 is None:
                t0 = float(fr.time or 0.0)
            for r in res.resample(fr):
                chunks.append(r.to_ndarray().reshape(-1))
        for r in res.resample(None):
            chunks.append(r.to_ndarray().reshape(-1))
    if not chunks:
        return np.zeros(0, np.float32), sr, 0.0
    return np.concatenate(chunks).astype(np.float32), sr, t0 or 0.0


# --------------------------------------------------------------------------------------
# writing


def as_fraction(rate: float | Fraction | int | str) -> Fraction:
    """A frame rate as an exact fraction; 23.976 / 29.97 / 59.94 become n*1000/1001."""
    if isinstance(rate, Fraction):
        return rate
    if isinstance(rate, str):
        return Fraction(rate)
    r = float(rate)
    if not math.isfinite(r) or r <= 0:
        raise ValueError(f"bad frame rate {rate!r}")
    ntsc = round(r * 1.001)
    if ntsc > 0 and abs(r - ntsc * 1000 / 1001) < 5e-3 and abs(r - round(r)) > 1e-6:
        return Fraction(ntsc * 1000, 1001)
    return Fraction(r).limit_denominator(1001)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, overwrite: bool = False,
                  verify: Callable[[str], None] | None = None) -> Iterator[str]:
    """Yield a temp path next to ``path`` (same extension); rename it onto ``path`` on success.

    ``verify(tmp)`` (e.g. :func:`verify_output`) runs on the complete temp file before the
    rename. The temp file is removed on any failure, including KeyboardInterrupt.

    Raises
    ------
    OutputError
        ``path`` exists and ``overwrite`` is False, is a directory, or its directory is
        missing / not writable.
    """
    p = Path(path)
    d = p.parent if str(p.parent) else Path(".")
    if not d.is_dir():
        raise OutputError(f"cannot write '{p}': directory '{d}' does not exist")
    if p.is_dir():
        raise OutputError(f"cannot write '{p}': is a directory")
    if p.exists() and not overwrite:
        raise OutputError(f"'{p}' already exists (use --overwrite to replace it)")
    if not os.access(d, os.W_OK):
        raise OutputError(f"cannot write '{p}': permission denied")
    with atomic_path(p, suffix=f".part{p.suffix}", overwrite=overwrite, verify=verify) as tmp:
        yield tmp


# Sample rates the AAC encoder takes; others are resampled (see :func:`aac_rate`).
AAC_RATES = (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)


def aac_rate(rate: int) -> int:
    """The rate to encode AAC at for audio at ``rate`` Hz: ``rate`` itself when AAC takes it,
    48 kHz above 96 kHz (a 192 kHz studio reference), else the next AAC rate up."""
    r = int(rate)
    if r in AAC_RATES:
        return r
    if r > AAC_RATES[-1]:
        return 48000
    return min(x for x in AAC_RATES if x >= r) if r > 0 else 48000


def check_output_container(path: str | os.PathLike) -> None:
    """Refuse, before any work, an output whose container (by its extension) cannot hold the
    H.264 video and AAC audio avsync writes (``-o out.wav``, ``.png``, ``.webm``, none)."""
    ext = os.path.splitext(str(path))[1].lower()
    hint = "use .mp4, .mov, .mkv or .avi"
    if not ext:
        raise OutputError(f"cannot write video to '{path}': no file extension to pick a container ({hint})")
    with tempfile.TemporaryDirectory(prefix="avsync-fmt-") as d:
        try:
            c = av.open(os.path.join(d, f"probe{ext}"), "w")
        except (av.error.FFmpegError, ValueError, OSError):
            raise OutputError(f"cannot write video to '{path}': unknown container '{ext}' ({hint})") from None
        try:
            c.add_stream("libx264", rate=25)
            c.add_stream("aac", rate=48000)
        except (av.error.FFmpegError, ValueError):
            raise OutputError(f"cannot write video to '{path}': a {ext} file cannot hold H.264 video with "
                              f"AAC audio ({hint})") from None
        finally:
            c.close()


@dataclass(frozen=True)
class OutputPlan:
    """What a written file must decode to (:func:`verify_output`); None = not checked.

    Attributes
    ----------
    n_frames : int, optional
        Decoded video frames; within one frame.
    video_seconds : float, optional
        First frame's start to last frame's end (s); within ``frame_s``.
    frame_s : float
        One frame interval (s): the last frame's duration and the video tolerance.
    audio_seconds : float, optional
        Decoded audio (s); within one audio frame of the file's codec.
    """

    n_frames: int | None = None
    video_seconds: float | None = None
    frame_s: float = 0.0
    audio_seconds: float | None = None


@dataclass(frozen=True)
class Decoded:
    """What a file decodes to (:func:`decoded_lengths`)."""

    n_frames: int  # decoded video frames (0 without video)
    video_seconds: float  # last frame's time - first frame's time (s), without the last frame's length
    audio_seconds: float  # end of the last decoded audio sample, from the first video frame (s)
    audio_frame_s: float  # longest decoded audio frame (s): the audio tolerance


def decoded_lengths(path: str | os.PathLike) -> Decoded:
    """Decode (one pass, no pixel conversion) every frame of the first video and audio streams."""
    p = str(path)
    with open_container(p) as c:
        streams = [s for s in (c.streams.video[:1] + c.streams.audio[:1])]
        for s in streams:
            s.thread_type = "AUTO"
        tally = _Tally()
        try:
            for packet in c.demux(streams):
                try:
                    frames = packet.decode()
                except av.error.InvalidDataError:
                    continue
                for f in frames:
                    tally.add(f)
        except av.error.FFmpegError as exc:
            log.warning("%s: stopped reading early (%s)", p, _why(exc))
    return tally.result()


class _Tally:
    """Counts of decoded frames for :func:`decoded_lengths`."""

    def __init__(self) -> None:
        self.n = 0
        self.t0: float | None = None
        self.t1 = 0.0
        self.rate = self.longest = 0
        self.a0: float | None = None
        self.a_end = 0.0  # end (s) of the audio decoded so far: frame times plus decoded samples

    def add(self, f: av.frame.Frame) -> None:
        if isinstance(f, av.AudioFrame):
            self.rate = f.sample_rate or self.rate
            self.longest = max(self.longest, f.samples)
            start = float(f.time) if f.time is not None else self.a_end
            self.a0 = start if self.a0 is None else min(self.a0, start)
            self.a_end = max(self.a_end, start) + f.samples / max(self.rate, 1)
            return
        self.n += 1
        if f.time is not None:
            t = float(f.time)
            self.t0 = t if self.t0 is None else min(self.t0, t)
            self.t1 = max(self.t1, t)

    def result(self) -> Decoded:
        r = self.rate
        origin = self.t0 if self.t0 is not None else (self.a0 or 0.0)
        a_s = self.a_end - origin if self.a0 is not None else 0.0
        return Decoded(self.n, (self.t1 - self.t0) if self.t0 is not None else 0.0,
                       a_s, self.longest / r if r else 0.0)


def verify_output(path: str | os.PathLike, plan: OutputPlan, name: str | os.PathLike | None = None) -> None:
    """Re-open a written file and check it against ``plan``.

    Raises
    ------
    OutputError
        "'<name>' not written: ..." naming what differs (the file is then discarded by
        the atomic writer, never put in place).
    """
    got = decoded_lengths(path)
    shown = name if name is not None else path
    bad: list[str] = []
    eps = 1e-3
    if plan.n_frames is not None and abs(got.n_frames - plan.n_frames) > 1:
        bad.append(f"its video decodes to {got.n_frames} frame(s), {plan.n_frames} planned")
    if plan.video_seconds is not None and got.n_frames:
        v_s = got.video_seconds + plan.frame_s
        if abs(v_s - plan.video_seconds) > plan.frame_s + eps:
            bad.append(f"its video lasts {v_s:.3f} s, {plan.video_seconds:.3f} s planned")
    if plan.audio_seconds is not None and abs(got.audio_seconds - plan.audio_seconds) > got.audio_frame_s + eps:
        bad.append(f"its audio lasts {got.audio_seconds:.3f} s, {plan.audio_seconds:.3f} s planned")
    if bad:
        raise OutputError(f"'{shown}' not written: the encoded file does not check out ({'; '.join(bad)})")


class MediaWriter:
    """Encode video (libx264) and audio (AAC by default, or stream copy) into one container.

    Video frames are numbered 0, 1, ... and shown at ``k / rate``. Audio written with
    :meth:`write_audio` starts at t = 0; copied packets keep their times minus ``offset``.
    Use :meth:`video_time` / :meth:`audio_time` to interleave streams as you go.

    Parameters
    ----------
    path : str
        Output file; the extension picks the muxer (use :func:`atomic_output`).
    width, height : int, optional
        Picture size in pixels; None = no video stream. Odd sizes are rounded down to
        even (yuv420p needs it); frames are rescaled on the way.
    rate : Fraction, optional
        Output frame rate.
    sar : tuple of int
        Sample aspect ratio to write.
    rotation : int
        Display rotation (degrees counter-clockwise) written as a display matrix.
    crf, preset : libx264 quality / speed.
    audio_rate, audio_layout : optional
        Add an encoded audio stream (``audio_codec``) with this rate / layout.
    audio_template : av.AudioStream, optional
        Add an audio stream that copies packets from this input stream instead.
    """

    def __init__(self, path: str, *, width: int | None = None, height: int | None = None,
                 rate: Fraction | float | None = None, sar: tuple[int, int] = (1, 1),
                 rotation: int = 0, crf: int = 18, preset: str = "veryfast",
                 audio_rate: int | None = None, audio_layout: str = "stereo",
                 audio_codec: str = "aac", audio_template: av.audio.stream.AudioStream | None = None
                 ) -> None:
        self.path = path
        try:
            self.container = av.open(path, "w")
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise OutputError(f"cannot write '{path}': {_why(exc)}") from None
        self.video = None
        self.audio = None
        self.n_video = 0
        self.n_audio = 0
        self._copy_last_t = 0.0
        self._copy = False
        self.rate = Fraction(0)
        try:
            if width is not None and height is not None:
                if rate is None:
                    raise ValueError("rate is needed for a video stream")
                self.rate = as_fraction(rate)
                w, h = max(2, width - width % 2), max(2, height - height % 2)
                vs = self.container.add_stream("libx264", rate=self.rate)
                vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
                vs.codec_context.time_base = 1 / self.rate
                vs.options = {"crf": str(crf), "preset": preset}
                if sar and tuple(sar) != (1, 1) and sar[0] > 0 and sar[1] > 0:
                    vs.sample_aspect_ratio = Fraction(sar[0], sar[1])
                if rotation % 360:
                    vs.set_display_rotation(rotation % 360)
                self.video = vs
            if audio_template is not None:
                self.audio = self.container.add_stream_from_template(audio_template)
                self._copy = True
            elif audio_rate is not None:
                self.audio = self.container.add_stream(audio_codec, rate=int(audio_rate),
                                                       layout=audio_layout)
                self._copy = False
        except BaseException:
            self.container.close()
            raise

    # -- video
    def write_video(self, frame: np.ndarray | av.VideoFrame) -> None:
        """Append one output frame: ``(H, W, 3) uint8`` RGB array or a decoded VideoFrame."""
        if isinstance(frame, np.ndarray):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        frame.pts = self.n_video
        frame.time_base = self.video.codec_context.time_base
        frame.pict_type = av.video.frame.PictureType.NONE
        for packet in self.video.encode(frame):
            self.container.mux(packet)
        self.n_video += 1

    def video_time(self) -> float:
        """Seconds of video written so far."""
        return float(self.n_video / self.rate) if self.video is not None else 0.0

    # -- audio
    def write_audio(self, samples: np.ndarray) -> None:
        """Append audio: ``(C, n)`` float32 planar samples at the stream's rate."""
        s = np.ascontiguousarray(samples, dtype=np.float32)
        if s.ndim == 1:
            s = s[None]
        frame = av.AudioFrame.from_ndarray(s, format="fltp", layout=self.audio.layout.name)
        frame.sample_rate = self.audio.rate
        frame.pts = self.n_audio
        frame.time_base = Fraction(1, self.audio.rate)
        for packet in self.audio.encode(frame):
            self.container.mux(packet)
        self.n_audio += s.shape[1]

    def copy_audio_packet(self, packet: av.Packet, offset: float = 0.0) -> None:
        """Mux an already-encoded packet from ``audio_template``'s stream, ``offset`` s earlier."""
        tb = packet.time_base
        shift = int(round(offset / tb)) if tb else 0
        if packet.pts is not None:
            packet.pts -= shift
        if packet.dts is not None:
            packet.dts -= shift
        # The end time is taken before muxing: mux() rescales pts/duration to the output
        # stream's time base (Matroska's 1 ms in, 1/44100 out read 44x too long).
        end = float((packet.pts + (packet.duration or 0)) * tb) if packet.pts is not None and tb else None
        packet.stream = self.audio
        self.container.mux(packet)
        if end is not None:
            self._copy_last_t = end

    def audio_time(self) -> float:
        """Seconds of audio written so far."""
        if self.audio is None:
            return 0.0
        return self._copy_last_t if self._copy else self.n_audio / self.audio.rate

    def close(self) -> None:
        """Flush the encoders and finish the file."""
        try:
            if self.video is not None:
                for packet in self.video.encode(None):
                    self.container.mux(packet)
            if self.audio is not None and not self._copy:
                for packet in self.audio.encode(None):
                    self.container.mux(packet)
        finally:
            self.container.close()

    def abort(self) -> None:
        """Close without flushing (the file is to be discarded)."""
        with contextlib.suppress(Exception):
            self.container.close()
