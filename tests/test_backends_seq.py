"""The sequence backends of issue 7: ``tae`` (temporal autoencoder) and ``avst`` (sync transformer).

Toy-array tests of the inference stages (votes → longest monotonic sequence → adaptive
Laplacian smoothing; parabolic peak), planted-answer tests of both backends with their
network's scoring replaced by an oracle, shape / masking / learning tests of the networks,
the training interfaces on synthetic clips, and the CLI end to end with ``tiny-test``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from avsync.backends import get_backend, list_backends
from avsync.backends._inputs import parabolic, seq_audio_frames
from avsync.backends.tae import (
    adaptive_smooth,
    fill_skipped,
    laplace_smooth,
    longest_monotonic,
    max_vote_candidates,
)
from avsync.features import AudioFeatures, VisualFeatures
from avsync.nn.avst import default_dims as avst_dims
from avsync.nn.avst import make_net as avst_net
from avsync.nn.tae import default_dims, make_net, tae_loss
from avsync.train.avst import AVSTTrainable, shifted_pairs
from avsync.train.data import ClipArrays, SampleStream
from avsync.train.tae import TAETrainable, window_targets
from avsync.types import Signal
from avsync.warps import invert_plan, tae_warp

torch.set_num_threads(1)


def _features(seconds: float, fps: float, seed: int, lag_frames: int = 0) -> tuple[AudioFeatures, VisualFeatures]:
    """Events heard in the log-mel at t and seen in the motion grid at t + lag (audio leads if lag > 0)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * fps)
    ev = np.sort(rng.choice(np.arange(5, n - 5), size=int(seconds * 2), replace=False))
    grid = 0.05 * rng.random((n, 64)).astype(np.float32)
    for e in ev:
        if 0 <= e + lag_frames < n:
            grid[e + lag_frames] += 1.0
    lm = -60 + 3 * rng.standard_normal((int(seconds * 100), 128)).astype(np.float32)
    for e in ev:
        i = int(e / fps * 100)
        lm[i : i + 4] += 40
    audio = AudioFeatures(Signal(lm[:, :1], 100), Signal(lm[:, :1], 100), Signal(lm, 100), seconds, 22050)
    visual = VisualFeatures("general", "motion", Signal(grid.sum(1), fps), Signal(grid, fps), None, None, 0.0, fps,
                            np.arange(n) / fps)
    return audio, visual


# ------------------------------------------------------------------------------------------
# tae: inference stages on toy arrays


def test_max_vote_candidates_keep_ties() -> None:
    votes = [{3: 2, 4: 1}, {5: 1, 7: 1}, {}]
    assert max_vote_candidates(votes) == [[3], [5, 7], []]


def test_longest_monotonic_textbook() -> None:
    out = longest_monotonic([[1], [0], [2], [3], [1], [4]])
    kept = out[out >= 0]
    assert len(kept) == 4 and np.all(np.diff(kept) >= 0)
    assert out[4] == -1  # the 1 after 3 cannot be part of it
    # one candidate per step at most, ties resolved by the sequence
    np.testing.assert_array_equal(longest_monotonic([[5, 1], [2], [3]]), [1, 2, 3])
    # equal values are allowed (a duplicated frame)
    np.testing.assert_array_equal(longest_monotonic([[2], [2], [2]]), [2, 2, 2])
    assert np.all(longest_monotonic([[], []]) == -1)


def test_longest_monotonic_recovers_a_planted_path() -> None:
    rng = np.random.default_rng(0)
    n = 400
    truth = invert_plan(tae_warp(n, rng), n)
    cands = []
    for i in range(n):
        c = [int(truth[i])]
        if rng.random() < 0.25:  # a wrong vote, sometimes the only one
            wrong = int(truth[i] + rng.choice([-1, 1]) * rng.integers(5, 30))
            c = [wrong] if rng.random() < 0.5 else sorted({*c, wrong})
        cands.append(c)
    out = longest_monotonic(cands)
    kept = out >= 0
    assert np.all(np.diff(out[kept]) >= 0)
    assert np.mean(out[kept] == truth[kept]) > 0.95
    assert kept.mean() > 0.8


