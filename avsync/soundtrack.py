"""Alignment evidence from the video's own soundtrack.

A dance filmed to playback has the song on the camera's microphone; a take whose clock ran
fast carries its own, equally fast, sound; a dubbed scene keeps its music and effects. When
the video to re-time has an audio track that follows its picture, the reference audio can be
matched against that track — audio against audio — which is far stronger evidence than
sound against motion. ``avsync align --sync-by auto`` (the default) does so whenever the video
has a soundtrack that clearly matches the reference; ``--sync-by picture`` never does.

:func:`soundtrack_affinity` returns an :class:`~avsync.types.Affinity` on the same grid as
the picture backends (rows = reference audio at the video's frame rate, lags = picture time
− reference time): a windowed correlation, smooth enough to tell a real match from unrelated
audio (the evidence check of :mod:`avsync.align`). The path itself is drawn frame by frame
(:func:`soundtrack_correspondence`): a banded DTW of :mod:`avsync.path` over the cosine
similarity of single 20 ms analysis frames, which bends within a fraction of a second where a
window would smear a skip or a speed change over its whole width.

The envelopes are the onset envelope (spectral flux summed over all bands) and the loudness
of mel bands, each high-passed: 16 broad bands of 8 mel bins for the windowed affinity, 64
bands of 2 bins for the frame-level match (see FRAME_BANDS). A change of playback speed
without pitch correction (a clock running 1.6× fast raises the pitch by 8 semitones) moves
the spectrum, so no single mel bin is compared with another. The path also compares pitch
classes (:func:`pitch_class_affinity`, under the best transposition): beat-level envelopes
repeat with the beat, the harmony does not.

:func:`warp_audio` is the other direction, for tests and the bench: it plays a soundtrack
along a frame plan (varispeed, as a tape or a drifting clock would).
"""

from __future__ import annotations

import math

import numpy as np

from avsync.errors import CannotMeasure
from avsync.features import AudioFeatures
from avsync.types import Affinity, Correspondence

# Hann half-width of the windowed correlation (the evidence check), seconds.
WINDOW_SECONDS = 0.25
# Mel-bin edges of the broad bands (of 128) of the windowed affinity (the evidence check).
BANDS = tuple(range(0, 129, 8))  # 16 bands of 8 mel bins
# ... and of the frame-level match that draws the path: 64 bands of 2 mel bins. Real
# camera-microphone cases (issue 13 protocol), ITU share of moving frames without the
# evidence check, per-case mean, fit part (66 clips; chosen there) for 8 / 16 / 24 / 32 / 48 /
# 64 / 128 bands: 0.815 / 0.848 / 0.854 / 0.856 / 0.853 / 0.859 / 0.857; check part (52):
# 0.818 / 0.873 / 0.891 / 0.906 / 0.903 / 0.903 / 0.903. Finer bands tell sounds apart by
# timbre; the speed changes' pitch shifts (up to 8 semitones) did not undo it.
FRAME_BANDS = tuple(range(0, 129, 2))


def _broad_bands(logmel: np.ndarray, edges: tuple[int, ...]) -> np.ndarray:
    """(T, 128) dB → (T, B): mean dB per band between consecutive mel-bin ``edges``."""
    return np.stack([logmel[:, a:b].mean(axis=1) for a, b in zip(edges[:-1], edges[1:], strict=True)], axis=1)


def _on_grid(values: np.ndarray, src_rate: float, rate: float, n: int) -> np.ndarray:
    """Box-filter (T, D) samples at ``src_rate`` over one target period and sample at k / rate."""
    from scipy.ndimage import uniform_filter1d

    v = np.asarray(values, dtype=np.float64)
    width = int(round(src_rate / rate))
    if width >= 2:
        v = uniform_filter1d(v, width, axis=0, mode="nearest")
    t_src = np.arange(len(v)) / src_rate
    t_new = np.arange(n) / rate
    return np.stack([np.interp(t_new, t_src, v[:, d]) for d in range(v.shape[1])], axis=1)


