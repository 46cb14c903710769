"""Torch-free inference (avsync.nn.portable) and the second opinion it gives detect-offset:
the checkpoint reader against torch.load, the numpy SyncNet against the torch module, and the
second-opinion stage's rules (only the classical path, only a tracked face, only below the
verdict threshold, never across it)."""

from __future__ import annotations

import dataclasses
import json
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from avsync import hub
from avsync import offset as O
from avsync.errors import ModelError
from avsync.nn.portable import SyncNetNumpy, read_checkpoint
from tests.mediagen import random_features


def _torch_model(ck_path):
    import torch

    from avsync.backends._inputs import dims_from_dict
    from avsync.nn.syncnet import SyncNetDims, SyncNetModel

    ck = torch.load(ck_path, weights_only=True)
    m = SyncNetModel(dims_from_dict(SyncNetDims, ck["dims"]))
    m.load_state_dict(ck["state_dict"])
    return ck, m.eval()


def test_the_reader_gives_torch_loads_tensors_and_values_without_torch():
    path = hub.model_path("syncnet-lips")
    ck = read_checkpoint(path)
    ref, _ = _torch_model(path)
    assert ck["dims"] == ref["dims"] and ck["metrics"] == ref["metrics"] and ck["backend"] == "syncnet"
    assert set(ck["state_dict"]) == set(ref["state_dict"])
    for k, t in ref["state_dict"].items():
        got = ck["state_dict"][k]
        assert got.dtype == t.numpy().dtype and np.array_equal(got, t.numpy()), k


def _forward_pair(path, seed=0):
    import torch

    _, m = _torch_model(path)
    net = SyncNetNumpy(read_checkpoint(path))
    d = net.dims
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(37, d["frames"], d["visual_in"])).astype(np.float32)
    a = rng.normal(size=(37, d["frames"], d["sub"] * d["bands"])).astype(np.float32)
    with torch.no_grad():
        tv, ta = m.embed_visual(torch.from_numpy(v)).numpy(), m.embed_audio(torch.from_numpy(a)).numpy()
    return net.embed_visual(v), tv, net.embed_audio(a), ta


def test_the_numpy_syncnet_computes_what_the_torch_module_does():
    ev, tv, ea, ta = _forward_pair(hub.model_path("syncnet-lips"))
    assert np.abs(ev - tv).max() < 1e-5 and np.abs(ea - ta).max() < 1e-5
    assert np.allclose(np.linalg.norm(ev, axis=1), 1, atol=1e-5)


def test_the_numpy_syncnet_follows_other_dims_and_trained_batch_statistics(tmp_path):
    import torch

    from avsync.nn.syncnet import SyncNetDims, SyncNetModel

    dims = SyncNetDims(input_kind="lips", visual_in=20, frames=7, channels=(3, 5, 6), fc=9, embed=4)
    torch.manual_seed(1)
    m = SyncNetModel(dims)
    m.train()
    with torch.no_grad():  # move the running statistics off their initial values
        for _ in range(3):
            m.embed_visual(torch.randn(16, 7, 20) * 3 + 1)
            m.embed_audio(torch.randn(16, 7, 128) * 2 - 1)
    p = hub.save_checkpoint(tmp_path / "s.pt", "syncnet", dims, {}, m.state_dict(), {})
    ev, tv, ea, ta = _forward_pair(p, seed=3)
    assert np.abs(ev - tv).max() < 1e-5 and np.abs(ea - ta).max() < 1e-5


def test_a_checkpoint_holding_other_objects_is_refused_not_run(tmp_path):
    bad = tmp_path / "evil.pt"
    payload = pickle.dumps({"x": dataclasses.field}, protocol=2)  # a global outside the allowed few
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("archive/data.pkl", payload)
    with pytest.raises(ModelError, match="refused global"):
        read_checkpoint(bad)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="cannot load checkpoint"):
        read_checkpoint(junk)


def test_the_motion_grid_network_is_not_read_as_a_keypoint_one():
    with pytest.raises(ModelError, match="keypoint"):
        SyncNetNumpy(read_checkpoint(hub.model_path("syncnet-motion")))


