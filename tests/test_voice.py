"""One voice across commands: ``--version``, plain boolean flags, one-line usage errors, one
JSON vocabulary (avsync.vocabulary, the README table), JSON on stdout for every outcome, and
human words that state the direction of a fix."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from avsync import __version__
from avsync.vocabulary import VOCABULARY, keys_of, markdown_table, table_in, unknown_keys

ROOT = Path(__file__).resolve().parents[1]


def _cli(args: list[str]):  # noqa: ANN202
    from typer.testing import CliRunner

    from avsync.cli._app import _load_commands, app

    _load_commands()
    return CliRunner().invoke(app, args)


def _json_lines(text: str) -> list[dict]:
    return [json.loads(x) for x in text.splitlines() if x.startswith("{")]


# --------------------------------------------------------------------------- --version, flags, usage errors


def test_version_alone_in_a_real_process():
    p = subprocess.run([sys.executable, "-m", "avsync", "--version"], capture_output=True, text=True, timeout=60,
                       cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert p.stdout == f"avsync {__version__}\n" and p.stderr == ""


def test_version_in_process_and_in_the_help():
    r = _cli(["--version"])
    assert r.exit_code == 0 and r.stdout == f"avsync {__version__}\n"
    r = _cli(["--help"])
    assert r.exit_code == 0 and re.search(r"--version\s{2,}Print the version", r.stdout), r.stdout


COMMANDS = [[], ["align"], ["detect-offset"], ["retarget"], ["batch"], ["train"], ["bench"], ["models", "list"],
            ["models", "fetch"], ["models", "verify"]]


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c) or "avsync")
def test_help_shows_booleans_as_plain_flags(cmd):
    r = _cli([*cmd, "--help"])
    assert r.exit_code == 0, r.output
    assert "<bool>" not in r.output and "--help" in r.output
    if cmd[:1] in (["align"], ["detect-offset"], ["retarget"]):
        assert re.search(r"--json\s{2,}\w", r.output), r.output  # the flag, then its help: no value


def test_flags_take_no_value():
    r = _cli(["detect-offset", "x.mp4", "--json", "true"])
    assert r.exit_code == 2  # 'true' is a second CLIP: a usage error, in one line
    assert len(r.output.strip().splitlines()) == 2  # the JSON object (--json was given) and the line


@pytest.mark.parametrize("args,line", [
    (["align", "v.mp4", "--audio", "a.wav", "-o", "o.mp4", "--foo"],
     "avsync: error: no such option --foo (try 'avsync align --help')"),
    (["align", "--audio", "a.wav", "-o", "o.mp4"],
     "avsync: error: missing argument 'video' (try 'avsync align --help')"),
    (["detect-offset"], "avsync: error: missing argument 'clip' (try 'avsync detect-offset --help')"),
    (["retarget", "d.mp4", "m.wav", "--output"],
     "avsync: error: option '--output' requires an argument (try 'avsync retarget --help')"),
    (["align", "v.mp4", "--audio", "a.wav"],
     "avsync: error: missing option '--output' / '-o' (try 'avsync align --help')"),
    (["frobnicate"], "avsync: error: no such command 'frobnicate' (try 'avsync --help')"),
    (["--bogus"], "avsync: error: no such option --bogus (try 'avsync --help')"),
    (["models", "fetch"], "avsync: error: missing argument 'names' (try 'avsync models fetch --help')"),
])
def test_usage_errors_are_one_line_with_a_hint(args, line):
    r = _cli(args)
    assert r.exit_code == 2  # click's code for usage errors, as before
    assert r.stdout == ""
    assert r.stderr.splitlines() == [line]


def test_usage_error_suggests_the_near_option():
    r = _cli(["align", "v.mp4", "--audio", "a.wav", "-o", "o.mp4", "--jsn"])
    assert r.exit_code == 2
    assert r.stderr.splitlines() == ["avsync: error: no such option --jsn (did you mean --json?) "
                                     "(try 'avsync align --help')"]


def test_usage_error_in_a_real_process_is_one_line():
    p = subprocess.run([sys.executable, "-m", "avsync", "detect-offset", "--nope"], capture_output=True, text=True,
                       timeout=60, cwd=ROOT)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr == "avsync: error: no such option --nope (try 'avsync detect-offset --help')\n"


def test_bare_avsync_still_prints_the_help():
    r = _cli([])
    assert "Usage:" in r.output and "align" in r.output


# --------------------------------------------------------------------------- the vocabulary and the README


def test_readme_table_is_the_vocabulary():
    text = (ROOT / "README.md").read_text()
    assert markdown_table() in text, "README's JSON vocabulary table differs: python -m avsync.vocabulary"
    assert table_in(text) == list(VOCABULARY)


def test_vocabulary_one_name_per_thing():
    meanings = [k.meaning for k in VOCABULARY.values()]
    assert len(set(meanings)) == len(meanings)
    for old in ("source_fps", "confidence_mean", "audio_duration", "shift_s", "period_s", "map_path", "plot_path",
                "dance_duration", "visual_source"):
        assert old not in VOCABULARY
    assert VOCABULARY["seconds"].unit == "s" and VOCABULARY["stage_seconds"].unit == "object"
    assert unknown_keys({"a": 1, "fix": {"shift_s": 2}, "stage_seconds": {"render": 1}}) == {"a", "shift_s"}


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.mediagen import make_avsynctest, make_silent_video, write_audio, write_frames_video
    from tests.test_retarget import _block_frames, _click_track

    d = tmp_path_factory.mktemp("voice")
    make_avsynctest(str(d / "clip.mp4"), seconds=3, fps=25, audio_shift=0.08, size="160x120")
    make_avsynctest(str(d / "ref.mp4"), seconds=3, fps=25, size="160x120")
    make_silent_video(str(d / "silent.mp4"), seconds=2)
    write_frames_video(str(d / "dance.mp4"), _block_frames(4.0, 25), 25)
    write_audio(str(d / "music.wav"), _click_track(120, 3.0)[0], 22050)
    return d


def _emitted(media: Path, out: Path) -> dict[str, list[dict]]:
    """What every command prints with --json, and batch's records (results file and dry run)."""
    got: dict[str, list[dict]] = {}
    r = _cli(["detect-offset", str(media / "clip.mp4"), "--json", "--fix", str(out / "fixed.mp4"),
              "--plot", str(out / "off.png"), "--export", str(out / "off.otio")])
    assert r.exit_code == 0, r.output
    got["detect-offset"] = _json_lines(r.stdout)
    r = _cli(["align", str(media / "clip.mp4"), "--audio", str(media / "ref.mp4"), "-o", str(out / "al.mp4"),
              "--map", str(out / "al.json"), "--export", str(out / "al.otio"), "--json"])
    assert r.exit_code == 0, r.output
    got["align"] = _json_lines(r.stdout)
    r = _cli(["align", str(media / "clip.mp4"), "--audio", str(media / "ref.mp4"), "-o", str(out / "alp.mp4"),
              "--sync-by", "picture", "--json"])
    assert r.exit_code == 0, r.output
    got["align"] += _json_lines(r.stdout)
    r = _cli(["retarget", str(media / "dance.mp4"), str(media / "music.wav"), "-o", str(out / "rt.mp4"),
              "--mode", "general", "--map", str(out / "rt.json"), "--json"])
    assert r.exit_code == 0, r.output
    got["retarget"] = _json_lines(r.stdout)
    rows = [
        {"id": "off", "command": "detect-offset", "clip": str(media / "clip.mp4"), "output": str(out / "b_fix.mp4")},
        {"id": "chk", "command": "detect-offset", "clip": str(media / "clip.mp4"), "check": True},
        {"id": "al", "command": "align", "video": str(media / "clip.mp4"), "audio": str(media / "ref.mp4"),
         "output": str(out / "b_al.mp4")},
        {"id": "rt", "command": "retarget", "dance": str(media / "dance.mp4"), "music": str(media / "music.wav"),
         "output": str(out / "b_rt.mp4"), "mode": "general"},
        {"id": "bad", "command": "detect-offset", "clip": str(media / "silent.mp4")},
    ]
    manifest = out / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = _cli(["batch", str(manifest), "--jobs", "0", "--results", str(out / "r.jsonl")])
    assert r.exit_code == 1, r.output  # 'chk' (out of sync) and 'bad' fail
    got["batch"] = [json.loads(x) for x in (out / "r.jsonl").read_text().splitlines()]
    r = _cli(["batch", str(manifest), "--dry-run"])
    assert r.exit_code == 0, r.output
    got["batch"] += _json_lines(r.stdout)
    return got


