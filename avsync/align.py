"""``avsync align``: re-time a video to a reference audio.

decode → features → backend Affinity → monotonic DP Correspondence → frame plan → render.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import types
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from avsync import __version__
from avsync import options as check
from avsync.errors import InputError
from avsync.features import MODES
from avsync.options import X264_PRESETS
from avsync.outputs import check_request, write_json
from avsync.progress import Progress, timed
from avsync.types import CONVENTION, Correspondence

MIN_AUDIO_SECONDS = 1.0
# A video this much shorter than the reference (and at least HELD_WARN_SECONDS) is still
# aligned, but with a warning: the output holds the source's last frame for the rest.
HELD_WARN_FRACTION = 0.25
HELD_WARN_SECONDS = 1.0
log = logging.getLogger(__name__)
SYNC_BY = ("auto", "picture", "soundtrack")
PATHS = ("viterbi", "dtw", "none")
# Soundtrack evidence: the match score (the mean of two path scores: the windowed affinity along
# its lag Viterbi, and the frame-level similarity along a DTW path on the same 16 bands) of the
# real pairing must beat its mean over unrelated pairings (the reference rolled by
# EVIDENCE_ROLLS, forwards) by this much. Real camera-microphone cases (issue 13 protocol),
# 66 fit clips, each matching soundtrack and one of another clip of about the same length:
# 97 % / 3 % pass, ITU 0.839 on moving frames (per-case mean, with the path of commit 3b41a77;
# 0.858 with today's; the margin chosen there, the middle of the plateau 0.035-0.045). The
# windowed score alone (0.03 above its roll mean): 95 % / 12 %, ITU 0.816; the former test (the
# windowed score 0.03 above the best of rolls beyond the search, forwards and reversed):
# 92 % / 17 %, 0.799. Check part, 52 + 52: 94 % / 4 %, ITU 0.849 (0.873 with today's path);
# windowed alone 88 % / 4 % (0.811); formerly 85 % / 10 % (0.784). On 3-6 s clips the frame
# score tells matching from unrelated soundtracks better than the windowed one (AUROC 0.95 vs
# 0.92 on fit, 0.92 vs 0.85 on check; their sum 0.98, 0.93). Reversed rolls are not used:
# played backwards, attacks become decays and no forward sound matches them as well, so they
# sat below any unrelated forward audio.
SOUNDTRACK_MARGIN = 0.04
__all__ = ["AlignOptions", "AlignResult", "Measured", "align", "compute_correspondence", "MODES", "PATHS",
           "SYNC_BY", "X264_PRESETS"]


@dataclass(frozen=True)
class AlignOptions:
    backend: str = "classical"  # alignment backend name (see `avsync models list` / backends registry)
    mode: str = "auto"  # auto | dance | speech | general: which visual features to use (avsync.features.MODES)
    max_shift: float = 2.0  # largest |picture − audio| lag searched, seconds
    max_speed: float = 2.0  # fastest the source may advance per second of audio (>= 1)
    # DP penalty per lag step (in units of the affinity's spread). 1.0 here, below path.py's
    # generic 1.5: on synthetic flash/beep clips under the bench's warps (0.6x-1.6x, freezes,
    # skips) it lifts frames inside the ITU window from 0.69 to 0.78 (6 clips); BBB dev unchanged.
    # None = path.py's default.
    lag_penalty: float | None = 1.0
    crf: int = 18  # libx264 constant rate factor of the output (0..51)
    preset: str = "veryfast"  # libx264 preset (X264_PRESETS)
    device: str = "auto"  # auto | cpu | cuda | cuda:N (learned backends)
    checkpoint: str | None = None  # checkpoint name or path for learned backends (None = default)
    # How the backend's Affinity becomes a Correspondence: "viterbi" (the monotonic lag DP of
    # path.py), "dtw" (banded DTW, for comparison) or "none" (the best lag row by row, only
    # made monotonic and speed-bounded: the backend's answer as is).
    path: str = "viterbi"
    # Evidence check of the picture path (see evidence_check): the mean affinity along the DP's
    # path on the real pairing must lie at least this many spreads (z) above the same score on
    # unrelated pairings (the audio rolled and reversed), and above all of them, else the
    # source timing is kept and the result says so. 3.2: on the real-footage fit part (60
    # picture cases) the largest z was 2.98 and z did not predict whether the path beat doing
    # nothing (Spearman ~0); the synthetic flash clips of the tests and the demo reach 3.8.
    # The soundtrack path has its own check (SOUNDTRACK_MARGIN). None disables the checks.
    min_evidence: float | None = 3.2
    # What to follow: "picture" (the backend on picture and sound), "soundtrack" (the video's
    # own audio track matched against the reference, audio to audio; see avsync.soundtrack)
    # or "auto" (the soundtrack when the video has one and it clearly matches the reference,
    # else the picture).
    sync_by: str = "auto"
    overwrite: bool = False  # replace existing outputs
    cache: bool = True  # cache features on disk

    def __post_init__(self) -> None:
        check.one_of("mode", self.mode, MODES)
        check.positive("max_shift", self.max_shift)
        check.at_least("max_speed", self.max_speed, 1.0)
        if self.lag_penalty is not None:
            check.at_least("lag_penalty", self.lag_penalty, 0.0)
        check.whole_within("crf", self.crf, 0, 51)
        check.one_of("preset", self.preset, X264_PRESETS)
        check.device("device", self.device)
        check.one_of("path", self.path, PATHS)
        if self.min_evidence is not None:
            check.within("min_evidence", self.min_evidence, 0.0, 100.0)
        check.one_of("sync_by", self.sync_by, SYNC_BY)

    def path_options(self) -> Any:
        """The :class:`avsync.path.PathOptions` of the lag DP these options ask for."""
        from avsync.path import PathOptions

        if self.lag_penalty is None:
            return PathOptions(max_speed=self.max_speed)
        return PathOptions(max_speed=self.max_speed, lag_change_penalty=self.lag_penalty)


@dataclass
class AlignResult:
    output: str | None
    map_path: str | None
    plot_path: str | None
    backend: str
    mode: str
    visual_kind: str
    sync_by: str
    note: str
    source_fps: float
    output_fps: float
    n_out: int
    n_src: int
    audio_duration: float
    stats: dict[str, int]
    confidence_mean: float
    lag_ms: dict[str, float]
    seconds: dict[str, float] = field(default_factory=dict)
    evidence: dict[str, Any] = field(default_factory=dict)
    export: dict[str, Any] | None = None  # the --export timeline written (path, format, segments, map sha256)
    correspondence: Correspondence | None = None

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` object, in the names of :mod:`avsync.vocabulary`."""
        d = asdict(self)
        d.pop("correspondence", None)
        d["convention"] = CONVENTION
        return {JSON_NAMES.get(k, k): v for k, v in d.items()}


