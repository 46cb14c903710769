"""The Ray executor on a real local Ray cluster bound to 127.0.0.1 (skipped without ray).

One cluster serves the whole module (Ray takes seconds to start): the in-process runs reuse it
(``ray.is_initialized()``) and the CLI runs reach it through ``RAY_ADDRESS``. Its workers find
the test doubles through ``PYTHONPATH``.
"""

from __future__ import annotations

import builtins
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

# Read by Ray when it is imported: every service of the local cluster binds to loopback.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
ray = pytest.importorskip("ray")

from avsync import batch as b  # noqa: E402
from tests.test_batch import fake_cli  # noqa: E402 - registers the `fake` command (tests.test_batch:fake_runner)

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    env = dict(os.environ, AVSYNC_NO_PROGRESS="1", PYTHONPATH=str(ROOT))
    for k in ("AVSYNC_DEBUG", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"):  # the CLI must keep loopback on its own
        env.pop(k, None)
    return env


def _records(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def dying_runner(inputs: list[Path], output: Path | None, options: dict, overwrite: bool) -> dict:
    """Copy input 0 to ``output`` atomically, but SIGKILL this worker half-way through the temp
    file; with option ``once`` (a marker path) only the first time."""
    from avsync.outputs import check_output, write_atomic

    assert output is not None
    check_output(output, overwrite)
    data = inputs[0].read_bytes()
    marker = options.get("once")

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            if not marker or not os.path.exists(marker):
                if marker:
                    Path(marker).touch()
                os.kill(os.getpid(), signal.SIGKILL)
            f.write(data[len(data) // 2 :])

    write_atomic(output, write)
    return {"bytes": len(data)}


b.register_command(b.CommandSpec("die", ("video", "audio"), "required", "tests.test_batch_ray:dying_runner"))


def test_cli_starts_a_local_cluster_on_loopback(takes: Path, tmp_path: Path) -> None:
    """No RAY_ADDRESS: `avsync batch --executor ray` starts its own cluster on 127.0.0.1 (before
    the module's cluster exists), runs the items and stops it; JSON lines alone on stdout."""
    out = tmp_path / "out"
    out.mkdir()
    rows = [{"id": "ok", "command": "fake", "video": str(takes / "take00.mp4"), "output": str(out / "ok.mp4")},
            {"id": "dies", "command": "fake", "video": str(takes / "take01.mp4"), "output": str(out / "dies.mp4"),
             "crash": True}]
    m = _write_jsonl(tmp_path / "m.jsonl", [{**r, "audio": str(takes / "song.wav")} for r in rows])
    env = _env()
    env.pop("RAY_ADDRESS", None)
    p = subprocess.run(fake_cli("batch", str(m), "--executor", "ray", "--jobs", "2"), env=env, capture_output=True,
                       text=True, timeout=180)
    assert p.returncode == 1, p.stderr
    recs = {r["id"]: r for r in map(json.loads, p.stdout.splitlines())}
    assert recs["ok"]["status"] == "ok" and (out / "ok.mp4").read_bytes() == (takes / "take00.mp4").read_bytes()
    assert recs["dies"]["error"] == "the Ray worker died while running this item (WorkerCrashedError; tried 2 times)"
    *ray_lines, last = p.stderr.splitlines()
    assert last.startswith("avsync: error: 1 of 2 items failed"), p.stderr
    assert ray_lines and all("Worker IP address: 127.0.0.1 " in ln for ln in ray_lines), p.stderr


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 2-CPU Ray cluster on 127.0.0.1 for the module; its address (for RAY_ADDRESS).

    Its workers keep the environment they start with: a feature cache of their own.
    """
    saved = {k: os.environ.get(k) for k in ("RAY_ADDRESS", "PYTHONPATH", "AVSYNC_CACHE")}
    os.environ.pop("RAY_ADDRESS", None)
    os.environ["AVSYNC_CACHE"] = str(tmp_path_factory.mktemp("ray-cache"))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), saved["PYTHONPATH"]) if p)
    ctx = ray.init(address=None, include_dashboard=False, _node_ip_address="127.0.0.1", num_cpus=2,
                   object_store_memory=100 * 1024**2, log_to_driver=False, configure_logging=False)
    address = ctx.address_info["address"]
    assert address.startswith("127.0.0.1:"), address
    yield address
    ray.shutdown()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def takes(tmp_path: Path) -> Path:
    d = tmp_path / "takes"
    d.mkdir()
    for i in range(5):
        (d / f"take{i:02d}.mp4").write_bytes(os.urandom(2000) + bytes([i]))
    (d / "song.wav").write_bytes(b"RIFF....song")
    return d


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.mediagen import make_batch_clips

    return make_batch_clips(tmp_path_factory.mktemp("clips"))


def _untimed(obj: object) -> object:
    """``obj`` without its timing fields (``seconds``, ``stage_seconds`` at any depth)."""
    if isinstance(obj, dict):
        return {k: _untimed(v) for k, v in obj.items() if k not in ("seconds", "stage_seconds")}
    if isinstance(obj, list):
        return [_untimed(v) for v in obj]
    return obj


def test_mixed_real_manifest_gives_the_local_pools_records(cluster: str, clips: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Real align and detect-offset on good and bad files: Ray's records equal the pool's
    (each computed from scratch: the pool's workers get a cache of their own)."""
    monkeypatch.setenv("AVSYNC_CACHE", str(tmp_path / "pool-cache"))
    out = tmp_path / "out"
    out.mkdir()
    rows = [
        {"id": "al0", "command": "align", "video": str(clips / "take1.mp4"), "audio": str(clips / "take0.mp4"),
         "output": str(out / "al0.mp4"), "map": str(out / "al0.json")},
        {"id": "al-bad", "command": "align", "video": str(clips / "bad.mp4"), "audio": str(clips / "take0.mp4"),
         "output": str(out / "al-bad.mp4")},
        {"id": "fix1", "command": "detect-offset", "clip": str(clips / "take1.mp4"), "output": str(out / "fix1.mp4")},
        {"id": "ok0", "command": "detect-offset", "clip": str(clips / "take0.mp4")},
        {"id": "gone", "command": "detect-offset", "clip": str(clips / "gone.mp4")},
        {"id": "opt", "command": "detect-offset", "clip": str(clips / "take0.mp4"), "window": "soon"},
        {"id": "nope", "command": "nope", "clip": str(clips / "take0.mp4")},
    ]
    items = b.read_manifest(_write_jsonl(tmp_path / "m.jsonl", rows))
    runs = {}
    for executor in ("ray", "local"):
        for p in out.iterdir():
            p.unlink()
        results = tmp_path / f"{executor}.jsonl"
        summary = b.run_batch(items, jobs=2, results=results, executor=executor)
        assert (summary.ok, summary.failed, summary.interrupted) == (3, 4, False)
        runs[executor] = {r["id"]: _untimed(r) for r in _records(results)}
        assert sorted(p.name for p in out.iterdir()) == ["al0.json", "al0.mp4", "fix1.mp4"]
    assert runs["ray"] == runs["local"]
    assert {k for k, r in runs["ray"].items() if r["status"] == "ok"} == {"al0", "fix1", "ok0"}
    assert runs["ray"]["fix1"]["result"]["fix"]["output"] == str(out / "fix1.mp4")


def test_a_killed_worker_leaves_no_partial_output_and_its_item_is_recorded(
        cluster: str, takes: Path, tmp_path: Path) -> None:
    """SIGKILL half-way through writing: retried once; dies twice -> recorded failed; the
    temp files are gone either way. A hung item is cut by the timeout."""
    out = tmp_path / "out"
    out.mkdir()
    common = {"audio": str(takes / "song.wav")}
    rows = [
        {"id": "good", "command": "fake", "video": str(takes / "take00.mp4"), "output": str(out / "good.mp4")},
        {"id": "bad", "command": "fake", "video": str(takes / "take01.mp4"), "output": str(out / "bad.mp4"),
         "fail": True},
        {"id": "dies", "command": "die", "video": str(takes / "take02.mp4"), "output": str(out / "dies.mp4")},
        {"id": "dies-once", "command": "die", "video": str(takes / "take03.mp4"), "output": str(out / "once.mp4"),
         "once": str(tmp_path / "died-once")},
        {"id": "hangs", "command": "fake", "video": str(takes / "take04.mp4"), "output": str(out / "hangs.mp4"),
         "sleep": 60},
    ]
    items = b.read_manifest(_write_jsonl(tmp_path / "m.jsonl", [{**common, **r} for r in rows]))
    t0 = time.monotonic()
    # 8 s: room for a loaded machine (at 3 s a fresh-clone run beside other jobs cut a good item)
    summary = b.run_batch(items, jobs=2, results=tmp_path / "r.jsonl", executor="ray", timeout=8)
    assert time.monotonic() - t0 < 50  # the hung item was cut, not waited for
    recs = {r["id"]: r for r in _records(tmp_path / "r.jsonl")}
    assert sorted(recs) == ["bad", "dies", "dies-once", "good", "hangs"]
    assert (summary.ok, summary.failed) == (2, 3)
    assert recs["good"]["status"] == "ok" and recs["dies-once"]["status"] == "ok"
    assert (out / "once.mp4").read_bytes() == (takes / "take03.mp4").read_bytes()
    assert recs["bad"]["error"] == "take01.mp4: this take is not usable"
    assert recs["dies"]["error"] == ("the Ray worker died while running this item (WorkerCrashedError; "
                                     "tried 2 times)")
    assert recs["dies"]["error_type"] == "WorkerError"
    assert recs["hangs"]["error"] == "timed out after 8 s" and recs["hangs"]["error_type"] == "WorkerError"
    assert sorted(p.name for p in out.iterdir()) == ["good.mp4", "once.mp4"]  # no .<stem>.* temp left
    time.sleep(1.5)  # Ray's driver reports the dead workers from a thread of its own
    assert builtins.print.__module__ == "builtins"  # Ray did not swap print for its tqdm-safe one


def test_cli_through_ray_address_sigterm_then_resume(cluster: str, takes: Path, tmp_path: Path) -> None:
    """`avsync batch --executor ray` with RAY_ADDRESS. SIGTERM mid-run: the item being written
    (t2) leaves no temp file and no record; the item whose output is already in place (t3, busy
    after its write, like align's map and plot) finishes and is recorded. --resume redoes only
    what is missing or failed. What Ray prints about a worker that died (t4) goes to stderr,
    never into the JSON lines on stdout."""
    out = tmp_path / "out"
    out.mkdir()
    log = tmp_path / "log.txt"

    def manifest(*rows_options: dict) -> Path:
        rows = [{"id": f"t{i}", "command": "fake", "video": str(takes / f"take{i:02d}.mp4"),
                 "audio": str(takes / "song.wav"), "output": str(out / f"t{i}.mp4"), "log": str(log), **o}
                for i, o in enumerate(rows_options)]
        return _write_jsonl(tmp_path / "m.jsonl", rows)

    r = tmp_path / "r.jsonl"
    env = dict(_env(), RAY_ADDRESS=cluster)
    m = manifest({}, {"fail": True}, {"sleep": 60}, {"after": 8})
    p = subprocess.Popen(fake_cli("batch", str(m), "--executor", "ray", "--results", str(r)), env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def ready() -> bool:
        started = log.read_text() if log.exists() else ""
        return (f"start {out / 't2.mp4'}" in started and (out / "t3.mp4").exists()
                and r.exists() and len(_records(r)) == 2)

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not ready():
        time.sleep(0.05)
    assert ready()
    p.send_signal(signal.SIGTERM)
    stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == 130, stderr
    assert stdout == "" and stderr.splitlines()[-1].startswith("avsync: interrupted after"), stderr
    assert {x["id"]: x["status"] for x in _records(r)} == {"t0": "ok", "t1": "error", "t3": "ok"}
    assert sorted(os.listdir(out)) == ["t0.mp4", "t3.mp4"]  # t2's half-written temp file is gone

    log.unlink()
    m = manifest({}, {"fail": True}, {}, {"after": 8}, {"crash": True})
    p2 = subprocess.run(fake_cli("batch", str(m), "--executor", "ray", "--results", str(r), "--resume"),
                        env=env, capture_output=True, text=True, timeout=120)
    assert p2.returncode == 1 and p2.stdout == "", p2.stderr
    *ray_lines, last = p2.stderr.splitlines()
    assert last.startswith("avsync: error: 2 of 5 items failed (1 ok, 2 failed, 2 skipped of 5;"), p2.stderr
    assert ray_lines and all("(raylet)" in ln for ln in ray_lines), p2.stderr  # Ray's word on t4's worker
    assert sorted(line.split()[1] for line in log.read_text().splitlines()) == [
        str(out / f"t{i}.mp4") for i in (1, 2, 4, 4)]  # t4 dies at once and is retried once
    assert sorted(os.listdir(out)) == ["t0.mp4", "t2.mp4", "t3.mp4"]
    assert (out / "t2.mp4").read_bytes() == (takes / "take02.mp4").read_bytes()
    assert sorted((x["id"], x["status"]) for x in _records(r)) == [
        ("t0", "ok"), ("t1", "error"), ("t1", "error"), ("t2", "ok"), ("t3", "ok"), ("t4", "error")]


def test_an_unreachable_ray_address_is_one_line(takes: Path, tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a loopback port where nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    m = _write_jsonl(tmp_path / "m.jsonl", [{"command": "fake", "video": str(takes / "take00.mp4"),
                                             "audio": str(takes / "song.wav"), "output": str(tmp_path / "o.mp4")}])
    address = f"127.0.0.1:{port}"
    p = subprocess.run(fake_cli("batch", str(m), "--executor", "ray"), env=dict(_env(), RAY_ADDRESS=address),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr == f"avsync: error: cannot reach the Ray cluster at RAY_ADDRESS={address}: Connection refused\n"
    assert not (tmp_path / "o.mp4").exists()
