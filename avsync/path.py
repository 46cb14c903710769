"""Monotonic dynamic programming over an :class:`~avsync.types.Affinity`.

Every backend returns a banded score table ``scores[i, j]``: how well the audio at time
``t_i = start + i / rate`` matches the picture at ``t_i + lags[j]``. This module turns it
into a :class:`~avsync.types.Correspondence` (for each output frame, the picture time to
show) that is monotonic, speed-bounded and smooth.

Speed bounds and lag transitions
--------------------------------
Between rows ``i`` and ``i + 1`` the audio clock advances ``1 / rate`` seconds. If the lag
index changes by ``dj`` bins of width ``step = lags[1] - lags[0]`` seconds, the picture
advances ``1 / rate + dj * step`` seconds, i.e. it plays at speed ``1 + dj * step * rate``
(picture seconds per audio second). With the contract's lag grid (``step = 1 / rate``) the
speed of one transition is simply ``1 + dj``:

==========  ========================================
``dj``      meaning
==========  ========================================
``-1``      speed 0: the picture freezes for a row
``0``       speed 1: constant lag
``+1``      speed 2: the picture skips one frame
==========  ========================================

The Viterbi allows integer jumps ``dj`` in
``[floor((min_speed - 1) / u), ceil((max_speed - 1) / u)]`` with ``u = step * rate`` (one
bin expressed as speed). Average speeds between integers (e.g. 1.3) are made of mixed
transitions (``0, 0, +1, 0, 0, +1, ...``); the lag-change penalty, paid per bin of change,
keeps such mixtures from being used unless the scores ask for them. Because jumps are
rounded outwards, the exact (fractional) bounds are enforced afterwards on the smoothed
source-time curve by :func:`bound_slope`, which also makes it monotonic when
``min_speed >= 0``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from avsync import options as check
from avsync.errors import CannotMeasure
from avsync.types import Affinity, Correspondence, Offset, Signal

__all__ = [
    "PathOptions",
    "affinity_spread",
    "allowed_jumps",
    "viterbi_lags",
    "lag_posterior",
    "smooth_series",
    "bound_slope",
    "src_curve_to_correspondence",
    "correspondence",
    "dtw",
    "banded_dtw",
    "banded_dtw_correspondence",
    "lag_path_to_offset",
]


@dataclass(frozen=True)
class PathOptions:
    """Options of the monotonic lag DP. All defaults suit 25–60 fps analysis rates."""

    # Cost paid per lag bin of change between consecutive rows, in units of the affinity's
    # spread (robust standard deviation of all scores, see affinity_spread). 0 = free
    # changes; larger = stiffer, more constant lag.
    lag_change_penalty: float = 1.5
    # Prior towards no correction: cost per row per second of |lag|, in units of the spread.
    # Where the affinity carries evidence it outweighs this; where it carries none (no
    # events, unrelated picture and sound) the path stays near lag 0 instead of wandering.
    lag_prior: float = 0.0
    # Fastest allowed picture speed, picture seconds per audio second (2.0 = the picture may
    # skip every other frame). Must be >= 1.
    max_speed: float = 2.0
    # Slowest allowed picture speed. 0.0 = freezes allowed but never going backwards
    # (monotonic). Must be in [0, 1].
    min_speed: float = 0.0
    # Length (seconds) of the Savitzky–Golay smoothing applied to the lag path before the
    # speed bounds are enforced. 0 disables smoothing.
    smooth_seconds: float = 0.5
    # Polynomial order of the Savitzky–Golay smoother (1 = moving-average-like).
    smooth_order: int = 2
    # Temperature of the forward–backward posterior used for the per-row confidence, in
    # units of the spread: scores / (spread * temperature) act as log-likelihoods. Larger =
    # less confident. Backends whose rows are strongly correlated in time (long windows)
    # should use larger values.
    temperature: float = 4.0
    # Half-width (lag bins) of the neighbourhood of the chosen lag whose posterior mass is
    # reported as confidence.
    confidence_bins: int = 1
    # Seconds of moving-average smoothing applied to the per-row confidence.
    confidence_smooth_seconds: float = 0.5

    def __post_init__(self) -> None:
        check.at_least("lag_change_penalty", self.lag_change_penalty, 0.0)
        check.at_least("lag_prior", self.lag_prior, 0.0)
        check.at_least("max_speed", self.max_speed, 1.0)
        check.within("min_speed", self.min_speed, 0.0, 1.0)
        check.at_least("smooth_seconds", self.smooth_seconds, 0.0, "seconds")
        check.whole_within("smooth_order", self.smooth_order, 0)
        check.positive("temperature", self.temperature, "spreads")
        check.whole_within("confidence_bins", self.confidence_bins, 0)
        check.at_least("confidence_smooth_seconds", self.confidence_smooth_seconds, 0.0, "seconds")


# --------------------------------------------------------------------------------------
# helpers


def _check_affinity(aff: Affinity) -> tuple[np.ndarray, float]:
    """Scores as finite float64 (T, L) and the lag step in seconds."""
    s = np.asarray(aff.scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] < 1 or s.shape[1] < 1:
        raise CannotMeasure(f"affinity must be a non-empty (T, L) table, got shape {s.shape}")
    lags = np.asarray(aff.lags, dtype=np.float64)
    if lags.shape != (s.shape[1],):
        raise ValueError(f"affinity has {s.shape[1]} columns but {lags.shape[0]} lags")
    step = float(lags[1] - lags[0]) if lags.size > 1 else 1.0 / aff.rate
    if step <= 0:
        raise ValueError("affinity lags must be ascending")
    if not np.all(np.isfinite(s)):
        finite = s[np.isfinite(s)]
        fill = float(finite.min()) if finite.size else 0.0
        s = np.where(np.isfinite(s), s, fill)
    return s, step


def _with_prior(s: np.ndarray, aff: Affinity, opts: PathOptions, spread: float) -> np.ndarray:
    """Scores minus the lag prior ``lag_prior * spread * |lag|`` (lag in seconds)."""
    if opts.lag_prior <= 0:
        return s
    return s - opts.lag_prior * spread * np.abs(np.asarray(aff.lags, dtype=np.float64))[None, :]


def affinity_spread(scores: np.ndarray) -> float:
    """Robust spread of a score table: 1.4826 × median absolute deviation.

    Parameters
    ----------
    scores : ndarray, shape (T, L)

    Returns
    -------
    float
        Positive scale in score units (falls back to the standard deviation, then 1).
    """
    x = np.asarray(scores, dtype=np.float64).ravel()
    if x.size > 200_000:  # a strided subsample is plenty for a scale estimate
        x = x[:: x.size // 200_000 + 1]
    mad = 1.4826 * float(np.median(np.abs(x - np.median(x))))
    if mad > 1e-12:
        return mad
    sd = float(np.std(x))
    return sd if sd > 1e-12 else 1.0


def allowed_jumps(aff: Affinity, opts: PathOptions) -> np.ndarray:
    """Integer lag-index changes allowed between consecutive rows.

    Returns
    -------
    ndarray of int, shape (J,)
        Ascending jumps ``dj``; see the module docstring for the speed mapping.
    """
    _, step = _check_affinity(aff)
    u = step * aff.rate  # speed change produced by one bin of lag change
    lo = math.floor((opts.min_speed - 1.0) / u + 1e-9)
    hi = math.ceil((opts.max_speed - 1.0) / u - 1e-9)
    return np.arange(lo, hi + 1)


# --------------------------------------------------------------------------------------
# Viterbi and posterior


def viterbi_lags(aff: Affinity, opts: PathOptions | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Best monotonic lag path through an affinity table.

    Maximises ``sum_i scores[i, j_i] - penalty * sum_i |j_i - j_{i-1}|`` with
    ``penalty = opts.lag_change_penalty * spread`` and ``j_i - j_{i-1}`` restricted to
    :func:`allowed_jumps`. Cost O(T × L × J) time, O(T × L) bytes of back-pointers.

    Parameters
    ----------
    aff : Affinity
        Scores (T, L), higher = better match.
    opts : PathOptions, optional

    Returns
    -------
    path : ndarray of int64, shape (T,)
        Lag index per row (``aff.lags[path]`` are the lags in seconds).
    confidence : ndarray of float64, shape (T,)
        Per row, the forward–backward posterior mass within ``opts.confidence_bins`` of the
        chosen lag (see :func:`lag_posterior`), smoothed over
        ``opts.confidence_smooth_seconds``; in [0, 1].
    """
    opts = opts or PathOptions()
    s, _ = _check_affinity(aff)
    t_rows, n_lags = s.shape
    spread = affinity_spread(s)
    s = _with_prior(s, aff, opts, spread)
    jumps = allowed_jumps(aff, opts)
    pen = opts.lag_change_penalty * spread * np.abs(jumps).astype(np.float64)

    # pad so that state j's predecessor j - dj lives at column pad_lo + j - dj
    pad_lo, pad_hi = max(0, int(jumps.max())), max(0, -int(jumps.min()))
    width = n_lags + pad_lo + pad_hi
    vpad = np.full(width, -np.inf)
    vpad[pad_lo : pad_lo + n_lags] = s[0]
    starts = [pad_lo - int(dj) for dj in jumps]
    cand = np.empty((jumps.size, n_lags))
    back = np.empty((t_rows, n_lags), dtype=np.int8)
    back[0] = 0
    inner = vpad[pad_lo : pad_lo + n_lags]
    for i in range(1, t_rows):
        for k, st in enumerate(starts):
            np.subtract(vpad[st : st + n_lags], pen[k], out=cand[k])
        back[i] = cand.argmax(axis=0)
        np.add(cand.max(axis=0), s[i], out=inner)

    path = np.empty(t_rows, dtype=np.int64)
    path[-1] = int(np.argmax(inner))
    for i in range(t_rows - 1, 0, -1):
        path[i - 1] = path[i] - jumps[back[i, path[i]]]

    post = lag_posterior(aff, opts)
    idx = np.arange(n_lags)
    near = np.abs(idx[None, :] - path[:, None]) <= opts.confidence_bins
    conf = (post * near).sum(axis=1)
    conf = smooth_series(conf, int(round(opts.confidence_smooth_seconds * aff.rate)), order=0)
    return path, np.clip(conf, 0.0, 1.0)


