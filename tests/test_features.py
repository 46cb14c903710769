"""Features: audio timing, motion envelopes, landmark cleaning, extraction, cache."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from scipy.signal import find_peaks

from avsync import cache
from avsync.errors import CannotMeasure, InputError
from avsync.features.audio import audio_features, logmel, onset_envelope, speech_envelope
from avsync.features.extract import extract_audio, extract_visual
from avsync.features.landmarks import clean_track
from avsync.features.motion import (
    keypoint_kinematics,
    motion_envelope,
    motion_grid,
    mouth_envelope,
    pose_envelope,
)

os.environ.setdefault("GLOG_minloglevel", "2")
MEDIA = Path(os.environ.get("AVSYNC_MEDIA", "/root/.cache/avsync-media"))
MEGAMIND = MEDIA / "megamind.avi"


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AVSYNC_CACHE", str(tmp_path / "cache"))


def _peaks(x: np.ndarray, rel: float = 0.5) -> np.ndarray:
    x = np.asarray(x).ravel()
    p, _ = find_peaks(x, height=x.max() * rel, distance=3)
    return p


# --------------------------------------------------------------------------------------
# generated media


def _write_avsynctest(path: Path, seconds: int = 4) -> None:
    """avsynctest with a flash + beep every second (p=1), 320x180, 25 fps, H.264 + AAC."""
    src = av.open(f"avsynctest=d={seconds}:fr=25:s=320x180:p=1[out0][out1]", format="lavfi")
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt = 320, 180, "yuv420p"
        vs.options = {"preset": "ultrafast", "crf": "18"}
        aus = out.add_stream("aac", rate=44100, layout="mono")
        res = av.AudioResampler(format="fltp", layout="mono", rate=44100)
        for frame in src.decode():
            if isinstance(frame, av.VideoFrame):
                frame = frame.reformat(format="yuv420p")
                frame.pict_type = av.video.frame.PictureType.NONE
                out.mux(vs.encode(frame))
            else:
                for f in res.resample(frame):
                    out.mux(aus.encode(f))
        out.mux(vs.encode(None))
        out.mux(aus.encode(None))
    src.close()


def _write_frames(path: Path, frames, times_ms, audio: np.ndarray | None = None) -> None:
    """Gray frames (H, W) uint8 at the given presentation times (ms), H.264 in mp4."""
    h, w = frames[0].shape
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.codec_context.time_base = Fraction(1, 1000)
        vs.options = {"preset": "ultrafast", "crf": "18", "bf": "0"}
        aus = out.add_stream("aac", rate=22050, layout="mono") if audio is not None else None
        for g, t in zip(frames, times_ms, strict=True):
            f = av.VideoFrame.from_ndarray(np.repeat(g[:, :, None], 3, axis=2), format="rgb24")
            f = f.reformat(format="yuv420p")
            f.pts, f.time_base = int(t), Fraction(1, 1000)
            out.mux(vs.encode(f))
        out.mux(vs.encode(None))
        if aus is not None:
            f = av.AudioFrame.from_ndarray(audio[None].astype(np.float32), format="fltp", layout="mono")
            f.sample_rate, f.pts, f.time_base = 22050, 0, Fraction(1, 22050)
            out.mux(aus.encode(f))
            out.mux(aus.encode(None))


@pytest.fixture(scope="module")
def avsync_clip(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("media") / "avsynctest.mp4"
    _write_avsynctest(p)
    return p


# --------------------------------------------------------------------------------------
# audio


@pytest.mark.parametrize("sr", [22050, 16000, 48000])
def test_click_train_onsets_land_on_the_clicks(sr):
    clicks = [0.5, 1.0, 1.73, 2.4]
    y = np.zeros(3 * sr, np.float32)
    for c in clicks:
        y[int(round(c * sr))] = 1.0
    env = onset_envelope(y, sr)
    assert env.rate == 100.0 and env.start == 0.0
    assert env.values.shape == (300, 1)
    peaks = env.times[_peaks(env.values)]
    assert len(peaks) == len(clicks)
    np.testing.assert_allclose(peaks, clicks, atol=0.01)
    # normalisation documented: zero median, unit std
    assert abs(np.median(env.values)) < 1e-6 and np.std(env.values) == pytest.approx(1.0, rel=1e-4)


def test_speech_envelope_follows_the_speech_band_only():
    sr = 16000
    t = np.arange(3 * sr) / sr
    y = 0.5 * np.sin(2 * np.pi * 80 * t)  # loud hum below the band, all the time
    burst = (t >= 1.0) & (t < 1.5)
    y[burst] += 0.05 * np.sin(2 * np.pi * 1000 * t[burst])
    env = speech_envelope(y.astype(np.float32), sr)
    v = env.values[:, 0]
    inside = v[(env.times > 1.05) & (env.times < 1.45)]
    outside = v[(env.times > 2.0) & (env.times < 2.9)]
    assert inside.min() > outside.max() + 20  # dB
    # a centred 25 ms window holds half the burst's power (-3 dB) exactly at its start
    i = int(np.argmax(v >= np.median(inside) - 3.0))
    half = np.interp(np.median(inside) - 3.0, v[i - 1 : i + 1], env.times[i - 1 : i + 1])
    assert half == pytest.approx(1.0, abs=0.005)


def _modulated_speech(level_db: np.ndarray, level_rate: float, seconds: float, delay: float,
                      sr: int = 16000, seed: int = 0) -> np.ndarray:
    """Speech-band noise whose level follows ``level_db`` (dB, at ``level_rate`` Hz), ``delay`` s late."""
    from scipy.signal import butter, sosfiltfilt

    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    noise = sosfiltfilt(butter(4, [400.0, 2500.0], btype="bandpass", fs=sr, output="sos"), rng.standard_normal(t.size))
    gain = 10 ** (np.interp(t - delay, np.arange(len(level_db)) / level_rate, level_db) / 20)
    return (noise * gain).astype(np.float32)


@pytest.mark.parametrize("fps", [25.0, 30.0, 50.0])
@pytest.mark.parametrize("frames", [-2.5, 0.0, 3.0])
def test_speech_level_on_the_frame_grid_has_no_delay(fps, frames):
    """A picture that follows the speech level exactly reads the planted offset within 0.05 frame
    at every frame rate (an even-width box filter put the 100 Hz envelope 5 ms late at 25 fps)."""
    from scipy.ndimage import gaussian_filter1d

    from avsync.backends.classical import ClassicalBackend, ClassicalOptions
    from avsync.features import VisualFeatures
    from avsync.types import Signal

    rng = np.random.default_rng(1)
    seconds = 20.0
    level = 20 * np.log10(gaussian_filter1d(np.repeat(rng.random(int(seconds * 8) + 1), 125), 20) + 0.05)
    # + frames = audio leads: the sound is heard that much *before* its picture
    y = _modulated_speech(level, 1000.0, seconds, delay=-frames / fps)
    audio = audio_features(y, 16000)
    n = int(seconds * fps)
    mouth = np.interp(np.arange(n) / fps, np.arange(len(level)) / 1000.0, level)[:, None]
    vis = VisualFeatures(mode="speech", kind="lips", envelope=Signal(mouth[:, 0], fps),
                         grid=Signal(np.zeros((n, 4)), fps), keypoints=None, mouth=Signal(mouth, fps),
                         detection_rate=1.0, fps=fps,
                         frame_times=np.arange(n) / fps)
    got = ClassicalBackend(ClassicalOptions(lip_filter=False)).offset(audio, vis, 0.5)
    assert got.seconds * fps == pytest.approx(frames, abs=0.05)


def test_logmel_and_audio_features_share_one_clock():
    sr = 22050
    y = np.random.default_rng(0).normal(0, 0.1, int(2.345 * sr)).astype(np.float32)
    m = logmel(y, sr)
    assert m.values.shape == (235, 128) and m.rate == 100.0
    assert m.values.max() == pytest.approx(0.0, abs=1.0) and m.values.min() >= -80.0
    f = audio_features(y, sr)
    assert len(f.onset) == len(f.speech) == len(f.logmel) == 235
    assert f.duration == pytest.approx(2.345, abs=1e-4) and f.sr == sr


def test_silence_cannot_be_measured():
    with pytest.raises(CannotMeasure):
        audio_features(np.zeros(22050, np.float32), 22050)


# --------------------------------------------------------------------------------------
# landmarks cleaning and kinematics


def test_clean_track_fills_gaps_and_removes_a_spike():
    T = 100
    t = np.arange(T) / 25
    truth = np.stack([np.sin(np.pi * t / 2), np.cos(np.pi * t / 3)], -1)[:, None, :].repeat(3, axis=1)
    noisy = truth + np.random.default_rng(1).normal(0, 0.003, truth.shape)
    noisy[40, 0] = [5.0, -5.0]  # one-frame detector glitch on keypoint 0
    noisy[60:66, 1] = np.nan  # a gap on keypoint 1
    valid = np.ones((T, 3), bool)
    valid[20:24, 2] = False  # a gap on keypoint 2 declared through `valid`
    noisy[20:24, 2] = 99.0
    out = clean_track(noisy, valid)
    assert out.shape == (T, 3, 2) and np.isfinite(out).all()
    err = np.abs(out - truth)
    assert err[38:43, 0].max() < 0.05  # the spike is gone
    assert err[58:68, 1].max() < 0.05  # the gap is filled
    assert err[18:26, 2].max() < 0.05
    # a keypoint never seen is zeros, (T,) validity accepted
    none = clean_track(np.full((10, 1, 2), np.nan))
    assert (none == 0).all()
    held = clean_track(np.arange(20, dtype=float)[:, None, None].repeat(2, 2), np.arange(20) >= 5)
    np.testing.assert_allclose(held[:5, 0, 0], 5.0, atol=0.3)  # leading gap held at the edge


def test_kinematics_and_pose_envelope_peak_at_a_sudden_stop():
    fps = 25.0
    T = 100
    kp = np.zeros((T, 33, 2))
    kp[:, 11] = [0.45, 0.3]  # shoulders
    kp[:, 12] = [0.55, 0.3]
    kp[:, 23] = [0.45, 0.5]  # hips: torso length 0.2
    kp[:, 24] = [0.55, 0.5]
    x = np.minimum(np.arange(T), 50) * 0.004  # constant speed, then a dead stop at frame 50
    kp[:, 11:] += np.stack([x, np.zeros(T)], -1)[:, None, :]
    speed, acc = keypoint_kinematics(kp, fps, scale=0.2)
    assert speed[20, 15] == pytest.approx(0.004 * fps / 0.2, rel=1e-6)  # body lengths / s
    assert speed[80, 15] == 0.0
    env = pose_envelope(kp, fps)
    assert env.shape == (T,)
    assert abs(int(np.argmax(env)) - 50) <= 1


def test_mouth_envelope_removes_slow_drift():
    fps = 25.0
    t = np.arange(250) / fps
    opening = 0.3 * (np.sin(2 * np.pi * 4 * t) > 0.5) + 0.5 * t / t[-1]  # syllables + drift
    env = mouth_envelope(opening, fps)
    assert env.shape == (250,)
    early, late = env[:50], env[-50:]
    assert abs(early.mean() - late.mean()) < 0.3  # drift gone
    assert np.corrcoef(env, opening - 0.5 * t / t[-1])[0, 1] > 0.9


def test_motion_grid_localises_motion_and_envelope_peaks_on_rises():
    frames = np.zeros((10, 80, 80), np.uint8)
    frames[5, :10, :10] = 255  # flash in the top-left cell at frame 5
    g = motion_grid(frames, grid=8)
    assert g.shape == (10, 64)
    assert g[5, 0] == pytest.approx(1.0) and g[6, 0] == pytest.approx(1.0)  # on and off
    assert g[:, 1:].max() == 0.0 and g[0].max() == 0.0
    env = motion_envelope(g)
    assert int(np.argmax(env)) == 5  # the rise, not the decay


# --------------------------------------------------------------------------------------
# extraction from files


def test_general_mode_motion_envelope_peaks_at_the_flashes(avsync_clip):
    v = extract_visual(avsync_clip, "general", cache=False)
    assert v.mode == "general" and v.kind == "motion" and v.keypoints is None
    assert v.fps == 25.0 and len(v.envelope) == 100 and v.grid.values.shape == (100, 64)
    np.testing.assert_allclose(v.frame_times, np.arange(100) / 25, atol=1e-6)
    peaks = _peaks(v.envelope.values, rel=0.5)
    np.testing.assert_array_equal(peaks, [25, 50, 75])  # flash frames (t = 1, 2, 3 s)


def test_audio_onsets_of_the_same_clip_hit_the_beeps(avsync_clip):
    a = extract_audio(avsync_clip, cache=False)
    assert a.duration == pytest.approx(4.0, abs=0.05)
    peaks = a.onset.times[_peaks(a.onset.values, rel=0.5)]
    np.testing.assert_allclose(peaks, [1.0, 2.0, 3.0], atol=0.015)  # (the beep at 0 is on the edge)


def test_vfr_input_lands_on_a_uniform_grid(tmp_path):
    rng = np.random.default_rng(2)
    bg = rng.integers(0, 60, (72, 128), dtype=np.uint8)
    times = np.cumsum(np.tile([30, 50, 40], 34))[:100] - 30  # ms, irregular, mean 40 ms
    flash = [int(np.argmax(times >= 1000)), int(np.argmax(times >= 2170))]
    frames = [bg.copy() for _ in times]
    for i in flash:
        frames[i][20:50, 40:90] = 255
    p = tmp_path / "vfr.mp4"
    _write_frames(p, frames, times)
    v = extract_visual(p, "general", cache=False)
    np.testing.assert_allclose(v.frame_times, times / 1000.0, atol=1e-3)
    n = len(v.envelope)
    assert n == int(np.floor(times[-1] / 1000 * v.fps + 0.5)) + 1
    np.testing.assert_allclose(v.envelope.times, np.arange(n) / v.fps)
    peak_t = v.envelope.times[_peaks(v.envelope.values, rel=0.5)]
    np.testing.assert_allclose(peak_t, times[flash] / 1000.0, atol=1.0 / v.fps + 1e-6)


def test_unknown_mode_and_missing_audio_are_input_errors(tmp_path):
    frames = [np.full((32, 32), i * 20, np.uint8) for i in range(5)]
    p = tmp_path / "mute.mp4"
    _write_frames(p, frames, np.arange(5) * 40)
    with pytest.raises(InputError, match="mode"):
        extract_visual(p, "ballet")
    with pytest.raises(InputError, match="no audio"):
        extract_audio(p)
    with pytest.raises(InputError):
        extract_visual(tmp_path / "nope.mp4")


def test_digital_silence_cannot_be_measured(tmp_path):
    frames = [np.full((32, 32), i * 10, np.uint8) for i in range(25)]
    p = tmp_path / "silent.mp4"
    _write_frames(p, frames, np.arange(25) * 40, audio=np.zeros(22050))
    with pytest.raises(CannotMeasure, match="silence"):
        extract_audio(p)


# --------------------------------------------------------------------------------------
# cache


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("AVSYNC_CACHE", str(tmp_path / "a"))
    assert cache.cache_dir() == tmp_path / "a"
    monkeypatch.delenv("AVSYNC_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache.cache_dir() == tmp_path / "x" / "avsync"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache.cache_dir() == Path.home() / ".cache" / "avsync"


def test_cache_hit_is_identical_and_keys_follow_content(avsync_clip, tmp_path):
    first = extract_visual(avsync_clip, "general")
    entries = list((cache.cache_dir() / "features").glob("*.npz"))
    assert len(entries) == 1
    second = extract_visual(avsync_clip, "general")
    np.testing.assert_array_equal(first.envelope.values, second.envelope.values)
    np.testing.assert_array_equal(first.grid.values, second.grid.values)
    np.testing.assert_array_equal(first.frame_times, second.frame_times)
    assert (second.mode, second.kind, second.note, second.fps) == (first.mode, first.kind, first.note, first.fps)

    a1, a2 = extract_audio(avsync_clip), extract_audio(avsync_clip)
    np.testing.assert_array_equal(a1.logmel.values, a2.logmel.values)
    assert len(list((cache.cache_dir() / "features").glob("*.npz"))) == 2

    key = cache.file_key(avsync_clip, what="visual", mode="general")
    copy = tmp_path / "renamed.mp4"
    copy.write_bytes(avsync_clip.read_bytes())
    assert cache.file_key(copy, what="visual", mode="general") == key  # content, not name
    assert cache.file_key(copy, what="visual", mode="dance") != key  # parameters count
    with open(copy, "ab") as f:
        f.write(b"\0")
    assert cache.file_key(copy, what="visual", mode="general") != key  # changed file


def test_corrupt_cache_entry_is_ignored_and_rewritten(avsync_clip):
    a = extract_audio(avsync_clip)
    (entry,) = (cache.cache_dir() / "features").glob("*.npz")
    entry.write_bytes(b"not a zip file")
    key = entry.stem
    assert cache.load_npz(key) is None
    b = extract_audio(avsync_clip)
    np.testing.assert_array_equal(a.onset.values, b.onset.values)
    assert cache.load_npz(key) is not None


# --------------------------------------------------------------------------------------
# real media (local only)

needs_megamind = pytest.mark.skipif(not MEGAMIND.is_file(), reason="megamind.avi not available")


@needs_megamind
def test_face_mesh_finds_lips_on_a_real_frame():
    from avsync.features.landmarks import N_LIPS, LandmarkDetector, detect_size

    with av.open(str(MEGAMIND)) as c:
        frame = next(f for i, f in enumerate(c.decode(video=0)) if i == 30)
    w, h = detect_size(frame.width, frame.height)
    rgb = frame.to_ndarray(width=w, height=h, format="rgb24")
    with LandmarkDetector(pose=True, face=True) as det:
        face = det.face(rgb)
        pose = det.pose(rgb)
    assert face is not None and face.lips.shape == (N_LIPS, 2)
    assert 0.05 < face.face_size < 0.5 and 0.0 <= face.opening < 1.0
    assert pose is not None and pose.shape == (33, 3)


@pytest.mark.slow
@needs_megamind
def test_speech_mode_on_a_speaking_face():
    v = extract_visual(MEGAMIND, "auto", cache=False)
    assert v.mode == "speech" and v.kind == "lips"
    assert v.detection_rate > 0.8
    assert v.mouth is not None and np.var(v.mouth.values) > 0
    assert v.keypoints.values.shape == (len(v.envelope), 40) and np.isfinite(v.keypoints.values).all()


def test_chunked_mel_power_matches_librosa():
    import librosa

    from avsync.features.audio import _mel_power

    y = np.random.default_rng(0).standard_normal(22050 * 3).astype(np.float32)
    ref = librosa.feature.melspectrogram(y=y, sr=22050, n_fft=1024, hop_length=220, n_mels=128, center=True,
                                         power=2.0, pad_mode="constant")
    got = _mel_power(y, 22050, 1024, 220, 128, chunk=37)  # chunk boundaries inside the signal
    assert got.shape == ref.shape
    assert np.max(np.abs(got - ref)) <= 1e-5 * ref.max()


@pytest.mark.parametrize(("sr", "n_fft", "n_mels"), [(22050, 2048, 128), (16000, 512, 128), (44100, 1024, 64)])
def test_mel_scale_filters_db_and_flux_match_librosa(sr, n_fft, n_mels):
    """The mel filterbank, dB conversion and spectral flux written out in avsync.features.audio
    (to spare librosa's import) give librosa 0.11's numbers."""
    import librosa

    from avsync.features import audio as A

    assert np.allclose(A._mel_basis(sr, n_fft, n_mels), librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels),
                       rtol=0, atol=1e-7)
    assert np.allclose(A.mel_frequencies(n_mels + 2, sr / 2), librosa.mel_frequencies(n_mels=n_mels + 2, fmax=sr / 2))
    rng = np.random.default_rng(1)
    # noise whose loudness jumps every 0.1 s: floors, rises and falls for the dB and the flux
    y = (rng.standard_normal(sr * 2) * np.repeat(rng.random(20) ** 3, sr // 10)).astype(np.float32)
    hop = sr // 100
    power = A._mel_power(y, sr, n_fft, hop, n_mels)
    db = A.power_to_db(power, top_db=80.0)
    want = librosa.power_to_db(power, ref=np.max, top_db=80.0)
    assert db.min() < db.max() - 79.0  # the floor is reached somewhere
    assert np.max(np.abs(db - want)) < 1e-4
    flux = A.onset_strength(want, hop, n_fft)
    ref = librosa.onset.onset_strength(S=want, sr=sr, hop_length=hop, n_fft=n_fft, center=True)
    assert flux.shape == ref.shape and flux.max() > 0
    assert np.allclose(flux, ref, rtol=0, atol=1e-5)
