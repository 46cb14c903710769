"""Tests of avsync retarget: beats, Beat Align Score, DP matching, time map, CLI end to end."""

from __future__ import annotations

import math

import numpy as np
import pytest

from avsync.errors import InputError
from avsync.features.beats import (
    Beats,
    beat_align_score,
    beats_from_speed,
    keypoint_speeds,
    music_beats,
    stop_novelty,
)
from avsync.retarget import RetargetOptions, map_beats, plan_retarget, score_before_after


def _b(times, source="x") -> Beats:
    t = np.asarray(times, dtype=float)
    return Beats(t, np.ones(t.size), 0.0, source)


def _speeds(tau: np.ndarray, fps: float, loop_period: float | None = None) -> np.ndarray:
    return np.diff(tau) * fps


# ------------------------------------------------------------------------------------------
# Beat Align Score


def test_bas_exact_hits_is_one():
    assert beat_align_score([1.0, 2.0, 3.0], [0.5, 1.0, 2.0, 3.0, 9.0], fps=25) == pytest.approx(1.0)


def test_bas_hand_computed():
    fps = 24.0
    sigma = 3 / fps
    # beat 1: exact; beat 2: one sigma away; beat 3: nearest visual beat is 2 sigma away
    music = [1.0, 2.0, 3.0]
    visual = [1.0, 2.0 + sigma, 3.0 - 2 * sigma]
    want = (1.0 + math.exp(-0.5) + math.exp(-2.0)) / 3
    assert beat_align_score(music, visual, fps) == pytest.approx(want, rel=1e-9)
    # sigma_frames scales the tolerance
    assert beat_align_score([1.0], [1.0 + 6 / fps], fps, sigma_frames=6) == pytest.approx(math.exp(-0.5))


def test_bas_edge_cases():
    assert beat_align_score([1.0, 2.0], [], fps=30) == 0.0
    assert beat_align_score([1.0], [5.0], fps=30) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError):
        beat_align_score([], [1.0], fps=30)
    # nearest, not first: the visual beat before the music beat counts
    assert beat_align_score([2.0], [1.99, 5.0], fps=30) > 0.9


# ------------------------------------------------------------------------------------------
# Visual beats


def test_visual_beats_at_reversals():
    fps = 24.0
    t = np.arange(0, 10, 1 / fps)
    # Back-and-forth: speed |sin|, reversals (speed 0) every 0.6 s.
    speed = np.abs(np.sin(np.pi * t / 0.6))
    b = beats_from_speed(speed, fps)
    truth = np.arange(0.6, 9.9, 0.6)
    assert len(b) == truth.size
    assert np.max(np.abs(b.times - truth)) <= 1.5 / fps
    assert b.tempo == pytest.approx(100, rel=0.05)


def test_visual_beats_at_stops_of_several_parts():
    fps = 25.0
    t = np.arange(0, 8, 1 / fps)
    # Four grid cells that move for 0.4 s then rest 0.4 s, in phase, plus a noisy static cell.
    moving = ((t % 0.8) < 0.4).astype(float)
    rng = np.random.default_rng(1)
    grid = np.stack([moving * a for a in (1.0, 0.8, 1.2, 0.5)] + [0.01 * rng.random(t.size)], axis=1)
    b = beats_from_speed(grid, fps)
    truth = np.arange(0.4, 7.9, 0.8)
    assert len(b) == truth.size
    # the stop is dated at the first still frame (frame-difference energy convention)
    assert np.all(np.abs(b.times - truth) <= 2.0 / fps)
    assert np.all((b.strength >= 0) & (b.strength <= 1))


def test_no_motion_no_beats():
    assert len(beats_from_speed(np.zeros((100, 4)), 25.0)) == 0
    assert stop_novelty(np.ones((50, 3)), 25.0).sum() == 0


def test_keypoint_speeds():
    fps = 10.0
    T, K = 20, 33
    kp = np.zeros((T, K, 2))
    kp[:, 15, 0] = np.arange(T) * 0.01  # left wrist moves 0.01 per frame in x
    sp = keypoint_speeds(kp.reshape(T, K * 2), fps)
    assert sp.shape == (T, 11)
    col = [0, 13, 14, 15, 16, 25, 26, 27, 28, 31, 32].index(15)
    assert np.allclose(sp[:, col], 0.1)
    assert np.allclose(np.delete(sp, col, axis=1), 0.0)


