"""Data contracts between pipeline stages (see DESIGN.md).

Everything that flows between stages is a small numpy container with an explicit
clock. Times are seconds (float). Sign convention, everywhere: a positive offset or
lag means the audio leads the picture (ITU-R BT.1359): the sound of an event comes
``lag`` seconds *before* its picture.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# ITU-R BT.1359 detectability window, seconds: audio may lead by at most 45 ms and lag by
# at most 125 ms. In our convention (positive = audio leads) that is -0.125 <= x <= +0.045.
ITU_LEAD = 0.045
ITU_LAG = 0.125
CONVENTION = "positive = audio leads picture"


@dataclass(frozen=True)
class Signal:
    """A feature track on its own uniform clock.

    Attributes
    ----------
    values : ndarray, shape (T, D)
        One row per sample.
    rate : float
        Samples per second.
    start : float
        Time of ``values[0]`` in seconds.
    """

    values: np.ndarray
    rate: float
    start: float = 0.0

    def __post_init__(self) -> None:
        v = np.asarray(self.values)
        if v.ndim == 1:
            v = v[:, None]
        if v.ndim != 2:
            raise ValueError(f"Signal values must be (T, D), got shape {v.shape}")
        object.__setattr__(self, "values", v)

    def __len__(self) -> int:
        return int(self.values.shape[0])

    @property
    def times(self) -> np.ndarray:
        """Sample times in seconds, shape (T,)."""
        return self.start + np.arange(len(self)) / self.rate

    @property
    def duration(self) -> float:
        return len(self) / self.rate

    def resample(self, rate: float, start: float | None = None, n: int | None = None) -> Signal:
        """Linear interpolation onto a new uniform grid (edges held)."""
        start = self.start if start is None else start
        if n is None:
            n = max(1, int(np.floor((self.start + self.duration - start) * rate)))
        t_new = start + np.arange(n) / rate
        t_old = self.times
        out = np.empty((n, self.values.shape[1]), dtype=np.float32)
        for d in range(self.values.shape[1]):
            out[:, d] = np.interp(t_new, t_old, self.values[:, d])
        return Signal(out, rate, start)


@dataclass(frozen=True)
class Affinity:
    """What an alignment backend returns: a banded score table.

    ``scores[i, j]`` says how well the audio at time ``start + i / rate`` (the reference
    clock) matches the picture at that time plus ``lags[j]``. Higher is better. A positive
    lag means the picture of an event comes later than its sound (audio leads).

    Attributes
    ----------
    scores : ndarray, shape (T, L)
    lags : ndarray, shape (L,)
        Candidate lags in seconds, ascending, uniformly spaced by ``1 / rate``.
    rate : float
        Rows per second (the analysis rate).
    start : float
        Audio time of row 0, seconds.
    """

    scores: np.ndarray
    lags: np.ndarray
    rate: float
    start: float = 0.0

    @property
    def times(self) -> np.ndarray:
        return self.start + np.arange(self.scores.shape[0]) / self.rate


@dataclass(frozen=True)
class Correspondence:
    """For output frame k, shown at time ``k / rate`` on the audio's clock, the source
    video time ``src_time[k]`` to show. Monotonic non-decreasing.

    Attributes
    ----------
    src_time : ndarray, shape (K,)
        Source (picture) times in seconds.
    rate : float
        Output frames per second.
    confidence : ndarray, shape (K,), optional
        Per-frame confidence in [0, 1].
    """

    src_time: np.ndarray
    rate: float
    confidence: np.ndarray | None = None

    @property
    def times(self) -> np.ndarray:
        return np.arange(len(self.src_time)) / self.rate

    @property
    def lag(self) -> np.ndarray:
        """Picture time minus audio time, seconds (positive = audio leads)."""
        return self.src_time - self.times


@dataclass(frozen=True)
class Offset:
    """A global audio/picture offset measurement.

    Attributes
    ----------
    seconds : float
        Positive = audio leads picture.
    confidence : float
        In [0, 1]; see the backend for its calibration.
    drift : Signal, optional
        Offset (seconds) over time, values (W, 1), one row per analysis window.
    extra : dict
        Backend-specific figures (e.g. LSE-C / LSE-D for SyncNet).
    """

    seconds: float
    confidence: float
    drift: Signal | None = None
    extra: dict = field(default_factory=dict)


def describe_offset(seconds: float) -> str:
    """Human words for an offset: 'audio is 120 ms early'."""
    ms = round(seconds * 1000)
    if ms == 0:
        return "audio and picture are in step"
    if ms > 0:
        return f"audio is {ms} ms early (leads the picture)"
    return f"audio is {-ms} ms late (lags the picture)"


def describe_shift(seconds: float) -> str:
    """Human words for what a fix did to the audio: 'audio delayed by 100 ms' (a positive
    shift: the audio led, so it now comes later), 'audio moved 100 ms earlier' (negative)."""
    ms = round(seconds * 1000)
    if ms == 0:
        return "audio left in place"
    return f"audio delayed by {ms} ms" if ms > 0 else f"audio moved {-ms} ms earlier"


def in_itu_window(seconds: float | np.ndarray) -> bool | np.ndarray:
    """True where -125 ms <= offset <= +45 ms."""
    x = np.asarray(seconds)
    r = (x >= -ITU_LAG - 1e-9) & (x <= ITU_LEAD + 1e-9)
    return bool(r) if r.ndim == 0 else r
