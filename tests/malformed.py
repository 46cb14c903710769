"""A corpus of malformed and odd media, generated on the fly for the reliability tests.

Every case is a small file (or a path) that a user could hand to a command: truncated
containers, missing indexes, wrong stream types, absurd headers, one frame, variable frame
rate, silence, and so on. :func:`build_corpus` writes them all into one directory in about a
second and returns :class:`Case` records saying, for each role the file can play, whether a
command must refuse it (``FAIL``) or may either succeed sensibly or refuse it with one line
(``ANY``).

Roles
-----
``video``
    the picture input: ``align VIDEO``, ``retarget DANCE``.
``audio``
    the sound input: ``align --audio AUDIO``, ``retarget DANCE MUSIC``.
``clip``
    a clip measured against itself: ``detect-offset CLIP``.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

FAIL = "fail"  # the command must exit non-zero with exactly one error line
ANY = "any"  # valid but odd: exit 0 with a sensible result, or one error line

ROLES = ("video", "audio", "clip")

SIZE = (160, 120)
FPS = 25
SR = 44100


@dataclass(frozen=True)
class Case:
    """One corpus entry.

    Attributes
    ----------
    name : str
        Short identifier, also the pytest id.
    path : Path
        The file handed to the command (it may not exist, or be a directory, on purpose).
    expect : dict
        Role (``video``, ``audio``, ``clip``) to ``FAIL`` or ``ANY``.
    note : str
        What is odd about it, in words.
    skip : str or None
        Why the case cannot be exercised on this machine, if it cannot.
    """

    name: str
    path: Path
    expect: dict[str, str]
    note: str
    skip: str | None = None
    tags: frozenset[str] = field(default_factory=frozenset)


# --------------------------------------------------------------------------- sources


def _avsynctest(seconds: float, fps: float, size: tuple[int, int], sr: int) -> tuple[list, np.ndarray]:
    """Frames (list of RGB uint8 arrays, (H, W, 3)) and mono float32 audio of lavfi avsynctest."""
    import av

    w, h = size
    # avsynctest needs an even size; odd sizes are cropped afterwards.
    graph = f"avsynctest=d={seconds}:fr={fps}:s={w + w % 2}x{h + h % 2}:sr={sr}[out0][out1]"
    frames: list[np.ndarray] = []
    chunks: list[np.ndarray] = []
    with av.open(graph, format="lavfi") as src:
        for fr in src.decode(src.streams.video[0], src.streams.audio[0]):
            if isinstance(fr, av.VideoFrame):
                frames.append(fr.to_ndarray(format="rgb24")[:h, :w])
            else:
                a = fr.to_ndarray().astype(np.float64)
                if fr.format.name.startswith("s32"):
                    a /= 2**31
                elif fr.format.name.startswith("s16"):
                    a /= 2**15
                chunks.append(a.reshape(-1).astype(np.float32))
    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    return frames, audio[: int(round(seconds * sr))]


def write_media(
    path: Path,
    frames: list[np.ndarray] | None,
    audio: list[np.ndarray] | np.ndarray | None,
    *,
    fps: float = FPS,
    sr: int = SR,
    vcodec: str = "libx264",
    acodec: str = "aac",
    pix_fmt: str = "yuv420p",
    pts_ms: list[int] | None = None,
    audio_start: float = 0.0,
    container: str | None = None,
    options: dict[str, str] | None = None,
) -> Path:
    """Encode frames and/or audio tracks into ``path``.

    Parameters
    ----------
    frames : list of ndarray, shape (H, W, 3), uint8, or None for no video stream
    audio : ndarray (N,) float32 in [-1, 1], a list of them (one stream each), or None
    pts_ms : list of int, optional
        Presentation time of each frame in ms (variable frame rate); default uniform.
    audio_start : float
        Seconds of delay before the first audio sample (stream start time).
    """
    import av

    tracks = [] if audio is None else ([audio] if isinstance(audio, np.ndarray) else list(audio))
    with av.open(str(path), "w", format=container, options=options or {}) as out:
        vs = None
        if frames:
            vs = out.add_stream(vcodec, rate=Fraction(fps).limit_denominator(1000))
            vs.width, vs.height = frames[0].shape[1], frames[0].shape[0]
            vs.pix_fmt = pix_fmt
            if pts_ms is not None:
                vs.codec_context.time_base = Fraction(1, 1000)
                vs.time_base = Fraction(1, 1000)
        astreams = []
        for _ in tracks:
            s = out.add_stream(acodec, rate=sr)
            s.layout = "mono"
            astreams.append(s)
        if vs is not None:
            for i, img in enumerate(frames):
                fr = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
                fr = fr.reformat(format=pix_fmt)
                if pts_ms is not None:
                    fr.pts = pts_ms[i]
                    fr.time_base = Fraction(1, 1000)
                else:
                    fr.pts = None
                for p in vs.encode(fr):
                    out.mux(p)
            for p in vs.encode(None):
                out.mux(p)
        for s, track in zip(astreams, tracks, strict=False):
            pcm = (np.clip(track, -1, 1) * 32767).astype(np.int16)
            offset = int(round(audio_start * sr))
            hop = 1024
            for k in range(0, len(pcm), hop):
                fr = av.AudioFrame.from_ndarray(pcm[None, k : k + hop], format="s16", layout="mono")
                fr.sample_rate = sr
                fr.pts = offset + k
                fr.time_base = Fraction(1, sr)
                for p in s.encode(fr):
                    out.mux(p)
            for p in s.encode(None):
                out.mux(p)
    return path


def _clip(path: Path, seconds: float = 2.0, fps: float = FPS, size=SIZE, sr: int = SR, **kw) -> Path:
    frames, audio = _avsynctest(seconds, fps, size, sr)
    return write_media(path, frames, audio, fps=fps, sr=sr, **kw)


# --------------------------------------------------------------------------- byte surgery


def _boxes(data: bytes) -> list[tuple[int, int, bytes]]:
    """Top-level ISO-BMFF boxes as (offset, size, type)."""
    out, pos = [], 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8 : pos + 16])[0]
        if size < 8:
            break
        out.append((pos, size, kind))
        pos += size
    return out


def _rename_box(data: bytes, kind: bytes, new: bytes) -> bytes:
    for pos, _size, k in _boxes(data):
        if k == kind:
            return data[: pos + 4] + new + data[pos + 8 :]
    raise ValueError(f"no {kind!r} box")


def _patch_avi_dims(data: bytes, w: int, h: int) -> bytes:
    buf = bytearray(data)
    i = buf.find(b"avih")
    struct.pack_into("<II", buf, i + 8 + 32, w, h)  # dwWidth, dwHeight
    j = buf.find(b"strf")
    struct.pack_into("<ii", buf, j + 8 + 4, w, h)  # biWidth, biHeight
    return bytes(buf)


def _patch_mkv_dims(data: bytes, w: int, h: int) -> bytes:
    """Overwrite 2-byte PixelWidth (0xB0) and PixelHeight (0xBA) elements."""
    buf = bytearray(data)
    for eid, val in ((0xB0, w), (0xBA, h)):
        i = buf.find(bytes([eid, 0x82]))
        if i < 0:
            raise ValueError("no 2-byte pixel dimension element")
        struct.pack_into(">H", buf, i + 2, val)
    return bytes(buf)


def _scribble(data: bytes, start: float, stop: float, seed: int = 7) -> bytes:
    rng = np.random.default_rng(seed)
    a, b = int(len(data) * start), int(len(data) * stop)
    return data[:a] + rng.integers(0, 256, b - a, dtype=np.uint8).tobytes() + data[b:]


# --------------------------------------------------------------------------- the corpus


def _exp(video: str = FAIL, audio: str = FAIL, clip: str = FAIL) -> dict[str, str]:
    return {"video": video, "audio": audio, "clip": clip}


def build_corpus(root: Path) -> list[Case]:
    """Write every malformed/odd input under ``root`` and describe them.

    Parameters
    ----------
    root : Path
        An empty, writable directory.

    Returns
    -------
    list of Case
        At least 30 cases, each with its expectations per role.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []

    def add(name, path, expect, note, skip=None, tags=()):
        cases.append(Case(name, Path(path), expect, note, skip, frozenset(tags)))

    good = _clip(root / "_good.mp4")
    gbytes = good.read_bytes()
    fast = _clip(root / "_fast.mp4", options={"movflags": "faststart"})
    mkv = _clip(root / "_good.mkv")
    frames, audio = _avsynctest(2.0, FPS, SIZE, SR)

    def raw(name: str, data: bytes) -> Path:
        p = root / name
        p.write_bytes(data)
        return p

    # ---- broken files: every role must refuse them with one line
    add("zero_length", raw("zero_length.mp4", b""), _exp(), "empty file", tags={"fast"})
    add("text_as_mp4", raw("text.mp4", b"this is not a video\n" * 20), _exp(), "text file named .mp4",
        tags={"fast"})
    add("random_bytes_mp4", raw("random.mp4", np.random.default_rng(1).bytes(20000)), _exp(),
        "random bytes named .mp4")
    add("random_bytes_mkv", raw("random.mkv", np.random.default_rng(2).bytes(20000)), _exp(),
        "random bytes named .mkv")
    add("truncated_mp4", raw("truncated.mp4", gbytes[: len(gbytes) * 6 // 10]), _exp(),
        "mp4 cut at 60 %: its moov index (at the end) is gone", tags={"fast"})
    moov = next(o for o, _s, k in _boxes(gbytes) if k == b"moov")
    add("missing_moov", raw("missing_moov.mp4", gbytes[:moov]), _exp(),
        "mp4 whose recording stopped before the moov index was written (all of mdat there)")
    add("moov_renamed", raw("moov_renamed.mp4", _rename_box(gbytes, b"moov", b"mvxx")), _exp(),
        "mp4 whose moov box has an unknown type")
    add("ftyp_only", raw("ftyp_only.mp4", gbytes[: _boxes(gbytes)[0][1]]), _exp(),
        "only the ftyp box of an mp4")
    mb = mkv.read_bytes()
    add("truncated_mkv_header", raw("truncated_header.mkv", mb[:200]), _exp(),
        "mkv cut inside its header")
    wav = root / "_tone.wav"
    write_media(wav, None, audio, acodec="pcm_s16le")
    wb = wav.read_bytes()
    add("wav_header_only", raw("header_only.wav", wb[:44]), _exp(),
        "a wav header announcing samples that are not there")
    add("missing_file", root / "does_not_exist.mp4", _exp(), "path that does not exist", tags={"fast"})
    d = root / "a_directory.mp4"
    d.mkdir()
    add("directory", d, _exp(), "a directory named .mp4")
    link = root / "dangling.mp4"
    link.symlink_to(root / "nowhere.mp4")
    add("dangling_symlink", link, _exp(), "symlink to nothing")
    locked = root / "locked"
    locked.mkdir()
    secret = _clip(locked / "secret.mp4", seconds=1.0)
    locked.chmod(0)
    try:
        with open(secret, "rb"):
            pass
        skip = "running as root: permissions do not stop root from reading"
    except PermissionError:
        skip = None
    add("no_permission", secret, _exp(), "file inside a directory that cannot be traversed", skip)

    # ---- damaged but partly readable: may be measured, or refused with one line
    add("truncated_faststart_mp4", raw("truncated_faststart.mp4", fast.read_bytes()[: len(fast.read_bytes())
        * 6 // 10]), _exp(ANY, ANY, ANY), "faststart mp4 cut at 60 %: index points past the end")
    add("truncated_mkv", raw("truncated.mkv", mb[: len(mb) // 2]), _exp(ANY, ANY, ANY), "mkv cut in half",
        tags={"fast"})
    add("truncated_wav", raw("truncated.wav", wb[: len(wb) // 2]), _exp(FAIL, ANY, FAIL),
        "wav cut in half (header says longer)")
    add("corrupt_mid_mp4", raw("corrupt_mid.mp4", _scribble(gbytes, 0.35, 0.45)), _exp(ANY, ANY, ANY),
        "mp4 with random bytes over 10 % of mdat", tags={"fast"})
    add("corrupt_mid_mkv", raw("corrupt_mid.mkv", _scribble(mb, 0.4, 0.5)), _exp(ANY, ANY, ANY),
        "mkv with random bytes over 10 % of its clusters")

    avi = write_media(root / "_raw.avi", frames[:10], None, vcodec="rawvideo", pix_fmt="yuv420p")
    add("absurd_dims_avi", raw("absurd_dims.avi", _patch_avi_dims(avi.read_bytes(), 65535, 65535)),
        _exp(FAIL, FAIL, FAIL), "rawvideo avi whose headers claim 65535x65535", tags={"fast"})
    big = [np.zeros((256, 320, 3), np.uint8)] * 5
    fmk = write_media(root / "_ffv1.mkv", big, None, vcodec="ffv1", pix_fmt="yuv420p")
    add("absurd_dims_mkv", raw("absurd_dims.mkv", _patch_mkv_dims(fmk.read_bytes(), 65535, 65535)),
        _exp(FAIL, FAIL, FAIL), "ffv1 mkv whose PixelWidth/PixelHeight say 65535x65535")
    add("zero_dims_mkv", raw("zero_dims.mkv", _patch_mkv_dims(fmk.read_bytes(), 0, 0)),
        _exp(FAIL, FAIL, FAIL), "ffv1 mkv whose PixelWidth/PixelHeight say 0x0")

    # ---- wrong stream types
    add("no_audio", write_media(root / "no_audio.mp4", frames, None), _exp(ANY, FAIL, FAIL),
        "video stream only", tags={"fast"})
    add("no_video", write_media(root / "no_video.mp4", None, audio), _exp(FAIL, ANY, FAIL),
        "audio-only mp4 named .mp4", tags={"fast"})
    add("audio_as_video", write_media(root / "song.wav", None, audio, acodec="pcm_s16le"),
        _exp(FAIL, ANY, FAIL), "a wav file where a video is expected")
    import av

    with av.open(str(root / "still.mp4"), "w", format="image2", options={"update": "1"}) as out:
        s = out.add_stream("png", rate=1)
        s.width, s.height, s.pix_fmt = SIZE[0], SIZE[1], "rgb24"
        for p in s.encode(av.VideoFrame.from_ndarray(frames[10], format="rgb24")):
            out.mux(p)
        for p in s.encode(None):
            out.mux(p)
    add("png_named_mp4", root / "still.mp4", _exp(ANY, FAIL, FAIL), "a PNG still named .mp4")
    add("gif_no_audio", write_media(root / "anim.gif", frames[::2], None, vcodec="gif", pix_fmt="rgb8",
        fps=12.5), _exp(ANY, FAIL, FAIL), "animated gif (no audio)")

    # ---- valid but odd
    add("one_frame", write_media(root / "one_frame.mp4", frames[:1], audio), _exp(ANY, ANY, ANY),
        "a single video frame with 2 s of audio", tags={"fast"})
    vfr_pts = list(np.cumsum([0] + [30 if i % 2 else 50 for i in range(len(frames) - 1)]).astype(int))
    add("vfr", write_media(root / "vfr.mkv", frames, audio, pts_ms=vfr_pts), _exp(ANY, ANY, ANY),
        "variable frame rate (alternating 30 / 50 ms)")
    add("short_audio", write_media(root / "short_audio.mp4", frames, audio[: SR // 2]), _exp(ANY, ANY, ANY),
        "2 s of video with 0.5 s of audio")
    add("half_second_wav", write_media(root / "half_second.wav", None, audio[: SR // 2],
        acodec="pcm_s16le"), _exp(FAIL, ANY, FAIL), "0.5 s of audio")
    silence = np.zeros_like(audio)
    add("silence", write_media(root / "silence.mp4", frames, silence), _exp(ANY, ANY, ANY),
        "digital silence under a moving picture", tags={"fast"})
    add("silence_wav", write_media(root / "silence.wav", None, silence, acodec="pcm_s16le"),
        _exp(FAIL, ANY, FAIL), "digital silence, audio only")
    black = [np.zeros_like(f) for f in frames]
    add("black_frames", write_media(root / "black.mp4", black, audio), _exp(ANY, ANY, ANY),
        "black picture (no motion) with beeps")
    add("tiny_2x2", write_media(root / "tiny.mp4", [f[:2, :2] for f in frames], audio,
        vcodec="mpeg4"), _exp(ANY, ANY, ANY), "2x2 pixels")
    f_odd, a_odd = _avsynctest(2.0, FPS, (161, 121), SR)
    add("odd_dims", write_media(root / "odd_dims.mkv", f_odd, a_odd, vcodec="ffv1"), _exp(ANY, ANY, ANY),
        "161x121 (odd width and height)")
    add("fps_1", _clip(root / "fps_1.mp4", seconds=3.0, fps=1), _exp(ANY, ANY, ANY), "1 frame per second")
    add("fps_120", _clip(root / "fps_120.mp4", seconds=1.0, fps=120), _exp(ANY, ANY, ANY),
        "120 frames per second")
    f8, a8 = _avsynctest(2.0, FPS, SIZE, 8000)
    add("audio_8k", write_media(root / "audio_8k.mp4", f8, a8, sr=8000), _exp(ANY, ANY, ANY),
        "8 kHz audio")
    add("audio_starts_late", write_media(root / "late_audio.mkv", frames, audio[: SR], audio_start=1.0),
        _exp(ANY, ANY, ANY), "audio stream starts 1 s after the picture")
    add("two_audio_streams", write_media(root / "two_audio.mkv", frames, [audio, silence]),
        _exp(ANY, ANY, ANY), "two audio streams (the second silent)")
    add("mjpeg_pcm_avi", write_media(root / "mjpeg.avi", frames, audio, vcodec="mjpeg", acodec="pcm_s16le",
        pix_fmt="yuvj420p"), _exp(ANY, ANY, ANY), "mjpeg + pcm in avi")
    add("unicode_name", _clip(root / "tâke 3 ü.mp4"), _exp(ANY, ANY, ANY), "spaces and accents in the name")
    return cases


def sha256(path: Path) -> str | None:
    """Hash of a file (None if it is not a readable regular file)."""
    import hashlib

    p = Path(path)
    try:
        if not p.is_file():
            return None
        return hashlib.sha256(p.read_bytes()).hexdigest()
    except OSError:
        return None


def restore_permissions(root: Path) -> None:
    """Undo the chmod 000 of the no-permission case so the directory can be removed."""
    locked = Path(root) / "locked"
    if locked.exists():
        os.chmod(locked, 0o755)


CaseFilter = Callable[[Case], bool]

if __name__ == "__main__":  # pragma: no cover - manual inspection
    import sys
    import tempfile

    out = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="avsync-corpus-"))
    for c in build_corpus(out):
        print(f"{c.name:24s} {c.expect}  {c.note}{'  [skip: ' + c.skip + ']' if c.skip else ''}")
    print(out)
