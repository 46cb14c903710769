"""Never write a wrong file (issue 17, items 3 and 5): Matroska references and --fix inputs,
packets without a dts, every written file decoded and checked before it is put in place, and
the one-line errors for inputs we can check (192 kHz, -o out.wav, 8000x8000, empty file)."""

from __future__ import annotations

import logging
import math
import os
import struct
import subprocess
import sys
import warnings
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest

from avsync import media, synthetic
from avsync.errors import InputError, OutputError
from avsync.remux import DtsFiller

sys.path.insert(0, str(Path(__file__).parent))
import mediagen  # noqa: E402

AVSYNC = [sys.executable, "-m", "avsync"]
ENV = {**os.environ, "AVSYNC_NO_PROGRESS": "1"}
FPS = 25


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*AVSYNC, *args], capture_output=True, text=True, env=ENV, timeout=300)


def _one_error_line(r: subprocess.CompletedProcess[str]) -> str:
    lines = r.stderr.strip().splitlines()
    assert r.returncode != 0, r.stderr
    assert len(lines) == 1 and lines[0].startswith("avsync: error: "), r.stderr
    assert "internal error" not in lines[0] and "Errno" not in lines[0], lines[0]
    return lines[0]


def _remux(src: Path, dst: Path, audio_delay: float = 0.0) -> Path:
    """Stream-copy ``src`` into ``dst`` (container from the extension), the audio packets
    ``audio_delay`` s later."""
    with av.open(str(src)) as i, av.open(str(dst), "w") as o:
        outs = {s.index: o.add_stream_from_template(s) for s in i.streams if s.type in ("audio", "video")}
        for p in i.demux():
            if p.dts is None or p.stream.index not in outs:
                continue
            if audio_delay and p.stream.type == "audio":
                d = int(round(audio_delay / p.time_base))
                p.pts += d
                p.dts += d
            p.stream = outs[p.stream.index]
            o.mux(p)
    return dst


def _bframe_mkv(path: Path, seconds: float = 3.0, sr: int = 44100, audio_codec: str = "aac") -> Path:
    """A synthetic clip (frames carry their index) in Matroska with B-frames, so that the
    demuxer gives the first (reordered) video packets no dts."""
    rng = np.random.default_rng(0)
    ev = synthetic.event_times(seconds, rng)
    n = int(round(seconds * FPS))
    flash = synthetic.flash_track(ev, n, FPS)
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=Fraction(FPS))
        v.width, v.height, v.pix_fmt = synthetic.W, synthetic.H, "yuv420p"
        v.options = {"preset": "veryfast", "bf": "3"}
        a = c.add_stream(audio_codec, rate=sr, layout="mono")
        for m in range(n):
            f = av.VideoFrame.from_ndarray(synthetic.frame_image(m, flash[m]), format="rgb24")
            f.pts, f.time_base = m, Fraction(1, FPS)
            for p in v.encode(f):
                c.mux(p)
        for p in v.encode(None):
            c.mux(p)
        y = synthetic.beep_track(ev, seconds, sr, rng)
        fmt = a.codec_context.format.name
        res = av.AudioResampler(format=fmt, layout="mono", rate=sr)
        step = a.codec_context.frame_size or 4096
        for s in range(0, len(y), step):
            fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(y[None, s:s + step]), format="flt", layout="mono")
            fr.sample_rate, fr.pts, fr.time_base = sr, s, Fraction(1, sr)
            for r in res.resample(fr):
                for p in a.encode(r):
                    c.mux(p)
        for p in a.encode(None):
            c.mux(p)
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("safe") / "clip.mp4"
    synthetic.write_clip(p, seconds=4.0, fps=FPS)
    return p


# ---------------------------------------------------------------------------------------
# Matroska reference for align: the output lasts the reference's decoded duration


