"""avsync.media on small generated files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from avsync import media
from avsync.errors import InputError, OutputError
from tests import mediagen as mg

SR = 22050


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("media")
    f = {
        "sync": mg.make_avsynctest(str(d / "sync.mp4"), seconds=4, size="160x120"),
        "lead": mg.make_avsynctest(str(d / "lead.mp4"), seconds=4, size="160x120", audio_shift=0.1),
        "noaudio": mg.make_no_audio_video(str(d / "noaudio.mp4"), seconds=1, fps=25),
        "rot": mg.make_index_video(str(d / "rot.mp4"), 10, 25, size="160x120", sar=(4, 3), rotation=90),
        "vfr": mg.write_frames_video(str(d / "vfr.mkv"), [mg.index_image(i) for i in range(7)], 25,
                                     times=[0, 0.04, 0.08, 0.2, 0.24, 0.5, 0.54]),
        "late": mg.make_index_video(str(d / "late.mp4"), 50, 25, audio=(mg.tone(1.5, SR), SR),
                                    audio_start=0.5),
    }
    return f


def test_probe_fields(files):
    i = media.probe(files["sync"])
    assert i.has_video and i.has_audio
    assert (i.width, i.height) == (160, 120)
    assert i.fps == pytest.approx(25.0)
    assert i.n_frames == 100
    assert i.duration == pytest.approx(4.0, abs=0.05)
    assert (i.video_codec, i.pix_fmt, i.audio_codec) == ("h264", "yuv420p", "aac")
    assert (i.audio_rate, i.audio_channels) == (44100, 1)
    assert i.audio_duration == pytest.approx(4.0, abs=0.03)
    assert not i.vfr and i.rotation == 0 and i.sar == (1, 1)


def test_probe_rotation_sar_and_no_audio(files):
    i = media.probe(files["rot"])
    assert i.rotation == 90 and i.sar == (4, 3) and i.n_frames == 10
    j = media.probe(files["noaudio"])
    assert j.has_video and not j.has_audio and j.audio_rate == 0


def test_vfr_detected_and_frame_times_exact(files):
    i = media.probe(files["vfr"])
    assert i.vfr and i.n_frames == 7
    np.testing.assert_allclose(media.frame_times(files["vfr"]), [0, 0.04, 0.08, 0.2, 0.24, 0.5, 0.54],
                               atol=1e-9)


def test_frame_times_cfr_matches_decode(files):
    ft = media.frame_times(files["sync"])
    np.testing.assert_allclose(ft, np.arange(100) / 25, atol=1e-9)
    dec = np.array([t for _, t, _ in media.iter_frames(files["vfr"])])
    np.testing.assert_allclose(dec, media.frame_times(files["vfr"]), atol=1e-9)


def test_iter_frames_downscale_gray_upright(files):
    r = media.iter_frames(files["sync"], max_side=80)
    idx, t, img = next(r)
    r.close()
    assert (idx, t, img.shape, img.dtype) == (0, 0.0, (60, 80, 3), np.uint8)
    frames = list(media.iter_frames(files["rot"], max_side=40, gray=True))
    assert [f[0] for f in frames] == list(range(10))
    assert frames[0][2].shape == (30, 40)
    # the index pattern survives: frame i shows i
    full = list(media.iter_frames(files["rot"]))
    assert [mg.read_index(f) for _, _, f in full] == list(range(10))
    _, _, up = next(iter(media.iter_frames(files["rot"], upright=True)))
    assert up.shape == (160, 120, 3)


def test_iter_frames_skips_corrupt_packets(tmp_path, files):
    src = Path(mg.make_no_audio_video(str(tmp_path / "n.mp4"), seconds=4, fps=25))
    b = bytearray(src.read_bytes())
    rng = np.random.default_rng(0)
    for off in range(len(b) // 3, len(b) // 2, 997):
        b[off:off + 40] = rng.integers(0, 256, 40, dtype=np.uint8).tobytes()
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(b))
    r = media.iter_frames(str(bad), max_side=32)
    n = sum(1 for _ in r)
    assert 80 <= n <= 100  # decoded what it could, did not crash


def _onsets(x: np.ndarray, sr: int) -> np.ndarray:
    """Start times (s) of bursts in x."""
    on = np.abs(x) > 0.1
    starts = np.nonzero(on[1:] & ~on[:-1])[0] + 1
    keep = np.concatenate([[True], np.diff(starts) > 0.2 * sr]) if starts.size else starts
    return starts[keep] / sr


def test_load_audio_on_video_clock(files):
    # flashes at frames 25, 50, 75 (t = 1, 2, 3 s); beeps at the same times when in sync
    a = media.load_audio(files["sync"], SR)
    assert a.dtype == np.float32 and a.ndim == 1
    assert a.size / SR == pytest.approx(4.0, abs=0.01)
    np.testing.assert_allclose(_onsets(a, SR), [1, 2, 3], atol=0.005)
    lead = media.load_audio(files["lead"], SR)
    np.testing.assert_allclose(_onsets(lead, SR), [0.9, 1.9, 2.9], atol=0.005)
    bright = np.array([f.mean() for _, _, f in media.iter_frames(files["sync"], max_side=40, gray=True)])
    assert list(np.nonzero(bright > bright.mean() + 3 * bright.std())[0]) == [25, 50, 75]


def test_load_audio_pads_late_audio(files):
    a = media.load_audio(files["late"], SR)
    assert np.abs(a[: int(0.45 * SR)]).max() < 1e-3  # AAC pre-echo reaches ~20 ms back
    assert np.nonzero(np.abs(a) > 0.05)[0][0] / SR == pytest.approx(0.5, abs=0.005)
    assert a.size / SR == pytest.approx(2.0, abs=0.01)


@pytest.mark.parametrize("ext", ["wav", "mp3", "ogg", "flac", "m4a", "mka"])
def test_load_audio_containers(tmp_path, ext):
    p = mg.make_tone(str(tmp_path / f"t.{ext}"), seconds=1.0, sr=SR, freq=440.0)
    a = media.load_audio(p, 16000)
    # Matroska does not carry AAC's end padding: up to one frame (1024 samples) longer.
    assert a.size / 16000 == pytest.approx(1.0, abs=0.05 if ext == "mka" else 0.01)
    # No holes in the tone: Matroska's 1 ms time base rounds every AAC frame's duration (23 ms
    # for 1024 samples at 44.1 kHz), which must not be taken for end padding and cut.
    mid = np.abs(a[1000:-1000]) < 1e-6
    assert not (mid[:-3] & mid[1:-2] & mid[2:-1] & mid[3:]).any()
    spec = np.abs(np.fft.rfft(a[2000:14000]))
    assert np.fft.rfftfreq(12000, 1 / 16000)[spec.argmax()] == pytest.approx(440, abs=3)


def test_load_audio_without_audio(files):
    with pytest.raises(InputError, match="no audio stream in"):
        media.load_audio(files["noaudio"])


def test_stream_starts(files):
    s = media.stream_starts(files["late"])
    assert s.has_video and s.has_audio and s.video == pytest.approx(0.0, abs=1e-6)
    assert s.audio == pytest.approx(0.5 - 1024 / SR, abs=0.002)  # one AAC priming frame early
    assert s.duration == pytest.approx(2.0, abs=0.05)
    n = media.stream_starts(files["noaudio"])
    assert n.has_video and not n.has_audio and n.audio is None and n.video is not None


def test_load_raw_audio_is_not_placed_on_the_video_clock(files):
    """Raw samples: the stream's own rate, sample 0 at the audio's own start (no padding)."""
    x, sr, t0 = media.load_raw_audio(files["late"])
    assert x.dtype == np.float32 and x.ndim == 1 and sr == SR
    assert t0 == pytest.approx(media.stream_starts(files["late"]).audio)
    assert 1.5 + 1024 / SR - 0.002 <= x.size / sr <= 1.5 + 3 * 1024 / SR  # priming and end padding kept
    placed = media.load_audio(files["late"], SR)
    k = int(round(t0 * SR))
    np.testing.assert_allclose(placed[k:k + x.size][: placed.size - k], x[: placed.size - k], atol=1e-4)
    with pytest.raises(InputError, match="no audio stream in"):
        media.load_raw_audio(files["noaudio"])


def test_write_atomic_modes(tmp_path):
    """Default: what open() would give (umask); ``mode=``: exactly that; nothing left on failure."""
    from avsync.outputs import write_atomic, write_json

    old = os.umask(0o027)
    try:
        write_atomic(tmp_path / "a.bin", lambda t: Path(t).write_bytes(b"a"))
        write_atomic(tmp_path / "b.bin", lambda t: Path(t).write_bytes(b"b"), mode=0o644)
        write_json(tmp_path / "c.json", {"x": np.float32(0.5)}, mode=0o600)
        with pytest.raises(ZeroDivisionError):
            write_atomic(tmp_path / "d.bin", lambda t: Path(t).write_bytes(b"d") and 1 / 0)
    finally:
        os.umask(old)
    assert oct(os.stat(tmp_path / "a.bin").st_mode & 0o777) == oct(0o640)
    assert oct(os.stat(tmp_path / "b.bin").st_mode & 0o777) == oct(0o644)
    assert oct(os.stat(tmp_path / "c.json").st_mode & 0o777) == oct(0o600)
    assert (tmp_path / "c.json").read_text() == '{\n "x": 0.5\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.bin", "c.json"]


def _bad_inputs(tmp: Path, files) -> dict[str, str]:
    (tmp / "text.mp4").write_text("this is not a video\n" * 50)
    (tmp / "empty.mp4").write_bytes(b"")
    data = Path(files["sync"]).read_bytes()
    (tmp / "trunc.mp4").write_bytes(data[: len(data) // 2])
    return {"missing": str(tmp / "nope.mp4"), "dir": str(tmp), "text": str(tmp / "text.mp4"),
            "empty": str(tmp / "empty.mp4"), "trunc": str(tmp / "trunc.mp4")}


@pytest.mark.parametrize("kind", ["missing", "dir", "text", "empty", "trunc"])
@pytest.mark.parametrize("fn", [media.probe, media.frame_times, media.load_audio,
                                lambda p: next(iter(media.iter_frames(p))), media.stream_starts,
                                media.load_raw_audio])
def test_bad_inputs_one_line(tmp_path, files, kind, fn):
    p = _bad_inputs(tmp_path, files)[kind]
    with pytest.raises(InputError) as ei:
        fn(p)
    msg = str(ei.value)
    assert msg.startswith(f"cannot read '{p}': ") and "\n" not in msg


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads anything")
def test_permission_denied(tmp_path, files):
    p = tmp_path / "locked.mp4"
    p.write_bytes(Path(files["noaudio"]).read_bytes())
    p.chmod(0)
    with pytest.raises(InputError, match="permission denied"):
        media.probe(str(p))


def test_atomic_output(tmp_path):
    out = tmp_path / "o.mp4"
    with media.atomic_output(out) as tmp:
        assert os.path.dirname(tmp) == str(tmp_path) and tmp.endswith(".mp4")
        Path(tmp).write_bytes(b"x")
    assert out.read_bytes() == b"x"
    with pytest.raises(OutputError, match="already exists"), media.atomic_output(out):
        pass
    with media.atomic_output(out, overwrite=True) as tmp:
        Path(tmp).write_bytes(b"y")
    assert out.read_bytes() == b"y"
    for exc in (RuntimeError, KeyboardInterrupt):
        with pytest.raises(exc), media.atomic_output(out, overwrite=True) as tmp:
            Path(tmp).write_bytes(b"z")
            raise exc("boom")
    assert out.read_bytes() == b"y"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.mp4"]
    with pytest.raises(OutputError, match="does not exist"), media.atomic_output(tmp_path / "no" / "x.mp4"):
        pass


def test_writer_roundtrip(tmp_path):
    out = str(tmp_path / "w.mkv")
    w = media.MediaWriter(out, width=161, height=121, rate=24000 / 1001, audio_rate=SR, audio_layout="mono")
    for i in range(24):
        w.write_video(mg.index_image(i, 161, 121))
        w.write_audio(mg.tone(1 / 24, SR)[None])
    w.close()
    i = media.probe(out)
    assert (i.width, i.height, i.n_frames) == (160, 120, 24)
    assert i.fps == pytest.approx(24000 / 1001, rel=1e-4)
    assert [mg.read_index(f) for _, _, f in media.iter_frames(out)] == list(range(24))
    assert media.as_fraction(29.97).denominator == 1001 and media.as_fraction(25.0) == 25
