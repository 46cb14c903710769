"""Every command on the malformed-input corpus (tests/malformed.py), and interruptions.

For each case and each role it can play (see ``malformed.ROLES``) a command must either
succeed sensibly (only where the case allows it) or exit non-zero with exactly one line on
stderr, ``avsync: error: ...``, that is not an internal error; it must leave no output (nor a
temporary file) behind and must not modify its inputs.

The default run covers every case that must fail plus a representative set of odd-but-valid
cases, in process (typer's CliRunner), and a few real subprocesses (which also see what
C libraries print on fd 2). ``-m slow`` runs every case through every command.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.malformed import ANY, FAIL, Case, build_corpus, restore_permissions, sha256

ROOT = Path(__file__).resolve().parents[1]

# (command, role): how the corpus file is handed to the command; P is a good partner clip.
USES: dict[tuple[str, str], Callable[[str, str, str], list[str]]] = {
    ("detect-offset", "clip"): lambda case, partner, out: ["detect-offset", case, "--json"],
    ("align", "video"): lambda case, partner, out: ["align", case, "--audio", partner, "-o", out, "--json"],
    ("align", "audio"): lambda case, partner, out: ["align", partner, "--audio", case, "-o", out, "--json"],
    ("retarget", "video"): lambda case, partner, out: ["retarget", case, partner, "-o", out, "--json"],
    ("retarget", "audio"): lambda case, partner, out: ["retarget", partner, case, "-o", out, "--json"],
}

# The odd-but-valid cases of the default run (the rest are under -m slow).
REPRESENTATIVE = {"truncated_mkv", "corrupt_mid_mp4", "one_frame", "silence", "no_audio", "no_video",
                  "short_audio", "vfr"}


def _registered() -> set[str]:
    from avsync.cli._app import _load_commands, app

    _load_commands()
    names = set()
    for c in app.registered_commands:
        names.add(c.name or c.callback.__name__.replace("_", "-"))
    return names


def _slow_only(request: pytest.FixtureRequest) -> None:
    """The project does not deselect ``slow`` by default: these run only when asked (-m slow)."""
    if "slow" not in (request.config.getoption("markexpr") or "") or "not slow" in request.config.getoption(
            "markexpr"):
        pytest.skip("slow: run with -m slow")


def _need(command: str) -> None:
    if command not in _registered():
        pytest.skip(f"the {command} command has not landed yet")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Case], Path]:
    from tests.malformed import _clip

    root = tmp_path_factory.mktemp("corpus")
    cases = build_corpus(root)
    partner = _clip(root / "_partner.mp4", seconds=3.0)
    yield root, cases, partner
    restore_permissions(root)


def _snapshot(root: Path) -> dict[str, str | None]:
    return {p.name: sha256(p) for p in root.iterdir() if p.name != "locked"}


def check_result(case: Case, role: str, command: str, code: int, stdout: str, stderr: str, out_dir: Path,
                 out: Path) -> list[str]:
    """What is wrong with one run (empty list: nothing)."""
    problems = []
    left = sorted(p.name for p in out_dir.iterdir())
    if code == 0:
        if case.expect[role] == FAIL:
            problems.append("succeeded on an input it must refuse")
        if "Traceback" in stderr:
            problems.append("traceback on stderr")
        if command == "detect-offset":
            try:
                obj = json.loads(stdout)
                assert isinstance(obj.get("offset_ms"), (int, float))
            except Exception:  # noqa: BLE001
                problems.append(f"exit 0 without a JSON measurement on stdout: {stdout[:100]!r}")
            if left:
                problems.append(f"wrote files it was not asked for: {left}")
        else:
            if left != [out.name]:
                problems.append(f"exit 0 but the output directory holds {left}")
            else:
                problems.extend(_check_media(out))
    else:
        lines = stderr.splitlines()
        if len(lines) != 1:
            problems.append(f"exit {code} with {len(lines)} stderr lines: {stderr[-300:]!r}")
        elif not lines[0].startswith("avsync: error: "):
            problems.append(f"exit {code}, stderr is not one 'avsync: error:' line: {lines[0][:200]!r}")
        if "Traceback" in stderr:
            problems.append("traceback on stderr")
        if "internal error" in stderr:
            problems.append(f"internal error: {stderr.strip()[-200:]}")
        if left:
            problems.append(f"exit {code} but left {left} behind")
    return problems


def _check_media(path: Path) -> list[str]:
    import av

    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                return ["the output has no video stream"]
            n = sum(1 for _ in c.decode(video=0))
            return [] if n > 0 else ["the output has no decodable frame"]
    except Exception as e:  # noqa: BLE001
        return [f"the output does not decode: {e}"]


def _run_inprocess(args: list[str]) -> tuple[int, str, str]:
    from typer.testing import CliRunner

    from avsync.cli._app import app

    res = CliRunner(env={"AVSYNC_NO_PROGRESS": "1"}).invoke(app, args)
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        return 99, res.stdout, f"uncaught {type(res.exception).__name__}: {res.exception}"
    return res.exit_code, res.stdout, res.stderr


def _matrix(corpus: tuple[Path, list[Case], Path], tmp_path: Path, command: str, role: str,
            select: Callable[[Case], bool]) -> None:
    _need(command)
    root, cases, partner = corpus
    use = USES[(command, role)]
    report = []
    ran = 0
    for case in cases:
        if case.skip or not select(case):
            continue
        out_dir = tmp_path / f"out_{case.name}"
        out_dir.mkdir()
        out = out_dir / "out.mp4"
        before = _snapshot(root)
        code, stdout, stderr = _run_inprocess(use(str(case.path), str(partner), str(out)))
        ran += 1
        problems = check_result(case, role, command, code, stdout, stderr, out_dir, out)
        after = _snapshot(root)
        if after != before:
            changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
            problems.append(f"files beside the inputs changed or appeared: {changed}")
        shutil.rmtree(out_dir)
        report += [f"{case.name} ({case.note}): {p}" for p in problems]
    assert ran > 0
    assert not report, f"{command} with the case as {role}:\n  " + "\n  ".join(report)


def _default_selection(role: str) -> Callable[[Case], bool]:
    return lambda c: c.expect[role] == FAIL or c.name in REPRESENTATIVE


def test_corpus_is_big_and_varied(corpus: tuple[Path, list[Case], Path]) -> None:
    root, cases, _ = corpus
    assert len(cases) >= 30
    assert len({c.name for c in cases}) == len(cases)
    for role in ("video", "audio", "clip"):
        assert {c.expect[role] for c in cases} == {FAIL, ANY}
    skipped = [c for c in cases if c.skip]
    assert all(c.name == "no_permission" for c in skipped)  # only the root-only case may skip


@pytest.mark.parametrize(("command", "role"), list(USES), ids=[f"{c}-{r}" for c, r in USES])
def test_corpus_default(corpus, tmp_path: Path, command: str, role: str) -> None:
    """Every must-fail case and the representative odd ones, in process."""
    _matrix(corpus, tmp_path, command, role, _default_selection(role))


@pytest.mark.slow
@pytest.mark.parametrize(("command", "role"), list(USES), ids=[f"{c}-{r}" for c, r in USES])
def test_corpus_full(corpus, tmp_path: Path, command: str, role: str, request: pytest.FixtureRequest) -> None:
    """Every case through every command and role."""
    _slow_only(request)
    _matrix(corpus, tmp_path, command, role, lambda c: True)


def test_no_permission_case(corpus) -> None:
    root, cases, _ = corpus
    case = next(c for c in cases if c.name == "no_permission")
    if case.skip:
        pytest.skip(case.skip)
    for command, role in USES:
        if case.expect[role] != FAIL or command not in _registered():
            continue
        code, _, stderr = _run_inprocess(USES[(command, role)](str(case.path), str(root / "_partner.mp4"),
                                                                str(root / "o.mp4")))
        assert code != 0 and len(stderr.splitlines()) == 1 and "internal error" not in stderr


@pytest.mark.parametrize("command", ["align", "retarget", "detect-offset"])
def test_output_directory_missing_or_same_as_input(corpus, tmp_path: Path, command: str) -> None:
    _need(command)
    root, _, partner = corpus
    good = root / "_good.mp4"
    before = _snapshot(root)
    missing = tmp_path / "no" / "such" / "dir" / "out.mp4"
    args = {
        "align": ["align", str(good), "--audio", str(partner), "-o", str(missing)],
        "retarget": ["retarget", str(good), str(partner), "-o", str(missing)],
        "detect-offset": ["detect-offset", str(good), "--fix", str(missing)],
    }[command]
    code, _, stderr = _run_inprocess(args)
    assert code != 0 and stderr.count("\n") == 1 and stderr.startswith("avsync: error: ")
    assert "does not exist" in stderr
    assert not (tmp_path / "no").exists()
    same = [str(good) if a == str(missing) else a for a in args]
    code, _, stderr = _run_inprocess(same + ["--overwrite"])
    assert code != 0 and stderr.count("\n") == 1 and stderr.startswith("avsync: error: ")
    assert _snapshot(root) == before


# --------------------------------------------------------------------------- real processes


def _env() -> dict[str, str]:
    env = dict(os.environ, AVSYNC_NO_PROGRESS="1", PYTHONPATH=str(ROOT))
    env.pop("AVSYNC_DEBUG", None)
    return env


SUBPROCESS_CASES = ["text_as_mp4", "corrupt_mid_mp4"]


@pytest.mark.parametrize(("command", "role"), [("detect-offset", "clip"), ("align", "video"),
                                               ("retarget", "audio")])
def test_corpus_subprocess_subset(corpus, tmp_path: Path, command: str, role: str) -> None:
    """A real process: nothing else reaches fd 2 (C libraries, mediapipe) besides the one line."""
    _subprocess_matrix(corpus, tmp_path, command, role, SUBPROCESS_CASES)


@pytest.mark.slow
@pytest.mark.parametrize(("command", "role"), list(USES), ids=[f"{c}-{r}" for c, r in USES])
def test_corpus_subprocess_full(corpus, tmp_path: Path, command: str, role: str,
                                request: pytest.FixtureRequest) -> None:
    """Every case, every command, each in its own process."""
    _slow_only(request)
    _subprocess_matrix(corpus, tmp_path, command, role, [c.name for c in corpus[1] if not c.skip])


def _subprocess_matrix(corpus, tmp_path: Path, command: str, role: str, names: list[str]) -> None:
    _need(command)
    root, cases, partner = corpus
    by_name = {c.name: c for c in cases}
    report = []
    for name in names:
        case = by_name[name]
        out_dir = tmp_path / name
        out_dir.mkdir()
        out = out_dir / "out.mp4"
        before = _snapshot(root)
        p = subprocess.run([sys.executable, "-m", "avsync", *USES[(command, role)](str(case.path), str(partner),
                                                                                    str(out))],
                           env=_env(), capture_output=True, text=True, timeout=300)
        problems = check_result(case, role, command, p.returncode, p.stdout, p.stderr, out_dir, out)
        if _snapshot(root) != before:
            problems.append("inputs changed")
        report += [f"{name}: {x}" for x in problems]
    assert not report, "\n  ".join(report)


@pytest.mark.parametrize("full", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["default", "full"])
def test_batch_on_the_corpus(corpus, tmp_path: Path, full: bool, request: pytest.FixtureRequest) -> None:
    """One batch process over the corpus (detect-offset): one clear record per case, exit 1."""
    _need("detect-offset")
    if full:
        _slow_only(request)
    root, cases, _ = corpus
    chosen = [c for c in cases if not c.skip and (full or c.expect["clip"] == FAIL
                                                  or c.name in ("corrupt_mid_mp4", "silence"))]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"id": c.name, "command": "detect-offset", "clip": str(c.path)}) + "\n"
                                for c in chosen))
    before = _snapshot(root)
    p = subprocess.run([sys.executable, "-m", "avsync", "batch", str(manifest), "--jobs", "2", "--results",
                        str(tmp_path / "r.jsonl")], env=_env(), capture_output=True, text=True, timeout=600)
    assert p.returncode == 1, p.stderr
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("avsync: error: ") and p.stdout == ""
    recs = {r["id"]: r for r in map(json.loads, (tmp_path / "r.jsonl").read_text().splitlines())}
    assert set(recs) == {c.name for c in chosen}
    bad = []
    for c in chosen:
        r = recs[c.name]
        if c.expect["clip"] == FAIL and r["status"] != "error":
            bad.append(f"{c.name}: succeeded")
        if r["status"] == "error" and (not r["error"] or "\n" in r["error"] or "internal error" in r["error"]):
            bad.append(f"{c.name}: {r['error']!r}")
    assert not bad, "\n".join(bad)
    assert _snapshot(root) == before
    assert sorted(q.name for q in tmp_path.iterdir()) == ["m.jsonl", "r.jsonl"]


# --------------------------------------------------------------------------- interruption


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.malformed import _clip

    d = tmp_path_factory.mktemp("long")
    return _clip(d / "long.mp4", seconds=12.0, fps=25)


def _interrupt_when_writing(args: list[str], out_dir: Path, sig: int, cwd: Path,
                            limit: float = 240) -> tuple[int, str, str, bool]:
    """Start ``avsync args``; send ``sig`` once a temporary output appears in ``out_dir``."""
    p = subprocess.Popen([sys.executable, "-m", "avsync", *args], cwd=cwd, env=_env(), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    caught = False
    t_end = time.monotonic() + limit
    while p.poll() is None and time.monotonic() < t_end:
        if any(q.name.startswith(".") for q in out_dir.iterdir()):
            p.send_signal(sig)
            caught = True
            break
        time.sleep(0.005)
    if not caught and p.poll() is None:
        p.kill()
    stdout, stderr = p.communicate(timeout=60)
    return p.returncode, stdout, stderr, caught


@pytest.mark.parametrize("sig", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)],
                         ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("command", ["align", "detect-offset", "retarget"])
def test_signal_mid_render_leaves_no_partial_output(long_clip: Path, tmp_path: Path, command: str, sig: int,
                                                   request: pytest.FixtureRequest) -> None:
    _need(command)
    if sig == signal.SIGINT:  # the handling is shared with SIGTERM (turned into KeyboardInterrupt)
        _slow_only(request)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "out.mp4"
    args = {
        "align": ["align", str(long_clip), "--audio", str(long_clip), "-o", str(out)],
        "retarget": ["retarget", str(long_clip), str(long_clip), "-o", str(out)],
        "detect-offset": ["detect-offset", str(long_clip), "--fix", str(out), "--shift-ms", "40"],
    }[command]
    before = sha256(long_clip)
    code, _, stderr, caught = _interrupt_when_writing(args, out_dir, sig, tmp_path)
    if not caught:
        pytest.fail(f"{command} never started writing (exit {code}): {stderr[-300:]}")
    assert code != 0, "the command finished although it was interrupted while writing"
    assert list(out_dir.iterdir()) == [], "a partial output was left behind"
    assert "Traceback" not in stderr
    assert stderr.splitlines()[-1:] == ["avsync: interrupted"], stderr[-300:]
    assert sha256(long_clip) == before


def test_batch_sigterm_mid_render_leaves_no_partial_output(long_clip: Path, tmp_path: Path) -> None:
    _need("detect-offset")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    m = tmp_path / "m.jsonl"
    m.write_text("".join(json.dumps({"command": "detect-offset", "clip": str(long_clip),
                                     "output": str(out_dir / f"fixed{i}.mp4")}) + "\n" for i in range(4)))
    code, stdout, stderr, caught = _interrupt_when_writing(
        ["batch", str(m), "--jobs", "2", "--results", str(tmp_path / "r.jsonl")], out_dir, signal.SIGTERM, tmp_path)
    assert caught, stderr
    assert code == 130 and stderr.startswith("avsync: interrupted") and stderr.count("\n") == 1
    done = [json.loads(ln) for ln in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert not any(q.name.startswith(".") for q in out_dir.iterdir())
    assert sorted(q.name for q in out_dir.iterdir()) == sorted(Path(r["output"]).name for r in done
                                                               if r["status"] == "ok")
