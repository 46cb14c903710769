"""The ``classical`` backend: envelope cross-correlation, no weights.

The audio is reduced to one envelope (onset strength for dance / general material, the
speech-band level for speech) and the picture to one (``VisualFeatures.envelope``: body
acceleration, mouth opening or frame-difference motion). Both are put on the video's frame
grid (analysis rate = ``visual.fps``, so the lag grid spacing is one frame) and
pre-processed the same way:

1. *log compression* of peaky, non-negative-going envelopes (onset, motion, pose), so
   that a few huge onsets or camera cuts do not dominate the correlation;
2. *detrending* (minus a moving average over ``detrend_seconds``): a crude whitening that
   removes slow level changes which correlate with anything at any lag;
3. light Gaussian smoothing (``smooth_frames``) so that one-frame jitter between a sound
   and its picture does not split a peak;
4. global standardisation (zero mean, unit variance).

:meth:`ClassicalBackend.affinity` then scores every (time, lag) pair with a *local*
normalised cross-correlation (Hann windows of half-widths ``window_seconds``, averaged), and
:meth:`ClassicalBackend.offset` correlates the whole clip (or one window) at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from avsync import options as check
from avsync.backends import BackendInfo, register
from avsync.errors import CannotMeasure
from avsync.features import AudioFeatures, VisualFeatures
from avsync.features.audio import envelope_on_grid, grid_rows
from avsync.features.lip_loudness import LipLoudness, applies, load, loudness_target
from avsync.types import Affinity, Offset

__all__ = ["ClassicalOptions", "ClassicalBackend", "prepare_envelope", "local_ncc", "global_xcorr", "fisher_score",
           "null_inflation", "peak_confidence", "speech_confidence"]


@dataclass(frozen=True)
class ClassicalOptions:
    """Options of the classical backend."""

    # Half-widths of the Hann windows of the local correlation, seconds; the affinity is
    # the mean over these scales. Long windows are robust on weak evidence but blur fast
    # changes of lag; short ones track them. Measured on impulse trains (30 fps): constant
    # lag under heavy noise, rows within 1 frame: 0.5 s 48 %, 3 s 80 %, (0.5, 3) 72 %;
    # warp with speeds 0.8–1.25: 0.5 s 94 %, 3 s < 20 %, (0.5, 3) 86 %. For ``align`` the
    # Viterbi integrates evidence along the (curved) path itself, so short windows win: on
    # the end-to-end test clip (tests/test_align.py: 0.75x, freeze, 1.35x), output frames
    # within ±1 frame: 0.25 s 95 %, 0.5 s ~40 %, (0.5, 3) 35 %. ``offset`` does not use it.
    window_seconds: tuple[float, ...] = (0.25,)
    # Moving-average window subtracted from each envelope (high-pass / whitening), seconds.
    detrend_seconds: float = 1.0
    # Gaussian smoothing of both envelopes, sigma in frames (0 = none).
    smooth_frames: float = 1.0
    # Log-compress peaky envelopes (onset, motion, pose) before detrending.
    compress: bool = True
    # Variance floor of the local normalisation, relative to the (unit) global variance:
    # windows quieter than this get proportionally lower scores instead of amplified noise.
    var_floor: float = 0.05
    # A lag whose overlap (audio rows with picture present) is below this fraction of the
    # window / clip has its score scaled down proportionally.
    min_overlap: float = 0.5
    # Speech: correlate the speech level with the loudness the whole lip shape implies
    # (avsync.features.lip_loudness, fitted on real talking faces) instead of the mouth
    # opening. On the real-footage check part (speech, 136 simulated cases): within ±1 frame
    # 0.32 against 0.26, grid Acc@1 0.51 against 0.33.
    lip_filter: bool = True

    def __post_init__(self) -> None:
        wins = (self.window_seconds,) if isinstance(self.window_seconds, (int, float)) else self.window_seconds
        if not len(wins):
            raise check.OptionError("window_seconds", "must name at least one window (got none)")
        for w in wins:
            check.positive("window_seconds", w)
        check.at_least("detrend_seconds", self.detrend_seconds, 0.0, "seconds")
        check.at_least("smooth_frames", self.smooth_frames, 0.0, "frames")
        check.at_least("var_floor", self.var_floor, 0.0)
        check.within("min_overlap", self.min_overlap, 0.0, 1.0)


# --------------------------------------------------------------------------------------
# envelope preparation


def prepare_envelope(x: np.ndarray, rate: float, opts: ClassicalOptions, peaky: bool) -> np.ndarray:
    """Compress, detrend, smooth and standardise one envelope.

    Parameters
    ----------
    x : ndarray, shape (T,)
        Envelope samples at ``rate`` Hz (any units).
    rate : float
        Samples per second.
    opts : ClassicalOptions
    peaky : bool
        True for onset-like envelopes (log-compressed above their median); False for level
        envelopes (speech dB, mouth opening), which are only detrended.

    Returns
    -------
    ndarray of float64, shape (T,)
        Zero mean, unit variance (all zeros if the envelope is flat).
    """
    from scipy.ndimage import gaussian_filter1d, uniform_filter1d

    x = np.nan_to_num(np.asarray(x, dtype=np.float64).ravel())
    if x.size == 0:
        return x
    if peaky and opts.compress:
        x = np.maximum(x - np.median(x), 0.0)
        pos = x[x > 0]
        scale = float(np.mean(pos)) if pos.size else 1.0
        x = np.log1p(x / max(scale, 1e-12))
    n_detrend = int(round(opts.detrend_seconds * rate))
    if n_detrend >= 3:
        x = x - uniform_filter1d(x, n_detrend | 1, mode="nearest")
    if opts.smooth_frames > 0:
        x = gaussian_filter1d(x, opts.smooth_frames, mode="nearest")
    x = x - x.mean()
    sd = float(x.std())
    return x / sd if sd > 1e-9 else np.zeros_like(x)


def _lip_model(visual: VisualFeatures, opts: ClassicalOptions) -> LipLoudness | None:
    if not opts.lip_filter or not applies(visual):
        return None
    return load()


def _use_speech(visual: VisualFeatures) -> bool:
    return visual.mode == "speech" or visual.kind == "lips"


def _envelopes(
    audio: AudioFeatures, visual: VisualFeatures, opts: ClassicalOptions
) -> tuple[np.ndarray, np.ndarray, float]:
    """Prepared audio (Ta,) and picture (Tv,) envelopes on the frame grid, and the rate."""
    rate = float(visual.fps)
    if not rate > 0:
        raise CannotMeasure("the video has no frame rate")
    speech = _use_speech(visual)
    src = audio.speech if speech else audio.onset
    n_a = grid_rows(src, rate)
    if n_a < 2 or len(visual.envelope) < 2:
        raise CannotMeasure("too short to measure (fewer than two frames of audio or picture)")
    lips = _lip_model(visual, opts)
    if lips is not None:
        # the lip-shape filter's prediction against the floored speech level (see
        # avsync.features.lip_loudness): both standardised levels, nothing else to prepare
        a = loudness_target(envelope_on_grid(src, rate, n_a))
        v = lips.predict(visual)
    else:
        a = prepare_envelope(envelope_on_grid(src, rate, n_a), rate, opts, peaky=not speech)
        v = prepare_envelope(visual.envelope.values[:, 0], rate, opts, peaky=visual.kind != "lips")
    if not a.any():
        raise CannotMeasure("the audio envelope is flat (silence?)")
    if not v.any():
        raise CannotMeasure("the picture envelope is flat (no motion?)")
    return a, v, rate


# --------------------------------------------------------------------------------------
# correlation kernels


def local_ncc(
    a: np.ndarray, v: np.ndarray, max_lag: int, half_window: int, var_floor: float = 0.05,
    min_overlap: float = 0.5, chunk: int = 64,
) -> np.ndarray:
    """Hann-windowed local normalised cross-correlation over integer lags.

    ``out[i, s + max_lag]`` is the weighted Pearson correlation, over a Hann window centred
    on row ``i``, of ``a[i + k]`` with ``v[i + k + s]`` (k in the window), counting only
    samples where both exist. Per lag, the product and moment sequences are filtered by the
    window (FFT convolution), so the cost is O(T × L × log T) for L = 2 max_lag + 1.

    Parameters
    ----------
    a : ndarray, shape (T,)
        Reference (audio) envelope, standardised.
    v : ndarray, shape (N,)
        Picture envelope on the same grid, standardised.
    max_lag : int
        Lags ``-max_lag .. +max_lag`` samples.
    half_window : int
        Hann half-width in samples.
    var_floor : float
        Added to both local variances (units of the global unit variance).
    min_overlap : float
        Scores are multiplied by ``min(1, coverage / min_overlap)`` where coverage is the
        window weight with the picture present.
    chunk : int
        Lags processed at once (bounds memory to ~8 × chunk × T bytes per array).

    Returns
    -------
    ndarray of float32, shape (T, 2 max_lag + 1)
        Scores in about [-1, 1].
    """
    from scipy.signal import oaconvolve

    a = np.asarray(a, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    t_rows, n_v = a.size, v.size
    h = np.hanning(2 * half_window + 3)[1:-1]  # strictly positive taps
    h /= h.sum()
    lags = np.arange(-max_lag, max_lag + 1)
    out = np.empty((t_rows, lags.size), dtype=np.float32)
    # picture placed so that row i, lag s reads vext[i + s + max_lag]
    vext = np.zeros(t_rows + 2 * max_lag)
    mext = np.zeros_like(vext)
    lo, hi = max_lag, min(max_lag + n_v, vext.size)
    vext[lo:hi] = v[: hi - lo]
    mext[lo:hi] = 1.0

    def filt(x: np.ndarray) -> np.ndarray:
        return oaconvolve(x, h[None, :], mode="same", axes=1)

    idx = np.arange(t_rows)
    for c0 in range(0, lags.size, chunk):
        sl = lags[c0 : c0 + chunk]
        cols = idx[None, :] + sl[:, None] + max_lag  # (l, T)
        r, n = _windowed_pearson(a[None, :], vext[cols], mext[cols], filt, var_floor)
        r *= np.minimum(1.0, n / max(min_overlap, 1e-6))
        out[:, c0 : c0 + sl.size] = r.T
    return out


def _windowed_pearson(a: np.ndarray, vs: np.ndarray, ms: np.ndarray, filt: Callable[[np.ndarray], np.ndarray],
                      var_floor: float) -> tuple[np.ndarray, np.ndarray]:
    """Windowed Pearson correlation of ``a`` (1, T) with each row of ``vs`` (l, T) where the
    mask ``ms`` (l, T) is 1, the window being the filter ``filt``; variances floored by
    ``var_floor``. Returns the correlations (l, T) and the window weight present, ``n`` (l, T)."""
    am = a * ms
    n = np.maximum(filt(ms), 1e-12)
    sa, saa = filt(am), filt(am * a)
    sv, svv = filt(vs), filt(vs * vs)
    sav = filt(am * vs)
    mu_a, mu_v = sa / n, sv / n
    cov = sav / n - mu_a * mu_v
    var_a = np.maximum(saa / n - mu_a**2, 0.0) + var_floor
    var_v = np.maximum(svv / n - mu_v**2, 0.0) + var_floor
    return cov / np.sqrt(var_a * var_v), n


def global_xcorr(a: np.ndarray, v: np.ndarray, max_lag: int, i0: int = 0, i1: int | None = None,
                 counts: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Pearson correlation of ``a[i0:i1]`` with the picture at every integer lag.

    Linear (never circular) correlation: ``r[s + max_lag]`` correlates ``a[i]`` with
    ``v[i + s]`` over the rows ``i0 <= i < i1`` where ``v[i + s]`` exists, so a large shift
    can never wrap round into a small one of the other sign. Lags whose overlap is under
    half the window are scaled down by ``overlap / (n / 2)``. Cost O(n × L).

    Parameters
    ----------
    a : ndarray, shape (T,)
    v : ndarray, shape (N,)
    max_lag : int
    i0, i1 : int
        Row window of ``a`` (default: all of it).
    counts : bool
        Also return the number of rows each lag correlated.

    Returns
    -------
    ndarray of float64, shape (2 max_lag + 1,)
        ``r``; with ``counts``, ``(r, n_rows)``.
    """
    from numpy.lib.stride_tricks import sliding_window_view

    a = np.asarray(a, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    i1 = a.size if i1 is None else min(int(i1), a.size)
    i0 = max(0, int(i0))
    n = i1 - i0
    if n < 2:
        raise CannotMeasure("window too short to correlate")
    aw = a[i0:i1]
    # vext[q] = v[i0 - max_lag + q]
    vext = np.zeros(n + 2 * max_lag)
    mext = np.zeros_like(vext)
    q0 = max(0, max_lag - i0)
    src0 = i0 - max_lag + q0
    q1 = min(vext.size, v.size - (i0 - max_lag))
    if q1 > q0:
        vext[q0:q1] = v[src0 : src0 + (q1 - q0)]
        mext[q0:q1] = 1.0
    vv = sliding_window_view(vext, n)  # (L, n): row r ↔ lag r - max_lag
    mm = sliding_window_view(mext, n)
    cnt = mm.sum(axis=1)
    sav = vv @ aw
    sa, saa = mm @ aw, mm @ (aw * aw)
    c1 = np.concatenate([[0.0], np.cumsum(vext)])
    c2 = np.concatenate([[0.0], np.cumsum(vext * vext)])
    sv, svv = c1[n:] - c1[:-n], c2[n:] - c2[:-n]
    cs = np.maximum(cnt, 1.0)
    cov = sav - sa * sv / cs
    den = np.sqrt(np.maximum(saa - sa**2 / cs, 0.0) * np.maximum(svv - sv**2 / cs, 0.0))
    r = np.where(den > 1e-12, cov / np.maximum(den, 1e-12), 0.0)
    r = r * np.minimum(1.0, cnt / (0.5 * n))
    return (r, cnt) if counts else r


def fisher_score(r: np.ndarray, n_rows: np.ndarray) -> np.ndarray:
    """Correlations made comparable across overlaps: ``atanh(r) * sqrt(n - 3)``.

    With a ±5 s search on a 10 s clip the far lags correlate only half the rows, and a
    correlation over fewer rows scatters more (its null standard deviation is about
    1 / sqrt(n - 3)), so picking the largest raw ``r`` favours short overlaps. The Fisher
    transform puts every lag on the same null scale (standard normal for white signals;
    smooth envelopes have fewer independent rows, which scales every lag alike). Measured on
    the megamind dialogue clip (11 s, lips against the speech envelope, ±5 s search): cut
    and shifted by every whole frame in ±0.8 s, the peak stays within one frame of the
    unshifted clip's peak in 77 % of the shifts, against 8 % when picking the largest raw
    ``r``, whose winners sat about ±4.5 s away. (That clip's evidence is weak all the same:
    its audio rolled to unrelated positions finds peaks as high, and its confidence is ~0.)
    """
    z = np.arctanh(np.clip(np.asarray(r, dtype=np.float64), -0.999, 0.999))
    return z * np.sqrt(np.maximum(np.asarray(n_rows, dtype=np.float64) - 3.0, 1.0))


def peak_confidence(r: np.ndarray, p: int, exclude: int = 2) -> tuple[float, float, float]:
    """Confidence of the correlation peak at ``p``.

    ``z`` = (peak - median) / (1.4826 MAD) over all lags; ``q`` = (peak - second) /
    (peak - median), where ``second`` is the highest *local maximum* more than ``exclude``
    lags from the peak (the median if there is none). Confidence =
    ``q * clip((z - 3) / 4, 0, 1)``: unrelated signals give a peak only a few robust
    deviations above the bulk (z ≈ 1–3) and rivals of similar height (q ≈ 0.1), so both
    factors are small; a true match gives z > 7 and q near 1. Periodic material (a steady
    beat) honestly gets low q: its lags are ambiguous.

    Returns
    -------
    confidence, z, q : float
    """
    med = float(np.median(r))
    mad = 1.4826 * float(np.median(np.abs(r - med)))
    peak = float(r[p])
    if peak <= med or r.size < 3:
        return 0.0, 0.0, 0.0
    z = (peak - med) / max(mad, 1e-9)
    interior = np.zeros(r.size, dtype=bool)
    interior[1:-1] = (r[1:-1] >= r[:-2]) & (r[1:-1] >= r[2:])
    interior[0] = r[0] >= r[1]
    interior[-1] = r[-1] >= r[-2]
    far = np.abs(np.arange(r.size) - p) > exclude
    rivals = r[interior & far]
    second = max(float(rivals.max()), med) if rivals.size else med
    q = float(np.clip((peak - second) / (peak - med), 0.0, 1.0))
    conf = q * float(np.clip((z - 3.0) / 4.0, 0.0, 1.0))
    return conf, z, q


# Speech confidence: the correlation peak in units of its own null scatter (Fisher score over
# the square root of Bartlett's variance inflation, see null_inflation), mapped linearly from
# SPEECH_PEAK_NULL (-> 0) to SPEECH_PEAK_SURE (-> 1) and squared, so that detect-offset's
# sqrt(backend confidence) is linear in it. See speech_confidence.
SPEECH_PEAK_NULL = 2.4
SPEECH_PEAK_SURE = 4.7
NULL_LAG_SECONDS = 2.0  # autocorrelation lags summed by null_inflation, seconds


def null_inflation(a: np.ndarray, v: np.ndarray, max_lag: int) -> float:
    """How much wider than for white noise the null scatter of ``r`` between ``a`` and ``v`` is.

    Bartlett's formula: for two unrelated stationary series the variance of their sample
    correlation is ``(1 / n) · Σ_k ρa(k) ρv(k)`` (sum over all lags k), against ``1 / n`` for
    white noise, so the Fisher score of :func:`fisher_score` has null variance
    ``Σ_k ρa(k) ρv(k)`` instead of 1. Smooth envelopes (a syllable lasts several frames) have
    a few times fewer independent rows than rows. The sum runs over ``|k| <= max_lag`` with
    triangular weights (the tail of a sample autocorrelation is noise), floored at 1.

    Parameters
    ----------
    a, v : ndarray, shape (T,) and (N,)
    max_lag : int
        Largest autocorrelation lag summed, samples.

    Returns
    -------
    float
        >= 1.
    """
    def acf(x: np.ndarray, k: int) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64) - float(np.mean(x))
        f = np.fft.rfft(x, 2 * x.size)
        ac = np.fft.irfft(f * np.conj(f))[: k + 1]
        return ac / max(float(ac[0]), 1e-12)

    k = int(min(max_lag, a.size - 1, v.size - 1))
    if k < 1:
        return 1.0
    ra, rv = acf(a, k), acf(v, k)
    w = 1.0 - np.arange(k + 1) / (k + 1)
    return max(1.0, float(1.0 + 2.0 * np.sum(w[1:] * ra[1:] * rv[1:])))


