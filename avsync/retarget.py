"""``avsync retarget``: warp a dance so that its visual beats land on a new song's beats.

music beats (librosa) + visual beats (pose stops, or motion stops) → monotonic DP matching
visual beats to music beats (tempo-change penalty, skips allowed on both sides) → smooth
monotonic time map with speed bounded to [1/max_speed, max_speed] → render with the new
music muxed.

The time map is a :class:`~avsync.types.Correspondence` on the *output* clock (= the new
music's clock, starting at ``start`` seconds into the song): output frame k, shown at
``k / rate``, displays the dance at ``src_time[k]``. With ``loop`` the dance repeats, so
``src_time`` wraps back to the dance's start at each repetition (it is monotonic within
each repetition; ``unwrapped`` in the map JSON is monotonic throughout).
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import types
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from avsync import __version__
from avsync import options as check
from avsync.errors import CannotMeasure, InputError
from avsync.features import MODES
from avsync.features.beats import Beats, beat_align_score
from avsync.options import X264_PRESETS
from avsync.progress import Progress, timed
from avsync.types import Correspondence

MIN_MUSIC_SECONDS = 2.0


@dataclass(frozen=True)
class RetargetOptions:
    max_speed: float = 2.0  # local speed of the dance stays within [1/max_speed, max_speed] (>= 1)
    loop: bool = False  # repeat the dance when the music is longer; else the output ends with the dance
    start: float = 0.0  # where in the music the output begins, seconds (>= 0)
    backend: str = "classical"  # who predicts the correspondence; learned ones plug in via register_backend
    # Visual features the visual beats come from (avsync.features.MODES): "dance" = stops of the
    # pose joints; "speech" (face-mesh lips) and "general" = stops of the frame-difference motion,
    # which sees the head and the mouth move as well as anything else; "auto" = pose when a body
    # is found, else motion.
    mode: str = "auto"
    crf: int = 18  # libx264 constant rate factor of the output (0..51)
    preset: str = "veryfast"  # libx264 preset (X264_PRESETS)
    overwrite: bool = False  # replace existing outputs
    tempo_penalty: float = 4.0  # DP cost per (change of log speed)^2 between consecutive segments
    speed_prior: float = 0.3  # DP cost per (log speed)^2 of each segment: prefer the natural speed
    skip_music_cost: float = 0.8  # DP cost per music beat left without a visual beat
    skip_visual_cost: float = 0.05  # DP cost per visual beat left off the music's beats
    smooth_frames: float = 2.0  # Gaussian sigma (output frames) smoothing the speed between anchors
    cache: bool = True  # cache features on disk

    def __post_init__(self) -> None:
        check.at_least("max_speed", self.max_speed, 1.0)
        check.at_least("start", self.start, 0.0, "seconds")
        if self.backend not in _BACKENDS:
            raise check.OptionError("backend", f"'{self.backend}' cannot retarget (available: {', '.join(backends())})")
        check.one_of("mode", self.mode, MODES)
        check.whole_within("crf", self.crf, 0, 51)
        check.one_of("preset", self.preset, X264_PRESETS)
        for name in ("tempo_penalty", "speed_prior", "skip_music_cost", "skip_visual_cost", "smooth_frames"):
            check.at_least(name, getattr(self, name), 0.0)


# --------------------------------------------------------------------------------------------
# Backends: who predicts the correspondence
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetargetInputs:
    """Everything a retarget backend may use to predict the time map.

    Attributes
    ----------
    visual : avsync.features.VisualFeatures or None
        Features of the dance (keypoints, motion grid, envelope) on its frame grid.
    music : ndarray, shape (S,)
        The new music, mono float32 at ``sr`` (the whole song; the output starts at
        ``opts.start``).
    sr : int
        Sample rate of ``music``.
    visual_beats, music_beats : Beats
        Beats found by :mod:`avsync.features.beats` (dance clock / song clock).
    dance_duration, music_duration : float
        Seconds.
    fps : float
        Output frame rate.
    """

    visual: Any
    music: np.ndarray
    sr: int
    visual_beats: Beats
    music_beats: Beats
    dance_duration: float
    music_duration: float
    fps: float


# A backend returns what :func:`plan_retarget` returns: (Correspondence, matches, unwrapped
# dance time per output frame, note). Learned backends (AlignNet-style dense correspondence
# conditioned on the new music) register here and predict ``unwrapped`` directly; the speed
# bound is enforced on whatever they return.
RetargetBackend = Callable[[RetargetInputs, RetargetOptions], tuple[Correspondence, list, np.ndarray, str]]


def _classical(inp: RetargetInputs, opts: RetargetOptions):
    return plan_retarget(inp.visual_beats, inp.music_beats, inp.dance_duration, inp.music_duration,
                         opts, fps=inp.fps)


_BACKENDS: dict[str, RetargetBackend] = {"classical": _classical}


def register_backend(name: str, fn: RetargetBackend) -> None:
    """Make ``fn`` available as ``retarget --backend name``."""
    _BACKENDS[name] = fn


def backends() -> list[str]:
    """Names usable with ``--backend``."""
    return sorted(_BACKENDS)


@dataclass(frozen=True)
class Match:
    """One visual beat placed on one music beat.

    Attributes
    ----------
    visual_time : float
        Dance time of the visual beat, seconds (within the dance, i.e. modulo its length).
    music_time : float
        Time of the music beat in the song, seconds.
    output_time : float
        Where the music beat falls in the output, seconds (``music_time - start``).
    repeat : int
        Which repetition of the dance (0 unless ``loop``).
    """

    visual_time: float
    music_time: float
    output_time: float
    repeat: int = 0


@dataclass
class RetargetResult:
    output: str | None
    map_path: str | None
    plot_path: str | None
    backend: str
    visual_source: str
    note: str
    fps: float
    n_out: int
    output_duration: float
    dance_duration: float
    music_duration: float
    start: float
    loop: bool
    music_tempo: float
    visual_tempo: float
    n_music_beats: int
    n_visual_beats: int
    n_matches: int
    bas_before: float
    bas_after: float
    speed_min: float
    speed_max: float
    max_speed: float
    seconds: dict[str, float] = field(default_factory=dict)
    correspondence: Correspondence | None = None
    unwrapped: np.ndarray | None = None
    music_beats: Beats | None = None
    visual_beats: Beats | None = None
    matches: list[Match] = field(default_factory=list)
    export: dict[str, Any] | None = None  # the --export timeline written (path, format, segments, map sha256)

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` object, in the names of :mod:`avsync.vocabulary`."""
        skip = {"correspondence", "unwrapped", "music_beats", "visual_beats", "matches"}
        d = {k: v for k, v in asdict(self).items() if k not in skip}
        for k in ("bas_before", "bas_after", "speed_min", "speed_max", "output_duration"):
            d[k] = round(float(d[k]), 4)
        d["output_fps"] = d["fps"]  # the dance's frame rate is kept
        return {JSON_NAMES.get(k, k): v for k, v in d.items()}