# Attribute -> JSON key where they differ (the JSON speaks avsync.vocabulary).
JSON_NAMES = {"map_path": "map", "plot_path": "plot", "source_fps": "fps", "audio_duration": "output_duration",
              "confidence_mean": "confidence", "seconds": "stage_seconds"}


class Measured(NamedTuple):
    """What :func:`compute_correspondence` measured."""

    corr: Correspondence
    visual: Any  # VisualFeatures of the video (None when the soundtrack was followed)
    info: Any  # MediaInfo of the video
    seconds: dict[str, float]  # wall time per stage
    evidence: dict[str, Any]  # see evidence_check
    frame_times: np.ndarray  # presentation times of the video's frames, s from the first
    sync_by: str  # "picture" or "soundtrack": what the warp follows
    note: str  # human words on what was used
    audio_seconds: float = 0.0  # the reference's decoded duration (s, on the output clock)


def _path(aff: Any, opts: AlignOptions, popts: Any, fps: float, n_out: int, src_dur: float | None) -> Correspondence:
    from avsync.path import PathOptions, banded_dtw_correspondence, correspondence, src_curve_to_correspondence

    if opts.path == "viterbi":
        return correspondence(aff, popts, out_rate=fps, n_out=n_out, src_duration=src_dur)
    if opts.path == "dtw":
        return banded_dtw_correspondence(aff, popts, out_rate=fps, n_out=n_out, src_duration=src_dur)
    # The backend's own answer, row by row (best lag), made monotonic and speed-bounded only.
    best = np.asarray(aff.lags)[np.argmax(np.nan_to_num(aff.scores, nan=-np.inf), axis=1)]
    raw = PathOptions(max_speed=opts.max_speed, smooth_seconds=0.0)
    return src_curve_to_correspondence(aff.times, best, None, raw, fps, n_out, src_dur)