def speech_confidence(score: float) -> float:
    """Confidence of a speech correlation peak from its null-normalised Fisher score.

    ``score`` = Fisher score of the peak (:func:`fisher_score`) / sqrt(:func:`null_inflation`);
    confidence = ``clip((score - SPEECH_PEAK_NULL) / (SPEECH_PEAK_SURE - SPEECH_PEAK_NULL), 0, 1) ** 2``.

    Chosen on the fit part of the real-footage split (speech, 168 simulated detect-offset
    cases; ``bench/speech_confidence.py`` reproduces the table) among: the peak's robust z over
    lags, the peak-to-second-peak ratio and gap outside ±2 frames, the peak against the audio
    reversed or rolled by >= 1 s, the agreement of three sub-windows, the raw and the normalised
    Fisher peak (logistic combinations of them, fitted in grouped 4-fold cross-validation by
    source / speaker, did worse on the held-out folds: AUROC <= 0.56). AUROC for "within ±1
    frame": raw Fisher peak 0.69, this score 0.67 (0.65 once the scores under the null are
    floored to a confidence of 0), peak gap 0.65, z 0.62, sub-window agreement 0.60, the
    z x prominence rule of :func:`peak_confidence` 0.56; per group fold the score ranges
    0.31-1.00, so these are rough. Real pairings against the same picture with another fit
    clip's sound: 0.86 for both Fisher variants, 0.58 for the old rule. The normalised score is
    preferred to the raw peak because its null does not depend on how smooth the envelopes are
    (a blocky synthetic voice reached raw peaks of 8.5 unpaired). Much of the remaining
    confusion on the fit part is label noise: 80 % of the cases fall within a frame of their own
    clip's median error, and several fit clips read 1-6 frames off on every case, by the lip
    filter and by the raw mouth opening alike (against that consistency the score reaches 0.81).
    On the check part (136 cases, looked at once) the AUROC is only 0.52 (old rule 0.51), real
    pairings against mismatched 0.67 (0.54), and 4 % of the mismatched pairings clear the
    "cannot tell" threshold (1.4 % on the fit part; old rule 2 %, but it lets only 8 % of the
    real pairings clear it, against 18 % now).

    The constants come from those mismatched pairings (144 cases, with the cases' own windows
    and search ranges): 90 % of their scores are below 2.44 (-> ~0) and 99 % below 3.06; with
    SPEECH_PEAK_SURE = 4.7 detect-offset's "cannot tell" threshold (0.3 on the square root of
    this) sits at a score of 3.1.
    """
    s = float(np.clip((score - SPEECH_PEAK_NULL) / (SPEECH_PEAK_SURE - SPEECH_PEAK_NULL), 0.0, 1.0))
    return s * s


