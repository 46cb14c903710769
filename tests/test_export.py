"""Editorial timeline export (avsync.export): every format read back through OTIO's own readers
shows, at every output frame, the source frame the warp map says (within one frame)."""

from __future__ import annotations

import json

import numpy as np
import opentimelineio as otio
import pytest

from avsync import export as ex
from avsync.errors import InputError, OutputError
from avsync.warps import random_warp, tae_warp


def _plans() -> list[tuple[str, np.ndarray]]:
    out = []
    for seed in range(3):
        out.append((f"alignnet-{seed}", random_warp(300, 25.0, np.random.default_rng(seed))))
        out.append((f"tae-{seed}", tae_warp(300, np.random.default_rng(seed))))
    held = np.concatenate([np.arange(40), np.full(15, 40), np.arange(60, 120), np.arange(120, 200, 2)])
    out.append(("freeze-skip-fast", held))
    return out


@pytest.mark.parametrize("fps", [25.0, 30000 / 1001, 60.0])
def test_every_format_reads_back_within_one_frame(tmp_path, fps):
    video, audio = tmp_path / "take.mp4", tmp_path / "song.wav"
    for name, plan in _plans():
        for suffix in ex.FORMATS:
            if suffix == ".fcpxml" and fps not in ex.FCPX_RATES:
                continue
            tl = ex.timeline_from_plan(plan, fps, fps, video, audio, len(plan) / fps,
                                       speed_effects=suffix in ex.SPEED_FORMATS, digest="d" * 64,
                                       fcpx=suffix == ".fcpxml")
            path = tmp_path / f"{name}{suffix}"
            ex.write_timeline(tl, path)
            back = ex.read_timeline(path, rate=fps)
            shown = ex.shown_frames(back, fps, fps)
            assert len(shown) == len(plan), (name, suffix)
            for rounding in (np.floor, np.round):
                err = np.abs(rounding(shown + 1e-6) - plan)
                assert err.max() <= 1, (name, suffix, rounding.__name__, np.argmax(err))
            kinds = [t.kind for t in back.tracks]
            # OTIO's CMX 3600 writer writes the picture track only
            assert (otio.schema.TrackKind.Audio in kinds) == (suffix != ".edl"), (name, suffix)


def test_constant_speed_segments_follow_the_plan_and_are_few():
    plan = random_warp(500, 25.0, np.random.default_rng(7))
    segs = ex.constant_speed_segments(plan)
    assert sum(s.n for s in segs) == len(plan)
    line = np.concatenate([s.src_start + s.speed * np.arange(s.n) for s in segs])
    assert np.abs(line - plan).max() <= ex.TOLERANCE + 1e-9
    assert len(segs) < 0.7 * len(ex.unit_speed_segments(plan))  # speed effects say more with less
    assert all(s.speed >= 0 for s in segs)
    # a plain identity is one segment at speed 1, a held frame one freeze
    assert ex.constant_speed_segments(np.arange(100)) == [ex.Segment(0, 100, 0, 1.0)]
    assert ex.constant_speed_segments(np.full(10, 4)) == [ex.Segment(0, 10, 4, 0.0)]


def test_otio_carries_version_rate_convention_and_digest(tmp_path):
    from avsync import __version__

    plan = np.concatenate([np.arange(30), np.full(5, 30), np.arange(31, 60)])
    m = {"kind": "align", "output_fps": 25.0, "source_fps": 25.0,
         "frames": [{"frame": k, "src_frame": int(p)} for k, p in enumerate(plan)]}
    (tmp_path / "v.mp4").write_bytes(b"")
    info = ex.export_map(m, tmp_path / "t.otio", tmp_path / "v.mp4", tmp_path / "a.wav", 2.5)
    back = ex.read_timeline(tmp_path / "t.otio")
    meta = back.metadata["avsync"]
    assert meta["version"] == __version__ and meta["rate"] == 25.0
    assert meta["convention"].startswith("positive = audio leads")
    assert meta["sha256"] == info["map_sha256"] == ex.map_digest(m)
    m2 = json.loads(json.dumps(m))
    m2["frames"][3]["src_frame"] = 4
    assert ex.map_digest(m2) != meta["sha256"]


