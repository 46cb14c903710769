"""Visual activity envelopes: keypoint kinematics, mouth opening, frame-difference motion.

Every envelope returned here is 1-D, one value per (uniformly spaced) video frame, and
normalised to zero median and unit standard deviation, like the audio onset envelope,
so that cross-correlating the two is meaningful without further scaling.
"""

from __future__ import annotations

import numpy as np

from avsync.errors import InputError
from avsync.features.landmarks import BODY_JOINTS, L_HIP, L_SHOULDER, R_HIP, R_SHOULDER

GRID = 8  # cells per side of the motion grid
MOTION_WIDTH = 160  # width (px) of the gray frames the motion grid is computed on


def normalise(x: np.ndarray) -> np.ndarray:
    """Zero median, unit standard deviation (only the shift when ``x`` is flat), float32."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return x.astype(np.float32)
    x = x - np.median(x)
    sd = float(np.std(x))
    return (x / sd if sd > 1e-12 else x).astype(np.float32)


def body_scale(kp: np.ndarray) -> float:
    """Body size: median torso length (shoulder mid-point to hip mid-point).

    Parameters
    ----------
    kp : ndarray, (T, 33, 2)
        mediapipe pose keypoints, any length unit.

    Returns
    -------
    float
        In the unit of ``kp``; falls back to shoulder width, then to 1.0.
    """
    kp = np.asarray(kp, dtype=np.float64)
    sh = (kp[:, L_SHOULDER] + kp[:, R_SHOULDER]) / 2
    hp = (kp[:, L_HIP] + kp[:, R_HIP]) / 2
    for d in (np.linalg.norm(sh - hp, axis=1), np.linalg.norm(kp[:, L_SHOULDER] - kp[:, R_SHOULDER], axis=1)):
        d = d[np.isfinite(d)]
        if d.size and np.median(d) > 1e-6:
            return float(np.median(d))
    return 1.0


def keypoint_kinematics(kp: np.ndarray, fps: float, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Per-keypoint speed and acceleration magnitude (central differences).

    Parameters
    ----------
    kp : ndarray, (T, K, 2)
        Cleaned (NaN-free) keypoint positions on a uniform grid.
    fps : float
        Frames per second of the grid.
    scale : float
        Length unit to divide by (e.g. :func:`body_scale`), so results are in body
        lengths per second.

    Returns
    -------
    speed : ndarray, (T, K)
        |velocity|, scale units / s.
    accel : ndarray, (T, K)
        |acceleration| (the vector's magnitude, so direction changes count), scale / s².
    """
    kp = np.asarray(kp, dtype=np.float64) / scale
    T = kp.shape[0]
    if T < 3:
        z = np.zeros(kp.shape[:2], np.float32)
        return z, z.copy()
    vel = np.gradient(kp, axis=0) * fps
    acc = np.gradient(vel, axis=0) * fps
    return (
        np.linalg.norm(vel, axis=2).astype(np.float32),
        np.linalg.norm(acc, axis=2).astype(np.float32),
    )


def pose_envelope(kp: np.ndarray, fps: float) -> np.ndarray:
    """Pose activity envelope whose peaks should coincide with musical beats.

    Choice: the mean over body joints (shoulders down) of the acceleration magnitude,
    in body lengths / s². Dance accents are sudden stops, starts and changes of
    direction; all three are peaks of |acceleration| (a stop or a reversal is a large
    deceleration vector), while steady motion gives ~0. Face points are left out because
    their jitter dominates otherwise.

    Parameters
    ----------
    kp : ndarray, (T, 33, 2)
        Cleaned pose keypoints on a uniform grid.
    fps : float

    Returns
    -------
    ndarray, (T,)
        Normalised (zero median, unit std).
    """
    kp = np.asarray(kp)
    _, acc = keypoint_kinematics(kp[:, list(BODY_JOINTS)], fps, body_scale(kp))
    return normalise(acc.mean(axis=1))