def _offset_from_xcorr(r_raw: np.ndarray, n_rows: np.ndarray, max_lag: int, rate: float,
                       inflation: float | None = None) -> Offset:
    """The offset at the Fisher-score peak; confidence by :func:`speech_confidence` when the
    null ``inflation`` (:func:`null_inflation`) is given, else by :func:`peak_confidence`."""
    r = fisher_score(r_raw, n_rows)
    p = int(np.argmax(r))
    delta = 0.0
    if 0 < p < r.size - 1:
        y0, y1, y2 = r[p - 1], r[p], r[p + 1]
        den = y0 - 2 * y1 + y2
        if den < 0:
            delta = float(np.clip(0.5 * (y0 - y2) / den, -0.5, 0.5))
    conf, z, q = peak_confidence(r, p)
    score = float(r[p]) / math.sqrt(inflation) if inflation is not None else float("nan")
    if inflation is not None:
        conf = speech_confidence(score)
    at_edge = p in (0, r.size - 1)
    if at_edge:
        conf *= 0.5  # the true offset may lie outside the searched range
    return Offset(
        seconds=(p - max_lag + delta) / rate,
        confidence=conf,
        drift=None,
        extra={"peak_r": float(r_raw[p]), "peak_fisher": float(r[p]), "peak_score": score, "z": z, "prominence": q,
               "at_edge": at_edge, "rate": rate},
    )