@pytest.mark.parametrize("delay", [0.0, 1.0], ids=["remuxed", "audio_1s_late"])
def test_mkv_reference_output_lasts_its_decoded_duration(clip: Path, tmp_path: Path, delay: float) -> None:
    from avsync.align import AlignOptions, align

    ref = _remux(clip, tmp_path / "ref.mkv", audio_delay=delay)
    ref_s = media.decoded_audio_seconds(ref)  # sample 0 at the reference's first frame
    assert abs(ref_s - (4.0 + delay)) < 0.05
    out = tmp_path / "out.mp4"
    r = align(clip, ref, out, AlignOptions(sync_by="picture"))
    got = media.decoded_lengths(out)
    assert got.n_frames == math.ceil(ref_s * FPS - 1e-6) == r.n_out
    assert abs(got.video_seconds + 1 / FPS - ref_s) <= 1 / FPS + 1e-3
    assert abs(got.audio_seconds - ref_s) <= got.audio_frame_s + 1e-3
    assert abs(r.audio_duration - (got.video_seconds + 1 / FPS)) < 1e-6  # the summary states the file


# ---------------------------------------------------------------------------------------
# detect-offset --fix from Matroska: packets without a dts are kept


def test_bframe_mkv_has_packets_without_dts(tmp_path: Path) -> None:
    src = _bframe_mkv(tmp_path / "bf.mkv")
    with av.open(str(src)) as c:
        dts = [p.dts for p in c.demux(video=0) if p.size]
    assert dts[0] is None and len(dts) == 75  # the case the re-mux used to drop


@pytest.mark.parametrize("shift_ms", ["80", "0"], ids=["re-encoded audio", "copied audio"])
def test_fix_from_mkv_decodes_to_all_its_frames(tmp_path: Path, shift_ms: str) -> None:
    src = _bframe_mkv(tmp_path / "bf.mkv")
    out = tmp_path / "fixed.mp4"
    r = _cli("detect-offset", str(src), "--fix", str(out), "--shift-ms", shift_ms)
    assert r.returncode == 0, r.stderr
    idx = synthetic.decode_indices(out)
    assert idx.tolist() == list(range(75))


def _packets(pts: list[int], dts: list[int | None], dur: int = 1) -> list[SimpleNamespace]:
    return [SimpleNamespace(pts=p, dts=d, duration=dur, size=10) for p, d in zip(pts, dts, strict=True)]


def _stream(rate: int = 25, tb: Fraction = Fraction(1, 25)) -> SimpleNamespace:
    return SimpleNamespace(average_rate=Fraction(rate), guessed_rate=None, time_base=tb)


def _fill(pkts: list[SimpleNamespace]) -> list[SimpleNamespace]:
    f = DtsFiller(_stream())
    out: list[SimpleNamespace] = []
    for p in pkts:
        out += f.push(p)
    return out + f.flush()


def test_dts_filler_leading_packets_counted_back() -> None:
    pts = [0, 1, 5, 3, 2, 4, 8, 6, 7]
    out = _fill(_packets(pts, [None, None, 0, 1, 2, 3, 4, 5, 6]))
    assert [p.pts for p in out] == pts  # every packet kept, in order
    assert [p.dts for p in out[:2]] == [-2, -1]
    d = [p.dts for p in out]
    assert all(b > a for a, b in zip(d, d[1:], strict=False)) and all(p.dts <= p.pts for p in out)


def test_dts_filler_stream_without_any_dts() -> None:
    pts = [0, 3, 1, 2, 6, 4, 5, 7]
    out = _fill(_packets(pts, [None] * len(pts)))
    d = [p.dts for p in out]
    assert len(out) == len(pts)
    assert all(b > a for a, b in zip(d, d[1:], strict=False)) and all(p.dts <= p.pts for p in out)


def test_dts_filler_gap_after_a_known_dts_and_flush_packets() -> None:
    pk = _packets([0, 1, 2, 3], [0, None, 2, None])
    flush = SimpleNamespace(pts=None, dts=None, duration=0, size=0)
    out = _fill([*pk, flush])
    assert [p.dts for p in out] == [0, 1, 2, 3]


