"""The papers' augmentations, on feature arrays (numpy, one window at a time).

- horizontal flip of the picture: keypoints swap left/right and ``x → 1 − x``; a motion
  grid mirrors its columns;
- SpecAugment (Park et al. 2019) time and frequency masks on a (normalised) log-mel.
"""

from __future__ import annotations

import numpy as np


def hflip_keypoints(kp: np.ndarray, pairs: list[tuple[int, int]] | tuple[tuple[int, int], ...]) -> np.ndarray:
    """Mirror keypoints horizontally.

    Parameters
    ----------
    kp : ndarray, shape (T, K*2)
        x, y per keypoint (point-major: x0, y0, x1, y1, ...); x in [0, 1] (or relative).
    pairs : sequence of (i, j)
        Left/right keypoint indices to swap.

    Returns
    -------
    ndarray, shape (T, K*2)
        ``x → 1 − x`` and left/right swapped (velocities are just negated in x).
    """
    t, d = kp.shape
    p = kp.reshape(t, d // 2, 2).copy()
    p[..., 0] = 1.0 - p[..., 0]
    for i, j in pairs:
        p[:, [i, j]] = p[:, [j, i]]
    return p.reshape(t, d)


def hflip_grid(grid: np.ndarray) -> np.ndarray:
    """Mirror a (T, G*G) row-major motion grid left ↔ right."""
    t, d = grid.shape
    g = int(round(np.sqrt(d)))
    if g * g != d:
        raise ValueError(f"grid width {d} is not a square")
    return grid.reshape(t, g, g)[:, :, ::-1].reshape(t, d).copy()


def spec_augment(
    logmel: np.ndarray,
    rng: np.random.Generator,
    n_time: int = 2,
    max_time: float = 0.08,
    n_freq: int = 2,
    max_freq: int = 16,
    fill: float | None = None,
) -> np.ndarray:
    """SpecAugment time and frequency masks.

    Parameters
    ----------
    logmel : ndarray, shape (T, F)
    n_time, max_time : int, float
        Number of time masks, each up to ``max_time × T`` steps long.
    n_freq, max_freq : int
        Number of frequency masks, each up to ``max_freq`` bins wide.
    fill : float, optional
        Value written into masks (default: the array's mean).

    Returns
    -------
    ndarray, shape (T, F)
        A masked copy.
    """
    x = np.array(logmel, dtype=np.float32, copy=True)
    t, f = x.shape
    v = float(x.mean()) if fill is None else fill
    for _ in range(n_time):
        w = int(rng.integers(0, max(1, int(max_time * t)) + 1))
        if w and t > w:
            s = int(rng.integers(0, t - w + 1))
            x[s : s + w] = v
    for _ in range(n_freq):
        w = int(rng.integers(0, max_freq + 1))
        if w and f > w:
            s = int(rng.integers(0, f - w + 1))
            x[:, s : s + w] = v
    return x