def test_fill_skipped_interpolates_and_pads_the_tail() -> None:
    m, last = fill_skipped(np.array([-1, 4, -1, 8, -1, -1]))
    np.testing.assert_allclose(m, [3, 4, 6, 8, 8, 8])
    assert last == 3


def test_adaptive_smoothing_picks_the_smallest_width() -> None:
    clean = np.cumsum(np.r_[0, np.ones(99)])
    y, s = adaptive_smooth(clean)
    assert s == 0.0
    np.testing.assert_allclose(y, clean)
    rng = np.random.default_rng(1)
    noisy = clean + rng.normal(0, 1.5, clean.size)
    y, s = adaptive_smooth(noisy, max_speed=2.0)
    d = np.diff(y)
    assert s > 0 and d.min() >= -1e-6 and d.max() <= 2.0 + 1e-6
    # the next smaller width from the list fails the criterion
    from avsync.backends.tae import SIGMAS

    smaller = SIGMAS[SIGMAS.index(s) - 1]
    d2 = np.diff(laplace_smooth(noisy, smaller))
    assert d2.min() < -1e-6 or d2.max() > 2.0 + 1e-6
    # smoothing keeps the mean level (normalised kernel)
    assert abs(float(np.mean(laplace_smooth(noisy, 3.0)[20:-20] - noisy[20:-20]))) < 0.5


def test_window_targets_follow_the_plan() -> None:
    rng = np.random.default_rng(2)
    n, n_a, n_v = 240, 24, 72
    plan = np.clip(np.arange(n) - 7, 0, n - 1)  # picture 7 frames late: audio leads
    for _ in range(20):
        a0, v0, t = window_targets(plan, n, n_a, n_v, rng, jitter=12)
        gt = invert_plan(plan, n)
        valid = t >= 0
        assert valid.mean() > 0.5
        np.testing.assert_array_equal(t[valid] + v0, gt[a0 : a0 + n_a][valid])
        if a0 + n_a < n - 10:
            assert np.all(t[valid] + v0 - np.arange(a0, a0 + n_a)[valid] == 7)


def test_audio_frames_keeps_sub_frame_timing() -> None:
    lm = np.full((300, 128), -80.0, np.float32)
    lm[100:] = 0.0  # a step at 1.000 s
    a = AudioFeatures(Signal(np.zeros(300), 100), Signal(np.zeros(300), 100), Signal(lm, 100), 3.0, 22050)
    x = seq_audio_frames(a, 25.0, 75).reshape(75, 4, 32)
    assert x.shape == (75, 4, 32)
    # frame 25 (t = 1.0 s): the two early phases are before the step, the two late ones after
    assert x[25, 0, 0] < -40 and x[25, 3, 0] > -40
    assert x[24, 3, 0] < -40 and x[26, 0, 0] > -40


# ------------------------------------------------------------------------------------------
# tae: network


def test_tae_net_shapes_masking_and_nearest_neighbour_start() -> None:
    torch.manual_seed(0)
    dims = default_dims(25.0, 128, emb=16, width=32, hidden=32)
    net = make_net(dims)
    a, v = torch.randn(3, 25, 128), torch.randn(3, 75, 128)
    out = net(a, v)
    assert out["logits"].shape == (3, 25, 75) and out["dist"].shape == (3, 25, 75)
    d = out["dist"].detach()
    assert float(d.min()) >= 0 and float(d.max()) <= 4.0 + 1e-5
    # untrained: the decoder head is zero, so the prediction is the nearest video embedding
    torch.testing.assert_close(out["logits"].argmax(-1), out["dist"].argmin(-1))
    mask = torch.ones(3, 75, dtype=torch.bool)
    mask[:, :30] = False
    with torch.no_grad():
        pred = net.decode(out["dist"], mask).argmax(-1)
    assert int(pred.min()) >= 30


