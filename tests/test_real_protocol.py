"""The real-footage protocol (avsync.evaluation.real): the split by source, case files that carry
exactly the offset they claim, and `avsync bench DIR --protocol real` end to end."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from avsync.evaluation import real

REAL = real.DEFAULT_MEDIA


def _manifest(d: Path, rows: list[tuple[str, str, str]]) -> None:
    with open(d / "MANIFEST.tsv", "w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["file", "category", "repo"])
        w.writerows(rows)


def test_split_keeps_sources_and_speakers_whole(tmp_path):
    rows = [(f"a{i}.mp4", "speech", "lab/a") for i in range(4)] + \
           [(f"b{i}.mp4", "speech", "lab/b") for i in range(3)] + \
           [("x_obama.mp4", "speech", "one/x"), ("y_Obama.mov", "speech", "two/y"), ("c.mp4", "other", "lab/c"),
            ("d.mp4", "control", "lab/d")] + \
           [(f"e{i}.mp4", "event", "OpenNLPLab/AVSBench") for i in range(4)]
    _manifest(tmp_path, rows)
    t = real.split_table(tmp_path)
    part = {r["file"]: r["part"] for r in t}
    cat = {r["file"]: r["category"] for r in t}
    for prefix in ("a", "b"):
        assert len({part[f] for f in part if f.startswith(prefix)}) == 1  # a repository is never split
    assert part["x_obama.mp4"] == part["y_Obama.mov"]  # one speaker across repositories
    assert cat["c.mp4"] == "control"
    events = [part[f"e{i}.mp4"] for i in range(4)]
    assert "check" in events and "fit" in events  # a dataset repository's files are distinct sources
    for c in ("speech", "event"):
        n = [r for r in t if r["category"] == c]
        assert 0 < sum(r["part"] == "check" for r in n) <= real.CHECK_SHARE * len(n) + 1
    assert real.split_table(tmp_path) == t  # deterministic


@pytest.fixture(scope="module")
def flash_folder(tmp_path_factory):
    from avsync.synthetic import write_clip

    d = tmp_path_factory.mktemp("realfolder")
    for i in range(2):  # flashes with beeps at random (not periodic) times
        write_clip(d / f"flash{i}.mp4", seconds=7.0, fps=25, seed=11 + i)
    _manifest(d, [("flash0.mp4", "event", "gen/a"), ("flash1.mp4", "event", "gen/b")])
    return d


def test_offset_cases_carry_the_offset_they_claim(flash_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("AVSYNC_CACHE", str(tmp_path / "cache"))
    clips = real.load_clips(flash_folder, part="all", limit=1)
    opts = real.ProtocolOptions(uniform_per_short_clip=2)
    cs = real.build_cases(clips, tmp_path / "cases", opts, offset=True, align=False)
    shifted = [c for c in cs.offset if c.kind != "original"]
    assert shifted and any(c.kind == "original" for c in cs.offset)
    outs = real.run_offset(shifted)
    for o in outs:  # flash/beep patterns: the classical backend finds them within a frame
        assert o.right, (o.case.truth, o.estimate)
    rows = real.offset_rows(outs, "classical")
    ev = next(r for r in rows if r.category == "event" and r.row == "classical")
    nothing = next(r for r in rows if r.category == "event" and r.row == "do nothing")
    assert ev.within_1f == 1.0 and nothing.within_1f < 1.0


class _AudioOnly:
    """An aligner of camera cases only (as an audio-to-audio peer): records what it was given."""

    kinds = ("camera",)

    def __init__(self) -> None:
        self.sync_by: list[str] = []

    def __call__(self, distorted: str, reference: str, sync_by: str, max_shift: float):
        from avsync.errors import CannotMeasure

        self.sync_by.append(sync_by)
        raise CannotMeasure("not measured here")


def test_run_align_honours_the_aligner_kinds(flash_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("AVSYNC_CACHE", str(tmp_path / "cache"))
    cs = real.build_cases(real.load_clips(flash_folder, part="all", limit=1), tmp_path / "cases", offset=False)
    assert {c.kind for c in cs.align} == {"picture", "camera"}
    peer = _AudioOnly()
    outs = real.run_align(cs.align, peer)
    assert [o.case.kind for o in outs] == ["camera"] * sum(c.kind == "camera" for c in cs.align)
    assert peer.sync_by == ["soundtrack"] * len(outs)
    rows = real.align_rows(outs)
    assert {r.row for r in rows} == {"camera-mic soundtrack", "none"}


def test_bench_real_end_to_end(flash_folder, tmp_path):
    env = {**__import__("os").environ, "AVSYNC_CACHE": str(tmp_path / "cache")}
    md = tmp_path / "real.md"
    r = subprocess.run([sys.executable, "-m", "avsync", "bench", str(flash_folder), "--protocol", "real",
                        "--part", "all", "--max-clips", "1", "--markdown", str(md), "--json"],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout)
    assert obj["n_clips"] == 1
    off = obj["offset"]["classical"]
    assert {c["kind"] for c in off} == {"uniform", "original"}
    assert np.mean([c["right"] for c in off]) >= 0.8
    al = obj["align"]["classical"]
    assert {c["kind"] for c in al} == {"picture", "camera"}
    text = md.read_text()
    assert "| event | classical |" in text and "| event | do nothing |" in text


def test_bench_real_category_filter_and_one_row_set_per_backend(flash_folder, tmp_path):
    env = {**__import__("os").environ, "AVSYNC_CACHE": str(tmp_path / "cache")}
    bad = subprocess.run([sys.executable, "-m", "avsync", "bench", str(flash_folder), "--protocol", "real",
                          "--category", "speech,evnt"], capture_output=True, text=True, timeout=120, env=env)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith("avsync: error: --category: unknown evnt")
    none = subprocess.run([sys.executable, "-m", "avsync", "bench", str(flash_folder), "--protocol", "real",
                           "--part", "all", "--category", "speech"], capture_output=True, text=True, timeout=120,
                          env=env)
    assert none.returncode != 0 and "no clips" in none.stderr and "Traceback" not in none.stderr


def test_offset_rows_list_all_once():
    case = real.OffsetCase("c", "f.mp4", "speech", "check", "uniform", 0.2, 1.0, 0.0, 4.0, 25.0, "p")
    out = real.OffsetOutcome(case, 0.2, 0.5, "ok", 0.0, True, 0.1)
    rows = real.offset_rows([out], "x")
    assert [(r.category, r.row) for r in rows] == [("speech", "x"), ("speech", "do nothing"), ("all", "x"),
                                                   ("all", "do nothing")]


@pytest.mark.skipif(not (REAL / "MANIFEST.tsv").is_file(), reason="the shared real footage is not here")
def test_the_shared_real_footage_splits_by_source():
    t = real.split_table(REAL)
    by_group: dict[str, set[str]] = {}
    for r in t:
        by_group.setdefault(r["group"], set()).add(r["part"])
    assert all(len(p) == 1 for p in by_group.values())
    cats = {r["category"] for r in t}
    assert {"speech", "dance", "music", "event", "control"} <= cats
    for c in cats:
        assert any(r["part"] == "check" for r in t if r["category"] == c)
