"""Every learned backend end to end with its shipped checkpoint fetched through the hub.

A registry like the package's, but with no bundled files: each entry's URL points at a
127.0.0.1 HTTP server serving copies of the shipped checkpoints, and the model cache starts
empty. ``detect-offset`` and ``align`` then have to download, sha256-verify and load the
checkpoint before they run. A tampered download is one error line and leaves no file behind.
With ../shared/media/real present, ``syncnet``, ``avmatch``, ``tae`` and ``avst`` also fetch
their lip checkpoints for a real face.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from avsync import hub
from avsync.backends import get_backend
from tests.localserver import LocalServer
from tests.mediagen import make_avsynctest, random_features

CKPT_DIR = Path(hub.__file__).resolve().parent / "checkpoints"
REAL = Path(__file__).resolve().parents[1].parent / "shared" / "media" / "real"
REAL_FACE = "VisualVoice__noisy_restaurant.mp4"  # check part: never trained on

# backend -> the registry entry it loads on footage without a face (motion features)
BACKENDS = {"alignnet": "alignnet-motion", "avmatch": "avmatch-motion", "avst": "avst-motion",
            "tae": "tae-motion", "wlos": "wlos-motion", "syncnet": "syncnet-motion",
            "syncnet-dtw": "syncnet-motion"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The shipped checkpoints behind a local server and a registry naming only URLs."""
    root = tmp_path_factory.mktemp("hub-served")
    files = root / "files"
    files.mkdir()
    server = LocalServer(files)
    entries = []
    for e in hub.load_registry():
        if not str(e.get("bundled") or "").endswith(".pt"):
            continue
        shutil.copy(CKPT_DIR / e["bundled"], files / e["bundled"])
        entries.append({**e, "url": f"{server.url}/{e['bundled']}", "bundled": None})
    registry = root / "registry.json"
    registry.write_text(json.dumps(entries))
    clip = Path(make_avsynctest(str(root / "clip.mp4"), seconds=4.0, audio_shift=0.2))
    yield {"server": server, "files": files, "registry": registry, "entries": {e["name"]: e for e in entries},
           "clip": clip}
    server.stop()


def _env(served: dict[str, Any], cache: Path, registry: Path | None = None) -> dict[str, str]:
    env = {**os.environ, "AVSYNC_REGISTRY": str(registry or served["registry"]), "AVSYNC_CACHE": str(cache),
           "OMP_NUM_THREADS": "1"}
    env.pop("AVSYNC_MODEL_URL", None)
    env.pop("XDG_CACHE_HOME", None)
    return env


