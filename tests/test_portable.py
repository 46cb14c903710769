"""Torch-free inference (avsync.nn.portable) and what it gives detect-offset: the checkpoint
reader against torch.load, the numpy SyncNet against the torch module, the joint reading (the
classical correlation and the lip SyncNet's distances added over the lags) and the
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


class _Curves:
    """A classical backend whose correlation over the lags is given (``lag_scores``)."""

    name = "classical"

    def __init__(self, fisher, fps):
        self.fisher, self.fps = np.asarray(fisher, dtype=np.float64), fps

    def lag_scores(self, audio, visual, max_shift):
        return self.fisher, self.fps


def _bump(n, at, width=1.5, height=1.0):
    k = np.arange(-n, n + 1)
    return height * np.exp(-0.5 * ((k - at) / width) ** 2)


def test_the_joint_reading_takes_the_lag_both_readings_support(monkeypatch):
    a, v = random_features(lips=True)
    fps, n = float(v.fps), 15
    rng = np.random.default_rng(3)
    # classical: two peaks, the taller (wrong) at -6 frames, a slightly lower one at +4;
    # the network's distance is least at +4 (and flat elsewhere, with a little noise)
    fisher = _bump(n, -6, height=3.0) + _bump(n, 4, height=2.6) + 0.05 * rng.normal(size=2 * n + 1)
    mdist = 1.0 - 0.4 * _bump(n, 4) + 0.01 * rng.normal(size=2 * n + 1)
    lags = np.arange(-n, n + 1) / fps
    monkeypatch.setattr(O, "lip_syncnet_curve", lambda *_, **__: (lags, mdist))
    off, reading = O.joint_reading(_Curves(fisher, fps), a, v, n / fps, -6 / fps)
    assert off == pytest.approx(4 / fps, abs=0.5 / fps)
    assert reading["classical"] == pytest.approx(-6 / fps)
    assert reading["syncnet"] == pytest.approx(4 / fps, abs=0.5 / fps)
    # where both peak at the same lag, that lag, sub-frame
    monkeypatch.setattr(O, "lip_syncnet_curve", lambda *_, **__: (lags, 1.0 - _bump(n, 2.3)))
    off, _ = O.joint_reading(_Curves(_bump(n, 2.3), fps), a, v, n / fps, 2.3 / fps)
    assert off == pytest.approx(2.3 / fps, abs=0.2 / fps)
    # the second opinion then compares the network with the classical reading, not the joint one
    est, info = O.second_opinion(_estimate(4 / fps, 0.05), a, v, 1.0, "classical",
                                 {"classical": -6 / fps, "syncnet": 4 / fps})
    assert info["frames_apart"] == pytest.approx(10.0) and info["classical_ms"] == pytest.approx(-6000 / fps, abs=1e-3)
    assert est.confidence == pytest.approx(0.05)


def test_the_joint_reading_leaves_other_pictures_backends_and_missing_networks_alone(monkeypatch):
    a, v = random_features(lips=True)
    fps = float(v.fps)
    curves = _Curves(_bump(10, 1), fps)
    a2, v2 = random_features(lips=False)
    assert O.joint_reading(curves, a2, v2, 10 / fps, 0.123) == (0.123, None)

    class Other(_Curves):
        name = "syncnet"

    assert O.joint_reading(Other(_bump(10, 1), fps), a, v, 10 / fps, 0.123) == (0.123, None)

    def missing(*_, **__):
        raise ModelError("no such checkpoint")

    monkeypatch.setattr(O, "lip_syncnet_curve", missing)
    assert O.joint_reading(curves, a, v, 10 / fps, 0.123) == (0.123, None)


def test_the_joint_reading_reads_the_real_network_and_the_real_correlation():
    from avsync.backends import get_backend
    from avsync.types import Signal

    a, v = random_features(lips=True, seconds=6.0)
    a = dataclasses.replace(a, speech=Signal(np.random.default_rng(1).random(600), 100.0))  # not silent
    be = get_backend("classical")
    off0 = be.offset(a, v, 0.6).seconds
    fisher, rate = be.lag_scores(a, v, 0.6)
    assert rate == pytest.approx(float(v.fps)) and fisher.shape == (2 * round(0.6 * rate) + 1,)
    assert np.argmax(fisher) == round(off0 * rate) + round(0.6 * rate)  # the peak offset() refines
    off, reading = O.joint_reading(be, a, v, 0.6, off0)
    assert reading["classical"] == off0
    assert reading["syncnet"] == pytest.approx(O.lip_syncnet_offset(a, v, 0.6), abs=1e-9)
    assert abs(off) <= 0.6 + 1e-9


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
    assert so["frames_apart"] == pytest.approx(abs(so["offset_ms"] - so["classical_ms"]) / 1000 * out["fps"], abs=0.01)
    # the reported offset is the joint reading: it need not be either one, but lies within the search
    assert abs(out["offset_ms"]) <= 1000 * out["duration"]