def test_tae_learns_a_synthetic_lag_task() -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    dims = default_dims(12.0, 16, emb=8, width=16, hidden=16)  # 12 audio steps against 36 frames
    net = make_net(dims)
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)

    def batch(r: np.random.Generator, b: int = 16) -> tuple[torch.Tensor, ...]:
        a, v, t = [], [], []
        for _ in range(b):
            ev = (r.random((80, 16)) < 0.15).astype(np.float32)
            lag = int(r.integers(-6, 7))
            v0 = 8 + int(r.integers(-6, 7))  # audio window [20, 32) against video [v0, v0 + 36)
            vid = np.roll(ev, lag, axis=0)  # picture frame f shows the event of audio frame f − lag
            a.append(np.repeat(ev[20:32], 8, 1) + 0.1 * r.standard_normal((12, 128)).astype(np.float32))
            v.append(vid[v0 : v0 + 36])
            t.append(np.arange(20, 32) + lag - v0)
        return (torch.tensor(np.stack(a)), torch.tensor(np.stack(v)), torch.tensor(np.stack(t)))

    val = batch(np.random.default_rng(9))

    def err() -> float:
        with torch.no_grad():
            return float((net(val[0], val[1])["logits"].argmax(-1) - val[2]).abs().float().mean())

    before = err()
    for _ in range(60):
        a, v, t = batch(rng)
        loss, _ = tae_loss(net(a, v), t)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = err()
    assert after < 0.5 * before, (before, after)


# ------------------------------------------------------------------------------------------
# tae: backend


