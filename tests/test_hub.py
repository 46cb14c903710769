"""Checkpoint registry, download, cache and loading, against a local HTTP server only."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
from pathlib import Path

import pytest
import torch

from avsync import hub
from avsync.errors import ModelError
from tests.localserver import LocalServer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A served checkpoint, a temp registry naming it, and a temp cache."""
    served = tmp_path / "served"
    served.mkdir()
    ckpt = served / "tiny-linear.pt"
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 3)
    hub.save_checkpoint(ckpt, "alignnet", {"in": 4, "out": 3}, {"lr": 1e-3}, lin.state_dict(), {"loss": 0.5})
    server = LocalServer(served)
    registry = tmp_path / "registry.json"
    entry = {
        "name": "tiny-linear",
        "backend": "alignnet",
        "url": f"{server.url}/tiny-linear.pt",
        "sha256": _sha(ckpt),
        "size": ckpt.stat().st_size,
        "card": "model_cards/tiny-linear.md",
        "description": "test",
        "data": "nothing",
        "bundled": None,
    }
    registry.write_text(json.dumps([entry]))
    cache = tmp_path / "cache"
    monkeypatch.setenv("AVSYNC_REGISTRY", str(registry))
    monkeypatch.setenv("AVSYNC_CACHE", str(cache))
    monkeypatch.delenv("AVSYNC_MODEL_URL", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    yield {"server": server, "ckpt": ckpt, "registry": registry, "entry": entry, "lin": lin}
    server.stop()


def _write_registry(env, **changes) -> None:
    env["registry"].write_text(json.dumps([{**env["entry"], **changes}]))


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_download_verifies_and_reports_progress(env):
    calls = []
    path = hub.resolve("tiny-linear", progress=lambda s, d, t: calls.append((s, d, t)))
    assert path == hub.models_dir() / "tiny-linear.pt"
    assert path.read_bytes() == env["ckpt"].read_bytes()
    assert env["server"].requests == ["/tiny-linear.pt"]
    size = env["entry"]["size"]
    assert calls[0] == ("download", 0, size) and calls[-1] == ("download", size, size)
    assert _leftovers(path.parent) == ["tiny-linear.pt"]  # no temp file left behind


def test_cache_hit_needs_no_server(env):
    first = hub.resolve("tiny-linear")
    env["server"].stop()
    assert hub.resolve("tiny-linear") == first
    assert len(env["server"].requests) == 1


def test_corrupt_cache_is_detected_and_refetched(env, capsys):
    path = hub.fetch("tiny-linear")
    path.write_bytes(b"garbage" + path.read_bytes()[7:])
    ok, message = hub.verify("tiny-linear")
    assert not ok and "sha256 mismatch" in message
    again = hub.resolve("tiny-linear")
    assert _sha(again) == env["entry"]["sha256"]
    assert len(env["server"].requests) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fails its sha256 check" in err[0]
    assert hub.verify("tiny-linear")[0]


def test_wrong_registry_hash_leaves_nothing_in_cache(env):
    _write_registry(env, sha256="0" * 64)
    with pytest.raises(ModelError) as ei:
        hub.resolve("tiny-linear")
    msg = str(ei.value)
    assert "checksum mismatch for 'tiny-linear'" in msg and "0" * 64 in msg
    assert env["entry"]["sha256"] in msg and "registry is stale" in msg and "\n" not in msg
    assert _leftovers(hub.models_dir()) == []


def test_unreachable_url_is_one_line_model_error(env):
    _write_registry(env, url=f"http://127.0.0.1:{_free_port()}/tiny-linear.pt")
    with pytest.raises(ModelError) as ei:
        hub.resolve("tiny-linear")
    msg = str(ei.value)
    assert msg.startswith("cannot download 'tiny-linear' from http://127.0.0.1:")
    assert "AVSYNC_MODEL_URL" in msg and str(hub.models_dir()) in msg and "\n" not in msg
    assert _leftovers(hub.models_dir()) == []


def test_http_404_is_model_error(env):
    _write_registry(env, url=f"{env['server'].url}/missing.pt")
    with pytest.raises(ModelError, match="HTTP 404"):
        hub.resolve("tiny-linear")


def test_mirror_local_directory_and_base_url(env, tmp_path, monkeypatch):
    _write_registry(env, url="https://example.invalid/models/tiny-linear.pt")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "tiny-linear.pt").write_bytes(env["ckpt"].read_bytes())
    monkeypatch.setenv("AVSYNC_MODEL_URL", str(mirror))
    path = hub.resolve("tiny-linear")
    assert _sha(path) == env["entry"]["sha256"] and env["server"].requests == []

    path.unlink()
    monkeypatch.setenv("AVSYNC_MODEL_URL", mirror.as_uri())
    assert _sha(hub.resolve("tiny-linear")) == env["entry"]["sha256"]

    path.unlink()
    monkeypatch.setenv("AVSYNC_MODEL_URL", env["server"].url + "/")
    assert _sha(hub.resolve("tiny-linear")) == env["entry"]["sha256"]
    assert env["server"].requests == ["/tiny-linear.pt"]