# Attribute -> JSON key where they differ (the JSON speaks avsync.vocabulary).
JSON_NAMES = {"map_path": "map", "plot_path": "plot", "dance_duration": "duration", "visual_source": "visual_kind",
              "seconds": "stage_seconds"}


# --------------------------------------------------------------------------------------------
# Planning (pure numpy)
# --------------------------------------------------------------------------------------------


def _unwrap_visual(v: np.ndarray, w: np.ndarray, dance_duration: float, reps: int):
    k = np.repeat(np.arange(reps), v.size)
    return np.tile(v, reps) + k * dance_duration, np.tile(w, reps), k


def _skip_bound(t: np.ndarray, low: int) -> int:
    """Most beats a segment may skip: about 4 s worth at the train's median spacing, in [low, 16].

    Skips are bounded in time, not in count, so that sparse visual beats on fast music are not
    forced to the speed bound."""
    ibi = float(np.median(np.diff(t))) if t.size > 1 else 1.0
    return int(np.clip(math.ceil(4.0 / max(ibi, 1e-3)), low, 16))


class _BeatDP:
    """Tables of :func:`_match_dp`: per node (i, j) the best score, the log speed of the segment
    arriving there, and the predecessor node (-1, -1 = the origin)."""

    def __init__(self, v: np.ndarray, wv: np.ndarray, u: np.ndarray, wm: np.ndarray, opts: RetargetOptions) -> None:
        S = float(opts.max_speed)
        self.v, self.u = v, u
        self.lo, self.hi = math.log(1.0 / S) - 1e-9, math.log(S) + 1e-9
        self.reward = 0.6 + 0.2 * wv[:, None] + 0.4 * wm[None, :]  # (nv, nm)
        self.cm, self.cv = opts.skip_music_cost, opts.skip_visual_cost
        self.lam, self.mu = opts.tempo_penalty, opts.speed_prior
        nv, nm = v.size, u.size
        self.score = np.full((nv, nm), -np.inf)
        self.lsp = np.zeros((nv, nm))
        self.prev = np.full((nv, nm, 2), -1, dtype=np.int64)

    def from_origin(self, i: int) -> tuple[np.ndarray, ...]:
        """Row i reached straight from the origin (dance 0 at output 0): speed v_i / u_j."""
        v, u, nm = self.v, self.u, self.u.size
        ls0 = np.log(v[i] / u) if v[i] > 0 else np.full(nm, -np.inf)
        ok0 = (u > 0) & (ls0 >= self.lo) & (ls0 <= self.hi)
        if v[i] == 0:
            ok0 = u == 0
            ls0 = np.zeros(nm)
        best = np.where(ok0, self.reward[i] - self.cm * np.arange(nm) - self.cv * i - self.mu * ls0**2, -np.inf)
        return best, np.where(ok0, ls0, 0.0), np.full(nm, -1), np.full(nm, -1)

    def relax(self, i: int, ip: int, max_skip_music: int, row: tuple[np.ndarray, ...]) -> None:
        """Improve row i's candidates ``row`` with segments from row ip (every music skip)."""
        best, best_ls, best_pi, best_pj = row
        src_row, nm, di = self.score[ip], self.u.size, i - ip
        dv = self.v[i] - self.v[ip]
        for dj in range(1, min(max_skip_music, nm - 1) + 1):
            src = src_row[: nm - dj]
            ls = np.log(dv / (self.u[dj:] - self.u[: nm - dj]))
            ok = np.isfinite(src) & (ls >= self.lo) & (ls <= self.hi)
            if not ok.any():
                continue
            c = (
                src
                + self.reward[i, dj:]
                - self.cm * (dj - 1)
                - self.cv * (di - 1)
                - self.lam * (ls - self.lsp[ip, : nm - dj]) ** 2
                - self.mu * ls**2
            )
            c = np.where(ok, c, -np.inf)
            better = c > best[dj:]
            if better.any():
                sl = np.nonzero(better)[0] + dj
                best[sl] = c[better]
                best_ls[sl] = ls[better]
                best_pi[sl] = ip
                best_pj[sl] = sl - dj

    def store(self, i: int, row: tuple[np.ndarray, ...]) -> None:
        best, best_ls, best_pi, best_pj = row
        self.score[i] = best
        self.lsp[i] = best_ls
        self.prev[i, :, 0] = best_pi
        self.prev[i, :, 1] = best_pj

    def best_chain(self, end_limit: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
                   ) -> list[tuple[int, int]]:
        """The best chain's nodes in order; music beats still to come inside the output but left
        unmatched after its last node cost ``skip_music_cost`` each."""
        if not np.isfinite(self.score).any():
            return []
        ii, jj = np.nonzero(np.isfinite(self.score))
        remaining = end_limit(ii, jj, self.lsp[ii, jj])
        total = self.score[ii, jj] - self.cm * remaining
        k = int(np.argmax(total))
        i, j = int(ii[k]), int(jj[k])
        chain = []
        while i >= 0 and j >= 0:
            chain.append((i, j))
            i, j = (int(x) for x in self.prev[i, j])
        return chain[::-1]