def mouth_envelope(opening: np.ndarray, fps: float, detrend: float = 1.0) -> np.ndarray:
    """Speech visual envelope from mouth opening.

    Choice: the opening itself (not its derivative), minus a running median over
    ``detrend`` seconds. The audio speech envelope (band log-RMS) is a *level*, loud while
    the mouth is open on vowels, so the level-to-level correlation is the natural pair;
    the running median removes slow changes due to head pose / distance.

    Parameters
    ----------
    opening : ndarray, (T,)
        Inner-lip distance / inter-ocular distance per frame (NaN-free).
    fps : float
    detrend : float
        Window of the running median, seconds (0 disables).

    Returns
    -------
    ndarray, (T,)
        Normalised (zero median, unit std).
    """
    from scipy.ndimage import median_filter

    x = np.asarray(opening, dtype=np.float64)
    w = int(round(detrend * fps)) | 1
    if detrend > 0 and x.size > w:
        x = x - median_filter(x, size=w, mode="nearest")
    return normalise(x)


class MotionGrid:
    """Streaming frame-difference energy on a coarse G×G grid.

    Feed gray frames one at a time to :meth:`update`. The energy of a cell is the mean
    absolute difference to the previous frame, gray levels scaled to [0, 1], divided by
    the time between the frames in nominal frame intervals (so a variable frame rate
    gap does not look like a burst of motion). The first frame gives zeros.
    """

    def __init__(self, grid: int = GRID) -> None:
        self.grid = grid
        self._prev: np.ndarray | None = None

    def update(self, gray: np.ndarray, gap: float = 1.0) -> np.ndarray:
        """One frame in; its energy per cell out.

        Parameters
        ----------
        gray : ndarray, (H, W) uint8 or float in [0, 255]
            H and W at least ``grid``.
        gap : float
            Time since the previous frame in nominal frame intervals (1 for CFR).

        Returns
        -------
        ndarray, (grid * grid,) float32
            Row-major cells (top-left first).
        """
        g = self.grid
        h, w = gray.shape
        if h < g or w < g:
            raise InputError(f"the picture is {w}x{h} pixels: too small to analyse (need at least {g}x{g})")
        cur = np.asarray(gray[: h // g * g, : w // g * g], dtype=np.float32) * (1.0 / 255.0)
        if self._prev is None or self._prev.shape != cur.shape:
            self._prev = cur
            return np.zeros(g * g, np.float32)
        d = np.abs(cur - self._prev)
        self._prev = cur
        cells = d.reshape(g, cur.shape[0] // g, g, cur.shape[1] // g).mean(axis=(1, 3))
        return (cells.ravel() / max(gap, 1e-3)).astype(np.float32)


def motion_grid(frames: np.ndarray, grid: int = GRID) -> np.ndarray:
    """Frame-difference energy for a stack of gray frames.

    Parameters
    ----------
    frames : ndarray, (T, H, W)
        Gray frames, 0–255.

    Returns
    -------
    ndarray, (T, grid * grid)
        See :class:`MotionGrid`; row 0 is zeros.
    """
    m = MotionGrid(grid)
    return np.stack([m.update(f) for f in frames]) if len(frames) else np.zeros((0, grid * grid), np.float32)


def motion_envelope(grid: np.ndarray) -> np.ndarray:
    """Motion onsets: half-wave-rectified temporal change of the per-cell motion energy.

    ``env[t] = sum_c max(0, E[t, c] - E[t-1, c])`` — rises of motion, cell by cell, so an
    event in one part of the picture is not cancelled by motion stopping elsewhere. A
    flash or a cut peaks on its first frame.

    Parameters
    ----------
    grid : ndarray, (T, C)
        Per-cell motion energy on a uniform grid (see :class:`MotionGrid`).

    Returns
    -------
    ndarray, (T,)
        Normalised (zero median, unit std); row 0 is the median.
    """
    grid = np.asarray(grid, dtype=np.float64)
    if grid.shape[0] == 0:
        return np.zeros(0, np.float32)
    rise = np.maximum(np.diff(grid, axis=0, prepend=grid[:1]), 0.0).sum(axis=1)
    return normalise(rise)