# ---------------------------------------------------------------------------------------
# every written file re-opened and checked before the rename


def test_verify_output_names_what_differs(tmp_path: Path) -> None:
    frames = [np.full((64, 64, 3), 20 * i, np.uint8) for i in range(10)]
    v = mediagen.write_frames_video(str(tmp_path / "v.mp4"), frames, FPS)
    media.verify_output(v, media.OutputPlan(n_frames=10, video_seconds=0.4, frame_s=0.04))
    with pytest.raises(OutputError, match="decodes to 10 frame"):
        media.verify_output(v, media.OutputPlan(n_frames=20))
    with pytest.raises(OutputError, match="video lasts 0.400 s, 2.000 s planned"):
        media.verify_output(v, media.OutputPlan(video_seconds=2.0, frame_s=0.04))
    with pytest.raises(OutputError, match="audio lasts 0.000 s"):
        media.verify_output(v, media.OutputPlan(audio_seconds=0.4))


def test_failed_verify_puts_nothing_in_place(tmp_path: Path) -> None:
    dest = tmp_path / "out.mp4"

    def bad(tmp: str) -> None:
        assert Path(tmp).stat().st_size > 0
        raise OutputError("not as planned")

    with pytest.raises(OutputError), media.atomic_output(dest, verify=bad) as tmp:
        Path(tmp).write_bytes(b"x" * 100)
    assert not dest.exists() and os.listdir(tmp_path) == []


