"""AlignNet: the network, its loss, and the backend on real-shaped features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from avsync.backends import get_backend, list_backends
from avsync.backends._inputs import alignnet_visual_input, audio_at_fps
from avsync.features import AudioFeatures, VisualFeatures
from avsync.nn.alignnet import AlignNet, AlignNetDims, affinity_ce, alignnet_loss, monotonic_hinge, resample_1d
from avsync.nn.inputs import BODY19, grid_pairs, tie_from_pairs
from avsync.train.alignnet import AlignNetTrainable
from avsync.types import Signal

torch.set_num_threads(1)
MEDIA = Path("/root/.cache/avsync-media")


def small_dims(**kw) -> AlignNetDims:
    return AlignNetDims(channels=(32, 16, 16, 8), attn_dim=16, **kw)


@pytest.mark.parametrize("t", [48, 61, 97, 240, 503])
def test_shapes_for_arbitrary_lengths(t: int) -> None:
    torch.manual_seed(0)
    net = AlignNet(AlignNetDims())
    out = net(torch.randn(2, t, 128), torch.randn(2, t, 128))
    assert out["corr"].shape == (2, t)
    lengths = [lv.shape[-1] for lv in out["levels"]]
    assert len(lengths) == 4
    assert lengths == sorted(lengths, reverse=True)  # finest first
    assert lengths[0] == -(-t // 3)  # 1/3, then halves
    assert out["affinity"].shape == (2, 2 * net.dims.band + 1, lengths[0])
    torch.testing.assert_close(out["affinity"].sum(1), torch.ones(2, lengths[0]))  # softmax over audio positions
    assert float(out["corr"].detach().abs().max()) <= 1.0


def test_untrained_net_starts_from_identity() -> None:
    # the refinement heads start at zero, so an untrained net stays near the identity map
    torch.manual_seed(0)
    net = AlignNet(AlignNetDims())
    out = net(torch.randn(1, 120, 128), torch.randn(1, 120, 128))
    ident = torch.linspace(-1, 1, 120)
    assert float((out["corr"][0] - ident).abs().mean()) < 0.3


def test_monotonic_hinge() -> None:
    mono = torch.tensor([[-1.0, -0.5, -0.5, 0.2, 1.0]])
    assert float(monotonic_hinge(mono)) == 0.0
    back = torch.tensor([[-1.0, -0.2, -0.5, 0.2, 1.0]])
    assert float(monotonic_hinge(back)) == pytest.approx(0.3 / 4)
    out = {"corr": back, "levels": [back]}
    _, parts = alignnet_loss(out, mono, mu=1.0)
    assert parts["hinge"] > 0
    _, parts = alignnet_loss({"corr": mono, "levels": [mono]}, mono, mu=1.0)
    assert parts["hinge"] == 0.0 and parts["l1"] == 0.0


def test_affinity_cross_entropy_prefers_the_true_offset() -> None:
    ta, t, band = 21, 21, 4
    prior = torch.linspace(-1, 1, t)[None]
    target = prior + 2 * 2.0 / (ta - 1)  # truth: two audio samples later than the prior
    right = torch.full((1, 2 * band + 1, t), 1e-3)
    right[:, band + 2] = 1.0
    wrong = torch.full((1, 2 * band + 1, t), 1e-3)
    wrong[:, band - 1] = 1.0
    norm = lambda x: x / x.sum(1, keepdim=True)  # noqa: E731
    assert float(affinity_ce(norm(right), prior, target, ta)) < 0.05
    assert float(affinity_ce(norm(wrong), prior, target, ta)) > 3.0


def test_spatial_attention_ties_left_right() -> None:
    tie = tie_from_pairs(64, grid_pairs())
    assert len(set(tie)) == 32
    net = AlignNet(AlignNetDims(point_tie=tie))
    with torch.no_grad():
        net.spatial.logits.copy_(torch.randn_like(net.spatial.logits))
    w = net.spatial.weights()
    for i, j in grid_pairs():
        assert float(w[i]) == pytest.approx(float(w[j]))
    assert float(w.mean()) == pytest.approx(1.0, abs=1e-5)


def _synthetic_batch(rng: np.random.Generator, b: int, t: int) -> tuple[torch.Tensor, ...]:
    """Audio = noisy copy of a random event train; visual = the same train shown through a
    random global shift, so the target correspondence is a shifted identity."""
    vis, aud, tgt = [], [], []
    for _ in range(b):
        events = (rng.random((t, 64)) < 0.05).astype(np.float32)
        shift = int(rng.integers(-8, 9))
        plan = np.clip(np.arange(t) + shift, 0, t - 1)  # video frame m shows original frame plan[m]
        v = events[plan]
        a = np.repeat(events[:, :16], 8, 1)  # the audio hears the first 16 cells' events
        vis.append(np.concatenate([v, v], 1))
        aud.append(a + 0.1 * rng.standard_normal(a.shape).astype(np.float32))
        tgt.append(2 * plan / (t - 1) - 1)
    return (torch.tensor(np.stack(vis)), torch.tensor(np.stack(aud)), torch.tensor(np.stack(tgt), dtype=torch.float32))


def test_loss_decreases_on_a_tiny_synthetic_task() -> None:
    torch.manual_seed(0)
    net = AlignNet(small_dims())
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    v, a, t = _synthetic_batch(np.random.default_rng(0), 8, 96)
    losses = []
    for _ in range(20):
        loss, _ = alignnet_loss(net(v, a), t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0], losses


def test_resample_keeps_normalised_ends() -> None:
    x = torch.linspace(-1, 1, 10)[None]
    y = resample_1d(x, 37)
    assert y.shape == (1, 37)
    torch.testing.assert_close(y, torch.linspace(-1, 1, 37)[None])


def test_inputs_from_features() -> None:
    rng = np.random.default_rng(0)
    grid = rng.random((100, 64)).astype(np.float32)
    x = alignnet_visual_input(grid, "motion")
    assert x.shape == (100, 128)
    assert abs(float(x.mean())) < 1e-4
    kp = rng.random((50, 38)).astype(np.float32)
    assert alignnet_visual_input(kp, "pose").shape == (50, 19 * 4)
    assert len(BODY19) == 19
    # log-mel at 100 Hz → 24 fps: a step at 1 s stays at 1 s
    lm = np.zeros((300, 128), np.float32)
    lm[100:] = 1.0
    a = AudioFeatures(Signal(np.zeros(300), 100), Signal(np.zeros(300), 100), Signal(lm, 100), 3.0, 22050)
    r = audio_at_fps(a, 24.0, 72)
    assert r.shape == (72, 128)
    assert r[22, 0] < 0.5 < r[26, 0]


def _features(seconds: float, fps: float, seed: int) -> tuple[AudioFeatures, VisualFeatures]:
    """Real-shaped features: events seen in the motion grid and heard in the log-mel."""
    rng = np.random.default_rng(seed)
    n = int(seconds * fps)
    ev = np.sort(rng.choice(np.arange(5, n - 5), size=int(seconds * 2), replace=False))
    grid = 0.05 * rng.random((n, 64)).astype(np.float32)
    grid[ev] += 1.0
    lm = -60 + 3 * rng.standard_normal((int(seconds * 100), 128)).astype(np.float32)
    for e in ev:
        i = int(e / fps * 100)
        lm[i : i + 4] += 40
    audio = AudioFeatures(Signal(lm[:, :1], 100), Signal(lm[:, :1], 100), Signal(lm, 100), seconds, 22050)
    env = Signal(grid.sum(1), fps)
    visual = VisualFeatures("general", "motion", env, Signal(grid, fps), None, None, 0.0, fps, np.arange(n) / fps)
    return audio, visual


def test_tiny_backend_end_to_end_affinity() -> None:
    from avsync.path import PathOptions, correspondence

    assert any(b.name == "alignnet" and b.trainable for b in list_backends())
    be = get_backend("alignnet", device="cpu", checkpoint="tiny-test")
    audio, visual = _features(21.0, 24.0, 1)
    aff = be.affinity(audio, visual, max_shift=2.0)
    n_a = int(np.ceil(21.0 * 24))
    assert aff.scores.shape == (n_a, 2 * 48 + 1)
    assert aff.rate == 24.0
    np.testing.assert_allclose(np.diff(aff.lags), 1 / 24, atol=1e-9)
    assert aff.lags[0] == pytest.approx(-2.0) and aff.lags[-1] == pytest.approx(2.0)
    assert np.isfinite(aff.scores).all() and aff.scores.max() <= 1.0
    peak = aff.scores.max(1)  # one ridge per row, as high as the network's confidence
    assert (peak > 0).all() and (peak <= 1).all()
    corr = correspondence(aff, PathOptions(), out_rate=24.0, n_out=n_a)
    assert len(corr.src_time) == n_a
    assert np.all(np.diff(corr.src_time) >= -1e-9)
    raw = be.correspondence_raw(audio, visual)
    assert np.all(np.diff(raw.src_time) >= -1e-6)
    assert raw.confidence is not None and ((raw.confidence >= 0) & (raw.confidence <= 1)).all()
    # the ridge sits where the raw prediction says
    np.testing.assert_allclose(aff.lags[aff.scores.argmax(1)], np.clip(raw.lag, -2, 2), atol=1 / 24 + 1e-9)
    off = be.offset(audio, visual, max_shift=2.0)
    assert -2.0 <= off.seconds <= 2.0


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    from avsync.hub import load_checkpoint, save_checkpoint

    tr = AlignNetTrainable(mode="general")
    dims = tr.dims([], None)
    torch.manual_seed(3)
    net = tr.make_model(dims)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = tmp_path / "a.pt"
    save_checkpoint(path, "alignnet", dims, {"window_frames": 120}, net.state_dict(), {"error": 1.0})
    ck = load_checkpoint(path, backend="alignnet")
    assert ck["dims"] == dims
    be = get_backend("alignnet", device="cpu", checkpoint=str(path))
    assert be.window == 120
    v, a = torch.randn(1, 120, 128), torch.randn(1, 120, 128)
    with torch.no_grad():
        torch.testing.assert_close(be.model(v, a)["corr"], net.eval()(v, a)["corr"])


@pytest.mark.skipif(not (MEDIA / "bbb_excerpt.mp4").exists(), reason="needs the media cache")
def test_tiny_backend_on_real_features() -> None:
    from avsync.features.extract import extract_audio, extract_visual

    clip = MEDIA / "bbb_excerpt.mp4"
    audio = extract_audio(clip)
    visual = extract_visual(clip, "general")
    be = get_backend("alignnet", device="cpu", checkpoint="tiny-test")
    aff = be.affinity(audio, visual, max_shift=1.0)
    assert aff.scores.shape[1] == 2 * round(visual.fps) + 1
    assert abs(aff.scores.shape[0] - audio.duration * visual.fps) <= 2
