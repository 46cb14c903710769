"""Input preparation shared by the learned backends and their trainables (numpy, no torch).

Features in, per-video-frame network inputs out, plus the banded lag tables, the DTW lag
path and the ridge Affinity built on them, and the checkpoint helpers of the backends.
The widths are those of :mod:`avsync.nn.inputs`.

Sections
    per-frame rows (syncnet, avmatch, wlos): :func:`audio_frames`, :func:`mfcc_frames`,
    :func:`logmel_subframes`, :func:`visual_frames`, :func:`checked_visual_frames`, :func:`visual_input`,
    :func:`windows`;
    phase log-mel sequences (tae, avst): :func:`seq_audio_frames`, :func:`seq_audio_input`,
    :func:`seq_visual_raw`, :func:`seq_visual_input`, :func:`kind_for`, :func:`resample_rows`;
    alignnet: :func:`audio_at_fps`, :func:`alignnet_visual_raw`, :func:`alignnet_visual_input`,
    :func:`alignnet_audio_input`;
    lag tables: :func:`lag_bins`, :func:`band_table`, :func:`band_lag_table`, :func:`nanmean_cols`, :func:`smooth_rows`,
    :func:`window_best_lags`, :func:`dtw_lag_path`, :func:`ridge_affinity`, :func:`row_margin`,
    :func:`dtw_ridge_affinity`, :func:`parabolic`;
    checkpoints: :func:`dims_from_dict`, :func:`load_net`, :func:`embed_chunks`, :func:`frame_embeddings`,
    :class:`KindNets`, :class:`SeqKindNets` (the network per picture input kind).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import numpy as np

from avsync.errors import CannotMeasure, InputError
from avsync.features import AudioFeatures, VisualFeatures
from avsync.nn.inputs import AUDIO_IN, BANDS, BODY19, N_BANDS, N_MFCC, PHASES, SUB
from avsync.types import Affinity

# ----------------------------------------------------------------------------------------
# Per-frame rows (syncnet, avmatch, wlos)


def n_frames(audio: AudioFeatures, fps: float) -> int:
    """Number of audio rows on the video clock: ``round(duration × fps)``, at least 1."""
    return max(1, int(round(float(audio.duration) * fps)))


def logmel_subframes(audio: AudioFeatures, fps: float, n: int, sub: int = SUB) -> np.ndarray:
    """The 128-bin log-mel on a grid of ``sub`` rows per video frame.

    Row ``r`` is the log-mel at time ``r / (sub × fps)`` (linear interpolation of the 100 Hz
    track, ends held), so video frame ``k`` owns rows ``k·sub … k·sub + sub − 1``.

    Returns
    -------
    ndarray, shape (n * sub, 128), float32
    """
    lm = audio.logmel
    x = np.asarray(lm.values, dtype=np.float32)
    t_new = np.arange(n * sub) / (sub * fps)
    t_old = lm.start + np.arange(len(x)) / lm.rate
    idx = np.interp(t_new, t_old, np.arange(len(x), dtype=np.float64))
    i0 = np.clip(np.floor(idx).astype(np.int64), 0, len(x) - 1)
    i1 = np.minimum(i0 + 1, len(x) - 1)
    w = (idx - i0).astype(np.float32)[:, None]
    return x[i0] * (1 - w) + x[i1] * w


def cmvn(x: np.ndarray) -> np.ndarray:
    """Per-column mean removal and one global scale (float32)."""
    x = x - x.mean(axis=0, keepdims=True)
    return (x / max(float(x.std()), 1e-4)).astype(np.float32)


def audio_frames(audio: AudioFeatures, fps: float, n: int | None = None) -> np.ndarray:
    """SyncNet / avmatch audio input per video frame.

    Returns
    -------
    ndarray, shape (N, SUB * N_BANDS), float32
        Row ``k`` = the ``SUB`` sub-frame rows of frame ``k``, each 32 bands (mean of 4 mel
        bins), per-band mean removed and globally scaled to unit variance.
    """
    n = n_frames(audio, fps) if n is None else int(n)
    lm = logmel_subframes(audio, fps, n)
    bands = lm.reshape(len(lm), N_BANDS, -1).mean(axis=2)
    return cmvn(bands).reshape(n, SUB * N_BANDS)


def mfcc_frames(audio: AudioFeatures, fps: float, n: int | None = None, n_mfcc: int = N_MFCC) -> np.ndarray:
    """MFCCs from the log-mel (DCT-II, orthonormal, coefficients 1 … n_mfcc) per video frame.

    Returns
    -------
    ndarray, shape (N, SUB * n_mfcc), float32
        Row ``k`` = the ``SUB`` sub-frame MFCC vectors of frame ``k``, cepstral mean and
        variance normalised over the input.
    """
    from scipy.fft import dct

    n = n_frames(audio, fps) if n is None else int(n)
    lm = logmel_subframes(audio, fps, n)
    c = dct(lm.astype(np.float64), type=2, norm="ortho", axis=1)[:, 1 : n_mfcc + 1]
    c = c - c.mean(axis=0, keepdims=True)
    c = c / np.maximum(c.std(axis=0, keepdims=True), 1e-4)
    return c.astype(np.float32).reshape(n, SUB * n_mfcc)


def visual_frames(visual: VisualFeatures, kind: str) -> np.ndarray | None:
    """Raw per-frame picture input: motion grid energies (N, 64) for ``'motion'``; lip
    keypoint y coordinates (N, K) for ``'lips'``, x and y (N, 2K) for ``'lipshape'`` (None
    when no face was tracked).

    The motion grid is a frame-difference quantity (warped by summation in training); lip
    y positions are states (warped by indexing); :func:`visual_input` turns either into the
    network input.
    """
    if kind == "motion":
        return np.asarray(visual.grid.values, dtype=np.float32)
    if kind in ("lips", "lipshape"):
        if visual.keypoints is None or visual.kind != "lips":
            return None
        kp = np.asarray(visual.keypoints.values, dtype=np.float32)
        return kp[:, 1::2].copy() if kind == "lips" else kp.copy()
    raise InputError(f"unknown picture input kind '{kind}' (motion | lips | lipshape)")


def checked_visual_frames(visual: VisualFeatures, kind: str, name: str) -> np.ndarray:
    """:func:`visual_frames`, refusing (CannotMeasure) when the video lacks the ``kind`` rows
    the ``name`` checkpoint needs or has fewer than 2 frames."""
    raw = visual_frames(visual, kind)
    if raw is None:
        raise CannotMeasure(f"this {name} checkpoint needs {kind} features, which the video lacks")
    if len(raw) < 2:
        raise CannotMeasure("too few video frames to measure")
    return raw


def visual_input(raw: np.ndarray, kind: str) -> np.ndarray:
    """Network picture input from a raw sequence (a whole clip or a training window).

    motion: ``log1p(energy / mean energy)``; lips: vertical velocity of every lip point
    divided by its robust scale (the "vertical optical flow of the lip region" of WLOS,
    from keypoints since we have no mouth crops); lipshape: the lip points (x, y) minus
    their mean over the input, over one global scale, then their velocities (robust scale),
    i.e. the mouth's shape and its motion.

    Returns
    -------
    ndarray, shape (N, D), float32
    """
    raw = np.asarray(raw, dtype=np.float32)
    if kind == "motion":
        scale = float(np.mean(np.maximum(raw, 0))) + 1e-6
        return np.log1p(np.maximum(raw, 0) / scale).astype(np.float32)
    v = np.diff(raw, axis=0, prepend=raw[:1])
    s = float(np.median(np.abs(v))) * 1.4826 + 1e-6
    vel = np.clip(v / s, -10, 10).astype(np.float32)
    if kind != "lipshape":
        return vel
    pos = raw - raw.mean(axis=0, keepdims=True)
    pos = np.clip(pos / (float(pos.std()) + 1e-6), -10, 10)
    return np.concatenate([pos, vel], axis=1).astype(np.float32)


def windows(x: np.ndarray, width: int, centre: np.ndarray | None = None) -> np.ndarray:
    """Windows of ``width`` rows around each centre (zero rows outside the sequence).

    Window of centre ``k`` = rows ``k − width // 2 … k − width // 2 + width − 1``.

    Parameters
    ----------
    x : ndarray, shape (N, D)
    width : int
    centre : ndarray of int, shape (M,), optional
        Default: every row.

    Returns
    -------
    ndarray, shape (M, width, D)
    """
    n, d = x.shape
    centre = np.arange(n) if centre is None else np.asarray(centre, dtype=np.int64)
    lo = width // 2
    pad = np.zeros((n + 2 * width, d), dtype=x.dtype)
    pad[width : width + n] = x
    idx = centre[:, None] - lo + np.arange(width)[None, :] + width
    idx = np.clip(idx, 0, len(pad) - 1)
    return pad[idx]


# ----------------------------------------------------------------------------------------
# Phase log-mel sequences (tae, avst)


def seq_audio_frames(audio: AudioFeatures, fps: float, n: int) -> np.ndarray:
    """Log-mel on the video clock with sub-frame detail.

    The 128-bin log-mel (100 Hz) is pooled into 32 bands (mean of 4 adjacent bins) and
    sampled by linear interpolation at 4 phases around each frame time ``k / fps``
    (offsets −3/8, −1/8, +1/8, +3/8 of a frame).

    Parameters
    ----------
    audio : AudioFeatures
    fps : float
        Video frame rate.
    n : int
        Frames wanted.

    Returns
    -------
    ndarray, shape (n, 128)
        Phase-major: columns ``q * 32 + b`` hold band ``b`` at phase ``q``. dB values.
    """
    lm = np.asarray(audio.logmel.values, dtype=np.float32)
    if lm.shape[1] % BANDS:
        raise InputError(f"log-mel width {lm.shape[1]} is not a multiple of {BANDS}")
    pooled = lm.reshape(len(lm), BANDS, -1).mean(2)
    t_old = audio.logmel.start + np.arange(len(lm)) / audio.logmel.rate
    phase = (np.arange(PHASES) + 0.5) / PHASES - 0.5
    t_new = (np.arange(n)[:, None] + phase[None, :]) / float(fps)
    out = np.empty((n, PHASES, BANDS), np.float32)
    for b in range(BANDS):
        out[:, :, b] = np.interp(t_new, t_old, pooled[:, b])
    return out.reshape(n, AUDIO_IN)


def seq_audio_input(a: np.ndarray) -> np.ndarray:
    """Per-band standardisation over the window (training adds SpecAugment masks on the
    ``(4T, 32)`` sub-frame rows, :func:`avsync.train.seq.audio_window`).

    Parameters
    ----------
    a : ndarray, shape (T, 128)
        From :func:`seq_audio_frames`.

    Returns
    -------
    ndarray, shape (T, 128), float32
    """
    t = len(a)
    x = a.reshape(t * PHASES, BANDS)
    x = (x - x.mean(0, keepdims=True)) / np.maximum(x.std(0, keepdims=True), 1e-3)
    return x.reshape(t, AUDIO_IN).astype(np.float32)


def seq_visual_raw(visual: VisualFeatures, kind: str) -> np.ndarray | None:
    """The per-frame visual array: motion grid (T, 64) or keypoints (T, K*2); None if missing."""
    if kind == "motion":
        return np.asarray(visual.grid.values, dtype=np.float32)
    if visual.keypoints is None:
        return None
    return np.asarray(visual.keypoints.values, dtype=np.float32)


def seq_visual_input(raw: np.ndarray, kind: str) -> np.ndarray:
    """Network input from a raw visual window.

    Parameters
    ----------
    raw : ndarray, shape (T, D)
        Motion grid energies (difference-type) or keypoint positions.
    kind : str
        'motion' → per cell log energy (relative to the window mean) and its change;
        otherwise → per coordinate velocity and acceleration.

    Returns
    -------
    ndarray, shape (T, 2 D), float32
        Standardised over the whole window.
    """
    if kind == "motion":
        g = np.log1p(np.maximum(raw, 0) / (float(np.mean(raw)) + 1e-6))
        x = np.concatenate([g, np.diff(g, axis=0, prepend=g[:1])], 1)
    else:
        v = np.diff(raw, axis=0, prepend=raw[:1])
        x = np.concatenate([v, np.diff(v, axis=0, prepend=v[:1])], 1)
    return ((x - x.mean()) / max(float(x.std()), 1e-4)).astype(np.float32)


def kind_for(visual: VisualFeatures, preferred: str) -> str:
    """The visual kind a checkpoint needs, if present, else 'motion' is refused clearly."""
    if preferred != "motion" and visual.keypoints is None:
        raise CannotMeasure(f"this checkpoint needs {preferred} keypoints, which were not found "
                            f"({visual.note or visual.kind})")
    return preferred


def resample_rows(x: np.ndarray, rate: float, new_rate: float, n: int) -> np.ndarray:
    """Linear resampling of (T, D) rows from ``rate`` to ``new_rate`` (edges held), n rows."""
    if abs(rate - new_rate) < 1e-6 and len(x) == n:
        return x
    t_old = np.arange(len(x)) / rate
    t_new = np.arange(n) / new_rate
    return np.stack([np.interp(t_new, t_old, x[:, d]) for d in range(x.shape[1])], 1).astype(np.float32)


# ----------------------------------------------------------------------------------------
# AlignNet


def audio_at_fps(audio: AudioFeatures, fps: float, n: int) -> np.ndarray:
    """Log-mel (T, 128) at 100 Hz → (n, 128) at ``fps`` (box-smoothed over one frame, then
    linearly interpolated at the frame times k / fps)."""
    lm = audio.logmel
    x = np.asarray(lm.values, dtype=np.float32)
    w = max(1, int(round(lm.rate / fps)))
    if w > 1 and len(x) >= w:
        k = np.ones(w, np.float32) / w
        x = np.stack([np.convolve(x[:, d], k, mode="same") for d in range(x.shape[1])], 1)
    t_new = np.arange(n) / fps
    t_old = lm.start + np.arange(len(x)) / lm.rate
    return np.stack([np.interp(t_new, t_old, x[:, d]) for d in range(x.shape[1])], 1).astype(np.float32)


def alignnet_visual_raw(visual: VisualFeatures, kind: str) -> np.ndarray | None:
    """The per-frame visual array warps apply to: grid energies (T, 64) for 'motion'
    (difference-type), keypoint positions (T, K*2) for 'pose' / 'lips'. None if missing."""
    if kind == "motion":
        return np.asarray(visual.grid.values, dtype=np.float32)
    if visual.keypoints is None:
        return None
    kp = np.asarray(visual.keypoints.values, dtype=np.float32)
    k = kp.shape[1] // 2
    if kind == "pose":
        if k == 33:
            kp = kp.reshape(-1, 33, 2)[:, BODY19].reshape(len(kp), -1)
        elif k != len(BODY19):
            return None
    elif kind == "lips" and k != 20:
        return None
    return kp


def standardise(x: np.ndarray, axis: int | None) -> np.ndarray:
    """Mean / standard deviation normalisation per column (``axis=0``) or over the whole array."""
    m = x.mean(axis=0 if axis == 0 else None, keepdims=True)
    s = x.std(axis=0 if axis == 0 else None, keepdims=True)
    return ((x - m) / np.maximum(s, 1e-4)).astype(np.float32)


def alignnet_visual_input(raw: np.ndarray, kind: str) -> np.ndarray:
    """Network input (T, P*c) from a raw window: motion → per cell (log energy, its change);
    keypoints → per point (vx, vy, ax, ay). Standardised over the window."""
    t = len(raw)
    if kind == "motion":
        scale = float(np.mean(raw)) + 1e-6
        g = np.log1p(np.maximum(raw, 0) / scale)
        dg = np.diff(g, axis=0, prepend=g[:1])
        x = np.stack([g, dg], axis=-1)  # (T, 64, 2)
    else:
        p = raw.reshape(t, -1, 2)
        v = np.diff(p, axis=0, prepend=p[:1])
        a = np.diff(v, axis=0, prepend=v[:1])
        x = np.concatenate([v, a], axis=-1)  # (T, K, 4)
    return standardise(x.reshape(t, -1), axis=None)


def alignnet_audio_input(a: np.ndarray) -> np.ndarray:
    """Per-bin mean/variance normalisation of a (T, 128) log-mel window."""
    return standardise(a, axis=0)


# ----------------------------------------------------------------------------------------
# Lag tables


def lag_bins(max_shift: float, fps: float) -> int:
    """Half-width ``n`` of the lag grid ``k / fps, k = −n … n`` covering ±max_shift s."""
    if max_shift <= 0:
        raise InputError(f"max_shift must be positive, got {max_shift}")
    return max(1, int(math.ceil(max_shift * fps - 1e-9)))


def band_table(a: np.ndarray, v: np.ndarray, n: int, fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
    """Pairwise scores in a band: ``out[i, j] = fn(a[i], v[i + j − n])``.

    Parameters
    ----------
    a : ndarray, shape (Na, E)
        One row per audio frame.
    v : ndarray, shape (Nv, E)
        One row per picture frame.
    n : int
        Lag half-width in frames.
    fn : callable
        ``fn(A, V)`` with A, V of shape (M, E) → (M,).

    Returns
    -------
    ndarray, shape (Na, 2n + 1), float64
        NaN where the picture frame is outside the video.
    """
    na, nv = len(a), len(v)
    out = np.full((na, 2 * n + 1), np.nan)
    for j, s in enumerate(range(-n, n + 1)):
        i0, i1 = max(0, -s), min(na, nv - s)
        if i1 > i0:
            out[i0:i1, j] = fn(a[i0:i1], v[i0 + s : i1 + s])
    return out


def band_lag_table(a: np.ndarray, v: np.ndarray, max_shift: float, fps: float,
                   fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> tuple[np.ndarray, int]:
    """:func:`band_table` over the :func:`lag_bins` of ``max_shift`` at ``fps``: (table, n)."""
    n = lag_bins(max_shift, fps)
    return band_table(a, v, n, fn), n


def nanmean_cols(t: np.ndarray, min_rows: int) -> np.ndarray:
    """Column means over finite entries; NaN for columns with fewer than ``min_rows``."""
    ok = np.isfinite(t)
    cnt = ok.sum(axis=0)
    s = np.where(ok, t, 0.0).sum(axis=0)
    return np.where(cnt >= max(1, min_rows), s / np.maximum(cnt, 1), np.nan)


def window_best_lags(
    t: np.ndarray, lags: np.ndarray, fps: float, fallback: float, lower_better: bool
) -> tuple[int, int, list[float]]:
    """Best lag per 2 s window of rows (hop 0.5 s): the drift of an offset.

    Parameters
    ----------
    t : ndarray, shape (Na, L)
        Banded table (costs if ``lower_better``, else scores), NaN outside the video.
    lags : ndarray, shape (L,)
        Lag of each column, seconds.
    fps : float
        Rows per second.
    fallback : float
        Lag reported for windows without finite column means.

    Returns
    -------
    (window rows, hop rows, best lag (s) per window)
    """
    win, hop = max(4, int(round(2 * fps))), max(1, int(round(0.5 * fps)))
    best = np.nanargmin if lower_better else np.nanargmax
    drift = []
    for s in range(0, max(1, len(t) - win + 1), hop):
        md = nanmean_cols(t[s : s + win], max(2, win // 4))
        drift.append(float(lags[int(best(md))]) if np.isfinite(md).any() else fallback)
    return win, hop, drift


def smooth_rows(t: np.ndarray, width: int) -> np.ndarray:
    """NaN-aware moving average down each column (same lag), ``width`` rows."""
    if width <= 1:
        return t
    from scipy.ndimage import uniform_filter1d

    ok = np.isfinite(t).astype(np.float64)
    num = uniform_filter1d(np.where(ok > 0, t, 0.0), width, axis=0, mode="nearest")
    den = uniform_filter1d(ok, width, axis=0, mode="nearest")
    return np.where(ok > 0, num / np.maximum(den, 1e-9), np.nan)


def dtw_lag_path(cost: np.ndarray) -> np.ndarray:
    """Halperin-style DTW through a banded cost table; the lag bin per row.

    Cell ``(i, j)`` of ``cost`` pairs audio frame ``i`` with picture frame ``q = i + j − n``;
    in (audio, picture) coordinates the band starts at column ``i`` of a ``Na × (Na + L − 1)``
    matrix. Steps (1, 0), (0, 1), (1, 1), open begin and end; NaN cells (outside the video)
    cost the table's maximum.

    Parameters
    ----------
    cost : ndarray, shape (Na, L)
        Non-negative costs (lower = better match).

    Returns
    -------
    ndarray of float64, shape (Na,)
        Lag bin index (0 … L−1, fractional where the path moves horizontally) per row.
    """
    from avsync.path import banded_dtw

    c = np.asarray(cost, dtype=np.float64)
    na, nl = c.shape
    fin = c[np.isfinite(c)]
    if fin.size == 0:
        raise CannotMeasure("no overlap between picture and sound to align")
    fill = float(fin.max())
    c = np.where(np.isfinite(c), c, fill)
    c = c - float(c.min())
    pi, pq, _ = banded_dtw(c, np.arange(na), na + nl - 1, open_begin=True, open_end=True)
    counts = np.bincount(pi, minlength=na)
    q_mean = np.bincount(pi, weights=pq, minlength=na) / np.maximum(counts, 1)
    return np.clip(q_mean - np.arange(na), 0, nl - 1)


def ridge_affinity(
    lag_bin: np.ndarray, weight: np.ndarray, n: int, fps: float, sigma: float = 1.5
) -> Affinity:
    """An Affinity that is a Gaussian ridge along a lag path.

    ``scores[i, j] = weight[i] · exp(−(j − lag_bin[i])² / (2 σ²))``.

    Parameters
    ----------
    lag_bin : ndarray, shape (Na,)
        Lag bin (0 … 2n) per row, may be fractional.
    weight : ndarray, shape (Na,)
        Per-row confidence in [0, 1] (rows near 0 leave the DP free to interpolate).
    n : int
        Lag half-width; lags = (−n … n) / fps.
    fps : float
    sigma : float
        Ridge width, lag bins.
    """
    j = np.arange(2 * n + 1)[None, :]
    sc = np.asarray(weight, dtype=np.float64)[:, None] * np.exp(
        -((j - np.asarray(lag_bin, dtype=np.float64)[:, None]) ** 2) / (2 * sigma**2)
    )
    return Affinity(scores=sc, lags=np.arange(-n, n + 1) / fps, rate=float(fps), start=0.0)


def row_margin(t: np.ndarray, j: np.ndarray, lower_better: bool = True) -> np.ndarray:
    """Per-row confidence of choosing column ``j[i]``: ``(median − t[i, j]) / (median − min)``
    (for costs; mirrored for scores), in [0, 1]; 0 for rows without finite entries."""
    s = -t if lower_better else t
    ok = np.isfinite(s).any(axis=1)
    out = np.zeros(len(s))
    if not ok.any():
        return out
    ss = s[ok]
    med = np.nanmedian(ss, axis=1)
    top = np.nanmax(ss, axis=1)
    jj = np.clip(np.round(j[ok]).astype(np.int64), 0, s.shape[1] - 1)
    pick = ss[np.arange(len(ss)), jj]
    pick = np.where(np.isfinite(pick), pick, med)
    out[ok] = np.clip((pick - med) / np.maximum(top - med, 1e-12), 0.0, 1.0)
    return out


def dtw_ridge_affinity(cost: np.ndarray, n: int, fps: float) -> Affinity:
    """Ridge Affinity along the DTW path of the banded ``cost`` (lower = better), weighted by
    the per-row margin smoothed over 0.5 s (syncnet-dtw, avmatch)."""
    from avsync.path import smooth_series

    lag = dtw_lag_path(cost)
    conf = row_margin(cost, lag, lower_better=True)
    conf = smooth_series(conf, int(round(0.5 * fps)), order=0)
    return ridge_affinity(lag, 0.05 + 0.95 * conf, n, fps)


def parabolic(y: np.ndarray, k: int, maximum: bool = False) -> float:
    """Sub-bin position of the extremum at ``k`` from a parabola through y[k−1 … k+1].

    Parameters
    ----------
    y : ndarray, shape (N,)
    k : int
        Index of the extremum.
    maximum : bool
        Only refine a maximum (a parabola opening downwards); otherwise either kind, unless
        the parabola is flat (|curvature| < 1e-12).

    Returns
    -------
    float
        The extremum is at ``k +`` this, in [−0.5, 0.5]; 0 at the ends, when a neighbour is
        not finite, or when the parabola has no extremum of the wanted kind.
    """
    if k <= 0 or k >= len(y) - 1 or not np.all(np.isfinite(y[k - 1 : k + 2])):
        return 0.0
    den = y[k - 1] - 2 * y[k] + y[k + 1]
    if maximum:
        if not np.isfinite(den) or den >= 0:
            return 0.0
    elif abs(den) < 1e-12:
        return 0.0
    return float(np.clip(0.5 * (y[k - 1] - y[k + 1]) / den, -0.5, 0.5))


# ----------------------------------------------------------------------------------------
# Checkpoints


def dims_from_dict(cls: type, d: dict[str, Any]) -> Any:
    """Rebuild a frozen dims dataclass from plain checkpoint values (lists → tuples)."""
    known = {f.name for f in fields(cls)}
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in known}
    return cls(**kw)


def load_net(
    backend: str, checkpoint: str | None, device: str, dims_cls: type, make: Callable[[Any], Any],
    tiny: Any, default: str,
) -> tuple[Any, Any, dict[str, Any], str]:
    """Build a network from a checkpoint name/path, or the seeded tiny test model.

    Returns
    -------
    (model in eval mode, dims, checkpoint metrics, resolved device)
    """
    from avsync.device import resolve_device
    from avsync.hub import build_model

    dev = resolve_device(device)
    model, dims, ck = build_model(checkpoint, backend=backend, default=default, make=make, tiny_dims=tiny,
                                  device=dev, parse_dims=lambda d: dims_from_dict(dims_cls, d))
    return model, dims, dict(ck.get("metrics") or {}), dev


def embed_chunks(fn: Callable[[Any], Any], x: np.ndarray, device: str, chunk: int = 512) -> np.ndarray:
    """Apply ``fn`` (a torch module call) to ``x`` in chunks under ``no_grad``; numpy out."""
    import torch

    outs = []
    with torch.no_grad():
        for s in range(0, len(x), chunk):
            outs.append(fn(torch.from_numpy(np.ascontiguousarray(x[s : s + chunk])).to(device)).cpu().numpy())
    return np.concatenate(outs, axis=0) if outs else np.zeros((0, 1), np.float32)


def frame_embeddings(model: Any, audio: AudioFeatures, visual: VisualFeatures, kind: str, frames: int,
                     device: str, name: str) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-video-frame audio and picture embeddings of a frame-window model (syncnet, avmatch):
    ``model.embed_audio`` / ``model.embed_visual`` over ``frames``-wide windows; (ea, ev, fps)."""
    fps = float(visual.fps)
    raw = checked_visual_frames(visual, kind, name)
    a = audio_frames(audio, fps)
    v = visual_input(raw, kind)
    ea = embed_chunks(model.embed_audio, windows(a, frames), device)
    ev = embed_chunks(model.embed_visual, windows(v, frames), device)
    return ea, ev, fps