def test_render_refuses_a_file_that_does_not_decode_to_its_plan(clip: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from avsync import render

    out = tmp_path / "r.mp4"
    real = media.MediaWriter.write_video
    calls = {"n": 0}

    def every_other(self: media.MediaWriter, frame: object) -> None:  # a writer that loses frames
        calls["n"] += 1
        if calls["n"] % 2:
            real(self, frame)  # type: ignore[arg-type]
        else:
            self.n_video += 1

    monkeypatch.setattr(media.MediaWriter, "write_video", every_other)
    with pytest.raises(OutputError, match="not written.*decodes to"):
        render.render(clip, np.arange(50), FPS, out)
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------
# errors and resampling


def test_192k_reference_is_resampled_for_aac(clip: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = synthetic.beep_track(synthetic.event_times(4.0, rng), 4.0, 192000, rng)
    ref = mediagen.write_audio(str(tmp_path / "ref192.wav"), y, 192000)
    out = tmp_path / "out.mp4"
    r = _cli("align", str(clip), "--audio", ref, "-o", str(out), "--sync-by", "picture")
    assert r.returncode == 0, r.stderr
    info = media.probe(out)
    assert info.audio_codec == "aac" and info.audio_rate == 48000
    assert abs(media.decoded_lengths(out).audio_seconds - 4.0) < 0.03


def test_192k_clip_fix_into_mp4(tmp_path: Path) -> None:
    src = _bframe_mkv(tmp_path / "c192.mkv", sr=192000, audio_codec="pcm_s16le")
    out = tmp_path / "fixed.mp4"
    r = _cli("detect-offset", str(src), "--fix", str(out), "--shift-ms", "40")
    assert r.returncode == 0, r.stderr
    assert media.probe(out).audio_rate == 48000
    assert len(synthetic.decode_indices(out)) == 75


@pytest.mark.parametrize("name", ["out.wav", "out.png", "out.webm", "out"])
def test_output_that_cannot_hold_video_refused_up_front(clip: Path, tmp_path: Path, name: str) -> None:
    out = tmp_path / name
    line = _one_error_line(_cli("align", str(clip), "--audio", str(clip), "-o", str(out)))
    assert f"'{out}'" in line and ".mp4" in line
    assert not out.exists() and os.listdir(tmp_path) == []


def test_retarget_output_that_cannot_hold_video(clip: Path, tmp_path: Path) -> None:
    line = _one_error_line(_cli("retarget", str(clip), str(clip), "-o", str(tmp_path / "o.wav")))
    assert "cannot hold" in line and os.listdir(tmp_path) == []


def _huge_header_mkv(tmp_path: Path, side: int = 8000) -> Path:
    """A small ffv1 Matroska whose PixelWidth/PixelHeight claim ``side`` x ``side``."""
    src = mediagen.write_frames_video(str(tmp_path / "small.mkv"), [np.zeros((256, 320, 3), np.uint8)] * 3, FPS)
    with av.open(src) as i, av.open(str(tmp_path / "ffv1.mkv"), "w") as o:
        s = o.add_stream("ffv1", rate=FPS)
        s.width, s.height, s.pix_fmt = 320, 256, "yuv420p"
        for k, f in enumerate(i.decode(video=0)):
            f.pts, f.time_base = k, Fraction(1, FPS)
            for p in s.encode(f):
                o.mux(p)
        for p in s.encode(None):
            o.mux(p)
    buf = bytearray((tmp_path / "ffv1.mkv").read_bytes())
    for eid in (0xB0, 0xBA):  # 2-byte PixelWidth / PixelHeight elements
        k = buf.find(bytes([eid, 0x82]))
        struct.pack_into(">H", buf, k + 2, side)
    out = tmp_path / "huge.mkv"
    out.write_bytes(bytes(buf))
    return out


def test_huge_picture_refused_from_its_header(clip: Path, tmp_path: Path) -> None:
    huge = _huge_header_mkv(tmp_path)
    with pytest.raises(InputError, match=r"8000x8000 \(64 megapixels\).*8192x4320"):
        media.probe(huge)
    with pytest.raises(InputError, match="8000x8000"):
        next(iter(media.iter_frames(huge)))
    out = tmp_path / "o.mp4"
    line = _one_error_line(_cli("align", str(huge), "--audio", str(clip), "-o", str(out)))
    assert "8000x8000" in line and not out.exists()


def test_empty_input_to_fix_says_file_is_empty(tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    out = tmp_path / "o.mp4"
    line = _one_error_line(_cli("detect-offset", str(empty), "--fix", str(out), "--shift-ms", "100"))
    assert "file is empty" in line and not out.exists()


def test_max_shift_inf_is_a_named_error(clip: Path, tmp_path: Path) -> None:
    line = _one_error_line(_cli("align", str(clip), "--audio", str(clip), "-o", str(tmp_path / "o.mp4"),
                                "--max-shift", "inf"))
    assert "--max-shift" in line


def test_short_video_under_long_reference_warns(tmp_path: Path) -> None:
    short = tmp_path / "short.mp4"
    synthetic.write_clip(short, seconds=0.32, fps=FPS)
    ref = mediagen.write_audio(str(tmp_path / "ref.wav"),
                               synthetic.beep_track(np.array([0.5, 1.2, 2.9]), 4.0, 22050,
                                                    np.random.default_rng(0)), 22050)
    out = tmp_path / "o.mp4"
    r = _cli("align", str(short), "--audio", ref, "-o", str(out), "--json")
    assert r.returncode == 0, r.stderr
    warn = [ln for ln in r.stderr.splitlines() if ln.startswith("avsync: warning:")]
    assert any("0.32 s long" in w and "holds its last frame" in w for w in warn), r.stderr
    assert media.decoded_lengths(out).n_frames == 100


def test_python_warnings_go_through_the_tool_warning_line(caplog: pytest.LogCaptureFixture) -> None:
    from avsync.cli._app import _warning_to_log

    with warnings.catch_warnings(), caplog.at_level(logging.DEBUG, logger="avsync"):
        warnings.simplefilter("always")
        warnings.showwarning = _warning_to_log
        warnings.warn("a library speaks", UserWarning, stacklevel=1)
        np.mean(np.zeros(0))  # numpy: "Mean of empty slice"
    shown = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert shown == ["a library speaks"]
    assert any("Mean of empty slice" in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)
