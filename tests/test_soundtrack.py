"""align by the video's own soundtrack: the affinity, the evidence check, the CLI end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from avsync.evaluation.protocol import render_distorted
from avsync.features.audio import audio_features
from avsync.path import PathOptions, viterbi_lags
from avsync.soundtrack import soundtrack_affinity, warp_audio
from avsync.synthetic import decode_indices, write_clip
from avsync.warps import invert_plan, random_warp


def _bursts(seconds: float, sr: int, seed: int) -> np.ndarray:
    """Noise bursts of random colour at random, non-periodic times over a noise floor."""
    rng = np.random.default_rng(seed)
    y = 0.01 * rng.standard_normal(int(seconds * sr))
    t = 0.2
    while t < seconds - 0.3:
        n = int(rng.uniform(0.03, 0.15) * sr)
        s = int(t * sr)
        burst = rng.standard_normal(n) * np.exp(-np.arange(n) / (0.3 * n))
        k = int(rng.integers(1, 40))
        burst = np.convolve(burst, np.ones(k) / k, mode="same")  # random low-pass: a timbre
        y[s:s + n] += 0.5 * burst / (np.abs(burst).max() + 1e-9)
        t += rng.uniform(0.15, 0.6)
    return y.astype(np.float32)


def test_warp_audio_plays_the_plan():
    sr, fps = 1000, 10.0
    y = np.arange(5 * sr, dtype=np.float32) / sr  # the signal is its own source time
    plan = np.array([0, 0, 0, 1, 2, 4, 6, 8, 10, 12, 13, 14], dtype=float)
    out = warp_audio(y, sr, plan, fps)
    assert len(out) == int(len(plan) / fps * sr)
    # at output frame m the source time is plan[m] / fps
    for m in (0, 2, 3, 5, 9):
        assert out[int(m / fps * sr)] == pytest.approx(plan[m] / fps, abs=2e-3)
    assert np.all(np.diff(out) >= -1e-6)  # a monotonic plan plays the source forwards


def test_soundtrack_affinity_recovers_a_planted_warp():
    sr, fps, seconds = 22050, 25.0, 12.0
    y = _bursts(seconds, sr, seed=1)
    n = int(seconds * fps)
    plan = random_warp(n, fps, np.random.default_rng(4))
    own = audio_features(warp_audio(y, sr, plan, fps), sr)
    ref = audio_features(y, sr)
    aff = soundtrack_affinity(ref, own, fps, max_shift=1.5)
    path, _ = viterbi_lags(aff, PathOptions(lag_change_penalty=0.5))
    est = np.arange(len(path)) + aff.lags[path] * fps  # distorted frame to show at each audio frame
    truth = invert_plan(plan, n)[: len(path)]
    core = slice(25, n - 25)
    err = np.abs(est[core] - truth[core])
    assert np.mean(err <= 1.0) >= 0.9, err
    # and it is the soundtrack that says so: an unwarped pairing disagrees with the truth
    assert np.mean(np.abs(np.arange(n)[core] - truth[core]) <= 1.0) < 0.5


@pytest.mark.parametrize(("warp", "seed", "floor"), [("random", 0, 0.95), ("tae", 1, 0.9)])
def test_frame_level_dtw_follows_skips_and_freezes(warp, seed, floor):
    """The path the soundtrack route draws: frame-level DTW, through speed changes, freezes,
    skips (random_warp) and dropped/repeated frames (tae_warp)."""
    from avsync.soundtrack import soundtrack_correspondence
    from avsync.warps import tae_warp

    sr, fps, seconds = 22050, 25.0, 12.0
    y = _bursts(seconds, sr, seed=seed + 1)
    n = int(seconds * fps)
    rng = np.random.default_rng(seed + 4)
    plan = np.asarray(random_warp(n, fps, rng) if warp == "random" else tae_warp(n, rng))
    own = audio_features(warp_audio(y, sr, plan, fps), sr)
    corr = soundtrack_correspondence(audio_features(y, sr), own, fps, n, len(plan) / fps, max_shift=1.5)
    assert len(corr.src_time) == n and np.all(np.diff(corr.src_time) >= 0)
    shown = np.clip(np.round(corr.src_time * fps).astype(int), 0, len(plan) - 1)
    err = (plan[shown] - np.arange(n))[25:-25]  # original frame shown minus the one due
    assert np.mean(np.abs(err) <= 1) >= floor, err
    base = (plan[np.minimum(np.arange(n), len(plan) - 1)] - np.arange(n))[25:-25]
    assert np.mean(np.abs(base) <= 1) < 0.5  # the distortion is real


@pytest.mark.parametrize("seed", [0, 1, 5])
def test_path_takes_the_files_ends_where_the_sound_leaves_them_open(seed):
    """Two soundtracks of the same length with nothing to follow (unrelated noise): the path
    maps the reference's first and last frames onto the video's (ANCHOR_COST); with free ends
    it starts 0.5-1 s into the video on these seeds."""
    from avsync.soundtrack import soundtrack_correspondence

    sr, fps, seconds = 22050, 25.0, 4.0
    rng = np.random.default_rng(seed)
    ref, own = (audio_features((0.1 * rng.standard_normal(int(seconds * sr))).astype(np.float32), sr)
                for _ in range(2))
    n = int(seconds * fps)
    corr = soundtrack_correspondence(ref, own, fps, n, seconds, max_shift=1.5)
    assert corr.src_time[0] == pytest.approx(0.0, abs=0.05)
    assert corr.src_time[-1] == pytest.approx((n - 1) / fps, abs=0.1)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("soundtrack")
    fps, seconds = 25, 10.0
    orig = d / "orig.mp4"
    write_clip(orig, seconds=seconds, fps=fps, seed=3)
    n = int(seconds * fps)
    plan = random_warp(n, fps, np.random.default_rng(7))
    with_sound = d / "dist_sound.mp4"
    render_distorted(orig, plan, fps, with_sound, soundtrack=True, crf=12)
    other = d / "other.mp4"
    write_clip(other, seconds=seconds, fps=fps, seed=11)
    return d, orig, with_sound, other, plan, n


def _align(video, audio, out, env_dir, *extra):
    env_cache = str(env_dir / "cache")
    r = subprocess.run(
        [sys.executable, "-m", "avsync", "align", str(video), "--audio", str(audio), "-o", str(out), "--json",
         "--max-shift", "1.5", *extra],
        capture_output=True, text=True, timeout=300, env={"AVSYNC_CACHE": env_cache, "PATH": "/usr/bin:/bin"},
    )
    return r


def test_align_follows_the_soundtrack_end_to_end(clips, tmp_path):
    d, orig, with_sound, other, plan, n = clips
    out = tmp_path / "out.mp4"
    r = _align(with_sound, orig, out, tmp_path)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["sync_by"] == "soundtrack" and s["evidence"]["passed"], s
    assert s["visual_kind"] == "-"  # the picture was not analysed
    shown = decode_indices(out)  # original frame index each output frame shows
    assert len(shown) == n
    err = shown - np.arange(n)
    core = err[25:-25]
    assert np.mean(np.abs(core) <= 1) >= 0.9, err
    base = plan[np.minimum(np.arange(n), len(plan) - 1)] - np.arange(n)
    assert np.mean(np.abs(base[25:-25]) <= 1) < 0.5  # the distortion is real
    # --sync-by picture ignores the soundtrack
    r2 = _align(with_sound, orig, tmp_path / "pic.mp4", tmp_path, "--sync-by", "picture")
    assert r2.returncode == 0, r2.stderr
    assert json.loads(r2.stdout)["sync_by"] == "picture"


def test_auto_falls_back_to_the_picture_when_the_soundtrack_is_unrelated(clips, tmp_path):
    """The video's soundtrack belongs to another clip: auto must not follow it."""
    d, orig, with_sound, other, plan, n = clips
    mixed = tmp_path / "mixed.mp4"
    from avsync.render import render

    render(with_sound, np.arange(len(plan)), 25, mixed, audio_path=other, crf=12, preset="ultrafast")
    out = tmp_path / "out.mp4"
    r = _align(mixed, orig, out, tmp_path)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["sync_by"] == "picture", s
    assert "soundtrack not used" in s["note"]
    assert s["evidence"]["source"] == "picture" and s["visual_kind"] != "-"  # the picture was analysed
    # forcing the soundtrack: it does not match, so the timing is kept and the result says so
    r2 = _align(mixed, orig, tmp_path / "forced.mp4", tmp_path, "--sync-by", "soundtrack")
    assert r2.returncode == 0, r2.stderr
    s2 = json.loads(r2.stdout)
    assert s2["sync_by"] == "soundtrack" and not s2["evidence"]["passed"]
    assert "kept the source timing" in s2["note"]


