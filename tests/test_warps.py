"""Random monotonic distortions and their inversion (alignment ground truth)."""

from __future__ import annotations

import numpy as np
import pytest

from avsync.warps import invert_plan, plan_lag, random_warp, tae_warp

FPS = 30.0


def runs(plan):
    edges = np.flatnonzero(np.diff(np.r_[-1, plan, plan[-1] + 1]))
    return np.diff(edges)


@pytest.mark.parametrize("seed", range(6))
def test_random_warp_monotonic_and_bounded(seed):
    n = 900
    plan = random_warp(n, FPS, np.random.default_rng(seed), max_shift=0.5, max_displacement=1.0)
    assert plan.dtype == np.int64 and np.all(np.diff(plan) >= 0)
    assert plan.min() >= 0 and plan.max() <= n - 1
    assert np.abs(np.arange(plan.size) - plan).max() <= (1.0 + 0.5) * FPS + 1
    assert abs(plan.size - n) <= 1.5 * FPS + 1
    # skips are short: never more than max_skip_frames + ceil(max speed) frames at once
    assert np.diff(plan).max() <= 3 + 2
    # interior freezes are short (the held first frame of a positive shift is excluded)
    inner = runs(plan)[1:]
    assert inner.max() <= 4 + 2


def test_random_warp_really_changes_speed():
    plan = random_warp(1800, FPS, np.random.default_rng(3), freeze_prob=0.0, skip_prob=0.0, max_shift=0.0)
    speed = (plan[30:] - plan[:-30]) / 30.0  # original frames per distorted frame over 1 s
    assert speed.min() < 0.85 and speed.max() > 1.2
    # with a degenerate speed range and no events the plan is the identity
    ident = random_warp(300, FPS, np.random.default_rng(0), speed_range=(1.0, 1.0),
                        freeze_prob=0.0, skip_prob=0.0, max_shift=0.0)
    np.testing.assert_array_equal(ident, np.arange(300))


def test_random_warp_is_seeded():
    a = random_warp(600, FPS, np.random.default_rng(42))
    b = random_warp(600, FPS, np.random.default_rng(42))
    np.testing.assert_array_equal(a, b)


def test_freezes_and_skips_happen():
    plan = random_warp(3000, FPS, np.random.default_rng(1), speed_range=(1.0, 1.0), freeze_prob=0.05,
                       skip_prob=0.05, max_shift=0.0)
    assert np.any(np.diff(plan) >= 2)  # skips
    assert np.any(runs(plan) >= 2)  # freezes


@pytest.mark.parametrize("seed", range(4))
def test_tae_warp(seed):
    plan = tae_warp(1000, np.random.default_rng(seed), max_displacement_frames=25, max_repeat=4)
    assert np.all(np.diff(plan) >= 0) and plan[0] == 0
    assert np.abs(np.arange(plan.size) - plan).max() <= 25
    assert runs(plan).max() <= 4
    assert np.any(np.diff(plan) == 2) and np.any(runs(plan) >= 2)  # drops and duplicates


def test_invert_plan_round_trip():
    rng = np.random.default_rng(9)
    for _ in range(5):
        n = 600
        plan = random_warp(n, FPS, rng)
        gt = invert_plan(plan, n)
        assert gt.shape == (n,) and np.all(np.diff(gt) >= 0)
        shown = np.unique(plan)
        for f in range(n):
            got = plan[gt[f]]
            if f in set(shown):
                assert got == f  # a shown frame maps to a distorted frame showing it
            else:
                assert abs(got - f) == np.abs(shown - f).min()  # else the nearest shown one


def test_invert_plan_textbook():
    plan = np.array([0, 0, 1, 3, 3, 3, 4])  # frame 2 skipped, 0 doubled, 3 tripled
    np.testing.assert_array_equal(invert_plan(plan, 6), [0, 2, 2, 4, 6, 6])
    np.testing.assert_allclose(plan_lag(plan, 6, 1.0), [0, 1, 0, 1, 2, 1])
    with pytest.raises(ValueError):
        invert_plan(np.array([2, 1]), 3)
