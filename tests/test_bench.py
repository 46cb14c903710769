"""avsync bench: the protocols' building blocks and a real end-to-end run on synthetic clips."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from avsync.evaluation.protocol import markdown_table, shift_audio, split_backend
from avsync.features import AudioFeatures
from avsync.synthetic import write_clip
from avsync.types import Signal


def _impulse_features(t_event: float, dur: float = 4.0, rate: float = 100.0) -> AudioFeatures:
    x = np.zeros(int(dur * rate), np.float32)
    x[int(round(t_event * rate))] = 1.0
    sig = Signal(x, rate)
    return AudioFeatures(onset=sig, speech=sig, logmel=Signal(np.repeat(x[:, None], 4, axis=1), rate),
                         duration=dur, sr=22050)


def test_shift_audio_makes_the_audio_lead_by_the_shift():
    a = _impulse_features(2.0)
    for s in (0.3, -0.5):
        b = shift_audio(a, s)
        # positive = audio leads: the sound of the event at 2.0 s now comes at 2.0 - s
        assert b.onset.times[int(np.argmax(b.onset.values[:, 0]))] == pytest.approx(2.0 - s, abs=0.011)
        assert b.logmel.values.shape == a.logmel.values.shape


def test_split_backend():
    assert split_backend("classical") == ("classical", None)
    assert split_backend("alignnet:my ckpt.pt") == ("alignnet", "my ckpt.pt")


def _bench(data, tmp_path, *extra):
    env = {"AVSYNC_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-m", "avsync", "bench", str(data), "--json", *extra],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_bench_cli_end_to_end(tmp_path):
    data = tmp_path / "clips"
    data.mkdir()
    for seed in (5, 6):
        write_clip(data / f"flashes_{seed}.mp4", seconds=8.0, fps=25, seed=seed)
    (data / "no_sound.mp4").write_bytes((data / "flashes_5.mp4").read_bytes()[:2000])  # unusable: skipped
    md = tmp_path / "table.md"
    res = _bench(data, tmp_path, "--backend", "classical,syncnet:tiny-test", "--markdown", str(md))
    rows = {row["backend"]: row for row in res["rows"]}
    assert list(rows) == ["none", "classical", "syncnet:tiny-test", "soundtrack"]
    assert res["n_clips"] == 3 and "seed 0" in res["protocol"]
    assert any("no_sound.mp4: skipped" in e for e in rows["classical"]["errors"])
    none, cl = rows["none"], rows["classical"]
    assert none["afe"] > 3.0 and none["itu"] < 0.5  # the distortion really hurts
    assert np.isfinite(cl["afe"]) and 0.0 <= cl["itu"] <= 1.0
    # Global offsets on clear, sharp events: the classical backend gets nearly all of them.
    assert cl["offset_acc1f"] >= 0.8 and cl["grid_acc1"] >= 0.8
    # The distorted copy carrying its own (warped) beeps, aligned audio to audio.
    st = rows["soundtrack"]
    assert st["itu"] >= 0.85 and st["afe"] < 1.0, st
    for row in rows.values():
        assert row["unique"] >= 100  # the four frame criteria are filled in
    assert np.isfinite(rows["syncnet:tiny-test"]["offset_acc1f"])
    text = md.read_text()
    assert "| classical |" in text and "| syncnet:tiny-test |" in text
    # Seeded and reproducible: the same run gives the same scores.
    again = {row["backend"]: row for row in _bench(data, tmp_path, "--backend", "classical")["rows"]}
    for key in ("afe", "itu", "acc1", "duplicated", "dropped", "offset_acc1f", "grid_acc1"):
        np.testing.assert_equal(again["classical"][key], cl[key])  # NaN-aware: "none" has no offsets
        np.testing.assert_equal(again["none"][key], none[key])


def test_markdown_table_marks_missing_values():
    from avsync.evaluation.protocol import BackendRow, BenchResult

    res = BenchResult(data_dir="d", n_clips=1, options={}, protocol="p",
                      rows=[BackendRow("none", 1, afe=2.0, itu=0.5, acc1=0.25), BackendRow("x", 1)],
                      features_s_per_min=1.0)
    lines = markdown_table(res).splitlines()
    assert lines[2].startswith("| none | 2.00 | 0.500 | 0.250 |")
    assert lines[3].startswith("| x | — | — | — |")


def test_markdown_table_has_one_separator_per_column():
    from avsync.evaluation.protocol import BackendRow, BenchResult

    res = BenchResult(data_dir="d", n_clips=1, options={}, protocol="p", rows=[BackendRow("x", 1)],
                      features_s_per_min=1.0)
    head, sep, row = markdown_table(res).splitlines()
    assert head.count("|") == sep.count("|") == row.count("|")


def test_make_bench_keeps_the_hand_written_sections(tmp_path):
    """bench/run_bench.py rewrites RESULTS.md but carries over what follows its KEEP line."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("run_bench", Path(__file__).parents[1] / "bench" / "run_bench.py")
    rb = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rb)
    f = tmp_path / "RESULTS.md"
    assert rb.kept_sections(f) == []
    f.write_text(f"# generated\n\nold table\n\n{rb.KEEP}\n\n## by hand\n\nrun X: 0.9\n")
    assert rb.kept_sections(f) == [rb.KEEP, "", "## by hand", "", "run X: 0.9"]
    f.write_text("# generated only\n")
    assert rb.kept_sections(f) == []
    shipped = Path(__file__).parents[1] / "bench" / "RESULTS.md"
    assert any(line.startswith("## Real footage") for line in rb.kept_sections(shipped))