def _oracle_embed(be, lag_frames: int):  # noqa: ANN001, ANN202
    """Replace the encoders: audio frame i and picture frame i + lag get the same unit vector."""
    gen = torch.Generator().manual_seed(5)
    table = torch.nn.functional.normalize(torch.randn(4000, be.dims["emb"], generator=gen), dim=-1)

    def embed(a: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ia = torch.arange(a.shape[1]) + 1000
        iv = torch.arange(v.shape[1]) + 1000 - lag_frames
        return table[ia][None], table[iv][None]

    return embed


@pytest.mark.parametrize("lag", [-9, 0, 14, 37])
def test_tae_backend_recovers_a_planted_lag(lag: int) -> None:
    be = get_backend("tae", device="cpu", checkpoint="tiny-test")
    be.model.embed = _oracle_embed(be, lag)
    audio, visual = _features(12.0, 25.0, 3)
    off = be.offset(audio, visual, max_shift=2.0)
    assert off.seconds == pytest.approx(lag / 25.0, abs=1e-6)  # positive = picture later = audio leads
    assert off.confidence > 0.95 * (1 - abs(lag) / 300)  # steps whose picture is outside the clip are lost
    aff = be.affinity(audio, visual, max_shift=2.0)
    best = aff.lags[np.argmax(aff.scores, 1)]
    rows = np.arange(len(best))
    seen = (rows + lag >= 0) & (rows + lag < 300)  # audio steps whose picture is inside the clip
    assert np.mean(np.abs(best[seen] - lag / 25.0) < 1e-6) > 0.95


def test_tae_backend_tiny_end_to_end() -> None:
    from avsync.path import PathOptions, correspondence

    assert any(b.name == "tae" and b.trainable for b in list_backends())
    be = get_backend("tae", device="cpu", checkpoint="tiny-test")
    audio, visual = _features(14.0, 24.0, 1, lag_frames=4)  # 24 fps clip, 25 fps model: resampled
    aff = be.affinity(audio, visual, max_shift=1.5)
    n_a = int(14.0 * 25)
    assert aff.scores.shape == (n_a, 2 * round(1.5 * 25) + 1)
    np.testing.assert_allclose(np.diff(aff.lags), 1 / 25, atol=1e-9)
    assert np.isfinite(aff.scores).all()
    corr = correspondence(aff, PathOptions(), out_rate=24.0, n_out=int(14 * 24))
    assert np.all(np.diff(corr.src_time) >= -1e-9)
    r = be.predict(audio, visual, 1.5)
    assert len(r["votes"]) == n_a and max(sum(v.values()) for v in r["votes"]) <= 3  # stride 10 of 25
    assert np.all(np.diff(r["mapping"]) >= -1e-6)
    off = be.offset(audio, visual, max_shift=1.5)
    assert -1.5 <= off.seconds <= 1.5 and 0.0 <= off.confidence <= 1.0


def test_tae_trainable_batches_and_metrics() -> None:
    rng = np.random.default_rng(0)
    clips = []
    for k in range(2):
        audio, visual = _features(10.0, 25.0, 10 + k)
        tr = TAETrainable(mode="general", per_sample=2, emb=8, width=16, hidden=16)
        clips.append(tr.prepare(audio, visual, f"c{k}"))
    assert isinstance(clips[0], ClipArrays) and clips[0].visual_is_diff
    dims = tr.dims(clips, None)
    assert dims["n_a"] == 25 and dims["n_v"] == 75 and dims["visual_in"] == 128
    net = tr.make_model(dims)
    samples = SampleStream(clips, 200, seed=1).batch(3)
    b = tr.make_batch(samples, rng, {"flip": True, "spec": True}, "cpu")
    assert b.tensors["audio"].shape == (6, 25, 128) and b.tensors["visual"].shape == (6, 75, 128)
    t = b.tensors["target"]
    assert int(t.max()) < 75 and bool(((t >= 0) | (t == -100)).all())
    loss, parts = tr.loss(net, b)
    loss.backward()
    assert np.isfinite(float(loss)) and set(parts) == {"ce", "aux"}
    val = tr.make_batch(samples, None, None, "cpu")
    val2 = tr.make_batch(samples, None, None, "cpu")
    torch.testing.assert_close(val.tensors["target"], val2.tensors["target"])  # deterministic
    m = tr.val_metrics(net, val)
    assert {"error", "within1", "itu", "acc"} <= set(m) and m["error"] >= 0


# ------------------------------------------------------------------------------------------
# avst


@pytest.mark.parametrize("variant", ["encoder", "decoder"])
def test_avst_variable_length_and_padding_mask(variant: str) -> None:
    torch.manual_seed(1)
    net = avst_net(avst_dims(128, d_model=32, heads=2, layers=1, ff=64, variant=variant)).eval()
    assert net.variant == variant
    for t in (17, 50, 121):
        assert net(torch.randn(2, t, 128), torch.randn(2, t, 128)).shape == (2,)
    a, v = torch.randn(1, 40, 128), torch.randn(1, 40, 128)
    zeros = torch.zeros(1, 10, 128)
    with torch.no_grad():
        s1 = net(torch.cat([a, zeros], 1), torch.cat([v, zeros], 1), lengths=torch.tensor([40]))
        # the token CNN sees 3 frames into the padding: keep those equal, randomise the rest
        a3 = torch.cat([a, torch.zeros(1, 3, 128), 5 * torch.randn(1, 7, 128)], 1)
        v3 = torch.cat([v, torch.zeros(1, 3, 128), 5 * torch.randn(1, 7, 128)], 1)
        s3 = net(a3, v3, lengths=torch.tensor([40]))
        s_unmasked = net(a3, v3)
        batch = net(torch.cat([torch.cat([a, zeros], 1), a3]), torch.cat([torch.cat([v, zeros], 1), v3]),
                    lengths=torch.tensor([40, 50]))
    torch.testing.assert_close(s1, s3)  # masked padding is ignored
    assert not torch.allclose(s1, s_unmasked)  # ... and only because of the mask
    torch.testing.assert_close(batch[:1], s1)  # mixed lengths in one batch
    torch.testing.assert_close(batch[1:], s_unmasked)


def test_shifted_pairs_index_the_audio_of_shown_frames() -> None:
    rng = np.random.default_rng(0)
    n = 200
    plan = np.clip(np.arange(n) // 1 - 5, 0, n - 1)
    shifts = np.array([0, -3, 2, 10])
    m0, idx = shifted_pairs(plan, n, 50, shifts, rng)
    assert idx.shape == (4, 50)
    np.testing.assert_array_equal(idx[0], plan[m0 : m0 + 50])
    np.testing.assert_array_equal(idx[3] - idx[0], 10)
    assert plan[m0] - 10 >= 0 and plan[m0 + 49] + 10 <= n - 1


def test_parabolic_refinement() -> None:
    x = np.arange(11, dtype=float)
    c = -((x - 4.3) ** 2)
    assert 4 + parabolic(c, 4, maximum=True) == pytest.approx(4.3)
    assert 0 + parabolic(c, 0, maximum=True) == 0.0
    # a minimum is refined only when asked for either kind of extremum
    assert parabolic(-c, 4, maximum=True) == 0.0
    assert 4 + parabolic(-c, 4) == pytest.approx(4.3)


def _oracle_avst(be) -> None:  # noqa: ANN001
    """Score = correlation of the audio energy with the picture's motion energy per window."""

    def score(a: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        ea = a.mean(-1)
        ev = v[:, :, :64].mean(-1)
        ea = (ea - ea.mean(1, keepdim=True)) / (ea.std(1, keepdim=True) + 1e-6)
        ev = (ev - ev.mean(1, keepdim=True)) / (ev.std(1, keepdim=True) + 1e-6)
        return 20.0 * (ea * ev).mean(1)

    be.model = score


@pytest.mark.parametrize("lag", [-11, 0, 6])
def test_avst_offset_and_affinity_with_an_oracle_scorer(lag: int) -> None:
    be = get_backend("avst", device="cpu", checkpoint="tiny-test")
    _oracle_avst(be)
    audio, visual = _features(12.0, 25.0, 4, lag_frames=lag)
    off = be.offset(audio, visual, max_shift=1.0)
    assert off.seconds == pytest.approx(lag / 25.0, abs=0.5 / 25)  # positive = audio leads
    assert off.confidence > 0.5
    aff = be.affinity(audio, visual, max_shift=1.0)
    assert aff.scores.shape == (300, 51)
    best = aff.lags[np.argmax(aff.scores, 1)]
    assert np.mean(np.abs(best - lag / 25.0) < 1.5 / 25) > 0.8


def test_avst_tiny_end_to_end_and_training_interface() -> None:
    from avsync.path import PathOptions, correspondence

    assert any(b.name == "avst" and b.trainable for b in list_backends())
    be = get_backend("avst", device="cpu", checkpoint="tiny-test")
    audio, visual = _features(9.0, 25.0, 2, lag_frames=3)
    off = be.offset(audio, visual, max_shift=1.0)
    assert -1.0 <= off.seconds <= 1.0 and 0.0 <= off.confidence <= 1.0
    aff = be.affinity(audio, visual, max_shift=1.0)
    assert aff.scores.shape == (225, 51) and np.isfinite(aff.scores).all()
    corr = correspondence(aff, PathOptions(), out_rate=25.0, n_out=225)
    assert np.all(np.diff(corr.src_time) >= -1e-9)

    tr = AVSTTrainable(mode="general", d_model=16, heads=2, layers=1, ff=32)
    clips = [tr.prepare(*_features(10.0, 25.0, 20 + k), f"c{k}") for k in range(2)]
    dims = tr.dims(clips, None)
    torch.manual_seed(0)
    net = tr.make_model(dims)
    samples = SampleStream(clips, 200, seed=2).batch(4)
    b = tr.make_batch(samples, np.random.default_rng(0), {"flip": True, "spec": True}, "cpu")
    bsz, k, length, _ = b.tensors["audio"].shape
    assert (bsz, k) == (4, 11) and 50 <= length <= 75 and b.tensors["visual"].shape[1] == length
    assert int(b.tensors["shifts"][b.tensors["target"][0]]) == 0
    loss, _ = tr.loss(net, b)
    loss.backward()
    val = tr.make_batch(samples, None, None, "cpu")
    assert val.tensors["audio"].shape[1] == 2 * 12 + 1  # every shift within ±0.5 s
    m = tr.val_metrics(net.eval(), val)
    assert {"error", "within1", "itu", "acc", "loss"} <= set(m)


def test_avst_infonce_learns_a_synthetic_task() -> None:
    torch.manual_seed(0)
    tr = AVSTTrainable(mode="general", d_model=32, heads=2, layers=1, ff=64, negatives=6)
    clips = [tr.prepare(*_features(20.0, 25.0, 30 + k), f"c{k}") for k in range(3)]
    net = tr.make_model(tr.dims(clips, None))
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    stream = SampleStream(clips, 150, seed=3, distort=False)
    val = tr.make_batch(SampleStream(clips, 150, seed=4, distort=False).batch(8), None, None, "cpu")
    net.eval()
    with torch.no_grad():
        before = tr.val_metrics(net, val)["loss"]
    net.train()
    rng = np.random.default_rng(0)
    for _ in range(25):
        loss, _ = tr.loss(net, tr.make_batch(stream.batch(6), rng, None, "cpu"))
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        after = tr.val_metrics(net, val)["loss"]
    assert after < 0.8 * before, (before, after)


# ------------------------------------------------------------------------------------------
# CLI end to end with the tiny model


@pytest.fixture(scope="module")
def clip_pair(tmp_path_factory):  # noqa: ANN001, ANN201
    from avsync.synthetic import write_clip

    d = tmp_path_factory.mktemp("seq")
    orig, dist = d / "orig.mp4", d / "dist.mp4"
    write_clip(orig, seconds=4.0, fps=25, seed=5)
    plan = np.clip(np.arange(100) - 4, 0, 99)
    write_clip(dist, seconds=4.0, fps=25, seed=5, plan=plan)
    return orig, dist


@pytest.mark.parametrize("backend", ["tae", "avst"])
def test_cli_align_with_the_tiny_model(backend: str, clip_pair, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    orig, dist = clip_pair
    monkeypatch.setenv("AVSYNC_CACHE", str(tmp_path / "cache"))
    out, mp = tmp_path / "out.mp4", tmp_path / "map.json"
    r = subprocess.run(
        [sys.executable, "-m", "avsync", "align", str(dist), "--audio", str(orig), "-o", str(out), "--map", str(mp),
         "--backend", backend, "--checkpoint", "tiny-test", "--device", "cpu", "--max-shift", "1", "--json",
         "--sync-by", "picture"],  # the backend under test, not the soundtrack path
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["backend"] == backend and summary["n_out"] == 100
    frames = json.loads(mp.read_text())["frames"]
    assert len(frames) == 100
    assert all(frames[k]["src_frame"] <= frames[k + 1]["src_frame"] for k in range(99))
    assert out.stat().st_size > 0


@pytest.mark.parametrize("backend", ["tae", "avst"])
def test_cli_detect_offset_with_the_shipped_checkpoint(backend: str, clip_pair, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    orig, _ = clip_pair
    monkeypatch.setenv("AVSYNC_CACHE", str(tmp_path / "cache"))
    r = subprocess.run(
        [sys.executable, "-m", "avsync", "detect-offset", str(orig), "--backend", backend, "--device", "cpu",
         "--max-shift", "0.5", "--json"],
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert abs(out["offset_ms"]) <= 600 and 0.0 <= out["confidence"] <= 1.0
    assert out["windows"], "the drift windows ran through the backend too"