def _match_dp(
    v: np.ndarray,
    wv: np.ndarray,
    u: np.ndarray,
    wm: np.ndarray,
    opts: RetargetOptions,
    end_limit: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
    *,
    max_skip_visual: int | None = None,
    max_skip_music: int | None = None,
) -> list[tuple[int, int]]:
    """Monotonic matching of visual beats ``v`` (dance time) to music beats ``u`` (output time).

    Nodes are pairs (i, j) = "visual beat i shown at music beat j". A chain starts at the
    virtual origin (dance 0 at output 0) and every segment between consecutive nodes must
    have a speed (dance seconds per output second) within [1/S, S]. Score = sum of match
    rewards − skip costs − tempo-change penalty (second order: change of log speed against
    the best incoming segment of the predecessor) − a prior towards natural speed.

    Returns the matched (i, j) pairs in order (may be empty).
    """
    if v.size == 0 or u.size == 0:
        return []
    skip_m = _skip_bound(u, 4) if max_skip_music is None else max_skip_music
    skip_v = _skip_bound(v, 8) if max_skip_visual is None else max_skip_visual
    dp = _BeatDP(v, wv, u, wm, opts)
    with np.errstate(divide="ignore", invalid="ignore"):
        for i in range(v.size):
            row = dp.from_origin(i)
            for di in range(1, min(skip_v, i) + 1):
                if np.isfinite(dp.score[i - di]).any():
                    dp.relax(i, i - di, skip_m, row)
            dp.store(i, row)
    return dp.best_chain(end_limit)


