"""Music beats, visual beats and the Beat Align Score.

Music beats come from the dynamic-programming beat tracker of Ellis (2007), as in librosa,
run on a spectral-flux onset envelope; downbeats are estimated by picking, among the four phases of a 4/4 bar, the one
whose beats carry the most low-frequency onset energy.

Visual beats follow Davis & Agrawala ("Visual Rhythm and Beat", 2018) in spirit: a visual
beat is a moment where motion *stops or reverses* — a local minimum of the (smoothed)
speed of a moving part, weighted by how sharply it decelerated into that minimum. The
moving parts are pose joints when a body was tracked; otherwise the total frame-difference
energy of the coarse motion grid stands in for the speed of what moves.

The Beat Align Score (BAS) is the mean over music beats of ``exp(-d^2 / (2 sigma^2))``,
``d`` the distance from the music beat to the nearest visual beat, ``sigma`` = 3 frames at
the video's rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avsync.features.audio import onset_strength

# MediaPipe pose landmarks of the extremities and the head: nose, elbows, wrists, knees,
# ankles, foot tips. Torso points move with the whole body and add little rhythm.
POSE_LIMB_JOINTS = (0, 13, 14, 15, 16, 25, 26, 27, 28, 31, 32)

# Analysis settings of the music beat tracker.
_SR = 22050
_HOP = 512


@dataclass(frozen=True)
class Beats:
    """A beat train.

    Attributes
    ----------
    times : ndarray, shape (N,)
        Beat times in seconds, ascending, on the clock of the file they came from.
    strength : ndarray, shape (N,)
        Salience of each beat in [0, 1].
    tempo : float
        Beats per minute (median inter-beat interval for visual beats; 0 if unknown).
    source : str
        'music', 'pose' or 'motion'.
    downbeats : ndarray of bool, shape (N,), optional
        True at estimated bar starts (music only, assuming 4/4).
    """

    times: np.ndarray
    strength: np.ndarray
    tempo: float
    source: str
    downbeats: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.times.size)

    def to_dict(self) -> dict:
        """JSON-friendly form (times in seconds, rounded to the ms)."""
        d = {
            "source": self.source,
            "tempo_bpm": round(float(self.tempo), 2),
            "count": len(self),
            "times": [round(float(t), 3) for t in self.times],
        }
        if self.downbeats is not None:
            d["downbeats"] = [round(float(t), 3) for t in self.times[self.downbeats]]
        return d


def _tempo_from_times(times: np.ndarray) -> float:
    if times.size < 2:
        return 0.0
    ibi = float(np.median(np.diff(times)))
    return 60.0 / ibi if ibi > 0 else 0.0


# --------------------------------------------------------------------------------------------
# Music beats
# --------------------------------------------------------------------------------------------


def _mel_filterbank(sr: int, n_fft: int, n_mels: int, fmax: float | None = None) -> np.ndarray:
    """Triangular filters on the HTK mel scale, area-normalised, shape (n_mels, n_fft // 2 + 1)."""
    fmax = fmax or sr / 2.0

    def mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def hz(m):
        return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)

    edges = hz(np.linspace(mel(0.0), mel(fmax), n_mels + 2))
    freqs = np.linspace(0, sr / 2.0, n_fft // 2 + 1)
    lo, ce, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None] - lo) / np.maximum(ce - lo, 1e-9)
    down = (hi - freqs[None]) / np.maximum(hi - ce, 1e-9)
    fb = np.maximum(0.0, np.minimum(up, down))
    return fb * (2.0 / np.maximum(hi - lo, 1e-9))