def _chain_sweep(emit: np.ndarray, jumps: np.ndarray, trans: np.ndarray, forward: bool) -> np.ndarray:
    """Scaled forward (alpha) or backward (beta) messages in the probability domain.

    Forward: ``alpha_i(j) ∝ e_i(j) · sum_dj alpha_{i-1}(j - dj) · w(dj)``.
    Backward: ``beta_i(j) ∝ sum_dj beta_{i+1}(j + dj) · e_{i+1}(j + dj) · w(dj)``,
    ``beta_{T-1} = 1``. Each row is rescaled to sum 1 (the scale cancels in the posterior).

    Parameters
    ----------
    emit : ndarray, shape (T, L)
        Row emission weights ``exp(phi - rowmax)`` in (0, 1].
    jumps : ndarray of int, shape (J,)
    trans : ndarray, shape (J,)
        Transition weights ``w(dj)``.
    forward : bool
    """
    t_rows, n_lags = emit.shape
    shifts = jumps if forward else -jumps  # message at j reads the neighbour at j - shift
    pad_lo, pad_hi = max(0, int(shifts.max())), max(0, -int(shifts.min()))
    buf = np.zeros(n_lags + pad_lo + pad_hi)
    inner = buf[pad_lo : pad_lo + n_lags]
    starts = [pad_lo - int(sh) for sh in shifts]
    out = np.empty_like(emit)
    cur = np.empty(n_lags)
    tmp = np.empty(n_lags)
    rows = range(t_rows) if forward else range(t_rows - 1, -1, -1)
    first = True
    for i in rows:
        if first:
            cur[:] = emit[i] if forward else 1.0
            first = False
        else:
            np.multiply(buf[starts[0] : starts[0] + n_lags], trans[0], out=cur)
            for k in range(1, len(starts)):
                st = starts[k]
                np.multiply(buf[st : st + n_lags], trans[k], out=tmp)
                cur += tmp
            if forward:
                cur *= emit[i]
        tot = cur.sum()
        cur /= tot if tot > 0 else 1.0
        out[i] = cur
        # what the next row reads: forward reads alpha, backward reads beta · emission
        if forward:
            inner[:] = cur
        else:
            np.multiply(cur, emit[i], out=inner)
    return out