def test_the_second_reading_is_the_lip_syncnet_backends_offset():
    from avsync.backends import get_backend

    a, v = random_features(lips=True, seconds=6.0)
    got = O.lip_syncnet_offset(a, v, 0.6)
    want = get_backend("syncnet", device="cpu").offset(a, v, 0.6).seconds
    assert got == pytest.approx(want, abs=1e-6)


def _estimate(offset: float, confidence: float) -> O.Estimate:
    return O.Estimate(offset, offset, 0.0, float("inf"), False, confidence, ())


def test_a_second_opinion_ranks_unsure_answers_and_never_changes_a_verdict(monkeypatch):
    a, v = random_features(lips=True)
    fps = float(v.fps)
    monkeypatch.setattr(O, "lip_syncnet_offset", lambda *_: 0.200)
    near, info = O.second_opinion(_estimate(0.200 + 0.5 / fps, 0.05), a, v, 1.0, "classical")
    far, _ = O.second_opinion(_estimate(0.200 + 2 / fps, 0.05), a, v, 1.0, "classical")
    apart, _ = O.second_opinion(_estimate(0.200 - 6 / fps, 0.05), a, v, 1.0, "classical")
    assert info == {"backend": "syncnet-lips", "offset_ms": 200.0, "frames_apart": pytest.approx(0.5)}
    assert apart.confidence == 0.05 < far.confidence < near.confidence < O.CONFIDENT
    assert near.offset == pytest.approx(0.200 + 0.5 / fps)  # the classical answer stays the answer
    assert O.judge(near, 6.0)[0] == "cannot tell"
    # no second reading: already confident, another backend, or no tracked face
    sure = _estimate(0.2, 0.6)
    assert O.second_opinion(sure, a, v, 1.0, "classical") == (sure, None)
    low = _estimate(0.2, 0.05)
    assert O.second_opinion(low, a, v, 1.0, "syncnet") == (low, None)
    a2, v2 = random_features(lips=False)
    assert O.second_opinion(low, a2, v2, 1.0, "classical") == (low, None)


def test_a_second_opinion_without_its_checkpoint_leaves_the_answer_as_it_was(monkeypatch):
    def missing(*_):
        raise ModelError("no such checkpoint")

    monkeypatch.setattr(O, "lip_syncnet_offset", missing)
    a, v = random_features(lips=True)
    low = _estimate(0.1, 0.05)
    assert O.second_opinion(low, a, v, 1.0, "classical") == (low, None)


def test_the_second_opinion_does_not_import_torch():
    code = ("import sys; from tests.mediagen import random_features; from avsync import offset as O; "
            "a, v = random_features(lips=True); est = O.Estimate(0.0, 0.0, 0.0, float('inf'), False, 0.01, ()); "
            "est, info = O.second_opinion(est, a, v, 0.6, 'classical'); "
            "assert info is not None, info; print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"



def test_the_torch_free_loader_goes_through_the_hub_and_checks_the_backend():
    ck = hub.load_checkpoint_arrays("syncnet-lips", backend="syncnet")
    assert ck["dims"]["input_kind"] == "lipshape"
    with pytest.raises(ModelError, match="not 'avmatch'"):
        hub.load_checkpoint_arrays("syncnet-lips", backend="avmatch")


FACE = Path(__file__).resolve().parents[1].parent / "shared" / "media" / "real" / "VisualVoice__noisy_restaurant.mp4"


@pytest.mark.skipif(not FACE.is_file(), reason="real media absent")
def test_detect_offset_on_an_unsure_real_face_reports_the_second_reading():
    r = subprocess.run([sys.executable, "-m", "avsync", "detect-offset", str(FACE), "--json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["visual_kind"] == "lips" and out["confidence"] < O.CONFIDENT
    so = out["second_opinion"]
    assert so["backend"] == "syncnet-lips" and so["frames_apart"] >= 0
    assert so["frames_apart"] == pytest.approx(abs(so["offset_ms"] - out["offset_ms"]) / 1000 * out["fps"], abs=0.01)