@pytest.mark.parametrize("case", ["no_soundtrack", "bad_value"])
def test_sync_by_errors_one_line(clips, tmp_path, case):
    d, orig, with_sound, other, plan, n = clips
    video = with_sound
    extra = ["--sync-by", "soundtrack"]
    if case == "no_soundtrack":
        video = tmp_path / "silent_dist.mp4"
        render_distorted(orig, plan, 25, video, soundtrack=False)
    else:
        extra = ["--sync-by", "karaoke"]
    out = tmp_path / "out.mp4"
    r = _align(video, orig, out, tmp_path, *extra)
    assert r.returncode != 0
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, r.stderr
    assert "soundtrack" in lines[0] or "sync-by" in lines[0]
    assert not out.exists()


def test_auto_ignores_a_soundtrack_already_in_step_with_the_reference(clips, tmp_path):
    """The reference laid onto a re-timed picture (an editor's export): the soundtrack matches the
    reference perfectly and says nothing about how the picture moved, so auto follows the picture."""
    d, orig, with_sound, other, plan, n = clips
    laid = tmp_path / "laid.mp4"
    from avsync.render import render

    render(with_sound, np.arange(len(plan)), 25, laid, audio_path=orig, crf=12, preset="ultrafast")
    r = _align(laid, orig, tmp_path / "out.mp4", tmp_path)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["sync_by"] == "picture", s
    assert "already in step" in s["note"]
    # and it did what the picture path does on its own
    r1 = _align(laid, orig, tmp_path / "pic.mp4", tmp_path, "--sync-by", "picture")
    assert r1.returncode == 0, r1.stderr
    assert np.array_equal(decode_indices(tmp_path / "out.mp4"), decode_indices(tmp_path / "pic.mp4"))
    # forcing the soundtrack keeps it: the timing stays as it is
    r2 = _align(laid, orig, tmp_path / "forced.mp4", tmp_path, "--sync-by", "soundtrack")
    assert r2.returncode == 0, r2.stderr
    s2 = json.loads(r2.stdout)
    assert s2["sync_by"] == "soundtrack" and s2["evidence"]["in_step"], s2


