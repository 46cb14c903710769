"""Audio features on an exact, uniform clock.

Every function here returns a :class:`~avsync.types.Signal` whose row ``k`` describes the
audio at time ``k / rate`` seconds (``start = 0``), where ``t = 0`` is the first sample of
``y``. The analysis frames are computed with an integer hop close to ``sr / rate`` and
then linearly resampled onto the exact grid, so the rate is exactly ``rate`` whatever the
sample rate (22050 / 100 is not an integer).

Every function takes ``y`` (ndarray, shape (N,): the mono audio samples), ``sr`` (int: the
sample rate, Hz) and ``rate`` (float: rows per second of the returned Signal).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from avsync.errors import CannotMeasure
from avsync.features import AudioFeatures
from avsync.types import Signal

N_FFT = 2048  # analysis window for log-mel / onsets, samples (93 ms at 22.05 kHz)
FLOOR_DB = -80.0  # floor of every dB feature, relative to the loudest frame


def _check(y: np.ndarray, sr: int) -> np.ndarray:
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise ValueError(f"audio must be mono, shape (N,), got {y.shape}")
    if sr <= 0:
        raise ValueError(f"sample rate must be positive, got {sr}")
    if y.size == 0:
        raise CannotMeasure("the audio is empty")
    return y


def _n_rows(n_samples: int, sr: int, rate: float) -> int:
    """Rows of a grid at ``rate`` covering ``n_samples``: times 0 .. duration (exclusive)."""
    return max(1, int(np.ceil(n_samples / sr * rate - 1e-9)))


def _hop(sr: int, rate: float) -> int:
    return max(1, int(round(sr / rate)))


def _to_grid(frames: np.ndarray, frame_rate: float, rate: float, n: int) -> np.ndarray:
    """Resample ``frames`` (F, D), row i at time i / frame_rate, onto k / rate, k < n."""
    t_old = np.arange(frames.shape[0]) / frame_rate
    t_new = np.arange(n) / rate
    out = np.empty((n, frames.shape[1]), dtype=np.float32)
    for d in range(frames.shape[1]):
        out[:, d] = np.interp(t_new, t_old, frames[:, d])
    return out


def _normalise(x: np.ndarray) -> np.ndarray:
    """Zero median, unit standard deviation (unchanged apart from the shift if flat)."""
    x = x - np.median(x)
    sd = float(np.std(x))
    return (x / sd if sd > 1e-12 else x).astype(np.float32)


# The mel scale, filterbank, dB conversion and spectral flux below are Slaney's (the Auditory
# Toolbox) as librosa 0.11 computes them by default (tests/test_features.py checks them
# against librosa); written out here because importing librosa's filters and onset modules cost
# about 1 s of a short detect-offset run (9 s clip end to end: 5.4-5.6 s -> 4.1-4.6 s).
_MEL_LINEAR_HZ = 200.0 / 3.0  # Hz per mel below 1 kHz
_MEL_BREAK_HZ = 1000.0  # linear below, logarithmic above
_MEL_BREAK = _MEL_BREAK_HZ / _MEL_LINEAR_HZ  # the break in mels
_MEL_LOG_STEP = math.log(6.4) / 27.0


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """Slaney mel of ``hz``: linear below 1 kHz, logarithmic above."""
    f = np.asarray(hz, dtype=np.float64)
    log = _MEL_BREAK + np.log(np.maximum(f, 1e-12) / _MEL_BREAK_HZ) / _MEL_LOG_STEP
    return np.where(f >= _MEL_BREAK_HZ, log, f / _MEL_LINEAR_HZ)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    m = np.asarray(mel, dtype=np.float64)
    return np.where(m >= _MEL_BREAK, _MEL_BREAK_HZ * np.exp(_MEL_LOG_STEP * (m - _MEL_BREAK)), _MEL_LINEAR_HZ * m)


def mel_frequencies(n_mels: int, fmax: float, fmin: float = 0.0) -> np.ndarray:
    """``n_mels`` frequencies (Hz) evenly spaced on the mel scale from ``fmin`` to ``fmax``."""
    return mel_to_hz(np.linspace(float(hz_to_mel(fmin)), float(hz_to_mel(fmax)), n_mels))


@functools.lru_cache(maxsize=8)
def _mel_basis(sr: int, n_fft: int, n_mels: int) -> np.ndarray:
    """(n_mels, 1 + n_fft // 2) triangular filters from 0 Hz to sr / 2, each of unit area
    per Hz (Slaney normalisation)."""
    fft_hz = np.linspace(0.0, sr / 2.0, 1 + n_fft // 2)
    edges = mel_frequencies(n_mels + 2, sr / 2.0)
    width = np.diff(edges)
    ramps = edges[:, None] - fft_hz[None, :]
    rise = -ramps[:-2] / width[:-1, None]
    fall = ramps[2:] / width[1:, None]
    weights = np.maximum(0.0, np.minimum(rise, fall)).astype(np.float32)
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None].astype(np.float32)
    return weights


def power_to_db(power: np.ndarray, top_db: float, amin: float = 1e-10) -> np.ndarray:
    """dB relative to the largest value of ``power``, floored ``top_db`` below the loudest."""
    db = 10.0 * np.log10(np.maximum(amin, power))
    db -= 10.0 * np.log10(max(amin, float(np.max(power))))
    return np.maximum(db, db.max() - top_db)


def _mel_power(y: np.ndarray, sr: int, n_fft: int, hop: int, n_mels: int, chunk: int = 2048) -> np.ndarray:
    """Mel power spectrogram, shape (n_mels, F), of centred Hann-windowed frames (zero padding
    at the ends), as librosa's ``melspectrogram(center=True, power=2)`` — computed in chunks of
    frames with numpy's FFT, so memory stays flat on long files."""
    y = np.asarray(y, dtype=np.float32)
    yp = np.pad(y, (n_fft // 2, n_fft // 2))
    n_frames = 1 + (len(yp) - n_fft) // hop
    win = np.hanning(n_fft + 1)[:-1].astype(np.float32)
    basis = _mel_basis(sr, n_fft, n_mels)
    out = np.empty((n_mels, n_frames), dtype=np.float32)
    offs = np.arange(n_fft)[None, :]
    for a in range(0, n_frames, chunk):
        b = min(n_frames, a + chunk)
        frames = yp[offs + hop * np.arange(a, b)[:, None]] * win
        spec = np.abs(np.fft.rfft(frames, axis=1)) ** 2
        out[:, a:b] = basis @ spec.T.astype(np.float32)
    return out


def _mel_db_frames(y: np.ndarray, sr: int, hop: int, n_mels: int) -> tuple[np.ndarray, int]:
    """Log-mel (dB re the loudest bin, floored at FLOOR_DB), shape (n_mels, F), and n_fft.

    Frames are centred: frame i describes the audio around sample ``i * hop``.
    """
    n_fft = min(N_FFT, max(256, 1 << int(np.floor(np.log2(max(len(y), 256))))))
    mel = _mel_power(y, sr, n_fft, hop, n_mels)
    return power_to_db(mel, top_db=-FLOOR_DB).astype(np.float32), n_fft


def logmel(y: np.ndarray, sr: int, rate: float = 100.0, n_mels: int = 128) -> Signal:
    """Log-mel spectrogram on an exact ``rate`` grid.

    Parameters
    ----------
    y, sr, rate
        The samples, their rate and the output rate (module docstring).
    n_mels : int
        Number of mel bands.

    Returns
    -------
    Signal, values (T, n_mels)
        dB relative to the loudest time-frequency bin, floored at -80 dB; row k is the
        window centred on time k / rate (T = ceil(N / sr * rate)).
    """
    y = _check(y, sr)
    hop = _hop(sr, rate)
    mel, _ = _mel_db_frames(y, sr, hop, n_mels)
    return Signal(_to_grid(mel.T, sr / hop, rate, _n_rows(len(y), sr, rate)), rate, 0.0)


def onset_strength(mel_db: np.ndarray, hop: int, n_fft: int = N_FFT) -> np.ndarray:
    """Mean over the bands of the rise of each band's dB from the previous frame, delayed by
    one frame plus ``n_fft // (2 hop)`` (as librosa's ``onset_strength(center=True)``: a peak
    then sits at the time the event starts, since a centred frame "sees" an event half a
    window before it happens); as many frames as ``mel_db`` (bands, frames), at hop ``hop``."""
    mel_db = np.asarray(mel_db)
    flux = np.maximum(0.0, mel_db[:, 1:] - mel_db[:, :-1]).mean(axis=0)
    pad = 1 + n_fft // (2 * hop)
    return np.concatenate([np.zeros(pad, flux.dtype), flux])[: mel_db.shape[1]]


def onset_envelope(y: np.ndarray, sr: int, rate: float = 100.0) -> Signal:
    """Onset-strength envelope (rectified log-mel spectral flux) on an exact ``rate`` grid.

    Parameters
    ----------
    y, sr, rate
        The samples, their rate and the output rate (module docstring).

    Returns
    -------
    Signal, values (T, 1)
        Row k at time k / rate: the flux peaks at the time an onset starts (a click at
        1.000 s gives its peak at row 100 for rate=100). Normalised to zero median and
        unit standard deviation (dimensionless).
    """
    y = _check(y, sr)
    hop = _hop(sr, rate)
    mel, n_fft = _mel_db_frames(y, sr, hop, 128)
    env = onset_strength(mel, hop, n_fft)
    out = _to_grid(env[:, None], sr / hop, rate, _n_rows(len(y), sr, rate))
    return Signal(_normalise(out), rate, 0.0)


def grid_rows(sig: Signal, rate: float) -> int:
    """How many whole ``1 / rate`` periods ``sig`` covers."""
    return int(math.floor(len(sig) / sig.rate * rate + 1e-9))


def centred_box(width: int) -> np.ndarray:
    """Taps of a box filter ``width`` samples long centred on the middle tap (sums to 1).

    An odd width is the plain box; an even one gets ``width + 1`` taps with half weights at
    both ends, so the filter stays symmetric. (A plain even-width box, e.g. scipy's
    ``uniform_filter1d(x, 4)``, averages ``x[i-2 .. i+1]``: it delays the signal by half a
    sample, 5 ms on the 100 Hz envelopes put on a 25 fps grid.)
    """
    if width <= 1:
        return np.ones(1)
    if width % 2:
        return np.full(width, 1.0 / width)
    taps = np.ones(width + 1)
    taps[0] = taps[-1] = 0.5
    return taps / width


def envelope_on_grid(sig: Signal, rate: float, n: int | None = None) -> np.ndarray:
    """``sig`` (column 0) box-filtered over one target period (anti-aliasing, centred: no
    delay for any width, see :func:`centred_box`) and sampled at ``k / rate``, ``k < n``
    (default: :func:`grid_rows`)."""
    from scipy.ndimage import convolve1d

    if n is None:
        n = grid_rows(sig, rate)
    v = np.asarray(sig.values[:, 0], dtype=np.float64)
    width = int(round(sig.rate / rate))
    if width >= 2:
        v = convolve1d(v, centred_box(width), mode="nearest")
    t_new = np.arange(n) / rate
    return np.interp(t_new, sig.times, v)


def speech_envelope(y: np.ndarray, sr: int, rate: float = 100.0, win: float = 0.025) -> Signal:
    """Speech-band (300–3000 Hz) log-RMS envelope on an exact ``rate`` grid.

    Parameters
    ----------
    y, sr, rate
        The samples, their rate (must exceed 6 kHz) and the output rate (module docstring).
    win : float
        RMS window length, seconds (rectangular, centred on each row's time).

    Returns
    -------
    Signal, values (T, 1)
        Band-passed RMS level in dB relative to the loudest row, floored at -80 dB.
    """
    from scipy.signal import butter, sosfiltfilt

    y = _check(y, sr)
    hi = min(3000.0, 0.45 * sr)
    sos = butter(4, [300.0, hi], btype="bandpass", fs=sr, output="sos")
    yb = sosfiltfilt(sos, y.astype(np.float64)) if len(y) > 30 else y.astype(np.float64)
    n = _n_rows(len(y), sr, rate)
    csum = np.concatenate([[0.0], np.cumsum(yb * yb)])
    centre = np.arange(n) * sr / rate
    half = max(1.0, win * sr / 2)
    lo = np.clip(np.round(centre - half).astype(np.int64), 0, len(y))
    hi_i = np.clip(np.round(centre + half).astype(np.int64), 0, len(y))
    width = np.maximum(hi_i - lo, 1)
    power = (csum[hi_i] - csum[lo]) / width
    ref = float(power.max())
    if ref <= 0:
        return Signal(np.full((n, 1), FLOOR_DB, np.float32), rate, 0.0)
    db = 10.0 * np.log10(np.maximum(power / ref, 10 ** (FLOOR_DB / 10)))
    return Signal(db.astype(np.float32)[:, None], rate, 0.0)


def audio_features(y: np.ndarray, sr: int, rate: float = 100.0) -> AudioFeatures:
    """All audio features of one mono signal (one mel analysis shared by onset and log-mel).

    Parameters
    ----------
    y, sr, rate
        The samples, their rate and the rate of every returned Signal (module docstring).

    Raises
    ------
    CannotMeasure
        When the audio is empty or digital silence.
    """
    y = _check(y, sr)
    if not np.any(np.abs(y) > 1e-6):
        raise CannotMeasure("the audio is digital silence: nothing to align to")
    hop = _hop(sr, rate)
    n = _n_rows(len(y), sr, rate)
    mel, n_fft = _mel_db_frames(y, sr, hop, 128)
    onset = _to_grid(onset_strength(mel, hop, n_fft)[:, None], sr / hop, rate, n)
    return AudioFeatures(
        onset=Signal(_normalise(onset), rate, 0.0),
        speech=speech_envelope(y, sr, rate),
        logmel=Signal(_to_grid(mel.T, sr / hop, rate, n), rate, 0.0),
        duration=len(y) / sr,
        sr=int(sr),
    )