def lag_posterior(aff: Affinity, opts: PathOptions | None = None) -> np.ndarray:
    """Posterior probability of each lag per row under the same chain as the Viterbi.

    Row potentials are ``scores / (spread * temperature)``, transitions
    ``-lag_change_penalty * |dj| / temperature`` over :func:`allowed_jumps`, uniform start
    and end. Computed by scaled forward–backward (O(T × L × J)).

    Parameters
    ----------
    aff : Affinity
        Scores (T, L).
    opts : PathOptions, optional

    Returns
    -------
    ndarray of float64, shape (T, L)
        Rows sum to 1.
    """
    opts = opts or PathOptions()
    s, _ = _check_affinity(aff)
    spread = affinity_spread(s)
    phi = _with_prior(s, aff, opts, spread) / (spread * opts.temperature)
    emit = np.exp(phi - phi.max(axis=1, keepdims=True))
    jumps = allowed_jumps(aff, opts)
    trans = np.exp(-opts.lag_change_penalty * np.abs(jumps) / opts.temperature)
    p = _chain_sweep(emit, jumps, trans, True)
    p *= _chain_sweep(emit, jumps, trans, False)
    tot = p.sum(axis=1, keepdims=True)
    p /= np.where(tot > 0, tot, 1.0)
    return p