def _kept_timing(n_out: int, fps: float, src_dur: float | None, confidence: float) -> Correspondence:
    t_out = np.arange(n_out) / fps
    src = np.clip(t_out, 0.0, src_dur) if src_dur else t_out
    return Correspondence(src_time=src, rate=fps, confidence=np.full(n_out, float(confidence)))


def compute_correspondence(
    video: str | os.PathLike[str],
    audio: str | os.PathLike[str],
    opts: AlignOptions,
    progress: Progress | None = None,
) -> Measured:
    """Measure the warp only (no rendering): follow the video's soundtrack when ``opts.sync_by``
    allows it and it clearly matches, else the picture."""
    from avsync.backends import get_backend
    from avsync.features.extract import extract_audio

    secs: dict[str, float] = {}
    with timed(secs, "audio_features"):
        vinfo = _check_media(video, audio, opts)
        backend = None if opts.sync_by == "soundtrack" else get_backend(opts.backend, device=opts.device,
                                                                        checkpoint=opts.checkpoint)
        afeat = extract_audio(audio, cache=opts.cache)
        _check_audio_length(audio, afeat.duration)
    notes: list[str] = []
    if opts.sync_by != "picture" and vinfo.has_audio:
        followed = _follow_soundtrack(video, afeat, vinfo, opts, secs)
        if isinstance(followed, Measured):
            return followed._replace(audio_seconds=float(afeat.duration))
        notes.append(f"soundtrack not used: {followed}")
    m = _follow_picture(video, afeat, vinfo, backend, opts, secs, notes, progress)
    return m._replace(audio_seconds=float(afeat.duration))


def _check_audio_length(audio: str | os.PathLike[str], seconds: float) -> None:
    """Refuse a reference shorter than MIN_AUDIO_SECONDS, by its decoded samples (a container's
    duration field can be anything)."""
    if seconds < MIN_AUDIO_SECONDS:
        raise InputError(
            f"reference audio '{audio}' is {seconds:.2f} s long; at least {MIN_AUDIO_SECONDS:.0f} s needed"
        )


def _check_media(video: str | os.PathLike[str], audio: str | os.PathLike[str], opts: AlignOptions) -> Any:
    """Probe both inputs; refuse what cannot be aligned. Returns the video's MediaInfo."""
    from avsync.media import probe

    vinfo = probe(video)
    if not vinfo.has_video:
        raise InputError(f"no video stream in '{video}'")
    ainfo = probe(audio)
    if not ainfo.has_audio:
        raise InputError(f"no audio stream in reference '{audio}'")
    if ainfo.audio_duration < MIN_AUDIO_SECONDS:  # the container says short (or nothing): count
        from avsync.media import decoded_audio_seconds

        _check_audio_length(audio, decoded_audio_seconds(audio))
    if opts.sync_by == "soundtrack" and not vinfo.has_audio:
        raise InputError(f"--sync-by soundtrack: '{video}' has no audio track to follow")
    return vinfo


def _output_clock(duration: float, fps: float, ftimes: np.ndarray) -> tuple[int, float | None]:
    """Output frames covering ``duration`` s of audio at ``fps``, and the source's length (s)."""
    n_out = max(1, math.ceil(duration * fps - 1e-6))
    src_dur = float(ftimes[-1]) + 1.0 / fps if len(ftimes) else None
    return n_out, src_dur