def _avsync(env: dict[str, str], *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "avsync", *map(str, args)], capture_output=True, text=True,
                          timeout=600, env=env)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_served_registry_names_every_learned_backend(served):
    assert {e["backend"] for e in served["entries"].values()} >= {"alignnet", "avmatch", "avst", "tae", "wlos",
                                                                  "syncnet"}
    assert set(BACKENDS.values()) | {"syncnet-lips", "avmatch-lips", "tae-lips", "avst-lips"} <= set(served["entries"])


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_detect_offset_and_align_fetch_verify_and_run(backend, served, tmp_path):
    cache = tmp_path / "cache"
    env = _env(served, cache)
    name = BACKENDS[backend]
    entry = served["entries"][name]
    before = len(served["server"].requests)

    r = _avsync(env, "detect-offset", served["clip"], "--backend", backend, "--device", "cpu",
                "--max-shift", "0.5", "--json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["backend"] == backend and abs(got["offset_ms"]) <= 500 + 1e-6 and 0.0 <= got["confidence"] <= 1.0
    cached = cache / "models" / f"{entry['name']}.pt"
    assert cached.is_file() and _sha(cached) == entry["sha256"], "downloaded into the cache and verified"
    assert f"/{Path(entry['url']).name}" in served["server"].requests[before:]

    out = tmp_path / "out.mp4"
    r = _avsync(env, "align", served["clip"], "--audio", served["clip"], "-o", out, "--backend", backend,
                "--device", "cpu", "--max-shift", "0.5", "--sync-by", "picture", "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["backend"] == backend and summary["sync_by"] == "picture" and summary["n_out"] == 100
    assert out.is_file() and out.stat().st_size > 0
    # the second command used the verified cache: no second download
    assert served["server"].requests[before:].count(f"/{Path(entry['url']).name}") == 1


def test_a_tampered_download_is_one_error_line_and_leaves_nothing(served, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    name = BACKENDS["wlos"]
    entry = served["entries"][name]
    data = bytearray((served["files"] / Path(entry["url"]).name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / Path(entry["url"]).name).write_bytes(bytes(data))
    server = LocalServer(bad)
    try:
        registry = tmp_path / "registry.json"
        registry.write_text(json.dumps([{**entry, "url": f"{server.url}/{Path(entry['url']).name}"}]))
        cache = tmp_path / "cache"
        r = _avsync(_env(served, cache, registry), "detect-offset", served["clip"], "--backend", "wlos",
                    "--device", "cpu", "--max-shift", "0.5")
    finally:
        server.stop()
    assert r.returncode != 0 and "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("avsync: error: ") and "checksum mismatch" in last
    models = cache / "models"
    assert not models.exists() or not any(models.iterdir())


def test_avmatch_picks_its_lip_network_for_a_tracked_face_and_motion_otherwise():
    entry = hub.get_entry("avmatch-lips")
    assert entry["backend"] == "avmatch" and hub.sha256_file(hub.model_path("avmatch-lips")) == entry["sha256"]
    card = Path(__file__).resolve().parents[1] / entry["card"]
    assert card.is_file() and entry["sha256"] in card.read_text(encoding="utf-8")
    be = get_backend("avmatch", device="cpu")
    o = be.offset(*random_features(lips=True), 0.6)
    assert be.kind == "lipshape" and be.dims.visual_in == 80 and np.isfinite(o.seconds)
    be.affinity(*random_features(lips=False), 0.6)
    assert be.kind == "motion" and be.dims.visual_in == 64
    tiny = get_backend("avmatch", device="cpu", checkpoint="tiny-test")
    tiny.offset(*random_features(lips=True), 0.6)
    assert tiny.kind == "motion", "an explicit checkpoint is used whatever the input"


@pytest.mark.parametrize("backend", ["tae", "avst"])
def test_the_lip_checkpoints_of_tae_and_avst_are_registered_with_their_cards(backend):
    entry = hub.get_entry(f"{backend}-lips")
    path = hub.model_path(f"{backend}-lips")
    assert entry["backend"] == backend and hub.sha256_file(path) == entry["sha256"]
    assert path.stat().st_size == entry["size"]
    card = Path(__file__).resolve().parents[1] / entry["card"]
    assert card.is_file() and entry["sha256"] in card.read_text(encoding="utf-8")
    ck = hub.load_checkpoint(f"{backend}-lips", backend=backend)
    assert ck["dims"]["kind"] == "lips" and ck["dims"]["visual_in"] == 80


def test_tae_picks_its_lip_network_for_a_tracked_face_and_motion_otherwise():
    be = get_backend("tae", device="cpu")
    o = be.offset(*random_features(lips=True), 0.6)
    assert be.kind == "lips" and be.dims["visual_in"] == 80 and (be.n_a, be.n_v) == (20, 60)
    assert np.isfinite(o.seconds)
    be.offset(*random_features(lips=False), 0.6)
    assert be.kind == "motion" and be.dims["visual_in"] == 128 and be.n_v == 3 * be.n_a
    tiny = get_backend("tae", device="cpu", checkpoint="tiny-test")
    tiny.offset(*random_features(lips=True), 0.6)
    assert tiny.kind == "motion", "an explicit checkpoint is used whatever the input"


def test_avst_picks_its_lip_network_for_a_tracked_face_and_motion_otherwise():
    be = get_backend("avst", device="cpu")
    o = be.offset(*random_features(lips=True), 0.6)
    assert be.kind == "lips" and be.dims["visual_in"] == 80 and be.window == 2.0 and np.isfinite(o.seconds)
    be.affinity(*random_features(lips=False), 0.6)
    assert be.kind == "motion" and be.dims["visual_in"] == 128 and be.window == be.dims["window_seconds"]
    fixed = get_backend("avst", device="cpu", window=1.5)
    fixed.offset(*random_features(lips=True), 0.6)
    assert fixed.kind == "lips" and fixed.window == 1.5, "an explicit window wins over the checkpoint's"
    tiny = get_backend("avst", device="cpu", checkpoint="tiny-test")
    tiny.offset(*random_features(lips=True), 0.6)
    assert tiny.kind == "motion", "an explicit checkpoint is used whatever the input"


@pytest.mark.skipif(not (REAL / REAL_FACE).is_file(), reason="the shared real footage is not here")
@pytest.mark.parametrize("backend", ["syncnet", "avmatch", "tae", "avst"])
def test_the_lip_checkpoints_are_fetched_for_a_real_face(backend, served, tmp_path):
    cache = tmp_path / "cache"
    entry = served["entries"][f"{backend}-lips"]
    r = _avsync(_env(served, cache), "detect-offset", REAL / REAL_FACE, "--backend", backend, "--device", "cpu",
                "--json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["mode"] == "speech" and got["visual_kind"] == "lips"
    cached = cache / "models" / f"{entry['name']}.pt"
    assert cached.is_file() and _sha(cached) == entry["sha256"]
    assert np.isfinite(got["offset_ms"]) and 0.0 <= got["confidence"] <= 1.0
    if backend == "syncnet":  # the clip is in sync: syncnet-lips reads it within a frame (avmatch-lips
        # reads +2.3 s on this noisy restaurant clip: see model_cards/avmatch-lips.md)
        assert abs(got["offset_ms"]) <= 1000.0 / got["fps"] + 1e-6
