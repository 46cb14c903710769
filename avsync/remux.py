"""Re-time a clip's own audio against its picture, copying the video stream untouched.

Used by ``avsync detect-offset --fix``. The video packets are copied bit for bit (no
re-encode); only the audio is decoded, re-timed and re-encoded (with the input's codec where
the output container accepts it, else AAC). When nothing has to change (zero shift, zero
drift) the audio packets are copied too.

Timing model (sign convention: positive offset = audio leads the picture). With a measured
offset ``o(t) = shift_s + drift * t`` (seconds, ``t`` = seconds since the first video frame,
``drift = drift_ms_per_min / 60000``), the sound of an event shown at picture time ``t`` sits
at audio time ``t - o(t)``. The corrected audio therefore plays, at output time ``t``, the
input audio at time ``t * (1 - drift) - shift_s``: a positive shift delays the audio (silence
is padded at the start), a negative one advances it (the head is trimmed). The output audio
starts at container time 0 (silence up to the first frame when the picture starts later) and
lasts until the input audio ended.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np

from avsync.errors import InputError, OutputError
from avsync.outputs import check_output, write_atomic

# Audio codecs we re-encode with, by output container extension (first that the container
# accepts wins); the input codec is tried first.
_PCM = ("pcm_s16le", "pcm_s24le", "pcm_s32le", "pcm_f32le")
_CONTAINER_FORMAT = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi"}


def write_shifted(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    shift_s: float,
    *,
    drift_ms_per_min: float = 0.0,
    overwrite: bool = False,
) -> dict[str, object]:
    """Write a copy of ``src`` whose audio is re-timed by ``shift_s`` (and drift).

    Parameters
    ----------
    src : path
        Input clip with one video and one audio stream. Never modified.
    out : path
        Output clip (.mp4, .mov, .mkv or .avi). Written atomically (temp file + rename).
    shift_s : float
        The measured offset to cancel, seconds, positive = audio leads picture. A positive
        value delays the audio by that much.
    drift_ms_per_min : float
        Measured linear drift of the offset (ms per minute of picture time) to cancel by
        resampling the audio; 0 = none. ``shift_s`` is then the offset at the first frame.
    overwrite : bool
        Replace ``out`` if it exists.

    Returns
    -------
    dict
        ``{"audio": "copied" | "re-encoded (<codec>)", "video": "copied", "shift_s": ...,
        "drift_ms_per_min": ...}``.

    Raises
    ------
    InputError
        Missing input, no video or audio stream, output same as input.
    OutputError
        Output exists (without ``overwrite``), or its directory is missing.
    """
    import av

    src_p, out_p = Path(src), Path(out)
    _check_request(src, out, shift_s, drift_ms_per_min, overwrite)
    fmt = _CONTAINER_FORMAT[out_p.suffix.lower()]
    rate = drift_ms_per_min / 60000.0
    from avsync.media import open_container

    with open_container(src_p) as inp:  # empty / unreadable input: one line
        vin, ain = _copyable_streams(inp, src, fmt)
        copy_audio = abs(shift_s) < 1e-9 and rate == 0.0
        retimed = None if copy_audio else _retimed_audio(inp, ain, src_p, shift_s, rate)
        inp.seek(0)
        info: dict[str, object] = {"audio": "copied"}
        try:
            write_atomic(out_p, lambda tmp: info.update(_mux(tmp, fmt, inp, vin, ain, retimed)),
                         verify=lambda tmp: _verify(tmp, out_p, info, retimed), overwrite=overwrite)
        except av.error.FFmpegError as e:
            raise OutputError(f"cannot write '{out}': {e}") from None
    for k in ("n_video", "video_span", "frame_s"):
        info.pop(k, None)
    info.update({"video": "copied", "shift_s": float(shift_s), "drift_ms_per_min": float(drift_ms_per_min)})
    return info


def _check_request(src: str | os.PathLike[str], out: str | os.PathLike[str], shift_s: float,
                   drift_ms_per_min: float, overwrite: bool) -> None:
    """Refuse a bad request before the input is opened."""
    src_p, out_p = Path(src), Path(out)
    if not src_p.is_file():
        raise InputError(f"no such file: '{src}'")
    if out_p.resolve() == src_p.resolve():
        raise InputError("the output would overwrite the input; choose another file")
    check_output(out_p, overwrite)
    ext = out_p.suffix.lower()
    if ext not in _CONTAINER_FORMAT:
        raise OutputError(f"unsupported output type '{ext or out_p.name}' (use .mp4, .mov, .mkv or .avi)")
    if not np.isfinite(shift_s) or not np.isfinite(drift_ms_per_min):
        raise InputError("shift and drift must be finite numbers")
    if abs(drift_ms_per_min / 60000.0) >= 0.1:
        raise InputError(f"drift of {drift_ms_per_min:.0f} ms/min is too large to correct")


def _copyable_streams(inp, src: str | os.PathLike[str], fmt: str):  # type: ignore[no-untyped-def]
    """The first video and audio streams, when the video can be copied into ``fmt``."""
    if not inp.streams.video:
        raise InputError(f"'{src}' has no video stream")
    if not inp.streams.audio:
        raise InputError(f"'{src}' has no audio stream")
    vin, ain = inp.streams.video[0], inp.streams.audio[0]
    from avsync.media import check_picture_size

    check_picture_size(vin, src)  # the written copy is decoded to check it
    extradata = vin.codec_context.extradata or b""
    if fmt == "avi" and vin.codec_context.name in ("h264", "hevc") and extradata[:1] == b"\x01":
        # Length-prefixed H.264/HEVC (mp4, mov, mkv) is not valid in AVI, and converting it
        # left the copy's timing a few ms off in our tests: refuse rather than mistime.
        raise OutputError(f"cannot copy this {vin.codec_context.name.upper()} video into .avi; "
                          "write .mp4, .mkv or .mov instead")
    return vin, ain


def _retimed_audio(inp, ain, src: Path, shift_s: float, rate: float):  # type: ignore[no-untyped-def]
    """The input audio decoded and re-timed: (samples (C, M), rate, layout); sample 0 at time 0."""
    samples, sr, a0, layout = _decode_audio(inp, ain)
    # The re-timed sound starts at time 0 (silence up to the first frame) in every
    # container. AVI has no audio start time at all (started at the first frame's time,
    # the sound came out 80 ms early); in mp4/mov from an AVI source whose first frame
    # is at 80 ms, starting at 0 re-measures 0.0 ms, starting at the frame 0.8 ms.
    first = _first_video_time(src) if rate else 0.0  # the drift's t = 0
    return _retime(samples, sr, a0, _AUDIO_START, shift_s, rate, first), sr, layout


_AUDIO_START = 0.0  # output time (s) of the re-timed audio's first sample


def _mux(tmp: str, fmt: str, inp, vin, ain, retimed) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Write the output container: video packets copied, audio copied (``retimed`` None) or
    encoded from ``retimed`` = (samples, rate, layout). Returns what happened to the audio and
    the video written (``n_video`` packets, ``video_span`` = (first, last) presentation time s).

    Packets without a dts (Matroska stores none for reordered frames) are kept, their dts
    derived (:class:`DtsFiller`); dropping them left a video that decodes to one frame."""
    import av

    with av.open(tmp, "w", format=fmt) as outc:
        vout = outc.add_stream_from_template(vin)
        vfill = DtsFiller(vin)
        if retimed is None:
            aout = outc.add_stream_from_template(ain)
            afill = DtsFiller(ain)
            for pkt in inp.demux(vin, ain):
                is_video = pkt.stream.index == vin.index
                ready = (vfill if is_video else afill).push(pkt)
                _mux_all(outc, ready, vout if is_video else aout)
            _mux_all(outc, vfill.flush(), vout)
            _mux_all(outc, afill.flush(), aout)
            return {"audio": "copied", **vfill.written()}
        samples, sr, layout = retimed
        codec, aout = _add_audio_stream(outc, ain.codec_context.name, sr, layout)
        # Video first (copied as-is), then the audio; the muxer interleaves.
        for pkt in inp.demux(vin):
            _mux_all(outc, vfill.push(pkt), vout)
        _mux_all(outc, vfill.flush(), vout)
        _encode_audio(outc, aout, samples, sr, layout, start=_AUDIO_START)
    return {"audio": f"re-encoded ({codec})", **vfill.written()}