def _log_mel(y: np.ndarray, n_fft: int = 2048, hop: int = _HOP, n_mels: int = 128) -> np.ndarray:
    """Log-mel power spectrogram (dB, top 80 dB), shape (n_mels, T); frame t centred at t*hop."""
    pad = n_fft // 2
    yp = np.pad(y.astype(np.float64), pad, mode="reflect" if y.size > pad else "constant")
    frames = np.lib.stride_tricks.sliding_window_view(yp, n_fft)[::hop]
    spec = np.abs(np.fft.rfft(frames * np.hanning(n_fft + 1)[:-1], axis=1)) ** 2
    m = _mel_filterbank(_SR, n_fft, n_mels) @ spec.T
    db = 10.0 * np.log10(np.maximum(m, 1e-10))
    return np.maximum(db, db.max() - 80.0)


def _estimate_tempo(oenv: np.ndarray, fr: float, prior_bpm: float = 120.0) -> float:
    """Tempo (bpm) from the onset autocorrelation weighted by a log-normal prior (1 octave)."""
    x = oenv - oenv.mean()
    n = x.size
    f = np.fft.rfft(x, 2 * n)
    ac = np.fft.irfft(f * np.conj(f))[:n]
    lags = np.arange(n)
    with np.errstate(divide="ignore"):
        bpm = 60.0 * fr / lags
    ok = (bpm >= 40) & (bpm <= 240)
    if not ok.any():
        return prior_bpm
    w = np.exp(-0.5 * (np.log2(bpm[ok] / prior_bpm)) ** 2)
    score = ac[ok] * w
    k = int(np.argmax(score))
    lag = float(lags[ok][k])
    i = int(lags[ok][k])
    if 0 < i < n - 1:  # parabolic refinement of the peak
        a, b, c = ac[i - 1], ac[i], ac[i + 1]
        den = a - 2 * b + c
        if den < 0:
            lag = i + 0.5 * (a - c) / den
    return 60.0 * fr / lag


def _track_beats(oenv: np.ndarray, period: float, tightness: float = 100.0) -> np.ndarray:
    """Ellis (2007) dynamic-programming beat tracker; returns beat frame indices."""
    sd = oenv.std()
    if sd <= 0 or not np.isfinite(period) or period < 1 or 2 * period >= oenv.size:
        return np.zeros(0, int)  # no tempo, or a beat period longer than half the music
    on = oenv / sd
    k = np.arange(-int(period), int(period) + 1)
    local = np.convolve(on, np.exp(-0.5 * (k * 32.0 / period) ** 2), mode="same")
    T = local.size
    cum = np.zeros(T)
    back = np.full(T, -1)
    lo_off, hi_off = int(round(2 * period)), max(1, int(round(period / 2)))
    offs = np.arange(hi_off, lo_off + 1)
    pen = tightness * np.log(offs / period) ** 2
    started = False
    thr = 0.01 * local.max()
    for t in range(T):
        cand = t - offs
        okc = cand >= 0
        if okc.any():
            sc = cum[cand[okc]] - pen[okc]
            j = int(np.argmax(sc))
            best = sc[j]
            if started and best > 0:
                cum[t] = local[t] + best
                back[t] = cand[okc][j]
                continue
        cum[t] = local[t]
        if local[t] > thr:
            started = True
    # Last beat: the latest local maximum of cum above half the median of the maxima.
    mx = np.nonzero((cum[1:-1] > cum[:-2]) & (cum[1:-1] >= cum[2:]))[0] + 1
    if mx.size == 0:
        return np.zeros(0, int)
    good = mx[cum[mx] >= 0.5 * np.median(cum[mx])]
    t = int(good[-1]) if good.size else int(mx[-1])
    beats = []
    while t >= 0:
        beats.append(t)
        t = int(back[t])
    return np.asarray(beats[::-1], dtype=int)