# --------------------------------------------------------------------------------------
# smoothing, speed bounds, resampling


def smooth_series(x: np.ndarray, n: int, order: int = 2) -> np.ndarray:
    """Smooth a 1-D series over ``n`` samples.

    Parameters
    ----------
    x : ndarray, shape (T,)
    n : int
        Window length in samples (made odd); ``n < 3`` returns a copy.
    order : int
        0 = moving average (edges held); >= 1 = Savitzky–Golay of that polynomial order
        (edges fitted by polynomial interpolation).

    Returns
    -------
    ndarray of float64, shape (T,)
    """
    from scipy.ndimage import uniform_filter1d
    from scipy.signal import savgol_filter

    x = np.asarray(x, dtype=np.float64)
    n = min(int(n) | 1, x.size if x.size % 2 else x.size - 1)
    if n < 3:
        return x.copy()
    if order <= 0:
        return uniform_filter1d(x, n, mode="nearest")
    order = min(order, n - 1)
    return savgol_filter(x, n, order, mode="interp")


def bound_slope(y: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Make every step ``y[k+1] - y[k]`` lie in ``[lo, hi]`` with little displacement.

    The forward clip ``f[k] = clip(y[k], f[k-1] + lo, f[k-1] + hi)`` and the backward clip
    (same, from the end) each satisfy the bounds but are biased in time in opposite
    directions; their mean satisfies them too (the set is convex) and is unbiased. A series
    that already satisfies the bounds is returned unchanged.

    Parameters
    ----------
    y : ndarray, shape (T,)
    lo, hi : float
        Step bounds, ``lo <= hi`` (``lo = 0`` gives a monotonic non-decreasing series).

    Returns
    -------
    ndarray of float64, shape (T,)
    """
    if lo > hi:
        raise ValueError("bound_slope needs lo <= hi")
    yl = [float(v) for v in np.asarray(y, dtype=np.float64)]
    n = len(yl)
    if n < 2:
        return np.asarray(yl, dtype=np.float64)
    f = yl[:]
    for k in range(1, n):
        a, b = f[k - 1] + lo, f[k - 1] + hi
        f[k] = a if f[k] < a else (b if f[k] > b else f[k])
    g = yl[:]
    for k in range(n - 2, -1, -1):
        a, b = g[k + 1] - hi, g[k + 1] - lo
        g[k] = a if g[k] < a else (b if g[k] > b else g[k])
    return 0.5 * (np.asarray(f) + np.asarray(g))


def src_curve_to_correspondence(
    times: np.ndarray,
    lag: np.ndarray,
    confidence: np.ndarray | None,
    opts: PathOptions,
    out_rate: float,
    n_out: int,
    src_duration: float | None = None,
) -> Correspondence:
    """Turn a per-row lag curve into a smooth, monotonic, speed-bounded Correspondence.

    Steps: Savitzky–Golay smoothing of the lag over ``opts.smooth_seconds``; source time
    ``src = times + lag``; step bounds ``[min_speed, max_speed] / rate`` (:func:`bound_slope`);
    linear resampling onto ``k / out_rate``; outside the analysed span the picture plays at
    speed 1 from the nearest end; optional clipping to ``[0, src_duration]``.

    Parameters
    ----------
    times : ndarray, shape (T,)
        Audio times of the rows, seconds, uniformly spaced.
    lag : ndarray, shape (T,)
        Picture time minus audio time per row, seconds.
    confidence : ndarray, shape (T,), optional
        Per-row confidence in [0, 1]; resampled (ends held).
    opts : PathOptions
    out_rate : float
        Output frames per second.
    n_out : int
        Number of output frames K.
    src_duration : float, optional
        Length of the source video, seconds; source times are clipped into it.

    Returns
    -------
    Correspondence
        ``src_time`` (K,) seconds and ``confidence`` (K,).
    """
    times = np.asarray(times, dtype=np.float64)
    lag = np.asarray(lag, dtype=np.float64)
    if times.size == 0:
        raise CannotMeasure("no rows to build a correspondence from")
    rate = 1.0 / float(times[1] - times[0]) if times.size > 1 else out_rate
    lag_s = smooth_series(lag, int(round(opts.smooth_seconds * rate)), opts.smooth_order)
    src = bound_slope(times + lag_s, opts.min_speed / rate, opts.max_speed / rate)

    t_out = np.arange(int(n_out)) / float(out_rate)
    out = np.interp(t_out, times, src)
    before, after = t_out < times[0], t_out > times[-1]
    out[before] = src[0] + (t_out[before] - times[0])
    out[after] = src[-1] + (t_out[after] - times[-1])
    out = np.maximum.accumulate(out) if out.size else out
    if src_duration is not None:
        out = np.clip(out, 0.0, float(src_duration))
    conf = None
    if confidence is not None:
        conf = np.clip(np.interp(t_out, times, np.asarray(confidence, dtype=np.float64)), 0.0, 1.0)
    return Correspondence(src_time=out, rate=float(out_rate), confidence=conf)


def _default_n_out(aff: Affinity, out_rate: float) -> int:
    return int(math.ceil((aff.start + aff.scores.shape[0] / aff.rate) * out_rate - 1e-9))


def correspondence(
    aff: Affinity,
    opts: PathOptions | None = None,
    out_rate: float | None = None,
    n_out: int | None = None,
    src_duration: float | None = None,
) -> Correspondence:
    """Viterbi lag path → smooth monotonic Correspondence on the output clock.

    Parameters
    ----------
    aff : Affinity
        Scores (T, L).
    opts : PathOptions, optional
    out_rate : float, optional
        Output frames per second (default ``aff.rate``).
    n_out : int, optional
        Output frames K (default: up to the end of the affinity's time span).
    src_duration : float, optional
        Source video length in seconds; source times are clipped into ``[0, src_duration]``.

    Returns
    -------
    Correspondence
        ``src_time[k]`` (K,) = picture time to show at ``k / out_rate``, monotonic
        non-decreasing, with per-frame confidence (K,).
    """
    opts = opts or PathOptions()
    out_rate = float(out_rate or aff.rate)
    n_out = _default_n_out(aff, out_rate) if n_out is None else int(n_out)
    path, conf = viterbi_lags(aff, opts)
    lag = np.asarray(aff.lags, dtype=np.float64)[path]
    return src_curve_to_correspondence(aff.times, lag, conf, opts, out_rate, n_out, src_duration)


def lag_path_to_offset(aff: Affinity, path: np.ndarray, confidence: np.ndarray) -> Offset:
    """Summarise a lag path as a global offset with drift.

    Parameters
    ----------
    aff : Affinity
        The table the path was computed on (for lags and clock).
    path : ndarray of int, shape (T,)
        Lag index per row.
    confidence : ndarray, shape (T,)
        Per-row confidence in [0, 1].

    Returns
    -------
    Offset
        ``seconds`` = confidence-weighted median lag (positive = audio leads),
        ``confidence`` = mean row confidence, ``drift`` = the lag per row (T, 1) on the
        affinity's clock, ``extra['lag_iqr']`` = interquartile range of the lag, seconds.
    """
    lag = np.asarray(aff.lags, dtype=np.float64)[np.asarray(path)]
    w = np.clip(np.asarray(confidence, dtype=np.float64), 0.0, 1.0) + 1e-6
    order = np.argsort(lag, kind="stable")
    cw = np.cumsum(w[order])
    median = float(lag[order][np.searchsorted(cw, 0.5 * cw[-1])])
    q1, q3 = np.percentile(lag, [25, 75])
    return Offset(
        seconds=median,
        confidence=float(np.mean(confidence)),
        drift=Signal(lag[:, None], aff.rate, aff.start),
        extra={"lag_iqr": float(q3 - q1)},
    )


# --------------------------------------------------------------------------------------
# DTW


def banded_dtw(
    cost_band: np.ndarray,
    lo: np.ndarray,
    n_cols: int,
    *,
    open_begin: bool = False,
    open_end: bool = False,
    step_penalty: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, float]:
    """DTW over a band given row by row; steps (1, 0), (0, 1), (1, 1), unit weights, and an
    optional extra cost ``step_penalty`` on the (1, 0) and (0, 1) steps.

    ``D[i, j] = cost[i, j] + min(D[i-1, j], D[i, j-1], D[i-1, j-1])``. Each row is
    vectorised: with ``A[j] = cost[i, j] + min(D[i-1, j], D[i-1, j-1])`` and ``S`` the
    running sum of the row's costs, ``D[i, j] = S[j] + min_{k <= j}(A[k] - S[k])``.
    Time and memory O(N × W).

    Parameters
    ----------
    cost_band : ndarray, shape (N, W)
        ``cost_band[i, w]`` is the cost of cell ``(i, lo[i] + w)``. Finite, and
        non-negative for the usual "shortest path" meaning.
    lo : ndarray of int, shape (N,)
        First column of each row's band, non-decreasing; consecutive bands must touch
        (``lo[i] <= lo[i-1] + W``), and inside the matrix (``lo[i] + W <= M``).
    n_cols : int
        Number of columns M of the full matrix.
    open_begin, open_end : bool
        Let the path start anywhere in row 0 / end anywhere in row N-1 instead of at
        (0, 0) / (N-1, M-1).
    step_penalty : float
        Added to the cost of every horizontal or vertical step (>= 0): where the costs carry
        no evidence, the path keeps its slope instead of wandering.

    Returns
    -------
    path_i, path_j : ndarray of int64, shape (P,)
        The optimal path, from start to end, in full-matrix coordinates.
    total : float
        Sum of the costs of its cells (and of its step penalties).
    """
    c, lo, pen = _checked_band(cost_band, lo, n_cols, step_penalty)
    if not open_begin and lo[0] != 0:
        raise ValueError("closed-begin DTW needs column 0 in the first row's band")
    d = _accumulate_band(c, lo, pen, open_begin)
    if open_end:
        w = int(np.argmin(d[-1]))
    else:
        w = int(n_cols - 1 - lo[-1])
        if not 0 <= w < c.shape[1]:
            raise ValueError("closed-end DTW needs the last column in the last row's band")
    total = float(d[-1, w])
    if not np.isfinite(total):
        raise CannotMeasure("DTW found no finite path through the band")
    pi, pj = _backtrack_band(d, lo, w, pen, open_begin)
    return pi, pj, total


def _checked_band(cost_band: np.ndarray, lo: np.ndarray, n_cols: int,
                  step_penalty: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Costs as float64 (N, W), ``lo`` as int64 and the step penalty, checked (see :func:`banded_dtw`)."""
    c = np.asarray(cost_band, dtype=np.float64)
    pen = float(step_penalty)
    if not pen >= 0.0:
        raise ValueError("step_penalty must be >= 0")
    lo = np.asarray(lo, dtype=np.int64)
    n_rows, width = c.shape
    if lo.shape != (n_rows,) or n_rows == 0:
        raise ValueError("lo must have one entry per row")
    if np.any(np.diff(lo) < 0) or np.any(np.diff(lo) > width):
        raise ValueError("band rows must be non-decreasing and touch (diff(lo) <= width)")
    if lo.min() < 0 or lo.max() + width > n_cols:
        raise ValueError("band rows must lie inside the matrix")
    if not np.all(np.isfinite(c)):
        raise ValueError("DTW costs must be finite")
    return c, lo, pen


def _accumulate_band(c: np.ndarray, lo: np.ndarray, pen: float, open_begin: bool) -> np.ndarray:
    """The accumulated cost table ``D`` (N, W) of :func:`banded_dtw`, row by row (the inner loop)."""
    n_rows, width = c.shape
    big = np.inf
    d = np.full((n_rows, width), big)
    d[0] = c[0] if open_begin else np.cumsum(c[0] + pen) - pen
    ext = np.full(3 * width + 2, big)  # scratch: previous row placed at an offset
    for i in range(1, n_rows):
        shift = int(lo[i] - lo[i - 1])  # current w ↔ previous w + shift
        ext[:] = big
        ext[width + 1 : 2 * width + 1] = d[i - 1]
        base = width + 1 + shift
        up = ext[base : base + width]  # D[i-1, j]
        diag = ext[base - 1 : base - 1 + width]  # D[i-1, j-1]
        a = c[i] + np.minimum(up + pen, diag)
        s = np.cumsum(c[i] + pen)
        d[i] = s + np.minimum.accumulate(a - s)
    return d


def _backtrack_band(d: np.ndarray, lo: np.ndarray, w: int, pen: float,
                    open_begin: bool) -> tuple[np.ndarray, np.ndarray]:
    """The optimal path from the end cell (last row, band column ``w``) back to the start, in
    full-matrix coordinates, start first; ties go to the diagonal step."""
    n_rows, width = d.shape
    big = np.inf

    def val(ii: int, jj: int) -> float:
        ww = jj - int(lo[ii])
        return float(d[ii, ww]) if 0 <= ww < width else big

    pi, pj = [n_rows - 1], [int(lo[-1]) + w]
    i, j = pi[0], pj[0]
    while True:
        if i == 0 and (open_begin or j == 0):
            break
        if i == 0:
            j -= 1
        else:
            cands = ((val(i - 1, j - 1), i - 1, j - 1), (val(i - 1, j) + pen, i - 1, j),
                     (val(i, j - 1) + pen, i, j - 1))
            best = min(cands, key=lambda t: t[0])  # min keeps the first on ties: diagonal
            i, j = best[1], best[2]
        pi.append(i)
        pj.append(j)
    return np.asarray(pi[::-1], dtype=np.int64), np.asarray(pj[::-1], dtype=np.int64)


def dtw(cost: np.ndarray, band: int | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Classic DTW from (0, 0) to (N-1, M-1) with steps (1, 0), (0, 1), (1, 1).

    Parameters
    ----------
    cost : ndarray, shape (N, M)
        Non-negative local costs.
    band : int, optional
        Sakoe–Chiba radius in columns around the diagonal ``j = i (M-1)/(N-1)``; ``None`` =
        unconstrained. Work is O(N × band). The band is widened if needed so that
        consecutive rows touch.

    Returns
    -------
    path_i, path_j : ndarray of int64, shape (P,)
    total : float
        Sum of the costs along the path.
    """
    cost = np.asarray(cost, dtype=np.float64)
    n, m = cost.shape
    if n == 0 or m == 0:
        raise ValueError("empty cost matrix")
    if band is None or 2 * band + 1 >= m:
        return banded_dtw(cost, np.zeros(n, dtype=np.int64), m)
    slope = (m - 1) / (n - 1) if n > 1 else 0.0
    band = max(int(band), int(math.ceil(slope / 2)))
    width = min(m, 2 * band + 1)
    centre = np.round(np.arange(n) * slope).astype(np.int64)
    lo = np.clip(centre - band, 0, m - width)
    cols = lo[:, None] + np.arange(width)[None, :]
    return banded_dtw(np.take_along_axis(cost, cols, axis=1), lo, m)


def banded_dtw_correspondence(
    aff: Affinity,
    opts: PathOptions | None = None,
    out_rate: float | None = None,
    n_out: int | None = None,
    src_duration: float | None = None,
    cost: np.ndarray | None = None,
    step_penalty: float = 0.0,
) -> Correspondence:
    """The DTW alternative to :func:`correspondence` (for comparison).

    Cell ``(i, q)`` pairs audio row ``i`` with picture grid index ``q = i + j`` (picture
    time ``start + lags[0] + q / rate``), so the affinity is already a band of width L.
    Cost ``(max(scores) - scores) / spread``; open begin and end in the picture axis. DTW
    has no speed limit and no lag-change penalty; the picture time per row is the mean of
    the path's columns in that row, then smoothed and bounded as in
    :func:`src_curve_to_correspondence`. Confidence per row: the path score's position in
    the row's range, ``(s_path - median) / (max - median)``, clipped to [0, 1]. ``cost``
    (same shape as the scores) replaces the default cost; ``step_penalty`` is passed to
    :func:`banded_dtw`.

    Returns
    -------
    Correspondence
    """
    opts = opts or PathOptions()
    s, step = _check_affinity(aff)
    if abs(step * aff.rate - 1.0) > 1e-6:
        raise ValueError("banded DTW needs lags spaced by 1 / rate")
    t_rows, n_lags = s.shape
    if cost is None:
        cost = (s.max() - s) / affinity_spread(s)
    elif np.shape(cost) != s.shape:
        raise ValueError("cost must have the affinity's shape")
    pi, pq, _ = banded_dtw(cost, np.arange(t_rows), t_rows + n_lags - 1, open_begin=True, open_end=True,
                           step_penalty=step_penalty)
    counts = np.bincount(pi, minlength=t_rows)
    q_mean = np.bincount(pi, weights=pq, minlength=t_rows) / np.maximum(counts, 1)
    lag = float(aff.lags[0]) + (q_mean - np.arange(t_rows)) / aff.rate
    j_path = np.clip(np.round(q_mean).astype(np.int64) - np.arange(t_rows), 0, n_lags - 1)
    med = np.median(s, axis=1)
    rng = np.maximum(s.max(axis=1) - med, 1e-12)
    conf = np.clip((s[np.arange(t_rows), j_path] - med) / rng, 0.0, 1.0)
    conf = smooth_series(conf, int(round(opts.confidence_smooth_seconds * aff.rate)), order=0)
    out_rate = float(out_rate or aff.rate)
    n_out = _default_n_out(aff, out_rate) if n_out is None else int(n_out)
    return src_curve_to_correspondence(aff.times, lag, conf, opts, out_rate, n_out, src_duration)
