"""detect-offset: shifted generated clips, sign, aliasing, drift fit, --fix, bad input, --json."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from avsync.errors import CannotMeasure, InputError
from avsync.offset import (
    FixPlan,
    OffsetOptions,
    OffsetResult,
    _crop,
    _period,
    _weighted_line,
    _window_starts,
    detect_offset,
    fit_windows,
    fix_plan,
    judge,
)
from avsync.types import Signal

sys.path.insert(0, str(Path(__file__).parent))
import mediagen  # noqa: E402

AVSYNC = [sys.executable, "-m", "avsync"]
ENV = {**os.environ, "AVSYNC_NO_PROGRESS": "1"}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*AVSYNC, *args], capture_output=True, text=True, env=ENV, timeout=300)


def irregular_clip(path: Path, seconds: float = 8.0, fps: float = 25, audio_shift: float = 0.0,
                   seed: int = 1, sr: int = 44100) -> Path:
    """Non-periodic flash + click clip; the audio moved by ``audio_shift`` (+ = audio leads)."""
    rng = np.random.default_rng(seed)
    events, t = [], 0.4
    while t < seconds - 0.3:
        events.append(t)
        t += rng.uniform(0.3, 1.1)
    n = int(round(seconds * fps))
    frames = np.full((n, 90, 120, 3), 30, np.uint8)
    for ev in events:
        i = int(np.ceil(ev * fps - 1e-9))
        if i < n:
            frames[i, 20:70, 30:90] = 250
    y = np.zeros(int(seconds * sr), np.float32)
    burst_t = np.arange(int(0.05 * sr)) / sr
    burst = (0.6 * np.sin(2 * np.pi * 1200 * burst_t) * np.exp(-burst_t / 0.015)).astype(np.float32)
    for ev in events:
        s = int(round((ev - audio_shift) * sr))
        if 0 <= s < len(y):
            y[s:s + len(burst)] += burst[: len(y) - s]
    y += 0.002 * rng.standard_normal(len(y)).astype(np.float32)
    mediagen.write_frames_video(str(path), frames, fps, audio=(y, sr))
    return path


# ----------------------------------------------------------------------------- toy arrays


def test_weighted_line_recovers_slope_and_intercept() -> None:
    t = np.linspace(0, 60, 13)
    y = 0.04 + 0.001 * t + np.random.default_rng(0).normal(0, 1e-4, t.size)
    a, b, se = _weighted_line(t, y, np.ones_like(t))
    assert a == pytest.approx(0.04, abs=5e-4)
    assert b == pytest.approx(0.001, abs=2e-5)
    assert se < 1e-5


def test_period_detects_periodic_and_not_random() -> None:
    rate = 25.0
    x = np.zeros(250)
    x[::25] = 1.0
    assert _period(x, rate, 10.0) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    y = np.zeros(250)
    y[np.cumsum(rng.integers(8, 30, 12))[:12]] = 1.0
    assert _period(y, rate, 10.0) is None


def test_crop_rebases_and_pads() -> None:
    s = Signal(np.arange(100, dtype=np.float32), 10.0)
    c = _crop(s, -1.0, 1.0)
    assert c is not None and len(c) == 20 and c.start == 0.0
    assert np.all(c.values[:10, 0] == 0) and c.values[10, 0] == 0 and c.values[19, 0] == 9


def test_window_starts_cover_the_clip() -> None:
    assert _window_starts(12.0, 10.0, 5.0) == []
    st = _window_starts(60.0, 10.0, 5.0)
    assert st[0] == 0 and st[-1] + 10.0 == pytest.approx(60.0) and len(st) == 11


# ----------------------------------------------------------------------------- options, stages, fix policy


@pytest.mark.parametrize(("field", "value", "message"), [
    ("max_shift", float("inf"), "max_shift must be a positive number of seconds (got inf)"),
    ("max_shift", 0.0, "max_shift must be a positive number of seconds (got 0.0)"),
    ("max_shift", -1, "max_shift must be a positive number of seconds (got -1)"),
    ("max_shift", float("nan"), "max_shift must be a positive number of seconds (got nan)"),
    ("max_shift", True, "max_shift must be a positive number of seconds (got True)"),
    ("window", 0.0, "window must be a positive number of seconds (got 0.0)"),
    ("hop", -2.0, "hop must be a positive number of seconds (got -2.0)"),
    ("window_search", "1", "window_search must be a positive number of seconds (got '1')"),
    ("mode", "karaoke", "mode must be one of auto, dance, speech, general (got 'karaoke')"),
    ("device", "gpu", "device must be one of auto, cpu, cuda, cuda:N (got 'gpu')"),
    ("device", "cuda:x", "device must be one of auto, cpu, cuda, cuda:N (got 'cuda:x')"),
    ("backend", "", "backend must be a backend name (got '')"),
    ("refine", "yes", "refine must be true or false (got 'yes')"),
])
def test_options_validate_themselves(field: str, value: object, message: str) -> None:
    with pytest.raises(InputError) as ei:
        OffsetOptions(**{field: value})
    assert str(ei.value) == message
    assert "--" not in str(ei.value)  # library messages do not name CLI flags


def test_options_accept_the_library_choices() -> None:
    from avsync.device import DEVICE_CHOICES
    from avsync.features import MODES

    for mode in MODES:
        assert OffsetOptions(mode=mode).mode == mode
    for device in (*DEVICE_CHOICES[:3], "cuda:1", " CPU "):
        assert OffsetOptions(device=device).device == device
    assert OffsetOptions(max_shift=2, window=4.0, hop=1.0).hop == 1.0
    with pytest.raises(InputError, match="max_shift"):
        dataclasses.replace(OffsetOptions(), max_shift=-3.0)


def test_cli_takes_choices_and_defaults_from_the_options() -> None:
    """--help shows the library's modes and OffsetOptions' defaults; a bad mode is one line."""
    h = _cli("detect-offset", "--help")
    assert h.returncode == 0
    assert "auto|dance|speech|general" in h.stdout
    assert f"{OffsetOptions.max_shift}" in h.stdout and f"{OffsetOptions.window}" in h.stdout
    b = _cli("detect-offset", "nowhere.mp4", "--mode", "karaoke")
    assert b.returncode == 1
    assert b.stderr.strip().splitlines() == [
        "avsync: error: --mode must be one of auto, dance, speech, general (got 'karaoke')"]


def _result(**changes: object) -> OffsetResult:
    r = OffsetResult(file="x.mp4", offset_s=0.1, offset_frames=2.5, fps=25.0, confidence=0.9, in_sync=False,
                     drift_ms_per_min=4.0, verdict="constant offset", windows=[], backend="classical",
                     mode="general", duration=60.0)
    return dataclasses.replace(r, **changes)


def test_fix_plan_constant_offset() -> None:
    assert fix_plan(_result()) == FixPlan(0.1, 0.0)  # an insignificant drift is not cancelled
    assert fix_plan(_result(verdict="in sync", offset_s=-0.02)) == FixPlan(-0.02, 0.0)


def test_fix_plan_drifting_clip() -> None:
    drifting = _result(verdict="drifting", offset_s=0.1, drift_ms_per_min=120.0, duration=40.0)
    # Without fix_drift: the best constant shift, the offset at mid-clip (0.1 s + 2 ms/s * 20 s).
    plan = fix_plan(drifting)
    assert plan.shift_s == pytest.approx(0.14) and plan.drift_ms_per_min == 0.0
    assert plan.shift_s == drifting.offset_at(20.0)
    # With fix_drift: the offset at the first frame and the drift itself.
    assert fix_plan(drifting, fix_drift=True) == FixPlan(0.1, 120.0)
    # fix_drift on a clip that does not drift still cancels what was measured.
    assert fix_plan(_result(), fix_drift=True) == FixPlan(0.1, 4.0)


def test_fix_plan_cannot_tell_and_given_shift() -> None:
    unsure = _result(verdict="cannot tell", confidence=0.12)
    with pytest.raises(CannotMeasure, match=r"^cannot fix: .* with confidence \(0.12\)$"):
        fix_plan(unsure)
    with pytest.raises(CannotMeasure):
        fix_plan(unsure, fix_drift=True)
    # A given shift overrides the measurement (even a "cannot tell" one), and needs none.
    assert fix_plan(unsure, shift_ms=40.0) == FixPlan(0.04, 0.0)
    assert fix_plan(None, shift_ms=-250.0) == FixPlan(-0.25, 0.0)
    with pytest.raises(InputError, match="cannot be combined"):
        fix_plan(_result(), shift_ms=40.0, fix_drift=True)
    with pytest.raises(InputError, match="no measurement"):
        fix_plan(None)


def test_fit_windows_and_judge_on_planted_drift() -> None:
    """Windows on a line 50 ms + 3 ms/s: the drift is found, significant, and reported from the start."""
    starts = np.arange(0.0, 50.0, 5.0)
    windows = [(float(s), 0.05 + 0.003 * (s + 5.0), 0.9) for s in starts]
    est, agreement = fit_windows(windows, offset=0.05 + 0.003 * 30, fps=25.0, window=10.0, bconf=0.81,
                                 periodic=False)
    assert est.drift == pytest.approx(0.003) and est.offset0 == pytest.approx(0.05)
    assert est.drift_significant and 0 < agreement < 1
    assert est.confidence == pytest.approx(0.9 * agreement)
    verdict, final, in_sync = judge(est, picture_duration=60.0)
    assert verdict == "drifting" and not in_sync
    assert final.offset == pytest.approx(0.05) and final.drift == pytest.approx(0.003)
    assert "drifts from +50 ms at the start to +230 ms" in final.notes[-1]
    # Flat windows: no drift, the global offset is reported; one window only: agreement 1.
    flat = [(float(s), 0.02, 0.9) for s in starts]
    est, agreement = fit_windows(flat, 0.02, 25.0, 10.0, 0.81, periodic=True)
    assert not est.drift_significant and agreement == 1.0 and est.confidence == 0.5  # periodic cap
    verdict, final, in_sync = judge(est, 60.0)
    assert verdict == "in sync" and in_sync and final.offset == 0.02
    est, agreement = fit_windows([], 0.3, 25.0, 10.0, 0.04, periodic=False)
    verdict, final, in_sync = judge(est, 8.0)
    assert verdict == "cannot tell" and not in_sync and final.windows == ((0.0, 0.3, est.confidence),)


# ----------------------------------------------------------------------------- generated media


@pytest.mark.parametrize("fps,shift", [
    (25, 0.2),
    pytest.param(25, -0.12, marks=pytest.mark.slow),
    pytest.param(60, 0.033, marks=pytest.mark.slow),
    pytest.param(29.97, -0.3, marks=pytest.mark.slow),
])
def test_avsynctest_shift_recovered_within_2ms(tmp_path: Path, fps: float, shift: float) -> None:
    clip = mediagen.make_avsynctest(str(tmp_path / "a.mp4"), seconds=6, fps=fps, audio_shift=shift)
    r = detect_offset(clip)
    assert np.sign(r.offset_s) == np.sign(shift)
    assert r.offset_s == pytest.approx(shift, abs=0.002), r
    assert r.method == "events"
    # Periodic pattern (once per second): ambiguity is reported, confidence capped.
    assert r.extra["period"] == pytest.approx(1.0, abs=0.05)
    assert r.confidence == pytest.approx(0.5)
    assert "ambiguous" in r.note


@pytest.mark.slow
def test_irregular_content_sign_and_frame_accuracy(tmp_path: Path) -> None:
    for shift in (0.24, -0.4):
        clip = irregular_clip(tmp_path / f"i{shift}.mp4", audio_shift=shift)
        r = detect_offset(clip)
        assert abs(r.offset_s - shift) <= 1 / 25, (shift, r)
        assert r.confidence > 0.3
        assert r.extra["period"] is None


def test_one_second_shift_is_not_aliased(tmp_path: Path) -> None:
    """A 1 s shift must come back as ~1 s, never as a small offset of the other sign."""
    for shift in (1.0, -1.0):
        clip = irregular_clip(tmp_path / f"al{shift}.mp4", seconds=10, audio_shift=shift, seed=3)
        r = detect_offset(clip, OffsetOptions(max_shift=5.0))
        assert abs(r.offset_s - shift) <= 1 / 25, (shift, r)
        assert r.verdict == "constant offset" and not r.in_sync


def test_no_audio_and_silent_and_short_cannot_measure(tmp_path: Path) -> None:
    with pytest.raises(CannotMeasure, match="no audio stream"):
        detect_offset(mediagen.make_no_audio_video(str(tmp_path / "na.mp4"), seconds=3))
    with pytest.raises(CannotMeasure, match="silent"):
        detect_offset(mediagen.make_silent_video(str(tmp_path / "si.mp4"), seconds=3))
    with pytest.raises(CannotMeasure, match="long"):
        detect_offset(mediagen.make_avsynctest(str(tmp_path / "sh.mp4"), seconds=1))
    with pytest.raises(InputError, match="no such file"):
        detect_offset(tmp_path / "missing.mp4")


def test_still_picture_cannot_measure(tmp_path: Path) -> None:
    frames = np.full((75, 90, 120, 3), 80, np.uint8)
    sr = 22050
    y = (0.3 * np.sin(np.arange(3 * sr) * 2 * np.pi * 440 / sr)).astype(np.float32)
    y[::5000] = 0.9
    p = mediagen.write_frames_video(str(tmp_path / "still.mp4"), frames, 25, audio=(y, sr))
    with pytest.raises(CannotMeasure, match="picture"):
        detect_offset(p)


# ----------------------------------------------------------------------------- CLI end to end


def test_cli_json_fix_and_remeasure(tmp_path: Path) -> None:
    clip = mediagen.make_avsynctest(str(tmp_path / "in.mp4"), seconds=5, fps=25, audio_shift=0.16)
    before = Path(clip).read_bytes()
    fixed = tmp_path / "fixed.mp4"
    plot = tmp_path / "off.png"
    p = _cli("detect-offset", clip, "--json", "--fix", str(fixed), "--plot", str(plot), "--check")
    assert p.returncode == 3, p.stderr  # +160 ms is outside the ITU window
    obj = json.loads(p.stdout)
    for key in ("file", "offset_ms", "offset_frames", "fps", "confidence", "convention", "in_sync",
                "drift_ms_per_min", "windows", "backend", "mode"):
        assert key in obj
    assert obj["convention"] == "positive = audio leads picture"
    assert obj["offset_ms"] == pytest.approx(160, abs=2)
    assert obj["offset_frames"] == pytest.approx(4.0, abs=0.05)
    assert obj["in_sync"] is False
    assert {"start", "offset_ms", "confidence"} <= set(obj["windows"][0])
    assert Path(clip).read_bytes() == before  # input untouched
    assert plot.stat().st_size > 1000 and plot.read_bytes()[:4] == b"\x89PNG"
    assert obj["fix"]["video"] == "copied"
    # The fixed copy measures ~0 and passes --check.
    q = _cli("detect-offset", str(fixed), "--json", "--check")
    assert q.returncode == 0, q.stderr
    again = json.loads(q.stdout)
    assert abs(again["offset_ms"]) <= 2.0
    assert again["in_sync"] is True
    # Same number of video packets, bit-identical (stream copy).
    import av

    def _vpk(path: str) -> list[bytes]:
        with av.open(path) as c:
            return [bytes(pk) for pk in c.demux(video=0) if pk.size]

    assert _vpk(clip) == _vpk(str(fixed))
    # Refuses to overwrite without --overwrite; table output works.
    r = _cli("detect-offset", clip, "--fix", str(fixed))
    assert r.returncode == 1 and "exists" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_cli_fix_drifting_clip(tmp_path: Path) -> None:
    """A clip whose audio drifts (+100 ms at the start, +300 ms/min): --fix shifts by the
    offset at mid-clip, --fix-drift cancels the drift too and re-measures in sync."""
    from avsync.remux import write_shifted

    clip = irregular_clip(tmp_path / "in.mp4", seconds=16, seed=5)
    drifting = tmp_path / "drift.mp4"
    write_shifted(clip, drifting, -0.1, drift_ms_per_min=-300.0)  # cancelling -o(t) plants +o(t)
    env = {**ENV, "AVSYNC_CACHE": str(tmp_path / "cache")}

    def run(*args: str) -> dict:
        cmd = [*AVSYNC, "detect-offset", str(drifting), "--json", "--mode", "general", "--window", "6", *args]
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout)

    full = run("--fix", str(tmp_path / "full.mp4"), "--fix-drift")
    assert full["verdict"] == "drifting", full
    assert full["offset_ms"] == pytest.approx(100, abs=25) and full["drift_ms_per_min"] == pytest.approx(300, abs=60)
    assert full["fix"]["drift_ms_per_min"] == pytest.approx(full["drift_ms_per_min"], abs=1e-3)
    assert full["fix"]["shift_ms"] == pytest.approx(full["offset_ms"], abs=1e-3)
    const = run("--fix", str(tmp_path / "const.mp4"))
    mid = (const["offset_ms"] + const["drift_ms_per_min"] / 60 * const["duration"] / 2) / 1000
    assert const["fix"]["drift_ms_per_min"] == 0.0 and const["fix"]["shift_ms"] / 1000 == pytest.approx(mid, abs=1e-5)
    again = detect_offset(tmp_path / "full.mp4", OffsetOptions(mode="general", window=6.0))
    assert abs(again.offset_s) < 0.02 and abs(again.drift_ms_per_min) < 40 and again.verdict != "drifting", again


@pytest.mark.slow
def test_cli_shift_ms_fix_and_table(tmp_path: Path) -> None:
    clip = mediagen.make_avsynctest(str(tmp_path / "in.mp4"), seconds=4, fps=25, audio_shift=0.0)
    out = tmp_path / "late.mkv"
    # Cancelling a +100 ms offset that is not there delays the audio by 100 ms: it now lags.
    p = _cli("detect-offset", clip, "--fix", str(out), "--shift-ms", "100")
    assert p.returncode == 0, p.stderr
    q = _cli("detect-offset", str(out))
    assert q.returncode == 0, q.stderr
    assert "-100" in q.stdout and "late" in q.stdout and "in sync" in q.stdout


def test_fix_avi(tmp_path: Path) -> None:
    """AVI has no audio start time: the re-timed sound must start at 0 there (it came out 80 ms
    early when it started at the first frame's time), and goes in as PCM (no priming delay).
    Length-prefixed H.264 from mp4 cannot be copied into AVI: one clear error, nothing written."""
    from avsync.errors import OutputError
    from avsync.offset import detect_offset
    from avsync.remux import write_shifted

    src = mediagen.make_avsynctest(str(tmp_path / "in.avi"), seconds=5, fps=25, audio_shift=0.12)
    measured = detect_offset(src).offset_s
    info = write_shifted(src, tmp_path / "fixed.avi", measured)
    assert info["video"] == "copied" and "pcm" in str(info["audio"])
    assert abs(detect_offset(str(tmp_path / "fixed.avi")).offset_s) < 0.002
    # Out of AVI into mp4: the copied stream declares 3125/126 fps (the mp4 duration counts the
    # AVI's 80 ms start delay) for frames exactly 40 ms apart; the timestamps win, and the
    # AAC priming is hidden (the sound starts at 0). It read -23 ms with both wrong.
    from avsync.media import probe

    info = write_shifted(src, tmp_path / "fixed.mp4", measured)
    assert info["video"] == "copied" and "aac" in str(info["audio"])
    assert probe(tmp_path / "fixed.mp4").fps == pytest.approx(25.0)
    assert abs(detect_offset(str(tmp_path / "fixed.mp4")).offset_s) < 0.002
    mp4 = mediagen.make_avsynctest(str(tmp_path / "in.mp4"), seconds=3, fps=25)
    with pytest.raises(OutputError, match="avi"):
        write_shifted(mp4, tmp_path / "from_mp4.avi", 0.1)
    assert not (tmp_path / "from_mp4.avi").exists()


def test_cli_bad_input_one_line_and_exit_codes(tmp_path: Path) -> None:
    na = mediagen.make_no_audio_video(str(tmp_path / "na.mp4"), seconds=3)
    p = _cli("detect-offset", na)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot measure" in lines[0] and "Traceback" not in p.stderr
    m = _cli("detect-offset", str(tmp_path / "missing.mp4"))
    assert m.returncode == 1 and len(m.stderr.strip().splitlines()) == 1
    assert "no such file" in m.stderr
    b = _cli("detect-offset", na, "--max-shift", "-1")
    assert b.returncode == 1 and len(b.stderr.strip().splitlines()) == 1