def _follow_soundtrack(video: str | os.PathLike[str], afeat: Any, vinfo: Any, opts: AlignOptions,
                       secs: dict[str, float]) -> Measured | str:
    """The warp that follows the video's own soundtrack, or why it is not followed."""
    from avsync.media import frame_times
    from avsync.soundtrack import soundtrack_correspondence

    with timed(secs, "soundtrack"):
        ftimes = frame_times(video)
        fps = _nominal_fps(vinfo.fps)
        n_out, src_dur = _output_clock(afeat.duration, fps, ftimes)
        own, ev = _soundtrack_match(video, afeat, fps, opts)
    corr = None
    if ev["passed"] or (opts.sync_by == "soundtrack" and opts.min_evidence is None):
        with timed(secs, "path"):
            corr = soundtrack_correspondence(afeat, own, fps, n_out, src_dur, opts.max_shift, opts.max_speed)
        ev = _unless_in_step(ev, corr, opts)
    if not (ev["passed"] or opts.sync_by == "soundtrack"):
        return str(ev.get("why") or "it does not clearly match the reference")
    with timed(secs, "path", add=True):
        if corr is not None:
            note = "followed the video's own soundtrack (matched to the reference audio)"
        else:
            corr = _kept_timing(n_out, fps, src_dur, 0.0)
            note = (f"the video's soundtrack does not clearly match the reference (path score "
                    f"{ev['score']:.2f} vs {ev['null_mean']:.2f} for unrelated audio): kept the source timing")
    ev = {**ev, "source": "soundtrack"}
    return Measured(corr, None, vinfo, secs, ev, np.asarray(ftimes), "soundtrack", note)


def _soundtrack_match(video: str | os.PathLike[str], afeat: Any, fps: float,
                      opts: AlignOptions) -> tuple[Any, dict[str, Any]]:
    """The video's own audio features and the evidence that they match the reference
    (``passed`` False with a ``why`` when the soundtrack cannot be measured)."""
    from avsync.errors import CannotMeasure
    from avsync.features.extract import extract_audio

    own = None
    try:
        own = extract_audio(video, cache=opts.cache)
        return own, soundtrack_evidence(afeat, own, fps, opts)
    except CannotMeasure as e:
        if opts.sync_by == "soundtrack":
            raise
        return own, {"checked": True, "passed": False, "why": str(e)}


def _unless_in_step(ev: dict[str, Any], corr: Correspondence, opts: AlignOptions) -> dict[str, Any]:
    """The evidence, failed when (in auto) the soundtrack already runs in step with the reference."""
    ev = {**ev, "in_step": in_step(corr)}
    if ev["in_step"] and opts.sync_by == "auto":
        # The soundtrack runs with the reference already: either nothing drifted, or the
        # reference was laid onto a re-timed picture. Either way it cannot say how the
        # picture moved; the picture can.
        ev = {**ev, "passed": False, "why": "it is already in step with the reference audio, so it cannot "
                                            "tell how the picture moved (the reference laid onto the picture?)"}
    return ev


def _follow_picture(video: str | os.PathLike[str], afeat: Any, vinfo: Any, backend: Any, opts: AlignOptions,
                    secs: dict[str, float], notes: list[str], progress: Progress | None) -> Measured:
    """The warp that follows the picture: visual features, the backend's affinity, the lag DP
    and the evidence check."""
    from avsync.features.extract import extract_visual
    from avsync.media import frame_times
    from avsync.offset import choose_face, face_note

    with timed(secs, "visual_features"):
        vfeat = extract_visual(video, opts.mode, cache=opts.cache, progress=progress)
    with timed(secs, "backend"):
        assert backend is not None
        # several tracked faces: follow the one whose lips follow the reference (as detect-offset picks it)
        vfeat, faces = choose_face(backend, afeat, vfeat, opts.max_shift)
        aff = backend.affinity(afeat, vfeat, opts.max_shift)
    with timed(secs, "path"):
        popts = opts.path_options()
        fps = float(vfeat.fps)
        n_out, src_dur = _output_clock(afeat.duration, fps, vfeat.frame_times)
        corr = _path(aff, opts, popts, fps, n_out, src_dur)
        evidence: dict[str, Any] = {"checked": False}
        if opts.min_evidence is not None:
            evidence = evidence_check(backend, afeat, vfeat, opts, popts)
            if not evidence["passed"]:
                corr = _kept_timing(n_out, fps, src_dur, float(evidence["confidence"]))
        evidence["source"] = "picture"
    ftimes = vfeat.frame_times if len(vfeat.frame_times) else frame_times(video)
    visual_note = "; ".join(n for n in (vfeat.note, face_note(faces)) if n)
    return Measured(corr, vfeat, vinfo, secs, evidence, np.asarray(ftimes), "picture",
                    _picture_note(notes, visual_note, evidence))


