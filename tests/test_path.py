"""Monotonic lag DP (Viterbi), speed bounds, correspondence and DTW."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from avsync.path import (
    PathOptions,
    allowed_jumps,
    banded_dtw_correspondence,
    bound_slope,
    correspondence,
    dtw,
    lag_path_to_offset,
    lag_posterior,
    viterbi_lags,
)
from avsync.types import Affinity

RATE = 30.0
AMP = 5.0  # lag amplitude, bins: speeds 0.92–1.08, ~20 lag steps


def planted(seed: int, t_rows: int = 400, n_lags: int = 61, boost: float = 1.5):
    rng = np.random.default_rng(seed)
    scores = rng.standard_normal((t_rows, n_lags))
    i = np.arange(t_rows)
    truth = np.round(30 + AMP * np.sin(2 * np.pi * i / t_rows)).astype(int)
    scores[i, truth] += boost
    lags = (np.arange(n_lags) - n_lags // 2) / RATE
    return Affinity(scores, lags, RATE), truth


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_viterbi_recovers_planted_path(seed):
    aff, truth = planted(seed)
    path, conf = viterbi_lags(aff)
    assert np.mean(path == truth) >= 0.95
    assert np.mean(np.abs(path - truth) <= 1) >= 0.99
    assert conf.shape == truth.shape and np.all((conf >= 0) & (conf <= 1))
    assert conf.mean() > 0.5


def test_confidence_is_low_on_unrelated_scores():
    rng = np.random.default_rng(5)
    aff = Affinity(rng.standard_normal((400, 61)), (np.arange(61) - 30) / RATE, RATE)
    _, conf = viterbi_lags(aff)
    planted_conf = viterbi_lags(planted(5)[0])[1]
    assert conf.mean() < 0.3 < planted_conf.mean()


def test_posterior_rows_are_distributions_peaking_on_the_path():
    aff, truth = planted(3)
    post = lag_posterior(aff)
    np.testing.assert_allclose(post.sum(axis=1), 1.0, atol=1e-9)
    assert np.mean(post.argmax(axis=1) == truth) > 0.85


def test_viterbi_against_brute_force_on_tiny_table():
    rng = np.random.default_rng(7)
    scores = rng.standard_normal((6, 4))
    aff = Affinity(scores, np.arange(4) / RATE, RATE)
    opts = PathOptions(lag_change_penalty=0.7)
    path, _ = viterbi_lags(aff, opts)
    pen = 0.7 * _spread(scores)
    best, best_path = -np.inf, None
    for cand in itertools.product(range(4), repeat=6):
        d = np.diff(cand)
        if np.any(d < -1) or np.any(d > 1):  # speeds 0..2 → jumps -1..+1
            continue
        val = scores[np.arange(6), cand].sum() - pen * np.abs(d).sum()
        if val > best:
            best, best_path = val, cand
    np.testing.assert_array_equal(path, best_path)


def _spread(x):
    from avsync.path import affinity_spread

    return affinity_spread(x)


def test_allowed_jumps_map_speed_bounds():
    aff = Affinity(np.zeros((3, 9)), np.arange(9) / RATE, RATE)
    assert list(allowed_jumps(aff, PathOptions())) == [-1, 0, 1]
    assert list(allowed_jumps(aff, PathOptions(max_speed=3.0))) == [-1, 0, 1, 2]
    assert list(allowed_jumps(aff, PathOptions(max_speed=1.5, min_speed=0.5))) == [-1, 0, 1]
    assert list(allowed_jumps(aff, PathOptions(max_speed=1.0, min_speed=1.0))) == [0]
    # coarser lag grid (2 frames per bin): one bin of change is already speed ±2
    coarse = Affinity(np.zeros((3, 9)), 2 * np.arange(9) / RATE, RATE)
    assert list(allowed_jumps(coarse, PathOptions(max_speed=3.0))) == [-1, 0, 1]


def test_viterbi_never_exceeds_speed_bounds():
    # the scores demand a jump of 20 lag bins at row 100: the path must ramp, not jump
    scores = np.zeros((200, 41))
    scores[:100, 5] = 5.0
    scores[100:, 25] = 5.0
    aff = Affinity(scores, np.arange(41) / RATE, RATE)
    path, _ = viterbi_lags(aff, PathOptions(lag_change_penalty=0.1))
    d = np.diff(path)
    assert d.min() >= -1 and d.max() <= 1
    assert path[0] == 5 and path[-1] == 25


@pytest.mark.parametrize("max_speed,min_speed", [(2.0, 0.0), (1.5, 0.5), (1.2, 0.8)])
def test_correspondence_monotonic_and_speed_bounded(max_speed, min_speed):
    rng = np.random.default_rng(11)
    aff = Affinity(rng.standard_normal((300, 41)), (np.arange(41) - 20) / RATE, RATE)
    opts = PathOptions(max_speed=max_speed, min_speed=min_speed)
    cor = correspondence(aff, opts, out_rate=25.0, n_out=260)  # past the end: extrapolated
    assert cor.src_time.shape == (260,) and cor.confidence.shape == (260,)
    speed = np.diff(cor.src_time) * 25.0
    assert speed.min() >= min_speed - 1e-9 and speed.max() <= max_speed + 1e-9
    # beyond the analysed span (10 s) the picture plays at speed 1
    np.testing.assert_allclose(speed[-5:], 1.0, atol=1e-9)


def test_correspondence_follows_planted_lag_on_output_clock():
    aff, truth = planted(4)
    cor = correspondence(aff, out_rate=RATE)
    want = aff.lags[truth]
    assert np.mean(np.abs(cor.lag - want) <= 1.0 / RATE + 1e-9) >= 0.95
    clipped = correspondence(aff, out_rate=RATE, src_duration=5.0)
    assert clipped.src_time.min() >= 0.0 and clipped.src_time.max() <= 5.0


def test_bound_slope_properties():
    rng = np.random.default_rng(2)
    y = np.cumsum(rng.normal(1.0, 1.5, 500))
    z = bound_slope(y, 0.2, 1.8)
    d = np.diff(z)
    assert d.min() >= 0.2 - 1e-9 and d.max() <= 1.8 + 1e-9
    ok = np.cumsum(rng.uniform(0.3, 1.7, 100))
    np.testing.assert_allclose(bound_slope(ok, 0.2, 1.8), ok)
    # symmetric: no systematic delay relative to the input
    assert abs(np.mean(z - y)) < 2.0


def test_lag_path_to_offset():
    aff, truth = planted(0)
    path = np.full(400, 40)
    off = lag_path_to_offset(aff, path, np.ones(400))
    assert off.seconds == pytest.approx(10 / RATE)
    assert off.drift.values.shape == (400, 1)


# ---------------------------------------------------------------------------------- DTW


def test_dtw_textbook_repeated_start():
    x, y = np.array([0.0, 1, 2]), np.array([0.0, 0, 1, 2])
    pi, pj, total = dtw(np.abs(x[:, None] - y[None, :]))
    assert total == 0.0
    assert list(zip(pi, pj, strict=True)) == [(0, 0), (0, 1), (1, 2), (2, 3)]


def test_dtw_textbook_with_cost():
    # x = 1 2 3 3 5, y = 1 2 2 3 4 5 (absolute differences): best total is 1 (4 vs 3 or 5)
    x, y = np.array([1.0, 2, 3, 3, 5]), np.array([1.0, 2, 2, 3, 4, 5])
    pi, pj, total = dtw(np.abs(x[:, None] - y[None, :]))
    assert total == pytest.approx(1.0)
    assert (pi[0], pj[0]) == (0, 0) and (pi[-1], pj[-1]) == (4, 5)
    steps = np.stack([np.diff(pi), np.diff(pj)], 1)
    assert {tuple(s) for s in steps} <= {(1, 0), (0, 1), (1, 1)}


def _brute_dtw(c):
    n, m = c.shape
    d = np.full((n + 1, m + 1), np.inf)
    d[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            d[i, j] = c[i - 1, j - 1] + min(d[i - 1, j], d[i, j - 1], d[i - 1, j - 1])
    return d[n, m]


def test_dtw_matches_quadratic_reference_and_band():
    rng = np.random.default_rng(3)
    for _ in range(15):
        c = rng.random((int(rng.integers(2, 30)), int(rng.integers(2, 30))))
        pi, pj, total = dtw(c)
        assert total == pytest.approx(_brute_dtw(c))
        assert c[pi, pj].sum() == pytest.approx(total)
        pib, pjb, tb = dtw(c, band=max(c.shape))  # wide band == full
        assert tb == pytest.approx(total)
        np.testing.assert_array_equal(pib, pi)
        # a narrow band can only be worse, and its path stays in the band
        pin, pjn, tn = dtw(c, band=2)
        assert tn >= total - 1e-12 and pin[-1] == c.shape[0] - 1 and pjn[-1] == c.shape[1] - 1


def test_banded_dtw_correspondence_tracks_planted_path():
    aff, truth = planted(1, boost=3.0)
    cor = banded_dtw_correspondence(aff)
    assert np.all(np.diff(cor.src_time) >= -1e-12)
    assert np.mean(np.abs(cor.lag - aff.lags[truth]) <= 1.0 / RATE + 1e-9) >= 0.9


def test_banded_dtw_step_penalty_keeps_the_diagonal():
    """A costly diagonal cell: without a step penalty DTW detours around it for free; with one,
    the two extra steps cost more than the cell, so the path stays on the diagonal."""
    from avsync.path import banded_dtw

    c = np.zeros((5, 5))
    c[2, 2] = 0.2
    lo = np.zeros(5, dtype=np.int64)
    pi, pj, total = banded_dtw(c, lo, 5)
    assert (2, 2) not in set(zip(pi.tolist(), pj.tolist(), strict=True)) and total == 0.0
    pi, pj, total = banded_dtw(c, lo, 5, step_penalty=0.5)
    assert pi.tolist() == pj.tolist() == [0, 1, 2, 3, 4]
    assert total == pytest.approx(0.2)
    # a real step still costs its penalty: a 5 x 6 matrix needs one horizontal step
    pi, pj, total = banded_dtw(np.zeros((5, 6)), lo, 6, step_penalty=0.5)
    assert total == pytest.approx(0.5) and len(pi) == 6
    with pytest.raises(ValueError):
        banded_dtw(c, lo, 5, step_penalty=-1.0)
