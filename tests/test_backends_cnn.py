"""The SyncNet, SyncNet-DTW, avmatch and wlos backends (tiny test model, offline)."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from avsync.backends import get_backend, list_backends  # noqa: E402
from avsync.backends._inputs import (  # noqa: E402
    audio_frames,
    band_table,
    dtw_lag_path,
    mfcc_frames,
    parabolic,
    ridge_affinity,
    windows,
)
from avsync.features import AudioFeatures, VisualFeatures  # noqa: E402
from avsync.train import get_trainable  # noqa: E402
from avsync.train.data import SampleStream  # noqa: E402
from avsync.types import Affinity, Offset, Signal  # noqa: E402

NAMES = ("syncnet", "syncnet-dtw", "avmatch", "wlos")


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def synth(seconds: float = 6.0, fps: float = 25.0, lag: float = 0.0, seed: int = 0) -> tuple[AudioFeatures,
                                                                                               VisualFeatures]:
    """Features of a clip whose events are heard at t and seen at t + lag (lag > 0: audio leads):
    log-mel bursts (100 Hz, 128 bins) and motion-grid bursts (8×8, at fps)."""
    rng = np.random.default_rng(seed)
    ev = np.cumsum(rng.uniform(0.25, 0.7, size=int(seconds * 4)))
    ev = ev[ev < seconds - 0.3]
    ta = np.arange(int(seconds * 100)) / 100
    lm = rng.normal(-60, 2, size=(len(ta), 128)).astype(np.float32)
    for e in ev:
        band = int(rng.integers(0, 96))
        k = np.exp(-np.maximum(ta - e, 0) / 0.08) * (ta >= e)
        lm[:, band : band + 32] += 40 * k[:, None]
    nv = int(seconds * fps)
    tv = np.arange(nv) / fps
    grid = np.abs(rng.normal(0, 0.05, size=(nv, 64))).astype(np.float32)
    for e in ev:
        cell = int(rng.integers(0, 56))
        grid[:, cell : cell + 8] += np.exp(-np.abs(tv - (e + lag)) / 0.04)[:, None]
    zeros = Signal(np.zeros((len(ta), 1), np.float32), 100.0)
    a = AudioFeatures(onset=zeros, speech=zeros, logmel=Signal(lm, 100.0), duration=seconds, sr=22050)
    v = VisualFeatures(mode="general", kind="motion", envelope=Signal(grid.mean(1, keepdims=True), fps),
                       grid=Signal(grid, fps), keypoints=None, mouth=None, detection_rate=0.0, fps=fps,
                       frame_times=tv)
    return a, v


# ------------------------------------------------------------------------------ helpers


def test_registered_with_tasks():
    infos = {b.name: b for b in list_backends()}
    for name in NAMES:
        assert infos[name].trainable
        assert "align" in infos[name].tasks and "offset" in infos[name].tasks


def test_audio_inputs_shapes_and_normalisation():
    a, _ = synth(seconds=4.0)
    x = audio_frames(a, 25.0)
    assert x.shape == (100, 4 * 32)
    rows = x.reshape(400, 32)
    assert np.allclose(rows.mean(0), 0, atol=1e-4) and abs(rows.std() - 1) < 1e-3
    m = mfcc_frames(a, 25.0)
    assert m.shape == (100, 4 * 12)
    # the first cepstral coefficient follows the burst energy: it changes at the events
    assert np.ptp(m.reshape(400, 12)[:, 0]) > 1.0


def test_windows_centre_and_zero_padding():
    x = np.arange(10, dtype=np.float32)[:, None]
    w = windows(x, 5)
    assert w.shape == (10, 5, 1)
    assert w[4, :, 0].tolist() == [2, 3, 4, 5, 6]
    assert w[0, :, 0].tolist() == [0, 0, 0, 1, 2]  # zero rows before the start


def test_band_table_follows_the_lag_convention():
    # picture frame k equals audio frame k - 3: audio i matches picture i + 3 (lag +3)
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 4))
    v = np.concatenate([rng.normal(size=(3, 4)), a[:-3]])
    d = band_table(a, v, 5, lambda x, y: np.linalg.norm(x - y, axis=1))
    assert d.shape == (50, 11)
    assert np.isnan(d[-1, 6:]).all()  # picture beyond the end
    assert np.nanargmin(np.nanmean(d, axis=0)) == 5 + 3


def test_dtw_lag_path_recovers_a_planted_step():
    # cost minimal at lag bin 4 for the first half, bin 7 for the second half
    rng = np.random.default_rng(1)
    cost = rng.uniform(1, 2, size=(60, 11))
    cost[:30, 4] = 0.0
    cost[30:, 7] = 0.0
    lag = dtw_lag_path(cost)
    assert np.all(np.abs(lag[:28] - 4) < 0.01) and np.all(np.abs(lag[33:] - 7) < 0.01)


def test_parabolic_and_ridge():
    y = (np.arange(7) - 3.3) ** 2
    assert abs(3 + parabolic(y, 3) - 3.3) < 1e-6
    aff = ridge_affinity(np.full(5, 2.0), np.ones(5), 3, 25.0)
    assert aff.scores.shape == (5, 7) and np.all(aff.scores.argmax(1) == 2)
    assert np.allclose(np.diff(aff.lags), 1 / 25.0)


# ------------------------------------------------------------------------------ backends, tiny model


@pytest.mark.parametrize("name", NAMES)
def test_tiny_backend_affinity_and_offset(name):
    a, v = synth(seconds=6.0, lag=0.12)
    b = get_backend(name, checkpoint="tiny-test", device="cpu")
    aff = b.affinity(a, v, 1.0)
    assert isinstance(aff, Affinity)
    assert aff.scores.shape == (150, 51)  # 6 s at 25 fps, lags ±25 frames
    assert np.allclose(np.diff(aff.lags), 1 / aff.rate) and aff.rate == 25.0
    assert np.isfinite(aff.scores).any()
    o = b.offset(a, v, 1.0)
    assert isinstance(o, Offset)
    assert -1.0 - 1e-9 <= o.seconds <= 1.0 + 1e-9
    assert 0.0 <= o.confidence <= 1.0
    # deterministic: the tiny model is seeded
    o2 = get_backend(name, checkpoint="tiny-test", device="cpu").offset(a, v, 1.0)
    assert o2.seconds == pytest.approx(o.seconds)


def test_syncnet_extra_lse_figures():
    a, v = synth(seconds=6.0)
    o = get_backend("syncnet", checkpoint="tiny-test", device="cpu").offset(a, v, 0.6)
    lse_c, lse_d = o.extra["lse_c"], o.extra["lse_d"]
    md = np.array(o.extra["mean_distance"])
    assert lse_d == pytest.approx(np.nanmin(md)) and lse_c == pytest.approx(np.nanmedian(md) - np.nanmin(md))
    assert o.extra["frame_confidence"].values.shape == (150, 1)
    assert len(md) == 2 * 15 + 1


def test_wlos_offset_is_robust_to_outlier_windows():
    """The aggregate is a weighted median near the histogram peak: a minority of wild windows
    does not move it."""
    from avsync.backends.wlos import WLOSBackend

    b = WLOSBackend(checkpoint="tiny-test", device="cpu")
    rows = np.arange(40)
    est = np.full((40, 3), np.nan)
    prob = np.zeros((40, 3))
    est[:, 1] = 4.0 + np.random.default_rng(0).normal(0, 0.3, 40)
    est[:8, 1] = -20.0  # outliers
    prob[:, 1] = 0.9
    b.predictions = lambda *_: (rows, est, prob, np.array([-9, 0, 9]), 25, 25.0)  # type: ignore[method-assign]
    o = b.offset(None, None, 1.0)  # type: ignore[arg-type]
    assert abs(o.seconds * 25 - 4.0) < 0.3
    assert o.confidence > 0.5


# ------------------------------------------------------------------------------ training interface


@pytest.mark.parametrize("name", ("syncnet", "avmatch", "wlos"))
def test_trainable_step_lowers_loss_on_a_fixed_batch(name):
    tr = get_trainable(name)
    clips = [tr.prepare(*synth(seconds=6.0, seed=s), f"c{s}") for s in range(2)]
    assert clips[0].audio.shape[0] == clips[0].visual.shape[0] == 150
    dims = tr.dims(clips, type("O", (), {"steps": 10})())
    if name == "wlos":
        dims = {**dims, "channels": 8, "fc": 16, "pretrain_steps": 0}
    else:
        dims = {**dims, "channels": [4, 8, 8], "fc": 16, "embed": 8} if name == "syncnet" else \
            {**dims, "channels": [2, 4, 4], "embed": 8, "head": 8}
    torch.manual_seed(0)
    model = tr.make_model(dims)
    samples = SampleStream(clips, 100, seed=0, distort=False).batch(2)
    batch = tr.make_batch(samples, np.random.default_rng(0), {"flip": True, "spec": True}, "cpu")
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    first = None
    for _ in range(15):
        loss, parts = tr.loss(model, batch)
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(tr.loss(model, batch)[0]) < first
    model.eval()
    with torch.no_grad():
        m = tr.val_metrics(model, tr.make_batch(samples, None, None, "cpu"))
    assert "error" in m and np.isfinite(m["error"])
    assert "Reduced from the paper" in tr.describe(dims)


def test_wlos_pretrains_as_classifier_then_regresses():
    tr = get_trainable("wlos")
    clips = [tr.prepare(*synth(seconds=6.0, seed=s), f"c{s}") for s in range(2)]
    dims = {**tr.dims(clips, type("O", (), {"steps": 10})()), "channels": 4, "fc": 8, "pretrain_steps": 2}
    model = tr.make_model(dims)
    batch = tr.make_batch(SampleStream(clips, 100, seed=0, distort=False).batch(2), np.random.default_rng(0),
                          None, "cpu")
    phases = [tr.loss(model, batch)[1]["phase"] for _ in range(4)]
    assert phases == [0.0, 0.0, 1.0, 1.0]
    assert int(model.state_dict()["steps_done"]) == 4  # saved with the weights: resumable


# ------------------------------------------------------------------------------ end to end (CLI)


@pytest.fixture(scope="module")
def synced_clip(tmp_path_factory):
    from avsync.synthetic import write_clip

    p = tmp_path_factory.mktemp("cnn") / "clip.mp4"
    write_clip(p, seconds=4.0, fps=25, seed=3)
    return p


@pytest.mark.parametrize("name", [
    "syncnet-dtw",  # the DTW path shared with avmatch; the others are slow-marked (each ~15 s)
    pytest.param("syncnet", marks=pytest.mark.slow),
    pytest.param("avmatch", marks=pytest.mark.slow),
    pytest.param("wlos", marks=pytest.mark.slow),
])
def test_cli_align_with_tiny_model(name, synced_clip, tmp_path):
    import os
    import subprocess
    import sys

    out, mp = tmp_path / "out.mp4", tmp_path / "map.json"
    r = subprocess.run(
        [sys.executable, "-m", "avsync", "align", str(synced_clip), "--audio", str(synced_clip), "-o", str(out),
         "--map", str(mp), "--backend", name, "--checkpoint", "tiny-test", "--device", "cpu", "--max-shift", "0.5",
         "--sync-by", "picture"],  # the backend under test, not the soundtrack path
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert r.returncode == 0, r.stderr
    m = json.loads(mp.read_text())
    assert m["backend"] == name and m["n_out"] == len(m["frames"]) > 50
    src = [f["src_time"] for f in m["frames"]]
    assert np.all(np.diff(src) >= 0)  # monotonic
    assert out.stat().st_size > 0