# --------------------------------------------------------------------------------------
# the backend


class ClassicalBackend:
    """Envelope cross-correlation backend (see module docstring).

    Parameters
    ----------
    options : ClassicalOptions, optional
    **kwargs
        ``device``, ``checkpoint``: accepted and ignored (no weights).
    """

    name = "classical"

    def __init__(self, options: ClassicalOptions | None = None, **kwargs: object) -> None:
        self.options = options or ClassicalOptions()

    def envelopes(self, audio: AudioFeatures, visual: VisualFeatures) -> tuple[np.ndarray, np.ndarray, float]:
        """Prepared audio (Ta,) and picture (Tv,) envelopes on the frame grid, and its rate (Hz)."""
        return _envelopes(audio, visual, self.options)

    def affinity(self, audio: AudioFeatures, visual: VisualFeatures, max_shift: float) -> Affinity:
        """Local normalised cross-correlation over lags in ``[-max_shift, +max_shift]``.

        Parameters
        ----------
        audio, visual : AudioFeatures, VisualFeatures
        max_shift : float
            Largest |lag| in seconds.

        Returns
        -------
        Affinity
            ``scores`` (Ta, L) float32 in about [-1, 1] (mean local NCC over the window
            scales), one row per video frame period of
            audio (rate = ``visual.fps``, start 0), ``lags`` = k / fps for |k| <= max_shift·fps.
        """
        a, v, rate = _envelopes(audio, visual, self.options)
        max_lag = max(1, int(round(max_shift * rate)))
        wins = self.options.window_seconds
        wins = (wins,) if isinstance(wins, (int, float)) else tuple(wins)
        scores = np.zeros((a.size, 2 * max_lag + 1), dtype=np.float32)
        for w in wins:
            half = max(2, int(round(w * rate)))
            scores += local_ncc(a, v, max_lag, half, self.options.var_floor, self.options.min_overlap)
        scores /= len(wins)
        lags = np.arange(-max_lag, max_lag + 1) / rate
        return Affinity(scores=scores, lags=lags, rate=rate, start=0.0)

    def offset(self, audio: AudioFeatures, visual: VisualFeatures, max_shift: float) -> Offset:
        """Global offset from the whole-clip cross-correlation.

        The integer-lag peak is refined by parabolic interpolation (sub-frame). Confidence:
        :func:`speech_confidence` for speech (the speech level against the lips), else
        :func:`peak_confidence`. ``drift`` is left to the caller (use
        :meth:`offset_in_window` per window); ``extra`` holds ``peak_r``, ``peak_fisher``,
        ``peak_score`` (speech: over the null scatter), ``z``, ``prominence``, ``at_edge``.

        Returns
        -------
        Offset
            Positive seconds = audio leads picture.
        """
        a, v, rate = _envelopes(audio, visual, self.options)
        max_lag = max(1, int(round(max_shift * rate)))
        infl = null_inflation(a, v, round(NULL_LAG_SECONDS * rate)) if _use_speech(visual) else None
        return _offset_from_xcorr(*global_xcorr(a, v, max_lag, counts=True), max_lag, rate, infl)

    def lag_scores(self, audio: AudioFeatures, visual: VisualFeatures, max_shift: float) -> tuple[np.ndarray, float]:
        """The whole-clip Fisher score at every integer lag ``-max_lag .. +max_lag`` (what
        :meth:`offset` takes the peak of) and the lag grid's rate (frames per second)."""
        a, v, rate = _envelopes(audio, visual, self.options)
        max_lag = max(1, int(round(max_shift * rate)))
        return fisher_score(*global_xcorr(a, v, max_lag, counts=True)), rate

    def offset_in_window(
        self, audio: AudioFeatures, visual: VisualFeatures, max_shift: float, t0: float, t1: float
    ) -> Offset:
        """Offset measured on the audio rows in ``[t0, t1)`` seconds only.

        The picture may be read outside the window (up to ``max_shift`` away), so a
        window's offset is not biased towards zero. Same outputs as :meth:`offset`.
        """
        a, v, rate = _envelopes(audio, visual, self.options)
        max_lag = max(1, int(round(max_shift * rate)))
        i0, i1 = int(math.floor(t0 * rate)), int(math.ceil(t1 * rate))
        infl = None
        if _use_speech(visual):
            lo, hi = max(0, i0), min(a.size, i1)
            infl = null_inflation(a[lo:hi], v[max(0, lo - max_lag) : hi + max_lag], round(NULL_LAG_SECONDS * rate))
        return _offset_from_xcorr(*global_xcorr(a, v, max_lag, i0, i1, counts=True), max_lag, rate, infl)


register(
    BackendInfo(
        name="classical",
        description="onset/motion envelope cross-correlation + Viterbi lag path (no weights)",
        trainable=False,
        factory=ClassicalBackend,
    )
)