def _picture_note(notes: list[str], visual_note: str, evidence: dict[str, Any]) -> str:
    """Human words on what the picture route used and decided."""
    note = "; ".join([*notes, visual_note] if visual_note else notes)
    if evidence.get("checked") and not evidence.get("passed"):
        note = (f"{note}; " if note else "") + (
            f"too little evidence that the picture follows this audio (path score {evidence['score']:.2f} vs "
            f"{evidence['null_max']:.2f} at best for unrelated audio, z {evidence['z']:.1f} < "
            f"{evidence['margin']:.1f}): kept the source timing (--force-warp to warp anyway)")
    return note


def _nominal_fps(fps: float | None) -> float:
    f = float(fps or 0.0)
    return f if 1.0 <= f <= 1000.0 else 25.0


# Lag-change penalty of the Viterbi the evidence check runs on the windowed soundtrack
# affinity (the followed path itself is avsync.soundtrack.soundtrack_correspondence).
SOUNDTRACK_PENALTY = 0.5


# The soundtrack is "in step" with the reference when its path keeps |lag| within one frame on
# this share of the rows.
IN_STEP_SHARE = 0.98


def in_step(corr: Any) -> bool:
    """Does this correspondence leave the timing as it is (|lag| <= 1 frame almost everywhere)?"""
    lag = np.asarray(corr.lag, dtype=np.float64)
    return bool(len(lag) and np.mean(np.abs(lag) <= 1.0 / corr.rate + 1e-6) >= IN_STEP_SHARE)


# The evidence check reads at most this much of the two soundtracks: beyond it, evenly spaced
# excerpts of EVIDENCE_SEGMENT_SECONDS (the statistic is a mean). On the 10-minute BBB file
# the whole length took 49 s, the excerpts 12 s.
EVIDENCE_MAX_SECONDS = 120.0
EVIDENCE_SEGMENT_SECONDS = 20.0


