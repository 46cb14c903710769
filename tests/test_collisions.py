"""Never lose a user's file (issue 17): the collision matrix per command, the no-clobber
commit, and the batch's cross-item checks, lock and resume.

Every refused run must exit 1 with one line naming both roles, leave every input
byte-identical and write nothing, whatever ``--overwrite`` says. Paths are made to collide
four ways: the same path, a path through ``..``, a symlink, a hard link.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from avsync import batch as b
from avsync.errors import OutputError
from avsync.outputs import PathCollision, check_distinct, same_file, write_atomic
from tests.mediagen import make_tone

ROOT = Path(__file__).resolve().parents[1]
STYLES = ("same", "dotdot", "symlink", "hardlink")


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from avsync.synthetic import write_clip

    d = tmp_path_factory.mktemp("collide-media")
    write_clip(d / "v.mp4", seconds=4.0, fps=25, seed=1)
    make_tone(str(d / "a.wav"), seconds=2.0)
    return d


def _snapshot(d: Path) -> dict[str, str]:
    """Every file under ``d`` (names, symlinks as their target) and its sha256."""
    out = {}
    for p in sorted(d.rglob("*")):
        if p.is_symlink():
            out[str(p.relative_to(d))] = "-> " + os.readlink(p)
        elif p.is_file():
            out[str(p.relative_to(d))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _alias(target: Path, style: str, d: Path, suffix: str) -> Path:
    """Another name for ``target`` (which need not exist, except for ``hardlink``)."""
    if style == "same":
        return target
    if style == "dotdot":
        (d / "sub").mkdir(exist_ok=True)
        return d / "sub" / ".." / target.name
    link = d / f"alias{suffix}"
    if style == "symlink":
        link.symlink_to(target)
    else:
        if not target.exists():
            target.write_bytes(b"an older output")  # hard links need a file
        os.link(target, link)
    return link


_CLI = CliRunner()


def _invoke(args: list[str]):  # type: ignore[no-untyped-def]
    from avsync.cli._app import _load_commands, app

    _load_commands()
    return _CLI.invoke(app, args)


# command -> (inputs: role in the message -> file name, outputs: flag -> default name, argv builder)
COMMANDS = {
    "align": ({"the input video": "v.mp4", "the reference audio": "a.wav"},
              {"-o": "out.mp4", "--map": "map.json", "--plot": "plot.png", "--export": "cut.otio"},
              lambda i, o: ["align", i["the input video"], "--audio", i["the reference audio"],
                            *itertools.chain.from_iterable(o.items())]),
    "retarget": ({"the dance video": "v.mp4", "the music": "a.wav"},
                 {"-o": "out.mp4", "--map": "map.json", "--plot": "plot.png", "--export": "cut.otio"},
                 lambda i, o: ["retarget", i["the dance video"], i["the music"],
                               *itertools.chain.from_iterable(o.items())]),
    "detect-offset": ({"the input clip": "v.mp4"},
                      {"--fix": "fixed.mp4", "--plot": "plot.png", "--export": "cut.otio"},
                      lambda i, o: ["detect-offset", i["the input clip"], *itertools.chain.from_iterable(o.items())]),
}


def _cases() -> list[tuple[str, str, str, str]]:
    """(command, output role, what it collides with: an input role or another output, style)."""
    cases = []
    for cmd, (ins, outs, _) in COMMANDS.items():
        for role in outs:
            for other in [*ins, *(o for o in outs if o != role)]:
                if other in outs and list(outs).index(other) > list(outs).index(role):
                    continue  # each pair of outputs once
                cases += [(cmd, role, other, style) for style in STYLES]
    return cases


@pytest.mark.parametrize(("cmd", "role", "other", "style"), _cases())
def test_collision_matrix(cmd: str, role: str, other: str, style: str, media: Path, tmp_path: Path) -> None:
    ins, outs, argv = COMMANDS[cmd]
    d = tmp_path
    for name in set(ins.values()):
        (d / name).write_bytes((media / name).read_bytes())
    in_paths = {r: str(d / n) for r, n in ins.items()}
    out_paths = {r: str(d / n) for r, n in outs.items()}
    target = Path(in_paths[other] if other in ins else out_paths[other])
    suffix = Path(outs[role]).suffix  # an alias with the right ending: the format checks cannot answer first
    out_paths[role] = str(_alias(target, style, d, suffix))
    before = _snapshot(d)
    res = _invoke([*argv(in_paths, out_paths), "--overwrite"])
    assert res.exit_code == 1, res.output
    err = res.stderr
    assert err.count("\n") == 1 and err.startswith("avsync: error: "), err
    assert role in err and other in err, err
    assert "overwrite" in err or "same file" in err, err
    assert _snapshot(d) == before  # inputs byte-identical, nothing new written, nothing replaced


def test_detect_offset_fix_and_plot_on_one_path_writes_no_png(media: Path, tmp_path: Path) -> None:
    """Issue 17 item 2: it used to refuse *after* writing the plot at X."""
    clip = tmp_path / "v.mp4"
    clip.write_bytes((media / "v.mp4").read_bytes())
    x = tmp_path / "x.mp4"
    res = _invoke(["detect-offset", str(clip), "--fix", str(x), "--plot", str(x)])
    assert res.exit_code == 1
    assert res.stderr == f"avsync: error: --plot and --fix are the same file ({x}); give each output its own name\n"
    assert not x.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]


def test_map_over_the_input_video_is_refused_even_with_overwrite(media: Path, tmp_path: Path) -> None:
    """Issue 17 item 1, as reported: `align V --audio A -o OUT --map V --overwrite`."""
    v, a = tmp_path / "v.mp4", tmp_path / "a.wav"
    v.write_bytes((media / "v.mp4").read_bytes())
    a.write_bytes((media / "a.wav").read_bytes())
    before = _snapshot(tmp_path)
    res = _invoke(["align", str(v), "--audio", str(a), "-o", str(tmp_path / "out.mp4"), "--map", str(v),
                   "--overwrite"])
    assert res.exit_code == 1
    assert res.stderr == f"avsync: error: --map would overwrite the input video ({v})\n"
    assert _snapshot(tmp_path) == before


def test_distinct_outputs_still_work(media: Path, tmp_path: Path) -> None:
    """The check refuses collisions only: a real run with every output apart succeeds."""
    res = _invoke(["detect-offset", str(media / "v.mp4"), "--plot", str(tmp_path / "p.png"), "--json"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_check_distinct_library(tmp_path: Path) -> None:
    a = tmp_path / "a.wav"
    a.write_bytes(b"audio")
    os.link(a, tmp_path / "hard.wav")
    (tmp_path / "soft.wav").symlink_to(a)
    assert same_file(a, tmp_path / "hard.wav") and same_file(a, tmp_path / "soft.wav")
    assert same_file(tmp_path / "new.json", tmp_path / "x" / ".." / "new.json")
    assert not same_file(a, tmp_path / "b.wav")
    check_distinct({"the audio": a, "unused": None}, {"-o": tmp_path / "o.mp4", "--map": None})
    with pytest.raises(PathCollision, match=r"^--map \(.*hard\.wav\) would overwrite the audio \(.*a\.wav\)$"):
        check_distinct({"the audio": a}, {"-o": tmp_path / "o.mp4", "--map": tmp_path / "hard.wav"})
    # a folder input: an output that is the folder, or a media file in it, collides; a new file does not
    data = tmp_path / "data"
    data.mkdir()
    (data / "clip.mp4").write_bytes(b"video")
    check_distinct({"DATA_DIR": data}, {"--markdown": data / "table.md"})
    for bad in (data, data / "clip.mp4"):
        with pytest.raises(PathCollision, match="DATA_DIR"):
            check_distinct({"DATA_DIR": data}, {"--markdown": bad})


def test_train_checkpoint_named_like_its_card_is_refused(tmp_path: Path) -> None:
    from avsync.train.loop import TrainOptions, check_request

    with pytest.raises(PathCollision, match="its model card and the checkpoint are the same file"):
        check_request(tmp_path / "model.md", TrainOptions(), False, False, tmp_path)
    check_request(tmp_path / "model.pt", TrainOptions(), False, False, tmp_path)


def test_bench_markdown_over_a_clip_is_refused(tmp_path: Path) -> None:
    (tmp_path / "clip.mp4").write_bytes(b"a clip")
    res = _invoke(["bench", str(tmp_path), "--markdown", str(tmp_path / "clip.mp4")])
    assert res.exit_code == 1
    assert res.stderr == (f"avsync: error: --markdown ({tmp_path / 'clip.mp4'}) would overwrite a file in DATA_DIR "
                          f"({tmp_path})\n")
    assert (tmp_path / "clip.mp4").read_bytes() == b"a clip"


# --------------------------------------------------------------------------- no-clobber commit


def test_commit_never_replaces_a_file_that_appeared_without_overwrite(tmp_path: Path) -> None:
    dest = tmp_path / "out.mp4"

    def racer(tmp: str) -> None:  # another process puts its output in place while we write ours
        Path(tmp).write_bytes(b"ours")
        dest.write_bytes(b"theirs")

    with pytest.raises(OutputError, match="appeared while avsync was writing it"):
        write_atomic(dest, racer, overwrite=False)
    assert dest.read_bytes() == b"theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]  # our temp file is gone
    write_atomic(dest, lambda tmp: Path(tmp).write_bytes(b"ours"), overwrite=True)
    assert dest.read_bytes() == b"ours"
    new = tmp_path / "new.json"
    write_atomic(new, lambda tmp: Path(tmp).write_text("{}"), overwrite=False)
    assert new.read_text() == "{}" and sorted(p.name for p in tmp_path.iterdir()) == ["new.json", "out.mp4"]


# --------------------------------------------------------------------------- batch


def _fake_items(tmp_path: Path, takes: list[Path], out: Path, **opts: object) -> list[b.BatchItem]:
    import tests.test_batch  # noqa: F401 - registers the fake command

    rows = [{"id": f"t{i}", "command": "fake", "video": str(t), "audio": str(takes[0]),
             "output": str(out / f"t{i}.mp4"), **opts} for i, t in enumerate(takes)]
    m = tmp_path / "m.jsonl"
    m.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return b.read_manifest(m)


def test_batch_cross_item_collisions_and_results_file(tmp_path: Path) -> None:
    import tests.test_batch  # noqa: F401

    takes = []
    for i in range(3):
        takes.append(tmp_path / f"take{i}.mp4")
        takes[-1].write_bytes(bytes([i]) * 100)
    out = tmp_path / "out"
    out.mkdir()
    items = _fake_items(tmp_path, takes, out)
    items[1].output = str(takes[2])  # item 1 would write over item 2's video
    (out / "t2.mp4").symlink_to(out / "t0.mp4")  # item 2's output is item 0's, by a symlink
    before = _snapshot(tmp_path)
    with pytest.raises(PathCollision, match=r"--results would overwrite an input of item t1"):
        b.run_batch(items, jobs=0, results=takes[1])
    with pytest.raises(PathCollision, match=r"--results would overwrite the manifest"):
        b.run_batch(items, jobs=0, results=tmp_path / "m.jsonl", manifest=tmp_path / "m.jsonl")
    assert _snapshot(tmp_path) == before
    recs: list[dict] = []
    s = b.run_batch(items, jobs=0, emit=recs.append)
    assert (s.ok, s.failed) == (1, 2)
    err = {r["id"]: r["error"] for r in recs}
    assert err["t0"] is None
    assert f"output {takes[2]} would overwrite an input of item t2" in err["t1"]
    assert "is also written by item t0 (output)" in err["t2"]
    assert takes[2].read_bytes() == bytes([2]) * 100


def test_batch_lock_refuses_a_second_run_and_is_released(tmp_path: Path) -> None:
    from avsync.batch.safety import LOCK_NAME, batch_lock

    take = tmp_path / "take.mp4"
    take.write_bytes(b"x" * 100)
    out = tmp_path / "out"
    out.mkdir()
    items = _fake_items(tmp_path, [take], out)
    with batch_lock(items, tmp_path / "r.jsonl"):
        assert (out / LOCK_NAME).exists()
        with pytest.raises(OutputError, match=rf"^another avsync batch is writing to {out} \(lock "):
            b.run_batch(items, jobs=0, results=tmp_path / "other.jsonl")
        with pytest.raises(OutputError, match=r"^another avsync batch is writing to .*r\.jsonl \(lock "):
            b.run_batch(_fake_items(tmp_path, [take], tmp_path), jobs=0, results=tmp_path / "r.jsonl")
        assert not (out / "t0.mp4").exists()
    assert not (out / LOCK_NAME).exists() and not (tmp_path / ".r.jsonl.lock").exists()
    assert b.run_batch(items, jobs=0, results=tmp_path / "r.jsonl").ok == 1


def _env() -> dict[str, str]:
    env = dict(os.environ, AVSYNC_NO_PROGRESS="1", PYTHONPATH=str(ROOT))
    env.pop("AVSYNC_DEBUG", None)
    return env


def test_two_concurrent_batches_on_one_folder(tmp_path: Path) -> None:
    """Start two processes on the same manifest, folder and results: the second refuses with
    one line, and every item is done exactly once."""
    from tests.test_batch import fake_cli

    takes = []
    for i in range(6):
        takes.append(tmp_path / f"take{i}.mp4")
        takes[-1].write_bytes(os.urandom(500))
    out = tmp_path / "out"
    out.mkdir()
    log = tmp_path / "started.log"
    _fake_items(tmp_path, takes, out, log=str(log), sleep=1.0)
    r = tmp_path / "results.jsonl"
    args = fake_cli("batch", str(tmp_path / "m.jsonl"), "--jobs", "0", "--results", str(r), "--resume")
    p1 = subprocess.Popen(args, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t_end = time.monotonic() + 60
    while time.monotonic() < t_end and not log.exists():  # the first run holds the lock and has started
        time.sleep(0.02)
    p2 = subprocess.run(args, env=_env(), capture_output=True, text=True, timeout=60)
    _, err1 = p1.communicate(timeout=120)
    assert p1.returncode == 0, err1
    assert p2.returncode == 1
    assert p2.stderr.count("\n") == 1 and p2.stderr.startswith("avsync: error: another avsync batch is writing to ")
    recs = [json.loads(ln) for ln in r.read_text().splitlines()]
    assert sorted(x["id"] for x in recs) == [f"t{i}" for i in range(6)] and {x["status"] for x in recs} == {"ok"}
    assert len(log.read_text().splitlines()) == 6  # each item started once
    assert sorted(p.name for p in out.iterdir()) == [f"t{i}.mp4" for i in range(6)]  # and no lock left
    for i, t in enumerate(takes):
        assert (out / f"t{i}.mp4").read_bytes() == t.read_bytes()


def test_resume_plan_judges_by_the_video(tmp_path: Path) -> None:
    from avsync.batch.resume import resume_actions

    v, m, p = tmp_path / "o.mp4", tmp_path / "o.json", tmp_path / "o.png"
    it = b.BatchItem("i", "align", ["a", "b"], str(v), {"map": str(m), "plot": str(p)})
    ok = {"i": {"id": "i", "status": "ok", "output": str(v),
                "result": {"map_path": str(m), "plot_path": str(p)}}}
    assert resume_actions([it], ok) == ([(it, {})], 0)  # nothing exists: a full run
    v.write_bytes(b"v")
    assert resume_actions([it], ok)[0] == [(it, {"sides_only": ["map", "plot"]})]
    m.write_text("{}")
    p.write_bytes(b"png")
    assert resume_actions([it], ok) == ([], 1)
    v.unlink()  # video deleted, map and plot kept: rerun, and they may be replaced
    assert resume_actions([it], ok)[0] == [(it, {"replace_recorded": True})]
    mine = {"i": {**ok["i"], "result": {"map_path": str(m)}}}  # the plot was not written by this item
    assert resume_actions([it], mine)[0] == [(it, {})]
    assert resume_actions([it], {"i": {**ok["i"], "status": "error"}})[0] == [(it, {})]


def test_load_results_prefers_an_ok_record(tmp_path: Path) -> None:
    r = tmp_path / "r.jsonl"
    r.write_text('{"id": "a", "status": "ok", "output": "x"}\n{"id": "a", "status": "error", "output": "x"}\n'
                 '{"id": "b", "status": "error"}\n{"id": "b", "status": "ok"}\n')
    assert b.load_results(r)["a"]["status"] == "error"
    done = b.load_results(r, prefer_ok=True)
    assert done["a"]["status"] == "ok" and done["b"]["status"] == "ok"


@pytest.fixture(scope="module")
def aligned(media: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[b.BatchItem]]:
    """A one-item align batch run to the end, with a map and a plot."""
    d = tmp_path_factory.mktemp("resume")
    m = d / "m.jsonl"
    m.write_text(json.dumps({"id": "one", "command": "align", "video": str(media / "v.mp4"),
                             "audio": str(media / "v.mp4"), "output": str(d / "o.mp4"), "map": str(d / "o.json"),
                             "plot": str(d / "o.png"), "max_shift": 0.5}) + "\n")
    items = b.read_manifest(m)
    r = d / "r.jsonl"
    s = b.run_batch(items, jobs=0, results=r)
    assert s.ok == 1, b.load_results(r)
    return d, r, items


def test_resume_after_the_video_was_deleted_reruns_the_item(aligned: tuple[Path, Path, list]) -> None:
    d, r, items = aligned
    (d / "o.mp4").unlink()  # the user deletes the video, keeps the map and the plot
    s = b.run_batch(b.read_manifest(d / "m.jsonl"), jobs=0, results=r, resume=True)
    last = b.load_results(r)["one"]
    assert (s.ok, s.failed, s.skipped) == (1, 0, 0), last
    assert (d / "o.mp4").stat().st_size > 0 and json.loads((d / "o.json").read_text())["kind"] == "align"
    assert b.run_batch(b.read_manifest(d / "m.jsonl"), jobs=0, results=r, resume=True).skipped == 1


def test_resume_writes_a_missing_map_and_keeps_the_video(aligned: tuple[Path, Path, list]) -> None:
    d, r, items = aligned
    video = (d / "o.mp4").stat()
    plot = (d / "o.png").read_bytes()
    (d / "o.json").unlink()
    s = b.run_batch(b.read_manifest(d / "m.jsonl"), jobs=0, results=r, resume=True)
    last = b.load_results(r)["one"]
    assert (s.ok, s.failed, s.skipped) == (1, 0, 0), last
    assert last["regenerated"] == ["map"] and last["output"] == str(d / "o.mp4")
    assert json.loads((d / "o.json").read_text())["frames"]
    now = (d / "o.mp4").stat()
    assert (now.st_ino, now.st_mtime_ns) == (video.st_ino, video.st_mtime_ns)  # not re-encoded
    assert (d / "o.png").read_bytes() == plot
    assert b.run_batch(b.read_manifest(d / "m.jsonl"), jobs=0, results=r, resume=True).skipped == 1
