"""avsync.render: frame plans, plan statistics, and end-to-end re-timing."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from avsync import media
from avsync.errors import OutputError
from avsync.render import frame_plan, plan_stats, render
from avsync.types import Correspondence
from tests import mediagen as mg

SR = 22050
PLAN = [0, 0, 1, 2, 2, 2, 5, 6, 7, 10, 11, 11, 20, 21, 22, 23, 30, 31, 32, 39]


# ----------------------------------------------------------------------------- frame_plan


@pytest.mark.parametrize("fps", [25.0, 24000 / 1001, 30000 / 1001, 60.0])
def test_frame_plan_exact_on_constant_rate(fps):
    ft = np.arange(500) / fps
    assert np.array_equal(frame_plan(Correspondence(ft.copy(), fps), ft), np.arange(500))
    # anything within ±0.45 frame of i/fps still maps to i
    rng = np.random.default_rng(1)
    jitter = rng.uniform(-0.45, 0.45, 500) / fps
    t = np.maximum.accumulate(ft + jitter)
    got = frame_plan(Correspondence(t, fps), ft)
    assert np.abs(got - np.arange(500)).max() <= 1
    assert np.array_equal(got[np.abs(t - ft) < 0.45 / fps], np.arange(500)[np.abs(t - ft) < 0.45 / fps])


def test_frame_plan_clipped_monotonic_and_vfr():
    ft = np.array([0, 0.04, 0.08, 0.2, 0.24, 0.5, 0.54])
    t = np.array([-1.0, 0.0, 0.13, 0.15, 0.37, 0.38, 9.0])
    assert frame_plan(Correspondence(t, 25), ft).tolist() == [0, 0, 2, 3, 4, 5, 6]
    # a (slightly) non-monotonic correspondence still gives a monotonic plan
    p = frame_plan(Correspondence(np.array([0.0, 0.2, 0.19, 0.5]), 25), ft)
    assert np.all(np.diff(p) >= 0)
    with pytest.raises(ValueError):
        frame_plan(Correspondence(np.array([0.0, np.nan]), 25), ft)


def test_frame_plan_slow_motion_duplicates():
    ft = np.arange(50) / 25
    p = frame_plan(Correspondence(np.arange(100) / 50, 25), ft)  # half speed
    s = plan_stats(p, 50)
    assert (s.unique, s.duplicated, s.dropped) == (50, 50, 0)


# ----------------------------------------------------------------------------- plan_stats


def test_plan_stats_hand_counted():
    s = plan_stats(np.array([0, 0, 1, 2, 2, 2, 5, 6, 7, 10]), n_src=12)
    # repeats: 0→0, 2→2, 2→2; +1 steps: 0→1, 1→2, 5→6, 6→7; shown {0,1,2,5,6,7,10};
    # never shown within 0..10: 3, 4, 8, 9
    assert s.to_dict() == {"duplicated": 3, "dropped": 4, "consecutive": 4, "unique": 7,
                           "n_out": 10, "n_src": 12}
    assert plan_stats(np.arange(5), 5).to_dict()["consecutive"] == 4
    assert plan_stats(np.zeros(0, int), 3).n_out == 0


# ----------------------------------------------------------------------------- render


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("render")
    return {
        "dir": str(d),
        "idx": mg.make_index_video(str(d / "idx.mp4"), 40, 25, sar=(4, 3), rotation=90),
        "idx100": mg.make_index_video(str(d / "idx100.mp4"), 100, 25),
        "wav": mg.make_tone(str(d / "ref.wav"), 1.5, SR),
        "sync": mg.make_avsynctest(str(d / "sync.mp4"), seconds=4, size="160x120"),
    }


def _indices(path: str) -> list[int]:
    return [mg.read_index(f) for _, _, f in media.iter_frames(path)]


def test_render_shows_planned_frames_with_reencoded_audio(src, tmp_path):
    out = str(tmp_path / "out.mp4")
    rate = Fraction(24000, 1001)
    k_target = math.ceil(1.5 * rate)  # 36 > len(PLAN): padded with the last frame
    calls = []
    render(src["idx"], np.array(PLAN), 24000 / 1001, out, audio_path=src["wav"],
           progress=lambda s, d, t: calls.append((s, d, t)))
    got = _indices(out)
    assert got == PLAN + [PLAN[-1]] * (k_target - len(PLAN))
    i = media.probe(out)
    assert i.n_frames == k_target and i.fps == pytest.approx(float(rate), rel=1e-6)
    assert (i.width, i.height, i.sar, i.rotation) == (160, 120, (4, 3), 90)
    assert i.audio_codec == "aac" and i.audio_rate == SR
    a = media.load_audio(out, SR)
    assert a.size / SR == pytest.approx(1.5, abs=0.01)
    ref = media.load_audio(src["wav"], SR)
    assert np.corrcoef(a[2048:30000], ref[2048:30000])[0, 1] > 0.99
    assert calls[-1] == ("render", k_target, k_target) and all(c[0] == "render" for c in calls)


def test_render_copies_aac_bit_exact_and_cuts_long_plan(src, tmp_path):
    out = str(tmp_path / "copy.mp4")
    plan = np.minimum(np.arange(120) // 1, 99)  # 120 frames at 25 fps > 4 s of audio
    render(src["idx100"], plan, 25, out, audio_path=src["sync"])
    assert _indices(out) == list(range(100))  # cut to ceil(4.0 * 25)
    a, b = media.load_audio(src["sync"], SR), media.load_audio(out, SR)
    assert a.size == b.size and np.array_equal(a, b)


def test_render_video_only_mkv(src, tmp_path):
    out = str(tmp_path / "v.mkv")
    plan = np.array([3, 3, 3, 4, 9, 9])
    render(src["idx"], plan, 30, out)
    i = media.probe(out)
    assert not i.has_audio and i.n_frames == 6 and i.fps == pytest.approx(30)
    assert _indices(out) == plan.tolist()


def test_render_refuses_existing_and_input(src, tmp_path):
    out = tmp_path / "exists.mp4"
    out.write_bytes(b"keep")
    with pytest.raises(OutputError, match="already exists"):
        render(src["idx"], np.arange(5), 25, str(out))
    assert out.read_bytes() == b"keep"
    render(src["idx"], np.arange(5), 25, str(out), overwrite=True)
    assert media.probe(str(out)).n_frames == 5
    before = Path(src["idx"]).read_bytes()
    with pytest.raises(OutputError, match="the output would overwrite the input video"):
        render(src["idx"], np.arange(5), 25, src["idx"], overwrite=True)
    assert Path(src["idx"]).read_bytes() == before


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_render_failure_leaves_nothing(src, tmp_path, exc):
    def progress(stage, done, total):
        if done >= 10:
            raise exc("stop")

    with pytest.raises(exc):
        render(src["idx100"], np.arange(100), 25, str(tmp_path / "o.mp4"), audio_path=src["wav"],
               progress=progress)
    assert list(tmp_path.iterdir()) == []


def test_render_rejects_bad_plans(src, tmp_path):
    for plan in ([], [3, 2], [0, 40], [0.5, 1.0]):
        with pytest.raises(ValueError):
            render(src["idx"], np.array(plan), 25, str(tmp_path / "o.mp4"))
    assert list(tmp_path.iterdir()) == []


def test_atomic_outputs_get_the_usual_file_mode(tmp_path):
    """Temp-then-rename must not leave maps and plots readable by their owner only (mkstemp's 0600)."""
    import os

    from avsync.outputs import write_json

    old = os.umask(0o022)
    try:
        p = tmp_path / "map.json"
        write_json(p, {"a": 1})
        assert (p.stat().st_mode & 0o777) == 0o644
    finally:
        os.umask(old)