def music_beats(y: np.ndarray, sr: int, *, downbeats: bool = True) -> Beats:
    """Beats and tempo of a music signal.

    The method is librosa's (Ellis 2007): a log-mel spectral-flux onset envelope, the tempo
    from its autocorrelation under a log-normal prior around 120 bpm, then a dynamic
    programme that places beats on strong onsets about one period apart. It is written
    here in numpy so that no numba compilation is paid on every run.

    Parameters
    ----------
    y : ndarray, shape (S,) or (C, S)
        Audio samples (float, any scale); multi-channel input is averaged.
    sr : int
        Sample rate in Hz.
    downbeats : bool
        Also estimate downbeats (bar starts, assuming 4/4).

    Returns
    -------
    Beats
        ``source='music'``. Empty when the signal is silent or has no pulse.
    """
    y = _analysis_signal(y, sr)
    empty = Beats(np.zeros(0), np.zeros(0), 0.0, "music", np.zeros(0, bool) if downbeats else None)
    if y.size < _SR or float(np.max(np.abs(y))) < 1e-4:
        return empty
    fr = _SR / _HOP
    logmel = _log_mel(y)
    oenv = onset_strength(logmel, _HOP)  # dated like librosa's, so beats agree with its beat tracker
    if float(np.max(oenv)) <= 0:
        return empty
    tempo = _estimate_tempo(oenv, fr)
    frames = _track_beats(oenv, 60.0 * fr / tempo)
    if frames.size == 0:
        return empty
    frames = _without_silent_ends(frames, y, logmel.shape[1])
    times = frames * (_HOP / _SR)
    # Salience: onset strength around the beat (max over +-2 hops), robustly normalised.
    sal = _around_beats(oenv, frames)
    sal = np.clip(sal / (np.percentile(sal, 95) + 1e-9), 0.0, 1.0)
    db = _downbeats(frames, logmel) if downbeats else None
    return Beats(times.astype(float), sal.astype(float), float(tempo), "music", db)