def test_paths_tiny_and_unknown_names(env, tmp_path):
    assert hub.resolve(env["ckpt"]) == env["ckpt"]
    assert hub.resolve(str(env["ckpt"])) == env["ckpt"]
    assert hub.is_tiny(hub.TINY_TEST_MODEL) and not hub.is_tiny("tiny-linear")
    with pytest.raises(ModelError, match="built-in random test model"):
        hub.resolve("tiny-test")
    with pytest.raises(ModelError, match=r"unknown model 'nope'.*known: tiny-linear"):
        hub.resolve("nope")
    with pytest.raises(ModelError, match="checkpoint file not found"):
        hub.resolve(str(tmp_path / "absent.pt"))
    assert env["server"].requests == []


def test_bundled_checkpoint_is_verified_in_place(env):
    bundled = env["registry"].parent / "tiny-linear.pt"
    bundled.write_bytes(env["ckpt"].read_bytes())
    _write_registry(env, bundled="tiny-linear.pt", url=None)
    assert hub.resolve("tiny-linear") == bundled
    assert hub.list_models()[0]["cached"] is True
    bundled.write_bytes(b"x" * 10)
    with pytest.raises(ModelError, match="bundled checkpoint .* fails its sha256 check"):
        hub.resolve("tiny-linear")


def test_load_checkpoint_roundtrip(env):
    ckpt = hub.load_checkpoint("tiny-linear", backend="alignnet")
    assert ckpt["dims"] == {"in": 4, "out": 3} and ckpt["metrics"] == {"loss": 0.5}
    assert ckpt["format"] == hub.CHECKPOINT_FORMAT
    for k, v in env["lin"].state_dict().items():
        assert torch.equal(ckpt["state_dict"][k], v)
    with pytest.raises(ModelError, match="'alignnet' checkpoint, not 'syncnet'"):
        hub.load_checkpoint(env["ckpt"], backend="syncnet")


class Evil:
    """Stands for any non-tensor object a malicious pickle could carry."""

    def __reduce__(self):
        return (print, ("pwned",))


def test_load_checkpoint_refuses_arbitrary_objects(tmp_path, capsys):
    bad = tmp_path / "evil.pt"
    torch.save({"backend": "x", "dims": {}, "config": {}, "state_dict": {}, "metrics": {}, "e": Evil()}, bad)
    with pytest.raises(ModelError, match=r"refusing to load .*\(print; .*weights_only=True\)") as ei:
        hub.load_checkpoint(bad)
    assert "\n" not in str(ei.value)
    assert "pwned" not in capsys.readouterr().out


def test_load_checkpoint_rejects_bad_files(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ModelError, match="cannot load checkpoint") as ei:
        hub.load_checkpoint(junk)
    assert "\n" not in str(ei.value)
    truncated = tmp_path / "truncated.pt"
    hub.save_checkpoint(truncated, "x", {}, {}, {"w": torch.zeros(3)}, {})
    truncated.write_bytes(truncated.read_bytes()[:100])
    with pytest.raises(ModelError, match="cannot load checkpoint .*truncated.pt: ") as ei:
        hub.load_checkpoint(truncated)
    assert "\n" not in str(ei.value)
    partial = tmp_path / "partial.pt"
    torch.save({"backend": "x", "state_dict": {}}, partial)
    with pytest.raises(ModelError, match="missing dims, config, metrics"):
        hub.load_checkpoint(partial)


def test_save_checkpoint_converts_plain_values(tmp_path):
    import dataclasses

    import numpy as np

    @dataclasses.dataclass(frozen=True)
    class Dims:
        width: int = 8
        levels: tuple = (128, 64)

    out = hub.save_checkpoint(
        tmp_path / "sub" / "m.pt", "tae", Dims(), {"path": tmp_path}, {"w": torch.ones(2)},
        {"acc": np.float32(0.25)},
    )
    ckpt = hub.load_checkpoint(out)
    assert ckpt["dims"] == {"width": 8, "levels": [128, 64]}
    assert ckpt["config"] == {"path": str(tmp_path)} and ckpt["metrics"] == {"acc": 0.25}
    assert _leftovers(out.parent) == ["m.pt"]
    with pytest.raises(ModelError, match="cannot store config.fn"):
        hub.save_checkpoint(tmp_path / "n.pt", "tae", {}, {"fn": object()}, {}, {})
    assert not (tmp_path / "n.pt").exists()


