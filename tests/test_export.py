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