def test_every_emitted_key_is_in_the_vocabulary_and_the_readme(media: Path, tmp_path: Path):
    got = _emitted(media, tmp_path)
    readme = set(table_in((ROOT / "README.md").read_text()))
    seen: set[str] = set()
    checked = []  # (command, object): a batch record's result is its command's object
    for command, objs in got.items():
        assert objs, command
        for obj in objs:
            if command == "batch":
                checked.append(("batch", {k: v for k, v in obj.items() if k != "result"}))
                if obj.get("result"):
                    checked.append((obj["command"], obj["result"]))
            else:
                checked.append((command, obj))
    for command, obj in checked:
        keys = keys_of(obj)
        assert not keys - set(VOCABULARY), (command, sorted(keys - set(VOCABULARY)))
        assert keys <= readme
        for k in keys:
            assert command in VOCABULARY[k].where, (k, command)
        seen |= keys
    # the unified names are the ones emitted
    off, al, rt = got["detect-offset"][0], got["align"][0], got["retarget"][0]
    assert off["ok"] is True and al["ok"] is True and rt["ok"] is True
    assert off["fix"]["shift_ms"] == pytest.approx(off["offset_ms"], abs=1e-3) and "shift_s" not in off["fix"]
    assert off["fix"]["words"] == f"audio delayed by {round(off['offset_ms'])} ms"
    assert isinstance(al["stage_seconds"], dict) and "seconds" not in al and "stage_seconds" in rt
    assert al["fps"] == pytest.approx(25.0) and al["output_fps"] == pytest.approx(25.0) and "source_fps" not in al
    assert rt["fps"] == rt["output_fps"] and rt["duration"] == pytest.approx(4.0, abs=0.05)
    assert 0.0 <= al["confidence"] <= 1.0 and al["output_duration"] == pytest.approx(3.0, abs=0.05)
    assert al["map"] == str(tmp_path / "al.json") and rt["map"] == str(tmp_path / "rt.json")
    assert off["plot"] == str(tmp_path / "off.png") and off["export"]["path"] == str(tmp_path / "off.otio")
    recs = {r["id"]: r for r in got["batch"] if r["status"] != "planned"}
    assert isinstance(recs["al"]["seconds"], float) and recs["off"]["result"]["fix"]["shift_ms"] != 0
    assert recs["bad"]["status"] == "error" and recs["bad"]["manifest"].endswith("m.jsonl:5")
    # most of the vocabulary is exercised here (the rest: traceback, CheckFailed-only keys, ...)
    assert len(seen) >= 0.85 * len(VOCABULARY), sorted(set(VOCABULARY) - seen)