class KindNets:
    """A learned backend's networks per picture input: the checkpoint asked for, or the
    default of each kind (``DEFAULT_CHECKPOINT``: the lip network for a tracked face, the
    motion network else), each loaded once.

    Subclasses set ``NET`` (the hub's backend name) and ``DEFAULT_CHECKPOINT``
    ({'motion': name, 'lips': name}) and give :meth:`net_types`; their ``__init__`` sets
    ``device_request`` and ends with :meth:`start_nets`.
    """

    NET: str
    DEFAULT_CHECKPOINT: dict[str, str]
    requested: str | None
    device_request: str
    nets: dict[str, tuple[Any, Any, dict[str, Any], str]]

    @staticmethod
    def net_types() -> tuple[type, Callable[[Any], Any], Any]:
        """(dims class, model constructor, tiny test dims) of the network."""
        raise NotImplementedError

    def select(self, kind: str | None) -> None:
        """Load (once) and use the network for picture input ``kind``: the requested checkpoint
        when one was given (``kind`` None), else the default of that kind."""
        key = "requested" if kind is None else kind
        if key not in self.nets:
            name = self.requested if kind is None else self.DEFAULT_CHECKPOINT[kind]
            dims_cls, make, tiny = self.net_types()
            self.nets[key] = load_net(self.NET, name, self.device_request, dims_cls, make, tiny,
                                      self.DEFAULT_CHECKPOINT["motion"])
        self.model, self.dims, self.metrics, self.device = self.nets[key]
        self.kind = self.dims.input_kind

    def choose(self, visual: VisualFeatures) -> None:
        """Without a requested checkpoint: the lip network when ``visual`` tracked a face."""
        if self.requested is None:
            lips = visual.kind == "lips" and visual.keypoints is not None
            self.select("lips" if lips else "motion")

    def start_nets(self, checkpoint: str | None) -> None:
        """Remember the requested checkpoint and load the first network: an explicit one now
        (bad names fail early), else the motion default (the lip one waits for the input).
        Called last in ``__init__``, once what :meth:`select` needs is set."""
        self.requested = checkpoint
        self.nets = {}
        self.select("motion" if checkpoint is None else None)