def _analysis_signal(y: np.ndarray, sr: int) -> np.ndarray:
    """Mono float32 at the tracker's rate (_SR) from (S,) or (C, S) samples at ``sr``."""
    from math import gcd

    y = np.asarray(y, dtype=np.float32)
    if y.ndim == 2:
        y = y.mean(axis=0) if y.shape[0] < y.shape[1] else y.mean(axis=1)
    if sr != _SR and y.size:
        from scipy.signal import resample_poly

        g = gcd(int(sr), _SR)
        y = resample_poly(y, _SR // g, int(sr) // g).astype(np.float32)
    return y


def _without_silent_ends(frames: np.ndarray, y: np.ndarray, n_logmel: int) -> np.ndarray:
    """Beat frames less those placed in (near) silence at either end of the song."""
    n_fr = min(n_logmel, y.size // _HOP + 1)
    rms = np.sqrt(np.array([np.mean(y[i * _HOP : i * _HOP + 2048] ** 2) for i in range(n_fr)]))
    ref = float(np.median(rms[rms > 0])) if np.any(rms > 0) else 0.0
    loud = rms[np.clip(frames, 0, rms.size - 1)] >= 0.05 * ref
    if loud.any():
        a, b = int(np.argmax(loud)), frames.size - int(np.argmax(loud[::-1]))
        frames = frames[a:b]
    return frames


def _around_beats(env: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """The maximum of ``env`` within ±2 hops of each beat frame."""
    lo = np.clip(frames - 2, 0, env.size - 1)
    hi = np.clip(frames + 3, 1, env.size)
    return np.array([env[a:b].max() for a, b in zip(lo, hi, strict=True)])


def _downbeats(frames: np.ndarray, logmel: np.ndarray) -> np.ndarray:
    """Bar starts under 4/4: the phase whose beats carry the most low-frequency onset energy."""
    low_at = _around_beats(onset_strength(logmel[:12], _HOP), frames)  # bands below ~250 Hz
    phase = int(np.argmax([low_at[p::4].mean() if low_at[p::4].size else -1 for p in range(4)]))
    db = np.zeros(frames.size, bool)
    db[phase::4] = True
    return db


# --------------------------------------------------------------------------------------------
# Visual beats
# --------------------------------------------------------------------------------------------


def keypoint_speeds(keypoints: np.ndarray, fps: float, joints: tuple[int, ...] | None = None) -> np.ndarray:
    """Per-joint speed from a keypoint track.

    Parameters
    ----------
    keypoints : ndarray, shape (T, K*2)
        x, y per joint per frame.
    fps : float
        Frame rate of the track.
    joints : tuple of int, optional
        Which joints to keep; default :data:`POSE_LIMB_JOINTS` when K = 33, else all.

    Returns
    -------
    ndarray, shape (T, J)
        Speed of each joint (units of the coordinates per second).
    """
    kp = np.asarray(keypoints, dtype=float)
    T = kp.shape[0]
    k = kp.shape[1] // 2
    kp = kp[:, : 2 * k].reshape(T, k, 2)
    if joints is None:
        joints = POSE_LIMB_JOINTS if k == 33 else tuple(range(k))
    kp = kp[:, list(joints)]
    if T < 2:
        return np.zeros((T, len(joints)))
    vel = np.gradient(kp, axis=0) * fps
    return np.linalg.norm(vel, axis=2)


def stop_novelty(
    speed: np.ndarray, fps: float, *, smooth: float = 0.04, window: float = 0.3, depth: float = 0.7
) -> np.ndarray:
    """Deceleration-weighted stop envelope of a set of moving parts.

    For each channel (a joint's speed, or a motion-grid cell's energy) the speed is smoothed
    and every local minimum — taken at the frame where the channel *arrives* at the minimum,
    so a full stop counts at its first still frame — scores the drop from the fastest speed
    in the preceding ``window`` seconds. The envelope is the sum of those scores over
    channels.

    Parameters
    ----------
    speed : ndarray, shape (T,) or (T, C)
        Non-negative speed (or motion energy) per frame and channel.
    fps : float
        Frames per second.
    smooth : float
        Gaussian smoothing sigma, seconds.
    window : float
        Look-back window for the deceleration, seconds.
    depth : float
        A minimum counts only where the speed fell to at most this fraction of the fastest
        speed in the window.

    Returns
    -------
    ndarray, shape (T,)
        Stop envelope, same units as ``speed``.
    """
    from scipy.ndimage import maximum_filter1d

    s = np.asarray(speed, dtype=float)
    if s.ndim == 1:
        s = s[:, None]
    out = np.zeros(s.shape[0])
    if s.shape[0] < 3:
        return out
    s = _plateaued_speed(s, smooth * fps)
    w = max(2, int(round(window * fps)))
    # Running max over the w frames *before* t (t excluded).
    prev_max = maximum_filter1d(s, size=w, axis=0, origin=(w - 1) // 2, mode="nearest")
    prev_max = np.vstack([s[:1], prev_max[:-1]])
    drop = np.maximum(prev_max - s, 0.0)
    # Only deep minima count: the speed fell well below the recent peak.
    tt, cc = np.nonzero(_arrivals_at_minima(s) & (s <= depth * prev_max))
    for t, c in zip(tt.tolist(), cc.tolist(), strict=True):
        # Smoothing spreads a sudden stop over a few frames: date the stop at the first
        # frame that is already within 10 % of the depth of the minimum.
        lim = s[t, c] + 0.1 * drop[t, c]
        u = t
        while u > 0 and s[u - 1, c] <= lim and t - u < w:
            u -= 1
        out[u] += drop[t, c]
    return out


def _plateaued_speed(s: np.ndarray, sigma: float) -> np.ndarray:
    """Speeds (T, C) made finite and non-negative, Gaussian-smoothed (``sigma`` frames, when at
    least 0.3), with tiny residues set to zero so that a standstill is a true plateau."""
    from scipy.ndimage import gaussian_filter1d

    s = np.nan_to_num(s, nan=0.0, posinf=0.0, neginf=0.0)
    s = np.maximum(s, 0.0)
    if sigma >= 0.3:
        s = gaussian_filter1d(s, sigma, axis=0, mode="nearest")
    scale = np.percentile(s, 95, axis=0) + 1e-12
    return np.where(s < 0.02 * scale, 0.0, s)


def _arrivals_at_minima(s: np.ndarray) -> np.ndarray:
    """(T, C) bool: frames where a channel arrives at a local minimum — strictly lower than the
    frame before, not higher than the next distinct value (plateaus count once, at their first frame)."""
    T, C = s.shape
    dn = np.diff(s, axis=0)  # (T-1, C), dn[t-1] = s[t] - s[t-1]
    arrive = np.zeros_like(s, dtype=bool)
    arrive[1:] = dn < 0
    # next change after t: look at the first non-zero diff going forward
    nxt = np.zeros_like(s)
    last = np.zeros(C)
    for t in range(T - 2, -1, -1):
        d = dn[t]
        last = np.where(d != 0, d, last)
        nxt[t] = last
    return arrive & (nxt >= 0)


def pick_beats(
    novelty: np.ndarray, fps: float, *, min_gap: float = 0.2, rel_threshold: float = 0.05
) -> tuple[np.ndarray, np.ndarray]:
    """Peaks of a stop envelope as beat times.

    Parameters
    ----------
    novelty : ndarray, shape (T,)
        Non-negative envelope (see :func:`stop_novelty`).
    fps : float
        Frames per second (frame t is at t / fps seconds).
    min_gap : float
        Minimum distance between beats, seconds (the stronger one wins).
    rel_threshold : float
        Keep peaks at least this fraction of the 95th percentile of peak heights.

    Returns
    -------
    times : ndarray, shape (N,)
    strength : ndarray, shape (N,), in [0, 1]
    """
    from scipy.ndimage import gaussian_filter1d
    from scipy.signal import find_peaks

    n = np.asarray(novelty, dtype=float)
    if n.size < 3 or float(n.max(initial=0.0)) <= 0:
        return np.zeros(0), np.zeros(0)
    # Merge stops of several parts that fall within a frame of each other, keep timing.
    ns = gaussian_filter1d(n, 0.75, mode="constant") if n.size > 3 else n
    peaks, _ = find_peaks(np.concatenate([[0.0], ns, [0.0]]), distance=max(1, int(round(min_gap * fps))))
    peaks = peaks - 1
    if peaks.size == 0:
        return np.zeros(0), np.zeros(0)
    h = ns[peaks]
    ref = float(np.percentile(h, 95))
    keep = h >= rel_threshold * ref
    peaks, h = peaks[keep], h[keep]
    # Snap to the strongest raw frame within one frame (the smoothing may shift by one).
    snapped = []
    for p in peaks:
        a, b = max(0, p - 1), min(n.size, p + 2)
        snapped.append(a + int(np.argmax(n[a:b])))
    times = np.asarray(snapped, dtype=float) / fps
    strength = np.clip(h / (ref + 1e-12), 0.0, 1.0)
    order = np.argsort(times, kind="stable")
    times, strength = times[order], strength[order]
    # Snapping can create duplicates; keep the first.
    if times.size > 1:
        ok = np.concatenate([[True], np.diff(times) > 0])
        times, strength = times[ok], strength[ok]
    return times, strength


def visual_beats(
    visual, *, prefer: str = "auto", own_beats: Beats | None = None, min_gap: float = 0.2
) -> Beats:
    """Visual beats of a video from its features.

    Parameters
    ----------
    visual : avsync.features.VisualFeatures
        Extracted features; pose keypoints are used when present (``kind == 'pose'``),
        else the motion grid (or the 1-D envelope when the grid is empty).
    prefer : {'auto', 'pose', 'motion'}
        Force a source. 'pose' without keypoints falls back to motion.
    own_beats : Beats, optional
        Music beats of the video's own soundtrack. Visual beats within 3 frames of one get
        their salience raised (a dance is likely to hit its own music's beats).
    min_gap : float
        Minimum spacing of visual beats, seconds.

    Returns
    -------
    Beats
        ``source`` is 'pose' or 'motion'; times on the video's clock (first frame = 0).
    """
    fps = float(visual.fps)
    kp = getattr(visual, "keypoints", None)
    use_pose = kp is not None and prefer != "motion" and (prefer == "pose" or visual.kind == "pose")
    if use_pose:
        speed = keypoint_speeds(kp.values, fps)
        source = "pose"
    else:
        grid = visual.grid.values if visual.grid is not None else None
        if grid is None or grid.size == 0 or not np.any(grid):
            grid = visual.envelope.values
        # Total frame-difference energy: a moving object crossing from one cell to the next
        # would look like a stop in the cell it leaves, so the cells are pooled.
        speed = np.asarray(grid, dtype=float).sum(axis=1)
        source = "motion"
    return beats_from_speed(speed, fps, source=source, own_beats=own_beats, min_gap=min_gap)


def beats_from_speed(
    speed: np.ndarray,
    fps: float,
    *,
    source: str = "motion",
    own_beats: Beats | None = None,
    min_gap: float = 0.2,
) -> Beats:
    """Visual beats from per-part speeds (see :func:`stop_novelty`, :func:`pick_beats`).

    Parameters
    ----------
    speed : ndarray, shape (T,) or (T, C)
        Speed or motion energy per frame (frame t at t / fps seconds) and part.
    fps : float
        Frames per second.
    source : str
        Label stored in the result.
    own_beats : Beats, optional
        See :func:`visual_beats`.
    min_gap : float
        Minimum spacing, seconds.

    Returns
    -------
    Beats
    """
    nov = stop_novelty(speed, fps)
    times, strength = pick_beats(nov, fps, min_gap=min_gap)
    if own_beats is not None and len(own_beats) and times.size:
        sig = 3.0 / fps
        d = _nearest_distance(times, own_beats.times)
        strength = np.clip(strength * (1.0 + np.exp(-(d**2) / (2 * sig**2))), 0.0, 1.0)
    return Beats(times, strength, _tempo_from_times(times), source)


# --------------------------------------------------------------------------------------------
# Beat Align Score
# --------------------------------------------------------------------------------------------


def _nearest_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each value of ``a``, the distance to the nearest value of ``b`` (inf if b empty)."""
    a = np.asarray(a, dtype=float)
    b = np.sort(np.asarray(b, dtype=float))
    if b.size == 0:
        return np.full(a.shape, np.inf)
    idx = np.clip(np.searchsorted(b, a), 1, max(1, b.size - 1))
    left = b[idx - 1]
    right = b[np.minimum(idx, b.size - 1)]
    return np.minimum(np.abs(a - left), np.abs(a - right))


def beat_align_score(
    music_beats: np.ndarray, visual_beats: np.ndarray, fps: float, sigma_frames: float = 3.0
) -> float:
    """Beat Align Score: how well the picture's beats land on the music's beats.

    ``BAS = mean_j exp(-d_j^2 / (2 sigma^2))`` where ``d_j`` is the distance from music
    beat j to the nearest visual beat and ``sigma = sigma_frames / fps`` seconds.

    Parameters
    ----------
    music_beats : ndarray, shape (M,)
        Music beat times, seconds. Must not be empty.
    visual_beats : ndarray, shape (N,)
        Visual beat times on the same clock, seconds. Empty gives 0.
    fps : float
        Video frame rate (defines sigma).
    sigma_frames : float
        Tolerance sigma in frames.

    Returns
    -------
    float
        In [0, 1]; 1 when every music beat has a visual beat exactly on it.
    """
    m = np.asarray(music_beats, dtype=float).ravel()
    if m.size == 0:
        raise ValueError("beat_align_score needs at least one music beat")
    if fps <= 0 or sigma_frames <= 0:
        raise ValueError("fps and sigma_frames must be positive")
    d = _nearest_distance(m, np.asarray(visual_beats, dtype=float).ravel())
    sigma = sigma_frames / fps
    return float(np.mean(np.exp(-(d**2) / (2.0 * sigma**2))))