def _rows(feat: AudioFeatures, rate: float) -> int:
    """Rows of ``feat`` on a ``rate`` Hz grid (whole periods of its onset envelope)."""
    return int(math.floor(len(feat.onset) / feat.onset.rate * rate + 1e-9))


def soundtrack_envelopes(feat: AudioFeatures, rate: float,
                         bands: tuple[int, ...] = BANDS) -> tuple[np.ndarray, np.ndarray]:
    """Envelopes (T, 1 + B) of one audio at ``rate`` Hz: onset flux, then the loudness of the
    B bands between the mel-bin edges ``bands``, each prepared like the classical backend's
    (compressed, high-passed, standardised); and the band loudnesses' spread in dB (B,) before
    standardising, so that bands that carry the sound can outweigh bands of steady noise."""
    from scipy.ndimage import uniform_filter1d

    from avsync.backends.classical import ClassicalOptions, prepare_envelope

    n = _rows(feat, rate)
    if n < 2:
        raise CannotMeasure("the soundtrack is too short to compare")
    opts = ClassicalOptions()
    onset = _on_grid(feat.onset.values, feat.onset.rate, rate, n)[:, 0]
    level = _on_grid(_broad_bands(np.asarray(feat.logmel.values), bands), feat.logmel.rate, rate, n)
    cols = [prepare_envelope(onset, rate, opts, peaky=True)]
    cols += [prepare_envelope(level[:, d], rate, opts, peaky=False) for d in range(level.shape[1])]
    n_detrend = int(round(opts.detrend_seconds * rate)) | 1
    spread = (level - uniform_filter1d(level, n_detrend, axis=0, mode="nearest")).std(axis=0)
    return np.stack(cols, axis=1), spread


def soundtrack_affinity(
    reference: AudioFeatures, own: AudioFeatures, rate: float, max_shift: float,
    window_seconds: float = WINDOW_SECONDS,
) -> Affinity:
    """How well the reference audio at each time matches the video's own soundtrack at each lag.

    Parameters
    ----------
    reference : AudioFeatures
        The audio the picture is to follow.
    own : AudioFeatures
        The video's soundtrack, on the video's clock (t = 0 at the first frame).
    rate : float
        Rows per second (the video's frame rate).
    max_shift : float
        Largest |lag| searched, seconds.

    Returns
    -------
    Affinity
        ``scores`` (T, L): the onset correlation and the band correlations' mean weighted by
        the bands' loudness spread (dB, geometric mean of the two sides), averaged.
    """
    from avsync.backends.classical import local_ncc

    a, sa = soundtrack_envelopes(reference, rate)
    v, sv = soundtrack_envelopes(own, rate)
    flat_a = ~np.any(a, axis=0)
    flat_v = ~np.any(v, axis=0)
    if flat_a.all() or flat_v.all():
        raise CannotMeasure("one of the two soundtracks is flat")
    max_lag = max(1, int(round(max_shift * rate)))
    half = max(2, int(round(window_seconds * rate)))
    onset = local_ncc(a[:, 0], v[:, 0], max_lag, half)
    bands = np.zeros_like(onset)
    weight = 0.0
    for d in range(1, a.shape[1]):
        w = float(np.sqrt(sa[d - 1] * sv[d - 1]))
        if flat_a[d] or flat_v[d] or not w > 0:
            continue
        bands += w * local_ncc(a[:, d], v[:, d], max_lag, half)
        weight += w
    scores = onset if weight == 0 else 0.5 * onset + 0.5 * bands / weight
    lags = np.arange(-max_lag, max_lag + 1) / rate
    return Affinity(scores=scores.astype(np.float32), lags=lags, rate=float(rate), start=0.0)


