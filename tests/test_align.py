"""End to end: `avsync align` on a distorted synthetic clip, asserting which frames it shows."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from avsync.synthetic import decode_indices, write_clip


@pytest.fixture(scope="module")
def distorted(tmp_path_factory):
    d = tmp_path_factory.mktemp("align")
    fps, seconds = 25, 10.0
    orig = d / "orig.mp4"
    write_clip(orig, seconds=seconds, fps=fps, seed=3)
    n = int(seconds * fps)
    # A monotonic warp within the bench protocol's bounds (|displacement| <= 1 s): slow (0.75x)
    # for 3 s, a 5-frame freeze, fast (1.35x) for 3 s, then normal, plus a global shift of
    # 6 frames. Distorted frame m shows original frame plan[m].
    src = []
    speeds = [1.0] * 25 + [0.75] * 75 + [0.0] * 5 + [1.35] * 75 + [1.0] * 200
    t = -6.0
    for s in speeds:
        src.append(t)
        t += s
    plan = np.clip(np.floor(np.array(src)).astype(int), 0, n - 1)
    plan = plan[: int(np.searchsorted(plan, n - 1)) + 1]
    dist = d / "dist.mp4"
    write_clip(dist, seconds=seconds, fps=fps, seed=3, plan=plan)
    return d, orig, dist, plan, n


def test_align_end_to_end_shows_the_right_frames(distorted, tmp_path, monkeypatch):
    d, orig, dist, plan, n = distorted
    monkeypatch.setenv("AVSYNC_CACHE", str(tmp_path / "cache"))
    out, mp, plot = tmp_path / "out.mp4", tmp_path / "map.json", tmp_path / "plot.png"
    r = subprocess.run(
        [sys.executable, "-m", "avsync", "align", str(dist), "--audio", str(orig), "-o", str(out),
         "--map", str(mp), "--plot", str(plot), "--json", "--max-shift", "1.5"],
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["n_out"] == n
    assert summary["evidence"]["passed"], summary["evidence"]
    shown = decode_indices(out)  # original frame index each output frame shows
    assert len(shown) == n
    err = shown - np.arange(n)
    # frames within ±1 of the truth, away from the first/last second where nothing anchors the path
    core = err[25:-25]
    assert np.mean(np.abs(core) <= 1) >= 0.9, err
    # the uncorrected distorted video is far off: the test can fail
    base = plan[np.minimum(np.arange(n), len(plan) - 1)] - np.arange(n)
    assert np.mean(np.abs(base[25:-25]) <= 1) < 0.5
    m = json.loads(mp.read_text())
    assert m["output_fps"] == pytest.approx(25.0) and len(m["frames"]) == n
    assert all(m["frames"][k]["src_frame"] <= m["frames"][k + 1]["src_frame"] for k in range(n - 1))
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import av

    with av.open(str(out)) as c:
        assert c.streams.audio, "reference audio must be muxed"
        assert abs(float(c.streams.audio[0].duration * c.streams.audio[0].time_base) - 10.0) < 0.1


def test_align_keeps_source_timing_for_unrelated_audio(distorted, tmp_path, monkeypatch):
    """Audio from another clip (other event times): the evidence check must refuse to warp."""
    d, orig, dist, plan, n = distorted
    monkeypatch.setenv("AVSYNC_CACHE", str(tmp_path / "cache"))
    other = tmp_path / "other.mp4"
    write_clip(other, seconds=10.0, fps=25, seed=11)
    out = tmp_path / "out.mp4"
    r = subprocess.run(
        [sys.executable, "-m", "avsync", "align", str(dist), "--audio", str(other), "-o", str(out), "--json",
         "--max-shift", "1.5"], capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["evidence"]["checked"] and not s["evidence"]["passed"]
    assert "kept the source timing" in s["note"]
    shown = decode_indices(out)
    src_shown = np.searchsorted(plan, shown)  # distorted frame index of what is shown
    assert np.mean(np.abs(src_shown[:200] - np.arange(200)) <= 1) > 0.95


def test_evidence_check_passes_the_true_pairing_and_refuses_unrelated_audio(distorted, tmp_path, monkeypatch):
    """The picture evidence is a test against unrelated pairings (the audio rolled and reversed):
    the true soundtrack of the warped picture lies well above them, another clip's does not."""
    from avsync.align import AlignOptions, evidence_check
    from avsync.backends import get_backend
    from avsync.features.extract import extract_audio, extract_visual

    d, orig, dist, plan, n = distorted
    monkeypatch.setenv("AVSYNC_CACHE", str(tmp_path / "cache"))
    other = tmp_path / "other.mp4"
    write_clip(other, seconds=10.0, fps=25, seed=11)
    opts = AlignOptions(max_shift=1.5)
    backend, vfeat = get_backend("classical"), extract_visual(dist, opts.mode, cache=False)
    true = evidence_check(backend, extract_audio(orig, cache=False), vfeat, opts, opts.path_options())
    assert true["checked"] and true["passed"], true
    assert true["score"] > true["null_max"] and true["z"] >= opts.min_evidence == true["margin"]
    wrong = evidence_check(backend, extract_audio(other, cache=False), vfeat, opts, opts.path_options())
    assert wrong["checked"] and not wrong["passed"], wrong
    assert wrong["z"] < opts.min_evidence
    # the unrelated audio climbs about as high as chance: well below the true pairing's z
    assert wrong["z"] < true["z"] - 1.5


def test_align_refuses_existing_output(distorted, tmp_path):
    d, orig, dist, plan, n = distorted
    out = tmp_path / "exists.mp4"
    out.write_bytes(b"keep me")
    r = subprocess.run([sys.executable, "-m", "avsync", "align", str(dist), "--audio", str(orig), "-o", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert r.stderr.strip().count("\n") == 0 and "exists" in r.stderr
    assert out.read_bytes() == b"keep me"


@pytest.mark.parametrize(
    "case",
    ["missing_video", "missing_audio", "audio_has_no_audio", "short_audio", "text_as_video", "bad_mode"],
)
def test_align_bad_input_one_line(distorted, tmp_path, case):
    d, orig, dist, plan, n = distorted
    video, audio, extra = str(dist), str(orig), []
    if case == "missing_video":
        video = str(tmp_path / "nope.mp4")
    elif case == "missing_audio":
        audio = str(tmp_path / "nope.wav")
    elif case == "audio_has_no_audio":
        audio = str(dist)
    elif case == "short_audio":
        short = tmp_path / "short.mp4"
        write_clip(short, seconds=0.6, fps=25, seed=1)
        audio = str(short)
    elif case == "text_as_video":
        t = tmp_path / "notes.mp4"
        t.write_text("this is not a video\n")
        video = str(t)
    elif case == "bad_mode":
        extra = ["--mode", "karaoke"]
    out = tmp_path / "out.mp4"
    r = subprocess.run([sys.executable, "-m", "avsync", "align", video, "--audio", audio, "-o", str(out), *extra],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("avsync: error:") and "Traceback" not in r.stderr
    assert not out.exists()
    assert list(tmp_path.glob(".*out*")) == []