def _smooth_speed(speed: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0 or speed.size < 3:
        return speed
    from scipy.ndimage import gaussian_filter1d

    return gaussian_filter1d(speed, sigma, mode="nearest")


def plan_retarget(
    visual_beats: Beats,
    music_beats: Beats,
    dance_duration: float,
    music_duration: float,
    opts: RetargetOptions = RetargetOptions(),
    *,
    fps: float = 30.0,
) -> tuple[Correspondence, list[Match], np.ndarray, str]:
    """Plan the time map of a retargeted dance.

    Parameters
    ----------
    visual_beats : Beats
        Visual beats of the dance, seconds on the dance's clock.
    music_beats : Beats
        Beats of the new music, seconds on the song's clock.
    dance_duration, music_duration : float
        Lengths in seconds.
    opts : RetargetOptions
        ``max_speed``, ``loop``, ``start`` and the DP weights are used.
    fps : float
        Output frame rate (normally the dance's).

    Returns
    -------
    corr : Correspondence
        For output frame k (time k / fps on the output clock, i.e. ``start + k / fps`` in the
        song) the dance time to show; wraps at each repetition when ``loop``.
    matches : list of Match
        The visual beats placed on music beats, in order.
    unwrapped : ndarray, shape (K,)
        Dance time without wrapping (monotonic), seconds.
    note : str
        Human words on how the output length was decided.
    """
    D = float(dance_duration)
    if not D > 0:
        raise InputError("the dance has no duration")
    start = float(opts.start)
    if not 0 <= start < music_duration:
        raise InputError(f"start {start:g} s is outside the music (0 to {music_duration:.2f} s)")
    Mo = float(music_duration) - start  # output span available from the music
    u, wm = _music_on_output_clock(music_beats, start, music_duration)
    v0, w0, v, wv, rep = _visual_train(visual_beats, D, Mo, opts)

    def end_limit(ii: np.ndarray, jj: np.ndarray, ls: np.ndarray) -> np.ndarray:
        # Music beats after j that the output still covers after the last anchor.
        u_end = np.full(ii.size, Mo) if opts.loop else np.minimum(Mo, u[jj] + (D - v[ii]) / np.exp(ls))
        return np.maximum(np.searchsorted(u, u_end, side="left") - jj - 1, 0)

    chain = _match_dp(v, wv, u, wm, opts, end_limit)
    au, av, u_end, note = _anchors(chain, u, v, D, Mo, opts)
    tau = _integrate_speed(au, av, u_end, D, fps, opts)
    corr = Correspondence(src_time=np.mod(tau, D) if opts.loop else tau, rate=float(fps))
    matches = [
        Match(
            visual_time=float(v0[i % v0.size]) if v0.size else 0.0,
            music_time=float(u[j] + start),
            output_time=float(u[j]),
            repeat=int(rep[i]),
        )
        for i, j in chain
    ]
    if not chain:
        note += "; no visual beat could be placed on a music beat within the speed bound"
    return corr, matches, tau, note


def _music_on_output_clock(music_beats: Beats, start: float, music_duration: float) -> tuple[np.ndarray, np.ndarray]:
    """Music beat times on the output clock (s from ``start``) and their weights (downbeats count more)."""
    keep = (music_beats.times >= start) & (music_beats.times < music_duration)
    u = music_beats.times[keep] - start
    wm = music_beats.strength[keep] if music_beats.strength.size else np.ones(u.size)
    if music_beats.downbeats is not None and music_beats.downbeats.size == music_beats.times.size:
        wm = np.clip(wm + 0.25 * music_beats.downbeats[keep], 0, 1.25)
    return u, wm


def _visual_train(visual_beats: Beats, D: float, Mo: float, opts: RetargetOptions) -> tuple[np.ndarray, ...]:
    """The dance's visual beats (times, weights) and the train the DP matches: repeated as often
    as the music may need when looping. Returns v0, w0, v, wv, repetition index."""
    vin = visual_beats.times < D
    v0, w0 = visual_beats.times[vin], visual_beats.strength[vin]
    if opts.loop:
        reps = int(math.ceil(Mo * float(opts.max_speed) / D)) + 1
        v, wv, rep = _unwrap_visual(v0, w0, D, reps)
        return v0, w0, v, wv, rep
    return v0, w0, v0, w0, np.zeros(v0.size, dtype=int)


def _anchors(chain: list[tuple[int, int]], u: np.ndarray, v: np.ndarray, D: float, Mo: float,
             opts: RetargetOptions) -> tuple[np.ndarray, np.ndarray, float, str]:
    """Anchors (output time, unwrapped dance time) of the piecewise-linear map, extended past its
    end at the last segment's speed; where the output ends; a note on how that was decided."""
    S = float(opts.max_speed)
    au = [0.0] + [float(u[j]) for _, j in chain]
    av = [0.0] + [float(v[i]) for i, _ in chain]
    tail = (av[-1] - av[-2]) / (au[-1] - au[-2]) if len(au) >= 2 and au[-1] > au[-2] else 1.0
    tail = float(np.clip(tail, 1.0 / S, S))
    if opts.loop:
        u_end = Mo
        note = f"the dance is looped to cover the music ({Mo:.2f} s)"
    elif au[-1] + (D - av[-1]) / tail < Mo:
        u_end = au[-1] + (D - av[-1]) / tail
        note = (
            f"the output ends with the dance at {u_end:.2f} s, before the music ends "
            f"({Mo:.2f} s from --start); use --loop to repeat the dance"
        )
    else:
        u_end = Mo
        note = f"the output covers the music ({Mo:.2f} s); the dance is cut where the music ends"
    au.append(au[-1] + max(u_end - au[-1], 0.0) + 1.0)  # extend past the end for the grid
    av.append(av[-1] + tail * (au[-1] - au[-2]))
    return np.asarray(au), np.asarray(av), u_end, note


def _integrate_speed(au: np.ndarray, av: np.ndarray, u_end: float, D: float, fps: float,
                     opts: RetargetOptions) -> np.ndarray:
    """Unwrapped dance time per output frame: the speed per output frame of the piecewise-linear
    map through the anchors, smoothed, bounded to [1/S, S], then integrated; without ``loop``
    cut where the dance ends."""
    S = float(opts.max_speed)
    n = max(1, int(math.floor(u_end * fps + 1e-6)))
    grid = np.arange(n + 1) / fps
    tau_pl = np.interp(grid, au, av)
    step = np.diff(tau_pl) * fps  # speed on each frame interval, in [1/S, S]
    step = np.clip(_smooth_speed(step, opts.smooth_frames), 1.0 / S, S)
    tau = np.concatenate([[0.0], np.cumsum(step) / fps])[:n]
    if not opts.loop:
        # The last frame must still be inside the dance.
        inside = tau < D - 1e-9
        n = max(1, int(np.count_nonzero(inside)))
        tau = tau[:n]
    return tau


def map_beats(times: np.ndarray, unwrapped: np.ndarray, rate: float, dance_duration: float,
              loop: bool) -> np.ndarray:
    """Output times at which dance times ``times`` are shown under the map.

    Parameters
    ----------
    times : ndarray, shape (N,)
        Dance times, seconds (within one repetition).
    unwrapped : ndarray, shape (K,)
        Monotonic unwrapped dance time per output frame.
    rate : float
        Output frame rate.
    dance_duration : float
        Dance length (the period of the loop).
    loop : bool
        Whether repetitions are considered.

    Returns
    -------
    ndarray
        Output times (sorted) of every visual beat that the output shows.
    """
    if unwrapped.size == 0 or times.size == 0:
        return np.zeros(0)
    reps = int(math.ceil((unwrapped[-1] + 1e-9) / dance_duration)) if loop else 1
    tv = np.concatenate([times + k * dance_duration for k in range(max(1, reps))])
    tv = tv[(tv >= unwrapped[0]) & (tv <= unwrapped[-1])]
    out_t = np.arange(unwrapped.size) / rate
    return np.sort(np.interp(tv, unwrapped, out_t))


def score_before_after(
    visual: Beats,
    music: Beats,
    unwrapped: np.ndarray,
    rate: float,
    dance_duration: float,
    music_duration: float,
    start: float,
    loop: bool,
) -> tuple[float, float]:
    """Beat Align Score of the direct combination and of the retargeted output.

    *Before*: the dance unchanged (repeated when ``loop``) with the music from ``start``
    laid under it, over the span both cover. *After*: the visual beats moved through the
    map, over the output's span. Both against the music beats inside the respective span,
    sigma = 3 frames at ``rate``.
    """
    mt = music.times - start
    mt = mt[mt >= 0]
    span_before = (music_duration - start) if loop else min(dance_duration, music_duration - start)
    reps = int(math.ceil(span_before / dance_duration)) + 1 if loop else 1
    vb = np.concatenate([visual.times + k * dance_duration for k in range(reps)])
    mb = mt[mt < span_before]
    before = beat_align_score(mb, vb, rate) if mb.size else 0.0
    span_after = unwrapped.size / rate
    ma = mt[mt < span_after]
    after = beat_align_score(ma, map_beats(visual.times, unwrapped, rate, dance_duration, loop), rate) \
        if ma.size else 0.0
    return before, after


def _check_map(unwrapped: np.ndarray, fps: float, max_speed: float) -> tuple[float, float]:
    if unwrapped.size < 2:
        return 1.0, 1.0
    sp = np.diff(unwrapped) * fps
    lo, hi = float(sp.min()), float(sp.max())
    if lo < 1.0 / max_speed - 1e-6 or hi > max_speed + 1e-6:
        raise AssertionError(f"time map speed {lo:.3f}..{hi:.3f} outside the bound 1/{max_speed:g}..{max_speed:g}")
    return lo, hi


# --------------------------------------------------------------------------------------------
# Media helpers
# --------------------------------------------------------------------------------------------


def _write_music_segment(music: str, start: float, seconds: float, path: str) -> None:
    """Decode ``music`` from ``start`` for ``seconds`` (native rate, mono or stereo) into a WAV."""
    import soundfile as sf

    from avsync import media

    info = media.probe(music)
    sr = int(info.audio_rate or 44100)
    layout = "mono" if info.audio_channels == 1 else "stereo"
    ch = 1 if layout == "mono" else 2
    first = int(round(start * sr))
    want = int(round(seconds * sr))
    pos = 0
    written = 0
    with sf.SoundFile(path, "w", samplerate=sr, channels=ch, subtype="FLOAT", format="WAV") as f:
        for chunk in media.iter_audio(music, rate=sr, layout=layout):
            n = chunk.shape[1]
            a, b = max(first - pos, 0), min(n, first + want - pos)
            pos += n
            if b > a:
                f.write(chunk[:, a:b].T)
                written += b - a
            if written >= want:
                break
        if written < want:  # the music ended a little early (packet rounding): pad silence
            f.write(np.zeros((want - written, ch), np.float32))


def _looped_source(dance: str, reps: int, path: str) -> None:
    """The dance's video stream-copied ``reps`` times into one file (avsync.remux.loop_video)."""
    from avsync.remux import loop_video

    loop_video(dance, reps, path)


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


def retarget(
    dance: str | os.PathLike[str],
    music: str | os.PathLike[str],
    out: str | os.PathLike[str] | None,
    opts: RetargetOptions = RetargetOptions(),
    *,
    map_path: str | os.PathLike[str] | None = None,
    plot_path: str | os.PathLike[str] | None = None,
    export_path: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> RetargetResult:
    """Warp ``dance`` onto ``music`` and write ``out`` with the music muxed.

    Parameters
    ----------
    dance : path
        The dance video (its own audio, if any, only helps to find its beats).
    music : path
        The new music (any container with an audio stream).
    out : path or None
        The retargeted video (libx264 + the music from ``opts.start``), written atomically.
        None plans and scores only.
    opts : RetargetOptions
    map_path, plot_path : path, optional
        Also write the time map (JSON) and a plot of both beat trains and the warp (PNG).
    export_path : path, optional
        An editorial timeline of the same warp (:mod:`avsync.export`: .otio, .edl, .xml, .fcpxml).
    progress : Progress, optional

    Returns
    -------
    RetargetResult
        Beats, matches, Beat Align Score before (the dance unchanged with the new music
        under it) and after (visual beats moved through the map), speed range, output
        length and a note on how the length was decided.

    Raises
    ------
    InputError
        Missing or unreadable inputs, no video / audio stream, bad options.
    CannotMeasure
        No beat in the music, or no visual beat in the dance.
    OutputError
        An output exists without ``overwrite``, or cannot be written.
    """
    from avsync.outputs import check_request

    check_request({"the dance video": dance, "the music": music},
                  {"-o": out, "--map": map_path, "--plot": plot_path, "--export": export_path}, opts.overwrite)
    if export_path is not None:
        from avsync.export import export_format

        export_format(export_path)  # an unknown format is refused before any work
    secs: dict[str, float] = {}
    with timed(secs, "music_beats"):
        has_audio = _probe_dance(dance)
        y, sr, mb = _music(music, opts)
        own = _own_beats(dance) if has_audio else None
    with timed(secs, "visual_beats"):
        vf, vb = _dance_beats(dance, own, opts, progress)
    if len(vb) < 2:
        raise CannotMeasure(f"no visual beats in '{dance}': nothing stops or changes direction")
    with timed(secs, "plan"):
        inp = RetargetInputs(vf, y, sr, vb, mb, len(vf.grid) / float(vf.fps), y.size / sr, float(vf.fps))
        plan = _plan(inp, opts)
    if out is not None:
        with timed(secs, "render"):
            _render(dance, music, out, inp, plan.unwrapped, opts, progress)
    result = _result(out, map_path, plot_path, inp, plan, opts, secs)
    _write_evidence(result, dance, music, export_path, opts.overwrite)
    return result


def _probe_dance(dance: str | os.PathLike[str]) -> bool:
    """Refuse a dance without a picture; say whether it has a soundtrack."""
    from avsync import media

    dinfo = media.probe(dance)
    if not dinfo.has_video:
        raise InputError(f"no video stream in '{dance}'")
    return bool(dinfo.has_audio)


# Sample rate the music (and the dance's own soundtrack) is analysed at.
MUSIC_SR = 22050


def _music(music: str | os.PathLike[str], opts: RetargetOptions) -> tuple[np.ndarray, int, Beats]:
    """The new music (mono at MUSIC_SR) and its beats; refuse music too short or without a pulse."""
    from avsync import media
    from avsync.features.beats import music_beats

    if not media.probe(music).has_audio:
        raise InputError(f"no audio stream in '{music}'")
    y = media.load_audio(music, sr=MUSIC_SR)
    M = y.size / MUSIC_SR
    if M < MIN_MUSIC_SECONDS:
        raise InputError(f"the music '{music}' is {M:.2f} s long; at least {MIN_MUSIC_SECONDS:g} s needed")
    if opts.start >= M - 0.5:
        raise InputError(f"start {opts.start:g} s is at or past the end of the music ({M:.2f} s)")
    mb = music_beats(y, MUSIC_SR)
    if len(mb) < 2:
        raise CannotMeasure(f"no beat found in the music '{music}' (silent or without a pulse)")
    return y, MUSIC_SR, mb


def _own_beats(dance: str | os.PathLike[str]) -> Beats | None:
    """Beats of the dance's own soundtrack (None when it cannot be read or is empty)."""
    from avsync import media
    from avsync.features.beats import music_beats

    try:
        ya = media.load_audio(dance, sr=MUSIC_SR)
    except InputError:
        return None
    return music_beats(ya, MUSIC_SR, downbeats=False) if ya.size else None


def _dance_beats(dance: str | os.PathLike[str], own: Beats | None, opts: RetargetOptions,
                 progress: Progress | None) -> tuple[Any, Beats]:
    """The dance's visual features and its visual beats (see RetargetOptions.mode)."""
    from avsync.features.beats import visual_beats
    from avsync.features.extract import extract_visual

    vf = extract_visual(dance, opts.mode, cache=opts.cache, progress=progress)
    return vf, visual_beats(vf, own_beats=own)


class Planned(NamedTuple):
    """What a retarget backend planned, checked and scored."""

    corr: Correspondence
    matches: list[Match]
    unwrapped: np.ndarray  # dance time per output frame, monotonic, s
    note: str
    speed: tuple[float, float]  # slowest and fastest local speed of the map
    bas: tuple[float, float]  # Beat Align Score before and after


def _plan(inp: RetargetInputs, opts: RetargetOptions) -> Planned:
    """The backend's time map, its speed range (checked against the bound) and the scores."""
    corr, matches, tau, note = _BACKENDS[opts.backend](inp, opts)
    speed = _check_map(tau, inp.fps, opts.max_speed)
    bas = score_before_after(inp.visual_beats, inp.music_beats, tau, inp.fps, inp.dance_duration,
                             inp.music_duration, opts.start, opts.loop)
    if inp.visual.note:
        note = f"{inp.visual.note}; {note}"
    return Planned(corr, matches, tau, note, speed, bas)


def _render(dance: str | os.PathLike[str], music: str | os.PathLike[str], out: str | os.PathLike[str],
            inp: RetargetInputs, tau: np.ndarray, opts: RetargetOptions, progress: Progress | None) -> None:
    """Encode the dance frames the map shows (repeating the dance when looping) with the music
    from ``opts.start`` muxed."""
    from avsync import media
    from avsync.render import frame_plan, render

    fps, D = inp.fps, inp.dance_duration
    ft = np.asarray(inp.visual.frame_times, dtype=float)
    if ft.size == 0:
        ft = media.frame_times(dance)
    with tempfile.TemporaryDirectory(prefix="avsync-retarget-") as tmpd:
        wav = os.path.join(tmpd, "music.wav")
        _write_music_segment(str(music), opts.start, tau.size / fps, wav)
        source = str(dance)
        reps = int(math.ceil((tau[-1] + 1e-9) / D)) if opts.loop else 1
        if reps > 1:
            source = os.path.join(tmpd, "looped.mkv")
            _looped_source(str(dance), reps, source)
            ft_all = np.concatenate([ft + r * D for r in range(reps)])
            # frame i of repetition r is frame r * N + i of the looped file
            plan = frame_plan(Correspondence(tau, fps), ft_all)
        else:
            plan = frame_plan(Correspondence(np.minimum(tau, ft[-1]), fps), ft)
        render(source, plan, fps, out, audio_path=wav, crf=opts.crf, preset=opts.preset,
               overwrite=opts.overwrite, progress=progress)


def _result(out: str | os.PathLike[str] | None, map_path: str | os.PathLike[str] | None,
            plot_path: str | os.PathLike[str] | None, inp: RetargetInputs, plan: Planned, opts: RetargetOptions,
            secs: dict[str, float]) -> RetargetResult:
    vb, mb, fps, n_out = inp.visual_beats, inp.music_beats, inp.fps, int(plan.unwrapped.size)
    return RetargetResult(
        output=str(out) if out is not None else None,
        map_path=str(map_path) if map_path else None,
        plot_path=str(plot_path) if plot_path else None,
        backend=opts.backend,
        visual_source=vb.source,
        note=plan.note,
        fps=fps,
        n_out=n_out,
        output_duration=n_out / fps,
        dance_duration=inp.dance_duration,
        music_duration=inp.music_duration,
        start=float(opts.start),
        loop=bool(opts.loop),
        music_tempo=float(mb.tempo),
        visual_tempo=float(vb.tempo),
        n_music_beats=len(mb),
        n_visual_beats=len(vb),
        n_matches=len(plan.matches),
        bas_before=plan.bas[0],
        bas_after=plan.bas[1],
        speed_min=plan.speed[0],
        speed_max=plan.speed[1],
        max_speed=float(opts.max_speed),
        seconds={k: round(v, 3) for k, v in secs.items()},
        correspondence=plan.corr,
        unwrapped=plan.unwrapped,
        music_beats=mb,
        visual_beats=vb,
        matches=plan.matches,
    )


def _write_evidence(result: RetargetResult, dance: str | os.PathLike[str], music: str | os.PathLike[str],
                    export_path: str | os.PathLike[str] | None = None, overwrite: bool = False) -> None:
    """The optional ``--map`` JSON, ``--export`` timeline and ``--plot`` PNG."""
    if result.map_path or export_path:
        m = time_map_json(result)
        if result.map_path:
            from avsync.outputs import write_json

            write_json(result.map_path, m, overwrite=overwrite)
        if export_path:
            from avsync.export import export_map

            result.export = export_map(m, export_path, dance, music, result.output_duration,
                                       audio_start=result.start, overwrite=overwrite)
    if result.plot_path:
        plot_retarget(result, result.plot_path, title=f"avsync retarget — {Path(dance).name} to {Path(music).name}",
                      overwrite=overwrite)


def time_map_json(result: RetargetResult) -> dict[str, Any]:
    """The ``--map`` JSON: per output frame the dance time shown, plus beats and matches."""
    corr, tau = result.correspondence, result.unwrapped
    assert corr is not None and tau is not None
    sp = np.diff(tau) * corr.rate
    sp = np.concatenate([sp, sp[-1:]]) if sp.size else np.ones(tau.size)
    frames = [
        {
            "frame": k,
            "time": round(k / corr.rate, 6),
            "music_time": round(result.start + k / corr.rate, 6),
            "src_time": round(float(corr.src_time[k]), 6),
            "unwrapped": round(float(tau[k]), 6),
            "speed": round(float(sp[k]), 4),
        }
        for k in range(tau.size)
    ]
    vb, mb = result.visual_beats, result.music_beats
    return {
        "avsync_version": __version__,
        "kind": "retarget",
        **result.to_json(),
        "music_beats": mb.to_dict() if mb is not None else None,
        "visual_beats": vb.to_dict() if vb is not None else None,
        "matches": [asdict(m) for m in result.matches],
        "frames": frames,
    }


def plot_retarget(result: RetargetResult, path: str | os.PathLike[str], *, title: str = "",
                  overwrite: bool = True) -> None:
    """Both beat trains (before and after) and the warp, as a PNG (written atomically)."""
    from avsync.plot import pyplot, save_figure

    plt = pyplot()

    tau = result.unwrapped
    assert tau is not None and result.visual_beats is not None and result.music_beats is not None
    fps = result.fps
    t = np.arange(tau.size) / fps
    span = tau.size / fps
    mt = result.music_beats.times - result.start
    mt = mt[(mt >= 0) & (mt <= span)]
    D = result.dance_duration
    reps = int(math.ceil(span / D)) + 1 if result.loop else 1
    vb_before = np.concatenate([result.visual_beats.times + k * D for k in range(reps)])
    vb_before = vb_before[vb_before <= span]
    vb_after = map_beats(result.visual_beats.times, tau, fps, D, result.loop)

    fig, (ax, axb, axs) = plt.subplots(3, 1, figsize=(10, 8), sharex=True, height_ratios=[3, 2, 1.3])
    ax.plot([0, span], [0, span], color="0.6", ls="--", lw=1, label="unchanged (speed 1)")
    ax.plot(t, tau, color="tab:blue", lw=1.5, label="dance time shown")
    if result.matches:
        ax.plot([m.output_time for m in result.matches],
                [m.visual_time + m.repeat * D for m in result.matches], "o", ms=3, color="tab:red",
                label="visual beat placed on a music beat")
    if result.loop:
        for k in range(1, int(tau[-1] // D) + 1):
            ax.axhline(k * D, color="0.8", lw=0.8)
    ax.set_ylabel("dance time [s]" + (" (unwrapped)" if result.loop else ""))
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title(title or "avsync retarget", fontsize=10)
    for x in mt:
        axb.axvline(x, color="0.75", lw=0.8)
    axb.plot(vb_before, np.full(vb_before.size, 1.0), "|", ms=14, mew=2, color="tab:orange",
             label=f"visual beats, dance unchanged (BAS {result.bas_before:.3f})")
    axb.plot(vb_after, np.full(vb_after.size, 0.0), "|", ms=14, mew=2, color="tab:green",
             label=f"visual beats, retargeted (BAS {result.bas_after:.3f})")
    axb.set_yticks([0, 1], ["after", "before"])
    axb.set_ylim(-0.7, 2.2)
    axb.legend(loc="upper right", fontsize=8, ncol=2)
    axb.set_ylabel("beats\n(grey: music)")
    sp = np.diff(tau) * fps
    axs.plot(t[:-1] if sp.size else t[:0], sp, color="tab:purple", lw=1)
    for b in (1 / result.max_speed, result.max_speed):
        axs.axhline(b, color="tab:red", ls=":", lw=1)
    axs.axhline(1.0, color="0.6", ls="--", lw=1)
    axs.set_ylabel("speed")
    axs.set_xlabel("output time [s] (music time − start)")
    axs.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=100, overwrite=overwrite)


class _FlowModule(types.ModuleType):
    """This module, callable as its flow: ``avsync.retarget(...)`` is :func:`retarget` (the
    package exports the flow under the module's own name)."""

    def __call__(self, *args: Any, **kwargs: Any) -> RetargetResult:
        return retarget(*args, **kwargs)


sys.modules[__name__].__class__ = _FlowModule
