"""Small generated media for tests (PyAV only; no system ffmpeg).

Everything here writes straight through PyAV so that tests of :mod:`avsync.media` do not
depend on the code under test. Sizes are tiny (160x120 .. 320x180) to keep tests fast.

Audio codec by extension: .wav → pcm_s16le, .mp3 → libmp3lame, .ogg → libopus (48 kHz,
resampled by the encoder), .flac → flac, .mp4/.m4a/.mov/.mkv/.mka → aac, .avi → mp3.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

AUDIO_CODECS = {
    ".wav": "pcm_s16le", ".mp3": "libmp3lame", ".ogg": "libopus", ".flac": "flac",
    ".mp4": "aac", ".m4a": "aac", ".mov": "aac", ".mkv": "aac", ".mka": "aac", ".avi": "libmp3lame",
}


def _audio_codec(path: str) -> str:
    return AUDIO_CODECS[os.path.splitext(path)[1].lower()]


def _parse_size(size: str | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, str):
        w, h = size.lower().split("x")
        return int(w), int(h)
    return int(size[0]), int(size[1])


def _as_planar(samples: np.ndarray) -> np.ndarray:
    s = np.asarray(samples, dtype=np.float32)
    return np.ascontiguousarray(s[None] if s.ndim == 1 else s)


def _add_audio(container, codec: str, sr: int, channels: int):
    layout = "mono" if channels == 1 else "stereo"
    rate = 48000 if codec == "libopus" else sr
    return container.add_stream(codec, rate=rate, layout=layout)


def _encode_audio(container, stream, samples: np.ndarray, sr: int, start_pts: int = 0) -> None:
    """Encode planar float samples (C, S) in 1024-sample frames starting at sample ``start_pts``."""
    layout = "mono" if samples.shape[0] == 1 else "stereo"
    for i in range(0, samples.shape[1], 1024):
        f = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, i:i + 1024]), format="fltp",
                                       layout=layout)
        f.sample_rate = sr
        f.time_base = Fraction(1, sr)
        f.pts = start_pts + i
        for p in stream.encode(f):
            container.mux(p)
    for p in stream.encode(None):
        container.mux(p)


def write_audio(path: str, samples: np.ndarray, sr: int) -> str:
    """Write an audio-only file; ``samples`` (S,) or (C, S) float32 in [-1, 1]."""
    s = _as_planar(samples)
    with av.open(str(path), "w") as c:
        st = _add_audio(c, _audio_codec(str(path)), sr, s.shape[0])
        _encode_audio(c, st, s, sr)
    return str(path)


def tone(seconds: float, sr: int, freq: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    """A sine, shape (round(seconds*sr),), float32."""
    t = np.arange(int(round(seconds * sr))) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def make_tone(path: str, seconds: float = 1.0, sr: int = 22050, freq: float = 440.0,
              channels: int = 1) -> str:
    """Audio-only sine file (format from the extension: wav/mp3/ogg/flac/m4a/...)."""
    x = tone(seconds, sr, freq)
    return write_audio(path, np.tile(x, (channels, 1)), sr)


def write_frames_video(path: str, frames: Iterable[np.ndarray], fps: float,
                       audio: tuple[np.ndarray, int] | None = None, *,
                       times: Sequence[float] | None = None, audio_start: float = 0.0,
                       sar: tuple[int, int] | None = None, rotation: int = 0, crf: int = 18,
                       gop: int | None = None) -> str:
    """Encode ``(H, W, 3) uint8`` RGB frames with libx264 (yuv420p) plus optional audio.

    Parameters
    ----------
    frames : iterable of ndarray (H, W, 3) uint8
    fps : float
        Nominal frame rate; frame i is at i / fps unless ``times`` is given.
    audio : (samples (S,) or (C, S) float32, sample_rate), optional
        Encoded with the codec for the extension (aac for mp4/mkv/mov).
    times : sequence of float, optional
        Presentation time (s) of each frame, for variable-frame-rate files (ms precision).
    audio_start : float
        Seconds by which the audio stream starts after the video (pts offset, >= 0).
    sar, rotation : pixel aspect ratio and display rotation (degrees CCW) to store.
    gop : int, optional
        Keyframe interval.
    """
    fps_f = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), "w") as c:
        vs = None
        ast = None
        frame_tb = Fraction(1, 1000) if times is not None else 1 / fps_f
        for i, img in enumerate(frames):
            if vs is None:
                h, w = img.shape[:2]
                vs = c.add_stream("libx264", rate=fps_f)
                vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
                vs.codec_context.time_base = frame_tb
                opts = {"crf": str(crf), "preset": "ultrafast"}
                if gop:
                    opts["g"] = str(gop)
                vs.options = opts
                if sar:
                    vs.sample_aspect_ratio = Fraction(*sar)
                if rotation:
                    vs.set_display_rotation(rotation)
                if audio is not None:
                    a = _as_planar(audio[0])
                    ast = _add_audio(c, _audio_codec(str(path)), audio[1], a.shape[0])
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(img, dtype=np.uint8), format="rgb24")
            f.time_base = frame_tb
            f.pts = int(round(times[i] * 1000)) if times is not None else i
            for p in vs.encode(f):
                c.mux(p)
        if vs is None:
            raise ValueError("no frames")
        for p in vs.encode(None):
            c.mux(p)
        if ast is not None:
            sr = audio[1]
            _encode_audio(c, ast, _as_planar(audio[0]), sr, int(round(audio_start * sr)))
    return str(path)


def make_no_audio_video(path: str, seconds: float = 2.0, fps: float = 25, size: str = "160x120") -> str:
    """testsrc2 video only (no audio stream)."""
    w, h = _parse_size(size)
    src = av.open(f"testsrc2=d={seconds}:r={fps}:s={w}x{h}", format="lavfi")
    with src:
        frames = [fr.to_ndarray(format="rgb24") for fr in src.decode(video=0)]
    return write_frames_video(path, frames, fps)


def make_silent_video(path: str, seconds: float = 2.0, fps: float = 25, size: str = "160x120",
                      sr: int = 22050) -> str:
    """testsrc2 video with an all-zero audio track of the same length."""
    w, h = _parse_size(size)
    src = av.open(f"testsrc2=d={seconds}:r={fps}:s={w}x{h}", format="lavfi")
    with src:
        frames = [fr.to_ndarray(format="rgb24") for fr in src.decode(video=0)]
    return write_frames_video(path, frames, fps, audio=(np.zeros(int(seconds * sr), np.float32), sr))


def make_audio_only(path: str, seconds: float = 1.0, sr: int = 22050) -> str:
    """An audio-only file (default container from the extension, e.g. .m4a/.mp4 → AAC)."""
    return make_tone(path, seconds, sr)


def make_avsynctest(path: str, *, seconds: float = 4, fps: float = 25, audio_shift: float = 0.0,
                    size: str = "320x180", sr: int = 44100, period: float = 1.0) -> str:
    """Flash + beep test pattern (lavfi ``avsynctest``) as mp4 (h264 + aac).

    Unshifted, an event (white flash frame + 40 ms beep) happens at t = period, 2*period,
    ... (the generator's flash-less beep at t = 0 is silenced). Then the audio is moved by
    ``audio_shift`` seconds: positive = audio leads = each beep comes ``audio_shift`` s
    BEFORE its flash. Implemented on the samples: ``round(audio_shift*sr)`` samples are
    dropped from the start (positive) or zeros are inserted at the start (negative), and
    the end is padded/trimmed so the audio keeps the video's length.
    """
    w, h = _parse_size(size)
    spec = f"avsynctest=d={seconds}:fr={fps}:s={w}x{h}:sr={sr}:period={period}[out0][out1]"
    frames, chunks = [], []
    with av.open(spec, format="lavfi") as src:
        for fr in src.decode(src.streams.video[0], src.streams.audio[0]):
            if isinstance(fr, av.VideoFrame):
                frames.append(fr.to_ndarray(format="rgb24"))
            else:
                chunks.append(fr.to_ndarray().astype(np.float64).reshape(-1))
    a = (np.concatenate(chunks) / 2**31).astype(np.float32)
    a[: int(period / 2 * sr)] = 0.0  # the beep at t=0 has no flash
    n = a.size
    k = int(round(audio_shift * sr))
    a = a[k:] if k >= 0 else np.concatenate([np.zeros(-k, np.float32), a])
    a = np.concatenate([a, np.zeros(max(0, n - a.size), np.float32)])[:n]
    return write_frames_video(path, frames, fps, audio=(a, sr))


# --------------------------------------------------------------------------------------
# frames that carry their own index (survive lossy encoding)

INDEX_BITS = 8


def index_image(i: int, width: int = 160, height: int = 120) -> np.ndarray:
    """(H, W, 3) uint8 image encoding ``i`` (0..255): 8 vertical bars, bar b white if bit b.

    The bottom quarter is a uniform gray of level ``(i * 8) % 256`` for eyeballing.
    """
    img = np.zeros((height, width, 3), np.uint8)
    bw = width // INDEX_BITS
    top = height * 3 // 4
    for b in range(INDEX_BITS):
        if (i >> b) & 1:
            img[:top, b * bw:(b + 1) * bw] = 255
    img[top:] = (i * 8) % 256
    return img


def read_index(img: np.ndarray) -> int:
    """Inverse of :func:`index_image` on a decoded (possibly rescaled) RGB or gray frame."""
    g = img.mean(axis=2) if img.ndim == 3 else img.astype(np.float64)
    h, w = g.shape
    bw = w / INDEX_BITS
    top = h * 3 // 4
    i = 0
    for b in range(INDEX_BITS):
        x0, x1 = int(b * bw + bw / 4), int((b + 1) * bw - bw / 4)
        if g[top // 4: top * 3 // 4, x0:x1].mean() > 128:
            i |= 1 << b
    return i


def make_index_video(path: str, n: int, fps: float = 25, size: str = "160x120",
                     audio: tuple[np.ndarray, int] | None = None, **kw) -> str:
    """``n`` frames, frame i showing :func:`index_image` (i)."""
    w, h = _parse_size(size)
    return write_frames_video(path, (index_image(i, w, h) for i in range(n)), fps, audio=audio, **kw)


def make_batch_clips(d: Path) -> Path:
    """Two 2 s test-pattern takes (the second's audio 0.2 s early) and a file that is not a video,
    in folder ``d``; returns ``d``."""
    for i, shift in enumerate((0.0, 0.2)):
        make_avsynctest(str(d / f"take{i}.mp4"), seconds=2, fps=25, audio_shift=shift, size="160x120")
    (d / "bad.mp4").write_text("not a video\n")
    return d


def random_features(lips: bool = True, seconds: float = 6.0, fps: float = 25.0) -> tuple[Any, Any]:
    """Random but well-formed features: a log-mel and (optionally) 20 tracked lip points."""
    from avsync.features import AudioFeatures, VisualFeatures
    from avsync.types import Signal

    rng = np.random.default_rng(0)
    n, m = int(seconds * fps), int(seconds * 100)
    flat = Signal(np.zeros(m), 100.0)
    audio = AudioFeatures(onset=flat, speech=flat, logmel=Signal(rng.standard_normal((m, 128)), 100.0),
                          duration=seconds, sr=16000)
    kp = Signal(rng.standard_normal((n, 40)) * 0.05, fps) if lips else None
    vis = VisualFeatures(mode="speech" if lips else "general", kind="lips" if lips else "motion",
                         envelope=Signal(rng.random(n), fps), grid=Signal(rng.random((n, 64)), fps), keypoints=kp,
                         mouth=Signal(rng.random((n, 1)), fps) if lips else None, detection_rate=1.0 if lips else 0.0,
                         fps=fps, frame_times=np.arange(n) / fps)
    return audio, vis