def soundtrack_evidence(afeat: Any, own: Any, fps: float, opts: AlignOptions) -> dict[str, Any]:
    """Whether the video's soundtrack clearly matches the reference: the match score (the mean
    of the windowed affinity along its best lag path and of the frame-level similarity along
    a frame-by-frame DTW path, :func:`avsync.soundtrack.frame_path_score`), real reference vs its
    mean over the reference rolled by EVIDENCE_ROLLS of its length (see SOUNDTRACK_MARGIN).
    Long files are judged on evenly spaced excerpts (see EVIDENCE_MAX_SECONDS)."""
    from avsync.path import PathOptions, viterbi_lags
    from avsync.soundtrack import frame_path_score, soundtrack_affinity

    popts = PathOptions(max_speed=opts.max_speed, lag_change_penalty=SOUNDTRACK_PENALTY)
    span = min(afeat.duration, own.duration)
    if span > EVIDENCE_MAX_SECONDS:
        n_seg = int(EVIDENCE_MAX_SECONDS // EVIDENCE_SEGMENT_SECONDS)
        starts = np.linspace(0.0, span - EVIDENCE_SEGMENT_SECONDS, n_seg)
        spans = [(float(t), float(t) + EVIDENCE_SEGMENT_SECONDS) for t in starts]
        afeat, own = _excerpt(afeat, spans), _excerpt(own, spans)

    def score(a: Any) -> float:
        aff = soundtrack_affinity(a, own, fps, opts.max_shift)
        path, _ = viterbi_lags(aff, popts)
        window = float(np.mean(aff.scores[np.arange(len(path)), path]))
        return 0.5 * (window + frame_path_score(a, own, opts.max_shift))

    real = score(afeat)
    nulls = np.array([score(_roll_audio(afeat, f)) for f in EVIDENCE_ROLLS])
    return {
        "checked": True,
        "passed": bool(real >= float(nulls.mean()) + SOUNDTRACK_MARGIN),
        "score": round(real, 4),
        "null_mean": round(float(nulls.mean()), 4),
        "null_max": round(float(nulls.max()), 4),
        "margin": SOUNDTRACK_MARGIN,
    }


def _excerpt(afeat: Any, spans: list[tuple[float, float]]) -> Any:
    """The audio features of the time spans ``[(t0, t1), ...]``, joined end to end."""
    from dataclasses import replace

    from avsync.types import Signal

    def cut(sig: Signal) -> Signal:
        def row(t: float) -> int:
            return max(0, int(round((t - sig.start) * sig.rate)))

        rows = [sig.values[row(t0):row(t1)] for t0, t1 in spans]
        return Signal(np.concatenate(rows, axis=0), sig.rate, 0.0)

    on = cut(afeat.onset)
    return replace(afeat, onset=on, speech=cut(afeat.speech), logmel=cut(afeat.logmel),
                   duration=len(on) / on.rate)


# The evidence checks' unrelated pairings: the audio rolled by these fractions of its length
# (the picture check plays each forwards and reversed, 14 pairings; the soundtrack check
# forwards only, see SOUNDTRACK_MARGIN). A forward roll may partly contain the real match
# when it is within the search, which only makes the check stricter.
EVIDENCE_ROLLS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


def evidence_check(backend: Any, afeat: Any, vfeat: Any, opts: AlignOptions, popts: Any) -> dict[str, Any]:
    """Does the picture really follow this audio? A test against unrelated pairings.

    The statistic is the mean affinity along the lag DP's best path (what the warp would
    follow). It is computed on the real pairing and on 14 unrelated pairings of the same
    material (the audio rolled by EVIDENCE_ROLLS of its length, forwards and reversed),
    which measure how high a path through that picture climbs on chance alone. The check
    passes when the real score beats every unrelated one and lies ``opts.min_evidence``
    spreads (z) above their mean.

    Returns a dict: checked, passed, score (real), null_max, z, margin (the z needed) and
    confidence (the DP's mean per-row confidence on the real pairing).
    """
    from avsync.path import viterbi_lags

    def path_score(a: Any) -> tuple[float, float]:
        aff = backend.affinity(a, vfeat, opts.max_shift)
        path, conf = viterbi_lags(aff, popts)
        s = np.nan_to_num(np.asarray(aff.scores, dtype=np.float64), nan=0.0)
        return float(np.mean(s[np.arange(len(path)), path])), float(np.mean(conf))

    real, conf = path_score(afeat)
    nulls = np.array([path_score(_roll_audio(afeat, f, rev))[0] for f in EVIDENCE_ROLLS for rev in (False, True)])
    z = (real - float(nulls.mean())) / max(float(nulls.std()), 1e-6)
    need = float(opts.min_evidence or 0.0)
    return {
        "checked": True,
        "passed": bool(real > float(nulls.max()) and z >= need),
        "score": round(real, 4),
        "null_max": round(float(nulls.max()), 4),
        "z": round(float(z), 2),
        "margin": need,
        "confidence": round(conf, 4),
    }


def _roll_audio(afeat: Any, fraction: float, reverse: bool = False) -> Any:
    """The audio features rolled by ``fraction`` of their length (and, with ``reverse``, played
    backwards): the same material, unrelated in time."""
    from dataclasses import replace

    from avsync.types import Signal

    def r(sig: Signal) -> Signal:
        v = np.roll(sig.values, int(round(fraction * len(sig))), axis=0)
        return Signal(v[::-1].copy() if reverse else v, sig.rate, sig.start)

    return replace(afeat, onset=r(afeat.onset), speech=r(afeat.speech), logmel=r(afeat.logmel))


def align(
    video: str | os.PathLike[str],
    audio: str | os.PathLike[str],
    out: str | os.PathLike[str] | None,
    opts: AlignOptions = AlignOptions(),
    *,
    map_path: str | os.PathLike[str] | None = None,
    plot_path: str | os.PathLike[str] | None = None,
    export_path: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> AlignResult:
    """Re-time ``video`` to ``audio`` and write ``out`` (plus optional map, plot and timeline).

    Parameters
    ----------
    video, audio : path
        The picture to re-time, and the reference audio (any container with an audio stream).
    out : path or None
        The re-timed video with the reference audio muxed. Written atomically. None: measure
        and write only the evidence (what a batch ``--resume`` does for a missing map / plot).
    map_path, plot_path, export_path : path, optional
        The warp map (JSON), a plot (PNG) and an editorial timeline (:mod:`avsync.export`:
        .otio, .edl, .xml, .fcpxml) of the same warp.

    Every output must differ from both inputs and from the other outputs
    (:func:`avsync.outputs.check_distinct`, whatever ``opts.overwrite`` says); this and the
    outputs' directories are checked before any work.
    """
    check_request({"the input video": video, "the reference audio": audio},
                  {"-o": out, "--map": map_path, "--plot": plot_path, "--export": export_path}, opts.overwrite)
    if export_path is not None:
        from avsync.export import export_format

        export_format(export_path)  # an unknown format is refused before any work
    m = compute_correspondence(video, audio, opts, progress)
    with timed(m.seconds, "render"):
        plan, ftimes, stats = _render(video, audio, out, m, opts, progress)
    result = _result(out, map_path, plot_path, m, opts, plan, ftimes, stats)
    _write_evidence(result, plan, ftimes, video, audio, opts, export_path)
    return result


def _render(video: str | os.PathLike[str], audio: str | os.PathLike[str], out: str | os.PathLike[str] | None,
            m: Measured, opts: AlignOptions, progress: Progress | None) -> tuple[np.ndarray, np.ndarray, Any]:
    """The frame plan of the measured warp, encoded with the reference audio into ``out``
    (None: not encoded). Returns the plan, the source frame times and the plan's statistics."""
    from avsync.media import frame_times
    from avsync.render import frame_plan, plan_stats, render

    ftimes = m.frame_times if len(m.frame_times) else frame_times(video)
    plan = frame_plan(m.corr, ftimes)
    if out is not None:
        done = render(video, plan, m.corr.rate, out, audio_path=audio, crf=opts.crf, preset=opts.preset,
                      overwrite=opts.overwrite, progress=progress, expect_audio_s=m.audio_seconds or None)
        # The summary, map and stats describe the file written: the render covers the audio (a
        # plan shorter than it is padded with its last frame, a longer one cut).
        if done.n_frames != len(plan):
            plan = np.concatenate([plan, np.full(max(0, done.n_frames - len(plan)), plan[-1])])[:done.n_frames]
        _warn_held(video, plan, ftimes, float(m.corr.rate))
    return plan, ftimes, plan_stats(plan, len(ftimes))


def _warn_held(video: str | os.PathLike[str], plan: np.ndarray, ftimes: np.ndarray, rate: float) -> None:
    """Say so when the output holds the source's last frame for a large part of its length
    (a 0.3 s video under 4 s of audio): aligned as asked, but mostly a still."""
    last = int(len(ftimes) - 1)
    first_held = int(np.searchsorted(plan, last))  # output frames from here on show the last frame
    held_s = (len(plan) - first_held - 1) / rate
    out_s = len(plan) / rate
    if held_s >= max(HELD_WARN_SECONDS, HELD_WARN_FRACTION * out_s):
        src_s = float(ftimes[-1]) + 1.0 / rate if len(ftimes) else 0.0
        log.warning("'%s' is %.2f s long and the reference audio %.2f s: the output holds its last frame "
                    "for the final %.2f s", video, src_s, out_s, held_s)


def _confidence(corr: Correspondence) -> np.ndarray:
    return corr.confidence if corr.confidence is not None else np.ones(len(corr.src_time))


def _result(out: str | os.PathLike[str] | None, map_path: str | os.PathLike[str] | None,
            plot_path: str | os.PathLike[str] | None, m: Measured, opts: AlignOptions, plan: np.ndarray,
            ftimes: np.ndarray, stats: Any) -> AlignResult:
    corr, vfeat, lag = m.corr, m.visual, m.corr.lag
    return AlignResult(
        output=str(out) if out is not None else None,
        map_path=str(map_path) if map_path else None,
        plot_path=str(plot_path) if plot_path else None,
        backend=opts.backend if m.sync_by == "picture" else "soundtrack",
        mode=vfeat.mode if vfeat is not None else "-",
        visual_kind=vfeat.kind if vfeat is not None else "-",
        sync_by=m.sync_by,
        note=m.note,
        source_fps=float(m.info.fps),
        output_fps=float(corr.rate),
        n_out=len(plan),
        n_src=len(ftimes),
        audio_duration=len(plan) / corr.rate,
        stats=stats.to_dict(),
        confidence_mean=float(np.mean(_confidence(corr))),
        lag_ms={
            "mean": float(np.mean(lag) * 1000),
            "min": float(np.min(lag) * 1000),
            "max": float(np.max(lag) * 1000),
        },
        seconds={k: round(v, 3) for k, v in m.seconds.items()},
        evidence=m.evidence,
        correspondence=corr,
    )


def _write_evidence(result: AlignResult, plan: np.ndarray, ftimes: np.ndarray, video: str | os.PathLike[str],
                    audio: str | os.PathLike[str], opts: AlignOptions,
                    export_path: str | os.PathLike[str] | None = None) -> None:
    """The optional ``--map`` JSON, ``--export`` timeline and ``--plot`` PNG."""
    corr = result.correspondence
    assert corr is not None
    if result.map_path or export_path:
        m = warp_map(result, plan, ftimes, _confidence(corr))
        if result.map_path:
            write_json(result.map_path, m, overwrite=opts.overwrite)
        if export_path:
            from avsync.export import export_map

            result.export = export_map(m, export_path, video, audio, result.audio_duration, overwrite=opts.overwrite)
    if result.plot_path:
        from avsync.plot import plot_warp

        what = f"{opts.backend}, {result.visual_kind}" if result.sync_by == "picture" else "video's soundtrack"
        plot_warp(corr, result.plot_path,
                  title=f"avsync align — {Path(video).name} to {Path(audio).name} ({what})", overwrite=opts.overwrite)


def warp_map(result: AlignResult, plan: np.ndarray, ftimes: np.ndarray, conf: np.ndarray) -> dict[str, Any]:
    """The ``--map`` JSON: for every output frame, the source time and frame index shown."""
    corr = result.correspondence
    assert corr is not None
    last = len(corr.src_time) - 1  # frames the render added past the warp hold its last value
    frames = [
        {
            "frame": k,
            "time": round(k / corr.rate, 6),
            "src_time": round(float(corr.src_time[min(k, last)]), 6),
            "src_frame": int(plan[k]),
            "src_frame_time": round(float(ftimes[plan[k]]), 6),
            "confidence": round(float(conf[min(k, last)]), 4),
        }
        for k in range(len(plan))
    ]
    return {
        "avsync_version": __version__,
        "kind": "align",
        "backend": result.backend,
        "mode": result.mode,
        "visual_kind": result.visual_kind,
        "sync_by": result.sync_by,
        "convention": CONVENTION + " (lag = src_time - time)",
        "output_fps": result.output_fps,
        "source_fps": result.source_fps,
        "n_out": result.n_out,
        "n_src": result.n_src,
        "stats": result.stats,
        "frames": frames,
    }


class _FlowModule(types.ModuleType):
    """This module, callable as its flow: ``avsync.align(...)`` is :func:`align` (the package
    exports the flow under the module's own name)."""

    def __call__(self, *args: Any, **kwargs: Any) -> AlignResult:
        return align(*args, **kwargs)


sys.modules[__name__].__class__ = _FlowModule