class SeqKindNets(KindNets):
    """:class:`KindNets` for the sequence backends (tae, avst), whose checkpoint dims are plain
    dicts: the checkpoint asked for, or the default of each picture input kind
    (``DEFAULT_CHECKPOINT``: the lip network for a tracked face, the motion network else), each
    loaded once.

    Subclasses set ``NET`` and ``DEFAULT_CHECKPOINT`` ({'motion': name, 'lips': name}), give
    :meth:`net_types` and :meth:`configure` (what follows from the selected dims); their
    ``__init__`` sets ``device`` (resolved) and what :meth:`configure` reads, and ends with
    :meth:`start_nets`. :meth:`choose` and :meth:`start_nets` are :class:`KindNets`'.
    """

    device: str
    nets: dict[str, tuple[Any, dict[str, Any]]]  # type: ignore[assignment]

    @staticmethod
    def net_types() -> tuple[Callable[[dict[str, Any]], Any], dict[str, Any]]:  # type: ignore[override]
        """(model constructor, tiny test dims) of the network."""
        raise NotImplementedError

    def configure(self) -> None:
        """Set what depends on the selected network's dims (after :meth:`select`)."""

    def select(self, kind: str | None) -> None:
        """Load (once) and use the network for picture input ``kind``: the requested checkpoint
        when one was given (``kind`` None), else the default of that kind."""
        from avsync.hub import build_model

        key = "requested" if kind is None else kind
        if key not in self.nets:
            name = self.requested if kind is None else self.DEFAULT_CHECKPOINT[kind]
            make, tiny = self.net_types()
            model, dims, _ = build_model(name, backend=self.NET, default=self.DEFAULT_CHECKPOINT["motion"],
                                         make=make, device=self.device, tiny_dims=tiny)
            self.nets[key] = (model, dims)
        self.model, self.dims = self.nets[key]
        self.kind = str(self.dims.get("kind", "motion"))
        self.fps = float(self.dims["fps"])
        self.configure()