def _click_track(bpm: float, seconds: float, sr: int = 22050, first: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    y = np.zeros(int(seconds * sr), np.float32)
    beats = np.arange(first, seconds - 0.1, 60.0 / bpm)
    n = int(0.03 * sr)
    tt = np.arange(n) / sr
    click = (np.sin(2 * np.pi * 1000 * tt) * np.exp(-tt * 150)).astype(np.float32)
    for i, b in enumerate(beats):
        s = int(b * sr)
        amp = 1.0 if i % 4 == 0 else 0.5
        y[s : s + n] += amp * click[: len(y) - s]
    return y, beats


def test_music_beats_on_click_track():
    y, truth = _click_track(120, 12.0)
    b = music_beats(y, 22050)
    assert b.tempo == pytest.approx(120, rel=0.05)
    assert len(b) >= truth.size - 3
    d = np.min(np.abs(b.times[:, None] - truth[None, :]), axis=1)
    assert np.all(d < 0.04)
    assert b.downbeats is not None and b.downbeats.sum() >= len(b) // 4 - 1


def test_music_beats_of_silence_is_empty():
    b = music_beats(np.zeros(22050 * 3, np.float32), 22050)
    assert len(b) == 0


# ------------------------------------------------------------------------------------------
# Matching and the time map


def test_dp_aligns_100bpm_dance_to_120bpm_music():
    fps = 24.0
    v = np.arange(0.3, 20.0, 0.6)  # 100 bpm dance, 20 s
    m = np.arange(0.1, 15.0, 0.5)  # 120 bpm music, 15 s
    corr, matches, tau, note = plan_retarget(_b(v), _b(m), 20.0, 15.0, RetargetOptions(), fps=fps)
    before, after = score_before_after(_b(v), _b(m), tau, fps, 20.0, 15.0, 0.0, False)
    assert after > 0.95
    assert after > before + 0.35
    sp = _speeds(tau, fps)
    assert sp.min() >= 0.5 - 1e-9 and sp.max() <= 2.0 + 1e-9
    # the steady state speed is the tempo ratio
    assert np.median(sp) == pytest.approx(1.2, rel=0.02)
    assert len(matches) >= 25
    assert all(a.output_time < b.output_time and a.visual_time < b.visual_time
               for a, b in zip(matches, matches[1:], strict=False))


def test_dp_recovers_planted_warp():
    rng = np.random.default_rng(7)
    fps = 30.0
    D = 30.0
    v = np.sort(rng.uniform(0.5, D - 0.5, 45))
    v = v[np.concatenate([[True], np.diff(v) > 0.25])]
    # A known smooth warp u(tau) with speed 1/(1 + 0.2 sin): plant music beats on it.
    tau_grid = np.linspace(0, D, 3001)
    speed = 1.0 + 0.2 * np.sin(2 * np.pi * tau_grid / 12.0)
    u_grid = np.concatenate([[0.0], np.cumsum(np.diff(tau_grid) / speed[1:])])
    m = np.interp(v, tau_grid, u_grid)
    keep = rng.random(m.size) > 0.15  # some visual beats have no music beat
    m = np.sort(np.concatenate([m[keep], rng.uniform(0, u_grid[-1], 4)]))  # and a few stray ones
    Mdur = float(u_grid[-1])
    corr, matches, tau, _ = plan_retarget(_b(v), _b(m), D, Mdur, RetargetOptions(), fps=fps)
    before, after = score_before_after(_b(v), _b(m), tau, fps, D, Mdur, 0.0, False)
    planted = {(round(a, 6), round(b, 6)) for a, b in zip(v[keep], np.interp(v[keep], tau_grid, u_grid),
                                                          strict=True)}
    got = {(round(x.visual_time, 6), round(x.output_time, 6)) for x in matches}
    correct = 0
    for gv, gu in got:
        correct += any(abs(gv - pv) < 1e-6 and abs(gu - pu) < 1e-3 for pv, pu in planted)
    assert correct >= 0.8 * len(planted)
    assert after > 0.85 and after > before


@pytest.mark.parametrize("max_speed", [1.25, 1.5, 2.0, 3.0])
def test_speed_bound_never_exceeded(max_speed):
    rng = np.random.default_rng(int(max_speed * 100))
    fps = 25.0
    for _ in range(3):
        v = np.sort(rng.uniform(0, 12, 30))
        m = np.sort(rng.uniform(0, 25, 40))
        for loop in (False, True):
            opts = RetargetOptions(max_speed=max_speed, loop=loop)
            corr, _, tau, _ = plan_retarget(_b(v), _b(m), 12.0, 25.0, opts, fps=fps)
            sp = _speeds(tau, fps)
            assert sp.min() >= 1 / max_speed - 1e-9
            assert sp.max() <= max_speed + 1e-9
            assert np.all(corr.src_time >= 0) and np.all(corr.src_time < 12.0)


def test_output_length_without_loop_ends_with_dance():
    fps = 24.0
    v = np.arange(0.3, 10, 0.6)
    m = np.arange(0.2, 60, 0.5)
    corr, _, tau, note = plan_retarget(_b(v), _b(m), 10.0, 60.0, RetargetOptions(), fps=fps)
    # the dance is used up (last frame within one frame of the dance's end) before the music
    assert tau[-1] < 10.0
    assert tau[-1] + 2.0 * _speeds(tau, fps).max() / fps >= 10.0
    assert len(corr.src_time) / fps < 60.0
    assert "ends with the dance" in note
    assert np.all(np.diff(corr.src_time) > 0)


def test_output_length_music_shorter_than_dance():
    fps = 24.0
    v = np.arange(0.3, 60, 0.6)
    m = np.arange(0.2, 60, 0.5)
    corr, _, tau, note = plan_retarget(_b(v), _b(m), 60.0, 20.0, RetargetOptions(start=5.0), fps=fps)
    assert len(corr.src_time) == int(15.0 * fps)
    assert "covers the music" in note


def test_output_length_with_loop_and_start():
    fps = 25.0
    v = np.arange(0.3, 8, 0.6)
    m = np.arange(0.2, 40, 0.5)
    opts = RetargetOptions(loop=True, start=4.0)
    corr, matches, tau, note = plan_retarget(_b(v), _b(m), 8.0, 40.0, opts, fps=fps)
    assert len(corr.src_time) == 36 * 25
    assert "looped" in note
    assert tau[-1] > 8.0  # more than one repetition was used
    assert np.all((corr.src_time >= 0) & (corr.src_time < 8.0))
    assert max(x.repeat for x in matches) >= 1
    # music times are on the song's clock, output times start at --start
    assert all(abs(x.music_time - x.output_time - 4.0) < 1e-9 for x in matches)
    _, after = score_before_after(_b(v), _b(m), tau, fps, 8.0, 40.0, 4.0, True)
    assert after > 0.9
    # every repetition's beats are mapped
    assert map_beats(v, tau, fps, 8.0, True).size > v.size * 3


def test_bad_options():
    with pytest.raises(InputError, match="max_speed"):
        plan_retarget(_b([1.0]), _b([1.0]), 5.0, 5.0, RetargetOptions(max_speed=0.8))
    with pytest.raises(InputError, match="start"):
        plan_retarget(_b([1.0]), _b([1.0]), 5.0, 5.0, RetargetOptions(start=6.0))


def test_no_beats_gives_natural_speed():
    fps = 24.0
    corr, matches, tau, note = plan_retarget(_b([]), _b([1.0, 2.0]), 5.0, 10.0, RetargetOptions(), fps=fps)
    assert matches == []
    assert np.allclose(_speeds(tau, fps), 1.0)
    assert "no visual beat" in note


# ------------------------------------------------------------------------------------------
# End to end: a block that reverses every 0.6 s (100 bpm) onto a 120 bpm click track


def _block_frames(seconds: float, fps: float, period: float = 0.6, size=(96, 64)):
    w, h = size
    for i in range(int(round(seconds * fps))):
        t = i / fps
        x = int(round(w / 2 - 6 + 30 * np.cos(np.pi * t / period)))
        img = np.full((h, w, 3), 20, np.uint8)
        img[h // 2 - 6 : h // 2 + 6, x : x + 12] = 230
        yield img


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory):
    from tests.mediagen import write_audio, write_frames_video

    d = tmp_path_factory.mktemp("retarget")
    write_frames_video(str(d / "dance.mp4"), _block_frames(8.0, 25), 25)
    write_frames_video(str(d / "short.mp4"), _block_frames(3.0, 25), 25)
    write_audio(str(d / "music.wav"), _click_track(120, 5.0)[0], 22050)
    write_audio(str(d / "music6.wav"), _click_track(120, 6.0)[0], 22050)
    return d


def _cli(args):
    from typer.testing import CliRunner

    from avsync.cli._app import _load_commands, app

    _load_commands()
    return CliRunner().invoke(app, args)


def test_cli_end_to_end(media_dir, tmp_path):
    import json

    from avsync.media import probe

    dance, music = media_dir / "dance.mp4", media_dir / "music.wav"
    before = dance.read_bytes()
    out, mp, pp = tmp_path / "out.mp4", tmp_path / "map.json", tmp_path / "plot.png"
    r = _cli(["retarget", str(dance), str(music), "-o", str(out), "--map", str(mp), "--plot", str(pp),
              "--json", "--mode", "general"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["bas_after"] > res["bas_before"] + 0.25
    assert res["bas_after"] > 0.85
    assert res["speed_min"] >= 0.5 and res["speed_max"] <= 2.0
    # the music (5 s) is shorter than the warped dance: the output lasts as long as the music
    info = probe(str(out))
    assert info.has_audio and info.has_video
    assert info.n_frames == 125 and res["n_out"] == 125
    assert abs(info.audio_duration - 5.0) < 0.05
    m = json.loads(mp.read_text())
    assert m["kind"] == "retarget" and len(m["frames"]) == 125
    assert m["music_beats"]["count"] >= 8 and len(m["matches"]) >= 6
    assert pp.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert dance.read_bytes() == before  # input untouched
    # existing output without --overwrite: one line, non-zero exit, nothing replaced
    r2 = _cli(["retarget", str(dance), str(music), "-o", str(out), "--mode", "general"])
    assert r2.exit_code != 0 and "exists" in r2.output


def test_cli_loop_covers_the_music(media_dir, tmp_path):
    from avsync.media import probe

    out = tmp_path / "loop.mp4"
    r = _cli(["retarget", str(media_dir / "short.mp4"), str(media_dir / "music6.wav"), "-o", str(out),
              "--loop", "--mode", "general"])
    assert r.exit_code == 0, r.output
    assert probe(str(out)).n_frames == 150  # 6 s of music at 25 fps, the 3 s dance repeated
    # without --loop the output ends with the dance and says so
    out2 = tmp_path / "noloop.mp4"
    r = _cli(["retarget", str(media_dir / "short.mp4"), str(media_dir / "music6.wav"), "-o", str(out2),
              "--mode", "general", "--json"])
    assert r.exit_code == 0, r.output
    import json

    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert "ends with the dance" in res["note"]
    n = probe(str(out2)).n_frames
    assert n == res["n_out"] and 3.0 / 2.0 * 25 <= n < 150


def test_cli_bad_input(media_dir, tmp_path):
    r = _cli(["retarget", str(tmp_path / "nope.mp4"), str(media_dir / "music.wav"), "-o", str(tmp_path / "o.mp4")])
    assert r.exit_code != 0 and "no such file" in r.output
    r = _cli(["retarget", str(media_dir / "dance.mp4"), str(media_dir / "music.wav"), "-o", str(tmp_path / "o.mp4"),
              "--max-speed", "0.5"])
    assert r.exit_code != 0 and "--max-speed" in r.output
    r = _cli(["retarget", str(media_dir / "dance.mp4"), str(media_dir / "music.wav"), "-o", str(tmp_path / "o.mp4"),
              "--backend", "alignnet"])
    assert r.exit_code != 0 and "cannot retarget" in r.output
    assert not (tmp_path / "o.mp4").exists()


def test_cli_mode_speech_works_through_the_motion_stops(media_dir, tmp_path):
    """Every command takes the same modes: speech retargets on the stops of the picture's motion
    (here no face is found, and the note says so)."""
    import json

    out = tmp_path / "speech.mp4"
    r = _cli(["retarget", str(media_dir / "dance.mp4"), str(media_dir / "music.wav"), "-o", str(out),
              "--mode", "speech", "--json", "--no-cache"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["visual_kind"] == "motion" and "no face found" in res["note"]
    assert res["bas_after"] > res["bas_before"] + 0.25
    assert out.stat().st_size > 1000