# --------------------------------------------------------------------------- JSON for every outcome


def test_json_for_cannot_measure_and_errors(media: Path, tmp_path: Path):
    r = _cli(["detect-offset", str(media / "silent.mp4"), "--json"])
    assert r.exit_code == 2
    obj = json.loads(r.stdout)
    assert obj == {"ok": False, "error": "cannot measure: the audio is silent", "verdict": "cannot tell"}
    assert r.stderr == "avsync: error: cannot measure: the audio is silent\n"

    r = _cli(["align", str(tmp_path / "gone.mp4"), "--audio", str(media / "ref.mp4"), "-o", str(tmp_path / "o.mp4"),
              "--json"])
    assert r.exit_code == 1
    assert json.loads(r.stdout) == {"ok": False, "error": f"no such file: '{tmp_path / 'gone.mp4'}'"}
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("avsync: error: no such file")

    r = _cli(["retarget", str(media / "dance.mp4"), str(media / "music.wav"), "-o", str(tmp_path / "o.mp4"),
              "--max-speed", "0.5", "--json"])
    assert r.exit_code == 1 and json.loads(r.stdout)["ok"] is False
    assert r.stderr.splitlines() == [f"avsync: error: {json.loads(r.stdout)['error']}"]

    r = _cli(["detect-offset", str(media / "clip.mp4"), "--json", "--bogus"])  # usage error, JSON asked
    assert r.exit_code == 2
    assert json.loads(r.stdout) == {"ok": False,
                                    "error": "no such option --bogus (try 'avsync detect-offset --help')"}
    for obj in (json.loads(r.stdout),):
        assert not unknown_keys(obj)
    assert not list(tmp_path.iterdir())


def test_cannot_tell_before_a_fix_carries_the_measurement(tmp_path: Path):
    """A clip measured as 'cannot tell' cannot be fixed without --shift-ms: JSON has both."""
    from tests.mediagen import make_avsynctest

    # A 500 ms shift searched within ±0.2 s on a flash every 1 s: the measurement is not confident.
    clip = make_avsynctest(str(tmp_path / "c.mp4"), seconds=3, fps=25, audio_shift=0.5, size="160x120")
    r = _cli(["detect-offset", clip, "--max-shift", "0.2", "--json"])
    measured = json.loads(r.stdout)
    if measured.get("verdict") != "cannot tell":
        pytest.skip(f"the clip was measured ({measured.get('verdict')}): no 'cannot tell' case here")
    r = _cli(["detect-offset", clip, "--max-shift", "0.2", "--json", "--fix", str(tmp_path / "f.mp4")])
    assert r.exit_code == 2
    obj = json.loads(r.stdout)
    assert obj["ok"] is False and obj["verdict"] == "cannot tell" and "--shift-ms" in obj["error"]
    assert "offset_ms" in obj and not (tmp_path / "f.mp4").exists()


# --------------------------------------------------------------------------- the direction in words


def test_describe_shift_states_the_direction():
    from avsync.types import describe_shift

    assert describe_shift(0.1) == "audio delayed by 100 ms"
    assert describe_shift(-0.1) == "audio moved 100 ms earlier"
    assert describe_shift(0.0004) == "audio left in place"


@pytest.mark.parametrize("shift,words", [("100", "audio delayed by 100 ms"),
                                          ("-40", "audio moved 40 ms earlier")])
def test_fix_says_which_way_the_audio_moved(media: Path, tmp_path: Path, shift: str, words: str):
    r = _cli(["detect-offset", str(media / "clip.mp4"), "--fix", str(tmp_path / "f.mp4"), "--shift-ms", shift])
    assert r.exit_code == 0, r.output
    text = " ".join(r.stdout.split())
    assert words in text and "shifted" not in text
    r = _cli(["detect-offset", str(media / "clip.mp4"), "--fix", str(tmp_path / "g.mp4"), "--shift-ms", shift,
              "--json"])
    fix = json.loads(r.stdout)["fix"]
    assert fix["shift_ms"] == pytest.approx(float(shift)) and fix["words"] == words