def test_register_checkpoint(env, tmp_path, cli):
    reg = tmp_path / "new" / "registry.json"
    entry = hub.register_checkpoint(
        env["ckpt"], "mine", "alignnet", "model_cards/mine.md", data="my clips", bundle=True, registry=reg
    )
    assert entry["sha256"] == env["entry"]["sha256"] and entry["bundled"] == "mine.pt"
    assert json.loads(reg.read_text()) == [entry]
    assert hub.resolve("mine", registry=reg) == reg.parent / "mine.pt"
    r = cli("models", "register", str(env["ckpt"]), "--name", "two", "--backend", "alignnet",
            "--card", "model_cards/two.md", "--registry", str(reg))
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["name"] == "two"
    assert [e["name"] for e in hub.load_registry(reg)] == ["mine", "two"]
    with pytest.raises(ModelError, match="not 'syncnet'"):
        hub.register_checkpoint(env["ckpt"], "x", "syncnet", "model_cards/x.md", registry=reg)
    r = cli("models", "register", str(env["ckpt"]), "--name", "x", "--backend", "syncnet",
            "--card", "model_cards/x.md", "--registry", str(reg))
    assert r.exit_code == 1 and r.stderr.startswith("avsync: error: ") and "not 'syncnet'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert [e["name"] for e in hub.load_registry(reg)] == ["mine", "two"]


def test_published_files_are_world_readable(env, tmp_path):
    """Checkpoints, bundled copies and the registry are 0644 whatever the umask; no temp file
    is left beside them."""
    old = os.umask(0o077)
    try:
        saved = hub.save_checkpoint(tmp_path / "out" / "s.pt", "alignnet", {}, {}, {}, {})
        reg = tmp_path / "reg" / "registry.json"
        hub.register_checkpoint(env["ckpt"], "mine", "alignnet", "model_cards/mine.md", bundle=True, registry=reg)
        fetched = hub.fetch("tiny-linear")
    finally:
        os.umask(old)
    for p in (saved, reg, reg.parent / "mine.pt", fetched):
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p
    assert _leftovers(saved.parent) == ["s.pt"]
    assert _leftovers(reg.parent) == ["mine.pt", "registry.json"]
    assert _leftovers(fetched.parent) == ["tiny-linear.pt"]


def test_bad_registry_is_model_error(tmp_path):
    reg = tmp_path / "r.json"
    reg.write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        hub.load_registry(reg)
    reg.write_text(json.dumps([{"name": "a", "backend": "b", "sha256": "xyz", "size": 1}]))
    with pytest.raises(ModelError, match="sha256 must be 64"):
        hub.load_registry(reg)
    assert hub.load_registry(tmp_path / "absent.json") == []


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("AVSYNC_CACHE", str(tmp_path / "a"))
    assert hub.models_dir() == tmp_path / "a" / "models"
    monkeypatch.delenv("AVSYNC_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert hub.models_dir() == tmp_path / "x" / "avsync" / "models"


def test_package_registry_is_valid():
    entries = hub.load_registry(hub.DEFAULT_REGISTRY)
    assert isinstance(entries, list)
    for e in entries:
        if e["bundled"]:
            assert (hub.CHECKPOINTS_DIR / e["bundled"]).is_file()
        if e["card"]:
            assert (Path(__file__).resolve().parents[1] / e["card"]).is_file(), e["card"]


# ---------------------------------------------------------------------------- CLI


@pytest.fixture
def cli():
    from typer.testing import CliRunner

    import avsync.cli.models  # noqa: F401 - registers the `models` sub-app
    from avsync.cli._app import app

    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args))


def test_cli_list_json(env, cli):
    r = cli("models", "list", "--json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [(x["name"], x["cached"]) for x in rows] == [("tiny-linear", False)]
    hub.fetch("tiny-linear")
    rows = json.loads(cli("models", "list", "--json").stdout)
    assert rows[0]["cached"] is True and rows[0]["sha256"] == env["entry"]["sha256"]
    table = cli("models", "list")
    assert table.exit_code == 0 and "tiny-linear" in table.stdout and "nothing" in table.stdout


def test_cli_fetch_verify_path(env, cli):
    r = cli("models", "verify")
    assert r.exit_code == 0 and "not cached" in r.stdout
    r = cli("models", "fetch", "tiny-linear")
    assert r.exit_code == 0, r.output
    path = Path(r.stdout.strip())
    assert _sha(path) == env["entry"]["sha256"]
    assert cli("models", "path", "tiny-linear").stdout.strip() == str(path)
    r = cli("models", "verify")
    assert r.exit_code == 0 and "tiny-linear: ok" in r.stdout

    path.write_bytes(b"corrupt")
    r = cli("models", "verify")
    assert r.exit_code == 1 and "sha256 mismatch" in r.stderr
    r = cli("models", "verify", "tiny-linear")
    assert r.exit_code == 1 and len(r.stderr.strip().splitlines()) == 1

    r = cli("models", "fetch", "nope")
    assert r.exit_code == 1 and r.stderr.startswith("avsync: error: unknown model 'nope'")