@pytest.mark.parametrize("suffix", [".otio", ".xml", ".fcpxml"])
@pytest.mark.parametrize("shift,drift", [(0.12, 0.0), (-0.2, 0.0), (0.08, 30.0)])
def test_offset_slip_plays_the_audio_remux_would(tmp_path, shift, drift, suffix):
    """At timeline time t the audio track plays the clip's audio at t*(1 - drift) - shift."""
    if drift and suffix != ".otio":
        pytest.skip("only OTIO's own format carries the drift's speed change")
    fps = 25.0
    tl = ex.timeline_from_offset(tmp_path / "c.mp4", fps, 10.0, 10.0, shift, drift, fcpx=suffix == ".fcpxml")
    path = tmp_path / f"slip{suffix}"
    ex.write_timeline(tl, path)
    back = ex.read_timeline(path)
    a = next(t for t in back.tracks if t.kind == otio.schema.TrackKind.Audio)
    r = drift / 60000.0
    for t in (1.0, 5.0, 9.0):
        ct = otio.opentime.RationalTime(t * fps, fps)
        item = a.child_at_time(ct, shallow_search=True)
        assert isinstance(item, otio.schema.Clip)
        local = a.transformed_time(ct, item) - item.source_range.start_time  # into the clip
        scalar = next((fx.time_scalar for fx in item.effects), 1.0)
        media = item.source_range.start_time.to_seconds() + local.to_seconds() * scalar
        assert media == pytest.approx(t * (1 - r) - shift, abs=1.0 / fps)
    if suffix == ".otio":
        words = back.metadata["avsync"]["words"]
        assert ("delayed" in words) == (shift > 0)


def test_fcpx_refuses_a_rate_it_cannot_write():
    for fps in (22.131, 30000 / 1001):
        with pytest.raises(InputError, match=f"FCP X XML timeline cannot have {fps:.3f} fps"):
            ex.timeline_from_plan(np.arange(10), fps, fps, "v.mp4", None, 0.4, fcpx=True)


def test_unknown_suffix_and_existing_output_are_refused(tmp_path):
    with pytest.raises(InputError, match="cannot export a timeline as '.mov'"):
        ex.export_format(tmp_path / "x.mov")
    p = tmp_path / "t.otio"
    p.write_text("keep")
    tl = ex.timeline_from_plan(np.arange(10), 25.0, 25.0, "v.mp4", None, 0.4)
    with pytest.raises(OutputError):
        ex.write_timeline(tl, p)
    assert p.read_text() == "keep"


# --------------------------------------------------------------------------- end to end


def _distorted_pair(d):
    """A synthetic clip and its picture slowed, frozen, sped up and shifted (as test_align's)."""
    from avsync.synthetic import write_clip

    fps, seconds = 25, 10.0
    n = int(seconds * fps)
    speeds = [1.0] * 25 + [0.75] * 75 + [0.0] * 5 + [1.35] * 75 + [1.0] * 200
    src, t = [], -6.0
    for s in speeds:
        src.append(t)
        t += s
    plan = np.clip(np.floor(np.array(src)).astype(int), 0, n - 1)
    plan = plan[: int(np.searchsorted(plan, n - 1)) + 1]
    write_clip(d / "orig.mp4", seconds=seconds, fps=fps, seed=3)
    write_clip(d / "dist.mp4", seconds=seconds, fps=fps, seed=3, plan=plan)
    return d / "orig.mp4", d / "dist.mp4"


def _avsync(*args, env=None):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "avsync", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env)