def test_long_soundtracks_are_judged_on_excerpts(monkeypatch):
    """Past EVIDENCE_MAX_SECONDS the evidence check reads evenly spaced excerpts, and still tells
    a matching soundtrack from an unrelated one (limits scaled down to keep the test short)."""
    import avsync.align as al

    monkeypatch.setattr(al, "EVIDENCE_MAX_SECONDS", 30.0)
    monkeypatch.setattr(al, "EVIDENCE_SEGMENT_SECONDS", 10.0)
    sr, fps, seconds = 8000, 25.0, 70.0
    y = _bursts(seconds, sr, seed=5)
    n = int(seconds * fps)
    plan = random_warp(n, fps, np.random.default_rng(2))
    ref = audio_features(y, sr)
    own = audio_features(warp_audio(y, sr, plan, fps), sr)
    other = audio_features(_bursts(seconds, sr, seed=6), sr)
    ex = al._excerpt(ref, [(0.0, 10.0), (60.0, 70.0)])
    assert ex.duration == pytest.approx(20.0, abs=0.02) and len(ex.logmel) == len(ex.onset)
    assert np.allclose(ex.onset.values[1000:1100], ref.onset.values[6000:6100])  # 2nd span starts at 60 s
    seen = []
    import avsync.soundtrack as st

    orig_aff = st.soundtrack_affinity

    def spy(a, o, *args, **kw):
        seen.append(a.duration)
        return orig_aff(a, o, *args, **kw)

    monkeypatch.setattr(st, "soundtrack_affinity", spy)
    opts = al.AlignOptions(max_shift=1.5)
    assert al.soundtrack_evidence(ref, own, fps, opts)["passed"]
    assert seen and max(seen) == pytest.approx(30.0, abs=0.02)  # only the excerpts were read
    assert not al.soundtrack_evidence(ref, other, fps, opts)["passed"]


def _melody(seconds: float, sr: int, seed: int, transpose: float = 0.0, delay: float = 0.0) -> np.ndarray:
    """Harmonic notes (a random tune, 0.2-0.4 s each, three partials) ``transpose`` semitones up,
    starting ``delay`` seconds late (silence before)."""
    rng = np.random.default_rng(seed)
    y = np.zeros(int(seconds * sr))
    t = delay
    while t < seconds:
        n = int(rng.uniform(0.2, 0.4) * sr)
        f0 = 220.0 * 2 ** ((int(rng.integers(0, 24)) + transpose) / 12)
        s = int(t * sr)
        k = np.arange(min(n, len(y) - s)) / sr
        note = sum(np.sin(2 * np.pi * h * f0 * k) / h for h in (1, 2, 3)) * np.minimum(1.0, 40 * k)
        y[s:s + len(k)] += 0.3 * note
        t += n / sr
    return (y + 0.003 * rng.standard_normal(len(y))).astype(np.float32)


def test_pitch_classes_find_a_transposed_tune():
    """A clock running fast plays its soundtrack higher: the pitch-class match holds under the
    transposition (here 3 semitones) and not for another tune."""
    from avsync.soundtrack import pitch_class_affinity

    sr, seconds, delay = 22050, 10.0, 0.4
    ref = audio_features(_melody(seconds, sr, seed=3), sr)
    own = audio_features(_melody(seconds, sr, seed=3, transpose=3.0, delay=delay), sr)
    other = audio_features(_melody(seconds, sr, seed=8, transpose=3.0, delay=delay), sr)
    aff = pitch_class_affinity(ref, own, max_shift=1.0)
    rows = slice(int(1.0 * aff.rate), int(8.5 * aff.rate))
    along = aff.scores[rows].mean(axis=0)  # each constant lag, over the tune
    far = np.abs(aff.lags - delay) > 0.1
    assert abs(aff.lags[np.argmax(along)] - delay) <= 0.02
    assert along.max() > 0.9 and along.max() - along[far].max() > 0.2, along
    wrong = pitch_class_affinity(ref, other, max_shift=1.0).scores[rows].mean(axis=0)
    assert wrong.max() < along.max() - 0.2