# Rows per second of the frame-level match that draws the path (20 ms: finer than any video
# frame). The windowed affinity above decides *whether* the soundtrack matches; the path is
# drawn on single analysis frames, which a window would smear across speed changes.
FRAME_RATE = 50.0
# Smoothing of the frame-level path, seconds (Savitzky–Golay on the lag), and the extra cost of
# a DTW step off the diagonal, in units of the frame cost 1 - cosine (where the soundtrack is
# drowned in noise the path then keeps its slope). First set on 12 BBB dev clips, varispeed:
# penalty 0 / 0.3 / 0.6: ITU 0.964 / 0.970 / 0.961, with white noise at 10 dB SNR 0.763 /
# 0.810 / 0.795 (smoothing 0.3). Then on real camera-microphone cases (issue 13 protocol, fit
# part, 66 clips, 64 bands, per-case mean ITU without the evidence check): penalty 0 / 0.1 /
# 0.15 / 0.2 / 0.3 / 0.5 with smoothing 0.3: 0.862 / 0.860 / 0.865 / 0.865 / 0.859 / 0.849;
# smoothing 0.15 / 0.5 with penalty 0.3: 0.860 / 0.863; penalty 0.15 / 0.2 with smoothing 0.5:
# 0.868 / 0.868 (check part, 52 clips: 0.903 at 0.3 / 0.3, 0.911 at 0.2 / 0.5).
FRAME_SMOOTH_SECONDS = 0.5
FRAME_STEP_PENALTY = 0.2


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Each row minus its mean, scaled to unit length (rows with no contrast shrink to ~0)."""
    x = x - x.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / (norm + 1e-3 * math.sqrt(x.shape[1]) + 1e-12)


def soundtrack_frame_affinity(
    reference: AudioFeatures, own: AudioFeatures, max_shift: float, rate: float = FRAME_RATE,
    bands: tuple[int, ...] = FRAME_BANDS,
) -> Affinity:
    """Frame-by-frame similarity of the two soundtracks over a band of lags.

    Each analysis frame is a vector (onset flux and the loudness of the broad bands, prepared
    as in :func:`soundtrack_envelopes`); ``scores[i, l]`` is the cosine similarity of the
    mean-removed vectors of reference frame ``i`` and own frame ``i + l``. No window: the
    DTW of :func:`soundtrack_correspondence` integrates along the path instead, so the path
    can bend within a fraction of a second (a skip, a freeze, a speed change).
    """
    a, sa = soundtrack_envelopes(reference, rate, bands)
    v, sv = soundtrack_envelopes(own, rate, bands)
    # Bands weighted by their loudness spread (geometric mean of the two sides, mean 1), the
    # onset flux by 1: a band of steady hiss, standardised like the others, would otherwise
    # count as much as the band that carries the sound. Unweighted -> weighted, ITU share:
    # synthetic beeps (the bench test) 0.869 -> 0.950; 12 BBB dev clips 0.973 -> 0.973, at
    # 10 dB SNR 0.810 -> 0.858; held-out clips (a scratch cut) 0.958 -> 0.969, at 10 dB
    # 0.835 -> 0.892; make bench's 8 held-out clips 0.952 -> 0.965 (AFE 0.61 -> 0.49).
    w = np.sqrt(sa * sv)
    col = np.concatenate([[1.0], w / max(float(w.mean()), 1e-12)])
    a, v = a * col, v * col
    ua, uv = _unit_rows(a), _unit_rows(v)
    t, n = len(ua), len(uv)
    max_lag = max(1, int(round(max_shift * rate)))
    scores = np.zeros((t, 2 * max_lag + 1), dtype=np.float32)
    for k, lag in enumerate(range(-max_lag, max_lag + 1)):
        i0, i1 = max(0, -lag), min(t, n - lag)
        if i1 > i0:
            scores[i0:i1, k] = np.einsum("ij,ij->i", ua[i0:i1], uv[i0 + lag:i1 + lag])
    lags = np.arange(-max_lag, max_lag + 1) / rate
    return Affinity(scores=scores, lags=lags, rate=float(rate), start=0.0)


# The pitch-class match (:func:`pitch_class_affinity`): mel bins whose centres lie between these
# frequencies (Hz) are folded into 12 pitch classes; its share of the frame similarity that
# draws the path; and the time (s) over which a transposition is chosen. Real camera-microphone
# cases (issue 13 protocol, per-case mean ITU on moving frames without the evidence check), fit
# part (66 clips; chosen there): without 0.868; share 0.2 / 0.3 / 0.4 (250-4000 Hz, 1 s): 0.872 /
# 0.876 / 0.874; lowest bin 150 / 500 / 1000 Hz: 0.874 / 0.863 / 0.853; highest 3000 / 6000 Hz:
# 0.867 / 0.864 (a first implementation); as built, 0.879, and a transposition chosen over 0.5 /
# 2 / 4 s: 0.869 / 0.874 / 0.866. Fit, without -> with: music 0.906 -> 0.931, events 0.811 ->
# 0.832, speech 0.854 -> 0.860. Check part (52 clips): 0.911 -> 0.917 (music 0.864 -> 0.871,
# speech 0.950 -> 0.966, events 0.838 -> 0.834: 4 clips gain, a synthetic clip of isolated
# clicks in silence loses, 0.94 -> 0.69). Beat-level envelopes repeat with the beat; the pitch
# classes follow the harmony, which does not.
PITCH_LOW_HZ, PITCH_HIGH_HZ = 250.0, 4000.0
PITCH_SHARE = 0.3
PITCH_KEY_SECONDS = 1.0


def _pitch_classes(feat: AudioFeatures, rate: float, n: int) -> np.ndarray:
    """(n, 12) log energy per pitch class at ``rate`` Hz, rows mean-removed and unit length.

    The log-mel bins centred in [PITCH_LOW_HZ, PITCH_HIGH_HZ] (the Slaney mel scale of the
    features; above 1 kHz the bins are log-spaced, about half a semitone apart) are folded into
    the 12 classes with triangular weights on the distance in semitones from A440.
    """
    from avsync.features.audio import mel_frequencies

    lm = np.asarray(feat.logmel.values, dtype=np.float64)
    centres = mel_frequencies(lm.shape[1] + 2, feat.sr / 2.0)[1:-1]
    sel = (centres >= PITCH_LOW_HZ) & (centres <= PITCH_HIGH_HZ)
    if not sel.any():
        return np.zeros((n, 12))
    pc = (12.0 * np.log2(centres[sel] / 440.0)) % 12.0
    dist = (np.arange(12)[None, :] - pc[:, None] + 6.0) % 12.0 - 6.0
    fold = np.maximum(0.0, 1.0 - np.abs(dist))  # (bins, 12)
    energy = np.log(10.0 ** (lm[:, sel] / 10.0) @ fold + 1e-6)
    return _unit_rows(_on_grid(energy, feat.logmel.rate, rate, n))


def pitch_class_affinity(reference: AudioFeatures, own: AudioFeatures, max_shift: float,
                         rate: float = FRAME_RATE) -> Affinity:
    """Frame-by-frame similarity of the two soundtracks' pitch classes, transposition allowed.

    A video whose clock runs fast plays its sound higher (1.6x: 8 semitones), so each lag
    compares the reference's pitch classes with the own soundtrack's under each of the 12
    rotations, and keeps, frame by frame, the rotation whose similarity summed over
    ``PITCH_KEY_SECONDS`` is highest (a transposition holds for a while; choosing it per frame
    would make unrelated sound look alike). Same grid as :func:`soundtrack_frame_affinity`.
    """
    from scipy.ndimage import uniform_filter1d

    t, n = _rows(reference, rate), _rows(own, rate)
    # All 12 rotations at once: the circular cross-correlation over the classes, through the
    # 12-point real FFT of each frame.
    fa = np.fft.rfft(_pitch_classes(reference, rate, t), axis=1)
    fv = np.conj(np.fft.rfft(_pitch_classes(own, rate, n), axis=1))
    max_lag = max(1, int(round(max_shift * rate)))
    width = max(1, int(round(PITCH_KEY_SECONDS * rate)))
    scores = np.zeros((t, 2 * max_lag + 1), dtype=np.float32)
    for j, lag in enumerate(range(-max_lag, max_lag + 1)):
        i0, i1 = max(0, -lag), min(t, n - lag)
        if i1 <= i0:
            continue
        sim = np.fft.irfft(fa[i0:i1] * fv[i0 + lag:i1 + lag], n=12, axis=1)  # (i, rotation)
        key = np.argmax(uniform_filter1d(sim, width, axis=0, mode="nearest"), axis=1)
        scores[i0:i1, j] = sim[np.arange(i1 - i0), key]
    return Affinity(scores=scores, lags=np.arange(-max_lag, max_lag + 1) / rate, rate=float(rate), start=0.0)


def soundtrack_correspondence(
    reference: AudioFeatures, own: AudioFeatures, fps: float, n_out: int, src_duration: float | None,
    max_shift: float, max_speed: float = 2.0,
) -> Correspondence:
    """The warp that makes the video's soundtrack follow the reference: a banded DTW
    (:func:`avsync.path.banded_dtw_correspondence`) over the frame similarity of
    :func:`soundtrack_frame_affinity` (share ``1 - PITCH_SHARE``) and
    :func:`pitch_class_affinity` (``PITCH_SHARE``), its ends leaning towards the files' ends
    (``ANCHOR_COST``), smoothed over ``FRAME_SMOOTH_SECONDS`` and speed-bounded like every path.

    On 12 BBB dev clips with varispeed soundtracks (0.6-1.6x, freezes, skips) the frame
    similarity alone puts 97 % of frames inside the ITU window; the windowed affinity with the
    lag Viterbi, 84 %.
    """
    from avsync.path import PathOptions, banded_dtw_correspondence

    aff = soundtrack_frame_affinity(reference, own, max_shift)
    pitch = pitch_class_affinity(reference, own, max_shift).scores  # the same rows and lags
    cost = aff.scores.astype(np.float64)
    cost *= PITCH_SHARE - 1.0
    cost -= PITCH_SHARE * pitch
    cost += 1.0  # 1 - the mixed similarity
    _anchor_ends(cost, aff.lags, own.duration - reference.duration)
    popts = PathOptions(smooth_seconds=FRAME_SMOOTH_SECONDS, max_speed=max_speed)
    return banded_dtw_correspondence(aff, popts, out_rate=fps, n_out=n_out, src_duration=src_duration,
                                     cost=cost, step_penalty=FRAME_STEP_PENALTY)


# The ends of the path lean towards the ends of the two files: the first reference frame towards
# the video's first (lag 0), the last towards its last (lag = the video's soundtrack length minus
# the reference's). The cost, in units of the frame cost, is ANCHOR_COST per second of lag away
# from that, capped at ANCHOR_CAP_SECONDS: where the sound leaves the ends open (a steady beat
# repeats every bar; a clip's first and last moments fall outside a window) the path takes the
# files' own ends, as a global DTW (synctoolbox) does outright; clear evidence elsewhere still
# wins (a video with extra seconds before the music pays at most 30 frame costs, 0.6 s of
# mismatch; synthetic bursts with 0.5 / 1 / 1.5 s of other sound before the match: 2 % / 0 / 0 %
# of frames lost, the first 0.25 s of the 0.5 s case). Real camera-microphone cases (issue 13
# protocol, per-case mean ITU on moving frames without the evidence check), fit part (66 clips;
# chosen there): free ends 0.879; uncapped
# 20 / 40 / 50 / 60: 0.894 / 0.907 / 0.904 / 0.880; capped at 1 s, 40 / 60: 0.902 / 0.880; at
# 0.5 s, 30 / 40 / 60 / 80 / 120: 0.894 / 0.901 / 0.903 / 0.897 / 0.879 (above 0.5 x 80 a freeze
# at the start of a clip, which leaves the first frame's lag anywhere in it, starts to lose);
# a lag prior over every row instead, 0.01 / 0.1 per second: 0.874 / 0.854. Check part (52 clips):
# 0.917 -> 0.932, music 0.871 -> 0.943 (a steady 5 s clip one beat off before), events 0.834 ->
# 0.861, speech and dance level. Capped at 0.5 s for its plateau (40-80), though uncapped 40 read
# higher on the fit part: uncapped, it sits next to a cliff (60).
ANCHOR_COST = 60.0
ANCHOR_CAP_SECONDS = 0.5


def _anchor_ends(cost: np.ndarray, lags: np.ndarray, end_lag: float) -> None:
    """Add the end anchors (see ANCHOR_COST) to the first and last rows of ``cost`` in place."""
    lags = np.asarray(lags, dtype=np.float64)
    cost[0] += ANCHOR_COST * np.minimum(np.abs(lags), ANCHOR_CAP_SECONDS)
    cost[-1] += ANCHOR_COST * np.minimum(np.abs(lags - end_lag), ANCHOR_CAP_SECONDS)


# The DTW step penalty of frame_path_score (the evidence check): the path's penalty when the
# check's margin was chosen (avsync.align.SOUNDTRACK_MARGIN); with the path's 0.2 the fit
# part's unrelated soundtracks passed 5 % instead of 3 % at the same margin.
EVIDENCE_STEP_PENALTY = 0.3


def frame_path_score(reference: AudioFeatures, own: AudioFeatures, max_shift: float) -> float:
    """The mean frame-level similarity along its banded DTW path, drawn as
    :func:`soundtrack_correspondence` draws the path but on the 16 broad bands (``BANDS``) and
    with ``EVIDENCE_STEP_PENALTY``: how well a frame-by-frame path matches (one half of the
    evidence check of :mod:`avsync.align`; on the check's negatives, soundtracks of other
    clips, the broad bands separate better: with the 64 bands of the path, 6 % instead of 3 %
    of the fit part's negatives passed)."""
    from avsync.path import banded_dtw

    s = soundtrack_frame_affinity(reference, own, max_shift, bands=BANDS).scores.astype(np.float64)
    t, n_lags = s.shape
    pi, pq, _ = banded_dtw(1.0 - s, np.arange(t), t + n_lags - 1, open_begin=True, open_end=True,
                           step_penalty=EVIDENCE_STEP_PENALTY)
    return float(np.mean(s[pi, np.clip(pq - pi, 0, n_lags - 1)]))


def warp_audio(y: np.ndarray, sr: int, plan: np.ndarray, fps: float) -> np.ndarray:
    """Play ``y`` along a frame plan: the soundtrack of a video whose frame ``m`` shows
    original frame ``plan[m]``, as a varispeed would (the pitch moves with the speed; during
    a freeze the source stands still, so the sound stops).

    The source time runs piecewise-linearly through ``plan[m] / fps`` at ``m / fps``; each
    output sample takes the source sample at that time (linear interpolation).

    Returns
    -------
    ndarray (len(plan) * sr / fps,), float32
    """
    plan = np.asarray(plan, dtype=np.float64)
    n_out = int(round(len(plan) / fps * sr))
    t_out = np.arange(n_out) / sr
    src = np.interp(t_out, np.arange(len(plan)) / fps, plan / fps)
    t_in = np.arange(len(y)) / sr
    return np.interp(src, t_in, np.asarray(y, dtype=np.float64), left=0.0, right=0.0).astype(np.float32)