def test_align_export_shows_the_map_frames_in_every_format(tmp_path, monkeypatch):
    """`avsync align --export` on a warped clip with freezes and skips; the timeline read back by
    OTIO shows the map's source frame at every output frame (±1), and so do the other formats
    written from the same map."""
    monkeypatch.setenv("AVSYNC_CACHE", str(tmp_path / "cache"))
    orig, dist = _distorted_pair(tmp_path)
    out, mp, tl = tmp_path / "out.mp4", tmp_path / "map.json", tmp_path / "warp.edl"
    r = _avsync("align", dist, "--audio", orig, "-o", out, "--map", mp, "--export", tl, "--json", "--max-shift", "1.5")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    m = json.loads(mp.read_text())
    src = np.array([f["src_frame"] for f in m["frames"]])
    assert len(np.unique(src)) < len(src) and np.max(np.diff(src)) >= 2  # the warp repeats and skips frames
    assert summary["export"]["map_sha256"] == ex.map_digest(m)
    assert summary["export"]["format"] == "cmx_3600"
    fps = m["output_fps"]
    paths = [tl]
    for suffix in (".otio", ".xml", ".fcpxml"):
        paths.append(tmp_path / f"warp{suffix}")
        ex.export_map(m, paths[-1], dist, orig, summary["output_duration"])
    for p in paths:
        shown = ex.shown_frames(ex.read_timeline(p, rate=fps), m["source_fps"], fps)
        assert len(shown) == len(src), p.suffix
        assert np.abs(np.round(shown) - src).max() <= 1, p.suffix
    assert "M2" in tl.read_text()  # speed effects in the EDL
    back = ex.read_timeline(paths[1])
    assert back.metadata["avsync"]["sha256"] == ex.map_digest(m)


def test_detect_offset_export_slips_the_audio(tmp_path, monkeypatch):
    from tests.mediagen import make_avsynctest

    monkeypatch.setenv("AVSYNC_CACHE", str(tmp_path / "cache"))
    clip = make_avsynctest(str(tmp_path / "c.mp4"), seconds=6, audio_shift=0.2, period=1.3)
    tl = tmp_path / "slip.otio"
    r = _avsync("detect-offset", clip, "--export", tl, "--json")
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout)
    assert abs(obj["offset_ms"] - 200) < 5
    assert obj["export"]["words"] == f"audio delayed by {round(obj['offset_ms'])} ms"
    back = ex.read_timeline(tl)
    a = next(t for t in back.tracks if t.kind == otio.schema.TrackKind.Audio)
    assert isinstance(a[0], otio.schema.Gap)
    assert a[0].source_range.duration.to_seconds() == pytest.approx(0.2, abs=0.021)
    # an EDL cannot carry an audio slip: refused in one line, nothing written
    bad = _avsync("detect-offset", clip, "--export", tmp_path / "slip.edl")
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "slip.edl").exists()


def test_retarget_export_and_unknown_format(tmp_path):
    from tests.mediagen import write_audio, write_frames_video
    from tests.test_retarget import _block_frames, _click_track

    dance, music = tmp_path / "dance.mp4", tmp_path / "music.wav"
    write_frames_video(str(dance), _block_frames(6.0, 25), 25)
    write_audio(str(music), _click_track(120, 4.0)[0], 22050)
    mp, tl = tmp_path / "map.json", tmp_path / "t.otio"
    r = _avsync("retarget", dance, music, "-o", tmp_path / "o.mp4", "--map", mp, "--export", tl, "--json",
                "--mode", "general")
    assert r.returncode == 0, r.stderr
    m = json.loads(mp.read_text())
    src = np.floor(np.array([f["src_time"] for f in m["frames"]]) * m["fps"] + 1e-6)
    shown = ex.shown_frames(ex.read_timeline(tl), m["fps"], m["fps"])
    assert len(shown) == len(src) and np.abs(np.round(shown) - src).max() <= 1
    bad = _avsync("retarget", dance, music, "-o", tmp_path / "o2.mp4", "--export", tmp_path / "t.mov")
    assert bad.returncode == 1 and "cannot export a timeline as '.mov'" in bad.stderr
    assert not (tmp_path / "o2.mp4").exists()