def _mux_all(outc, packets, stream) -> None:  # type: ignore[no-untyped-def]
    for pkt in packets:
        pkt.stream = stream
        outc.mux(pkt)


class DtsFiller:
    """Gives every packet of one input stream a decoding timestamp, in demux order.

    A packet without a dts before the first one that has one (the reordered frames at the
    start of a Matroska H.264 stream) is held until that one comes and gets ``known - j * step``
    counting back (never after its own pts); one later on gets ``previous + step`` (capped at
    its pts); a stream with no dts at all gets its sorted pts moved back by the smallest whole
    number of frames that keeps every dts at or before its pts. ``step`` is the packet
    duration, else one frame (stream ticks). Flush packets (empty) are dropped.
    """

    HOLD = 256  # packets held at most while waiting for a dts

    def __init__(self, stream) -> None:  # type: ignore[no-untyped-def]
        rate = getattr(stream, "average_rate", None) or getattr(stream, "guessed_rate", None)
        tb = stream.time_base
        self.default_step = max(1, int(round(1 / (rate * tb)))) if rate and tb else 1
        self.tb = float(tb) if tb else 0.0
        self.last: int | None = None
        self.pending: list = []
        self.n = 0
        self.lo: int | None = None
        self.hi: int | None = None

    def _step(self, pkt) -> int:  # type: ignore[no-untyped-def]
        return int(pkt.duration) if pkt.duration else self.default_step

    def push(self, pkt) -> list:  # type: ignore[no-untyped-def]
        """The packets ready to mux (in order) after ``pkt``."""
        if pkt.size == 0:
            return []
        if pkt.dts is None and self.last is None:
            self.pending.append(pkt)
            return self.flush() if len(self.pending) >= self.HOLD else []
        if pkt.dts is None:
            cap = pkt.pts if pkt.pts is not None else self.last + self._step(pkt)
            pkt.dts = max(self.last + 1, min(self.last + self._step(pkt), cap))
        out = self._back_from(int(pkt.dts)) + [pkt]
        self._note(pkt)
        return out

    def _back_from(self, known: int) -> list:
        """The held packets, their dts counted back from ``known``."""
        held, self.pending = self.pending, []
        d = known
        for p in reversed(held):
            d -= self._step(p)
            if p.pts is not None:
                d = min(d, int(p.pts))
            p.dts = d
        for p in held:
            self._note(p)
        return held

    def flush(self) -> list:
        """Held packets when no dts ever came: from their presentation times."""
        held, self.pending = self.pending, []
        if not held:
            return []
        step = self._step(held[0])
        prev = -step
        for p in held:  # (only held while no dts has come: self.last is None)
            if p.pts is None:
                p.pts = prev + step
            prev = int(p.pts)
        pts = [int(p.pts) for p in held]
        srt = sorted(pts)
        back = max(0, max(-(-(s - q) // step) for s, q in zip(srt, pts, strict=True)))
        for p, s in zip(held, srt, strict=True):
            p.dts = s - back * step
            self._note(p)
        return held

    def _note(self, p) -> None:  # type: ignore[no-untyped-def]
        self.last = int(p.dts)
        self.n += 1
        t = int(p.pts) if p.pts is not None else int(p.dts)
        self.lo = t if self.lo is None else min(self.lo, t)
        self.hi = t if self.hi is None else max(self.hi, t)

    def written(self) -> dict[str, object]:
        """``n_video`` packets passed on and ``video_span`` (first, last) presentation time (s)."""
        span = (self.lo * self.tb, self.hi * self.tb) if self.lo is not None and self.hi is not None else (0.0, 0.0)
        return {"n_video": self.n, "video_span": span, "frame_s": self.default_step * self.tb}


def _verify(tmp: str, out: Path, info: dict, retimed) -> None:  # type: ignore[no-untyped-def,type-arg]
    """Decode the written file: every copied video packet a frame, the video as long as the
    input's, the re-timed audio as long as planned (see :func:`avsync.media.verify_output`)."""
    from avsync import media

    lo, hi = info["video_span"]
    frame_s = float(info["frame_s"])
    audio_s = None
    if retimed is not None:  # the audio starts at _AUDIO_START; durations count from the first frame
        samples, sr, _ = retimed
        audio_s = _AUDIO_START + samples.shape[1] / sr - lo
    media.verify_output(tmp, media.OutputPlan(n_frames=int(info["n_video"]), video_seconds=hi - lo + frame_s,
                                              frame_s=frame_s, audio_seconds=audio_s), out)


def _first_video_time(path: Path) -> float:
    """Presentation time (s) of the first decoded video frame."""
    import av

    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            if f.time is not None:
                return float(f.time)
    return 0.0


def _decode_audio(inp, stream) -> tuple[np.ndarray, int, float, str]:  # type: ignore[no-untyped-def]
    """All audio of ``stream`` as float32 (C, N), its rate, start time (s) and layout name."""
    import av

    resampler = None
    chunks: list[np.ndarray] = []
    start: float | None = None
    sr = int(stream.codec_context.sample_rate or stream.rate)
    # Mono or stereo by channel count: a stream may carry no layout name ("1 channels"), which
    # no encoder takes; more than two channels are mixed down to stereo.
    layout = "mono" if stream.codec_context.channels == 1 else "stereo"
    def frames():  # type: ignore[no-untyped-def]
        # A damaged packet (AC-3 in AVI often starts with one) is skipped, as on analysis.
        for packet in inp.demux(stream):
            try:
                yield from stream.decode(packet)
            except av.error.InvalidDataError:
                continue

    for frame in frames():
        if start is None and frame.time is not None:
            start = float(frame.time)
        if resampler is None:
            resampler = av.AudioResampler(format="fltp", layout=layout, rate=sr)
        for rf in resampler.resample(frame):
            chunks.append(rf.to_ndarray())
    if resampler is not None:
        for rf in resampler.resample(None):
            chunks.append(rf.to_ndarray())
    if not chunks:
        raise InputError("the audio stream decodes to nothing")
    return np.concatenate(chunks, axis=1).astype(np.float32), sr, start or 0.0, layout


def _retime(x: np.ndarray, sr: int, a0: float, v0: float, shift_s: float, rate: float,
            first: float = 0.0) -> np.ndarray:
    """Output samples (C, M), output sample 0 at time ``v0``, the drift counted from the first
    frame at time ``first``; see the module docstring."""
    n_in = x.shape[1]
    # Output lasts as long as the input audio did (measured from the first frame).
    m = max(1, int(round((a0 + n_in / sr - v0) * sr)))
    if rate == 0.0:
        # A pure shift: move by a whole number of samples (error <= half a sample), no filtering.
        k = int(round((v0 - shift_s - a0) * sr))  # input index of output sample 0
        out = np.zeros((x.shape[0], m), dtype=np.float32)
        lo, hi = max(0, -k), min(m, n_in - k)
        if hi > lo:
            out[:, lo:hi] = x[:, lo + k : hi + k]
        return out
    # Drift: resample (polyphase, band-limited) by 1 / (1 - rate), then shift.
    from scipy.signal import resample_poly

    frac = Fraction(1.0 / (1.0 - rate)).limit_denominator(2000)
    y = resample_poly(x, frac.numerator, frac.denominator, axis=1).astype(np.float32)
    # y[j] = x at input time a0 + j / (sr * frac); output sample n (time T = v0 + n/sr, picture
    # time T - first) plays input time T - shift_s - rate * (T - first), i.e. y index
    # (v0 * (1-rate) + rate * first - shift_s - a0) * sr * frac + n * (1-rate) * frac.
    pos = ((v0 * (1.0 - rate) + rate * first - shift_s - a0) * sr * float(frac)
           + np.arange(m) * (1.0 - rate) * float(frac))
    idx = np.arange(y.shape[1])
    out = np.stack([np.interp(pos, idx, ch, left=0.0, right=0.0) for ch in y]).astype(np.float32)
    return out


def _add_audio_stream(outc, in_codec: str, sr: int, layout: str):  # type: ignore[no-untyped-def]
    """Add an audio stream the container accepts: the input's codec when possible, else AAC."""
    import av

    from avsync import media

    fmt = outc.format.name
    candidates = []
    if in_codec in _PCM and fmt in ("mov", "matroska", "avi"):
        candidates.append(in_codec)
    elif in_codec in ("aac", "mp3", "libmp3lame", "opus", "libopus", "flac") and fmt in ("mov", "matroska", "mp4"):
        candidates.append(in_codec if in_codec != "mp3" else "libmp3lame")
    if fmt == "avi":
        # AVI has no edit list to hide an encoder's priming samples (AAC's 1024 would put the
        # sound ~20 ms late): uncompressed PCM keeps the timing exact.
        candidates.append("pcm_s16le")
    candidates.append("aac")
    last: Exception | None = None
    for codec in candidates:
        try:
            s = outc.add_stream(codec, rate=media.aac_rate(sr) if codec == "aac" else sr, layout=layout)
            if codec == "aac":
                s.codec_context.bit_rate = 192_000
            return codec, s
        except (av.error.FFmpegError, ValueError) as e:  # encoder missing / not allowed
            last = e
    raise OutputError(f"cannot encode audio into '{fmt}': {last}")


def _encode_audio(outc, stream, samples: np.ndarray, sr: int, layout: str, start: float) -> None:  # type: ignore[no-untyped-def]
    """Encode planar float samples (C, M) at ``sr`` into ``stream`` (resampled to its rate, e.g.
    192 kHz to 48 kHz for AAC); first sample at time ``start``."""
    import av

    cc = stream.codec_context
    step = cc.frame_size or 1024
    fmt = cc.format.name if cc.format else "fltp"
    resampler = av.AudioResampler(format=fmt, layout=layout, rate=int(cc.sample_rate or sr))
    pts0 = int(round(max(0.0, start) * sr))
    for i in range(0, samples.shape[1], step):
        chunk = np.ascontiguousarray(samples[:, i : i + step])
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
        frame.sample_rate = sr
        frame.pts = pts0 + i
        frame.time_base = Fraction(1, sr)
        for rf in resampler.resample(frame):
            for pkt in stream.encode(rf):
                outc.mux(pkt)
    for pkt in stream.encode(None):
        outc.mux(pkt)


def loop_video(dance: str | os.PathLike[str], reps: int, path: str | os.PathLike[str]) -> None:
    """Stream-copy the video stream of ``dance``'s video ``reps`` times into one file (no re-encode).

    Repetition r is shifted by r times (dance length + 1 s) so that timestamps stay
    increasing; the renderer addresses frames by index, so the gaps do not matter.
    """
    import av

    from avsync import media

    with media.open_container(dance) as first:
        ist = first.streams.video[0]
        tb = ist.time_base
        out = av.open(str(path), "w", format="matroska")
        try:
            ost = out.add_stream_from_template(ist)
            span = None
            for r in range(reps):
                with media.open_container(dance) as c:
                    st = c.streams.video[0]
                    pkts = [pk for pk in c.demux(st) if pk.pts is not None and pk.size > 0]
                    if span is None:
                        lo = min(min(pk.pts for pk in pkts), min((pk.dts for pk in pkts if pk.dts is not None),
                                                                 default=0))
                        hi = max(pk.pts + (pk.duration or 0) for pk in pkts)
                        span = int(hi - lo + round(1.0 / tb))
                    for pk in pkts:
                        pk.pts += r * span
                        if pk.dts is not None:
                            pk.dts += r * span
                        pk.stream = ost
                        out.mux(pk)
        finally:
            out.close()
