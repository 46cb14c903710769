"""Editorial timelines (OpenTimelineIO) from a warp map or a measured offset: ``--export``.

An editor wants the measured warp as a timeline their application applies, not a re-encoded
file. :func:`export_map` turns the ``--map`` of ``align`` / ``retarget`` into a timeline whose
video track shows, at every output frame, the source frame the map says (within one frame),
with the reference audio on its own track; :func:`export_offset` turns a ``detect-offset``
measurement into the clip with its own audio slipped (and re-timed for drift).

Formats, by the export path's suffix:

- ``.otio`` (OpenTimelineIO JSON, always): the source cut into segments of constant speed, each
  a clip with a ``LinearTimeWarp`` (speed ≠ 1) or a ``FreezeFrame`` (a held frame).
- ``.edl`` (CMX 3600, one video track + the audio as AA events): the same segments, speed as
  ``M2`` motion effects, freezes as ``FF``. EDL timecode is whole frames at the output rate.
- ``.xml`` (Final Cut Pro 7 XML) and ``.fcpxml`` (Final Cut Pro X): their OTIO adapters
  write no speed effects, so the video track is frame-exact cuts at speed 1 (runs of
  consecutive source frames; a held or re-timed frame becomes a one-frame clip).

Sign convention, as everywhere in avsync: a positive offset means the audio leads the
picture; ``export_offset`` delays such audio by that much. Every timeline carries
``metadata['avsync']``: version, kind, output rate, start timecode, the convention and the
sha256 of the map (or measurement) it was made from.

:func:`shown_frames` reads a timeline back (any format, through OTIO's own readers) and says
which source frame each output frame shows, under OTIO's time-effect semantics (a clip's
duration in its track is its ``source_range.duration``; at ``j`` frames into the clip the
media time is ``start + j * time_scalar``). The tests use it to check every export.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from avsync.errors import InputError, OutputError

FORMATS = {".otio": "otio_json", ".edl": "cmx_3600", ".xml": "fcp_xml", ".fcpxml": "fcpx_xml"}
SPEED_FORMATS = (".otio", ".edl")  # the adapters that express speed effects
TOLERANCE = 0.45  # frames: how far a constant-speed segment may stray from the map


@dataclass(frozen=True)
class Segment:
    """Output frames ``[out_start, out_start + n)`` show source frame ``src_start + speed * j``
    at ``j`` frames into the segment (speed 0 = a held frame)."""

    out_start: int
    n: int
    src_start: int
    speed: float


def _otio() -> Any:
    try:
        import opentimelineio as otio
    except ImportError:  # pragma: no cover - a declared dependency
        raise InputError("--export needs the 'opentimelineio' package (pip install opentimelineio)") from None
    return otio


def export_format(path: str | os.PathLike[str]) -> str:
    """The OTIO adapter name for ``path``'s suffix; InputError for an unknown one."""
    suf = Path(path).suffix.lower()
    if suf not in FORMATS:
        raise InputError(f"cannot export a timeline as '{suf or Path(path).name}' "
                         f"(choose from {', '.join(FORMATS)})")
    return FORMATS[suf]


# --------------------------------------------------------------------------- segments


def _nice_speed(lo: float, hi: float) -> float:
    """A simple speed inside [lo, hi]: 1 or 0 when allowed, else the shortest decimal."""
    for s in (1.0, 0.0):
        if lo <= s <= hi:
            return s
    mid = 0.5 * (lo + hi)
    for digits in range(1, 7):
        s = round(mid, digits)
        if lo <= s <= hi:
            return s
    return mid


def constant_speed_segments(src: np.ndarray, tol: float = TOLERANCE) -> list[Segment]:
    """Cut a frame plan into segments of constant speed.

    Parameters
    ----------
    src : ndarray of int, shape (K,)
        Source frame shown at each output frame (monotonic or not: a backward jump starts a
        new segment).
    tol : float
        Largest distance, in frames, between a segment's line and the plan.

    Returns
    -------
    list of Segment
        Each starts exactly on the plan's frame (``src_start = src[out_start]``) and stays
        within ``tol`` of it, so a reader that rounds or truncates the media time shows a
        frame within one of the map's.
    """
    p = np.asarray(src, dtype=np.int64)
    segs: list[Segment] = []
    k0 = 0
    while k0 < len(p):
        lo, hi = 0.0, math.inf  # speeds are never negative
        k = k0 + 1
        while k < len(p):
            j = k - k0
            a, b = (p[k] - p[k0] - tol) / j, (p[k] - p[k0] + tol) / j
            if max(lo, a) > min(hi, b):
                break
            lo, hi = max(lo, a), min(hi, b)
            k += 1
        speed = 1.0 if k == k0 + 1 else _nice_speed(lo, hi)
        segs.append(Segment(k0, k - k0, int(p[k0]), float(speed)))
        k0 = k
    return segs


def unit_speed_segments(src: np.ndarray) -> list[Segment]:
    """Frame-exact cuts at speed 1: runs of consecutive source frames (``src[k+1] = src[k]+1``)."""
    p = np.asarray(src, dtype=np.int64)
    segs: list[Segment] = []
    k0 = 0
    for k in range(1, len(p) + 1):
        if k == len(p) or p[k] != p[k - 1] + 1:
            segs.append(Segment(k0, k - k0, int(p[k0]), 1.0))
            k0 = k
    return segs


# --------------------------------------------------------------------------- building


# What OTIO's FCP X writer gets right: it also names 23.98, 29.97 and 59.94, but derives an
# element's rate as int(30000/1001) = 29 and then fails to place the audio lane.
FCPX_RATES = (24.0, 25.0, 30.0, 50.0, 60.0)


def _rate(fps: float, fcpx: bool = False) -> float:
    """The rate OTIO gets for a nominal fps: exact (29.97 -> 30000/1001); for FCP X XML one of
    :data:`FCPX_RATES`, else InputError."""
    if fcpx:
        for r in FCPX_RATES:
            if abs(fps - r) < 0.01:
                return r
        raise InputError(f"an FCP X XML timeline cannot have {fps:.3f} fps (it knows "
                         f"{', '.join(f'{r:g}' for r in FCPX_RATES)}); export .otio or .xml instead")
    return float(Fraction(fps).limit_denominator(1001))


def map_digest(obj: Any) -> str:
    """sha256 of a map as ``--map`` writes it (avsync.outputs.write_json's serialisation)."""
    from avsync.outputs import json_text

    return hashlib.sha256(json_text(obj).encode()).hexdigest()


def _external(otio: Any, path: str | os.PathLike[str], rate: float, duration_s: float) -> Any:
    p = Path(path).resolve()
    rng = otio.opentime.TimeRange(otio.opentime.RationalTime(0, rate),
                                  otio.opentime.RationalTime(round(duration_s * rate), rate))
    return otio.schema.ExternalReference(target_url=p.as_uri(), available_range=rng)


def _video_clip(otio: Any, seg: Segment, ref: Any, out_rate: float, src_rate: float, name: str) -> Any:
    RT, TR = otio.opentime.RationalTime, otio.opentime.TimeRange
    clip = otio.schema.Clip(name=name, media_reference=ref,
                            source_range=TR(RT(seg.src_start, src_rate), RT(seg.n, out_rate)))
    if seg.n > 1 and seg.speed == 0.0:
        clip.effects.append(otio.schema.FreezeFrame())
    elif seg.n > 1 and seg.speed != 1.0:
        clip.effects.append(otio.schema.LinearTimeWarp(time_scalar=seg.speed * src_rate / out_rate))
    return clip


def _metadata(kind: str, out_rate: float, digest: str, **more: Any) -> dict[str, Any]:
    from avsync import __version__
    from avsync.types import CONVENTION

    return {"avsync": {"version": __version__, "kind": kind, "rate": out_rate, "start_timecode": "00:00:00:00",
                       "convention": CONVENTION, "sha256": digest, **more}}


def timeline_from_plan(
    src_frames: np.ndarray, out_fps: float, src_fps: float, video: str | os.PathLike[str],
    audio: str | os.PathLike[str] | None, audio_duration: float, *, speed_effects: bool = True,
    kind: str = "align", digest: str = "", name: str = "", fcpx: bool = False, audio_start: float = 0.0,
) -> Any:
    """An OTIO Timeline whose video track shows ``src_frames[k]`` at output frame ``k``.

    Parameters
    ----------
    src_frames : ndarray of int, shape (K,)
        Source frame per output frame (the map's ``src_frame``).
    out_fps, src_fps : float
        Output (timeline) and source frame rates.
    video, audio : path
        The source video and the reference audio (``audio`` None: no audio track).
    audio_duration : float
        Seconds of reference audio on the audio track.
    audio_start : float
        Where in the audio file the track starts, seconds (retarget's ``--start``).
    speed_effects : bool
        Constant-speed segments with time effects (True) or frame-exact cuts at speed 1.
    """
    otio = _otio()
    out_rate, src_rate = _rate(out_fps, fcpx), _rate(src_fps, fcpx)
    p = np.asarray(src_frames, dtype=np.int64)
    segs = constant_speed_segments(p) if speed_effects else unit_speed_segments(p)
    vref_dur = (int(p.max()) + 1) / src_rate if p.size else 0.0
    tl = otio.schema.Timeline(name=name or f"avsync {kind}")
    tl.global_start_time = otio.opentime.RationalTime(0, out_rate)
    vtrack = otio.schema.Track(name="V1 (avsync warp)", kind=otio.schema.TrackKind.Video)
    vname = Path(video).stem
    for i, s in enumerate(segs):  # unique names: FCP XML merges clip items that look the same
        vtrack.append(_video_clip(otio, s, _external(otio, video, src_rate, vref_dur), out_rate, src_rate,
                                  f"{vname} #{i + 1}"))
    tl.tracks.append(vtrack)
    if audio is not None:
        atrack = otio.schema.Track(name="A1 (reference audio)", kind=otio.schema.TrackKind.Audio)
        n = round(audio_duration * out_rate)
        atrack.append(otio.schema.Clip(
            name=Path(audio).stem, media_reference=_external(otio, audio, out_rate, audio_start + audio_duration),
            source_range=otio.opentime.TimeRange(otio.opentime.RationalTime(round(audio_start * out_rate), out_rate),
                                                 otio.opentime.RationalTime(n, out_rate))))
        tl.tracks.append(atrack)
    tl.metadata.update(_metadata(kind, out_rate, digest, segments=len(segs), output_frames=int(p.size),
                                 source_fps=src_fps))
    return tl


def timeline_from_offset(
    clip: str | os.PathLike[str], fps: float, duration: float, audio_duration: float, shift_s: float,
    drift_ms_per_min: float = 0.0, *, digest: str = "", fcpx: bool = False,
) -> Any:
    """The clip's picture untouched and its own audio slipped by ``shift_s`` (positive = the
    audio led, so it is delayed by that much) and, with a drift, played at ``1 - drift``:
    at timeline time ``t`` the audio track plays the clip's audio at ``t * (1 - drift) - shift_s``,
    the same model as ``detect-offset --fix`` (avsync.remux)."""
    otio = _otio()
    RT, TR = otio.opentime.RationalTime, otio.opentime.TimeRange
    rate = _rate(fps, fcpx)
    r = drift_ms_per_min / 60000.0
    if not (math.isfinite(shift_s) and math.isfinite(r) and abs(r) < 0.5):
        raise InputError("the shift and drift to export must be finite (and the drift below 30 s/min)")
    tl = otio.schema.Timeline(name=f"avsync detect-offset {Path(clip).stem}")
    tl.global_start_time = RT(0, rate)
    n_v = round(duration * rate)
    v = otio.schema.Track(name="V1", kind=otio.schema.TrackKind.Video)
    v.append(otio.schema.Clip(name=Path(clip).stem, media_reference=_external(otio, clip, rate, duration),
                              source_range=TR(RT(0, rate), RT(n_v, rate))))
    a = otio.schema.Track(name="A1 (slipped)", kind=otio.schema.TrackKind.Audio)
    t0 = shift_s / (1.0 - r)  # timeline time at which the audio's time 0 plays
    gap = max(0, round(t0 * rate))
    media_start = max(0.0, -shift_s)
    n_a = max(1, round((audio_duration - media_start) / (1.0 - r) * rate))
    if gap:
        a.append(otio.schema.Gap(source_range=TR(RT(0, rate), RT(gap, rate))))
    ac = otio.schema.Clip(name=Path(clip).stem + " audio", media_reference=_external(otio, clip, rate, duration),
                          source_range=TR(RT(round(media_start * rate), rate), RT(n_a, rate)))
    if r != 0.0:
        ac.effects.append(otio.schema.LinearTimeWarp(time_scalar=1.0 - r))
    a.append(ac)
    tl.tracks.append(v)
    tl.tracks.append(a)
    tl.metadata.update(_metadata("detect-offset", rate, digest, shift_ms=round(shift_s * 1000, 3),
                                 drift_ms_per_min=round(drift_ms_per_min, 3),
                                 words=_slip_words(shift_s)))
    return tl


def _slip_words(shift_s: float) -> str:
    from avsync.types import describe_shift

    return describe_shift(shift_s)


# --------------------------------------------------------------------------- writing / reading


def write_timeline(timeline: Any, path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
    """Write ``timeline`` in the format of ``path``'s suffix, atomically."""
    from avsync.outputs import check_output, write_atomic

    otio = _otio()
    adapter = export_format(path)
    check_output(path, overwrite)
    kw: dict[str, Any] = {}
    if adapter == "cmx_3600":
        # Non-drop-frame timecode at the nominal integer rate (29.97 counts 30 labels a second,
        # frame for frame): OTIO's CMX reader cannot parse M2 speeds next to drop-frame timecode.
        kw["rate"] = round(timeline.global_start_time.rate) if timeline.global_start_time else 24
    try:
        text = otio.adapters.write_to_string(timeline, adapter_name=adapter, **kw)
    except Exception as e:  # an adapter that cannot express this timeline
        raise OutputError(f"cannot write '{path}' as {adapter}: {e}") from None

    def _w(tmp: str) -> None:
        Path(tmp).write_text(text)

    write_atomic(path, _w, overwrite=overwrite)


def read_timeline(path: str | os.PathLike[str], rate: float | None = None) -> Any:
    """Read a timeline through OTIO's own adapter for its suffix (EDLs need the ``rate``)."""
    otio = _otio()
    adapter = export_format(path)
    kw: dict[str, Any] = {}
    if adapter == "cmx_3600" and rate is not None:
        kw["rate"] = round(rate)  # written as non-drop-frame at the nominal rate
    return otio.adapters.read_from_file(str(path), adapter_name=adapter, **kw)


def _frames(t: Any, fps: float) -> float:
    """A RationalTime in frames at ``fps``; a time at the nominal integer rate of an NTSC fps
    (an EDL's non-drop-frame count) is already in frames."""
    if abs(t.rate - fps) <= 0.002 * fps:
        return float(t.value)
    return float(t.rescaled_to(fps).value)


def shown_frames(timeline: Any, src_fps: float, out_fps: float) -> np.ndarray:
    """Source frame shown at every output frame of the first video track (float: media time
    in source frames, before any rounding a player applies)."""
    otio = _otio()
    track = next(t for t in timeline.tracks if t.kind == otio.schema.TrackKind.Video)
    out: list[float] = []
    for item in track:
        n = round(_frames(item.source_range.duration, out_fps))
        if isinstance(item, otio.schema.Gap):
            out.extend([math.nan] * n)
            continue
        start = _frames(item.source_range.start_time, src_fps)
        scalar = 1.0
        for fx in item.effects:
            if isinstance(fx, otio.schema.FreezeFrame):
                scalar = 0.0
            elif isinstance(fx, otio.schema.LinearTimeWarp):
                scalar = fx.time_scalar
        step = scalar * src_fps / out_fps
        out.extend(start + step * j for j in range(n))
    return np.asarray(out, dtype=float)


# --------------------------------------------------------------------------- front doors


def export_map(
    map_obj: dict[str, Any], path: str | os.PathLike[str], video: str | os.PathLike[str],
    audio: str | os.PathLike[str] | None, audio_duration: float, *, audio_start: float = 0.0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the timeline of an ``align`` / ``retarget`` map (the ``--map`` JSON object).

    Returns a small summary for the command's JSON: path, format, segments, sha256 of the map.
    """
    fmt = export_format(path)
    out_fps = float(map_obj["output_fps"] if "output_fps" in map_obj else map_obj["fps"])
    src_fps = float(map_obj.get("source_fps", out_fps))
    frames = map_obj["frames"]
    if "src_frame" in frames[0]:
        src = np.array([f["src_frame"] for f in frames], dtype=np.int64)
    else:  # retarget: source time per output frame
        src = np.floor(np.array([f["src_time"] for f in frames]) * src_fps + 1e-6).astype(np.int64)
    digest = map_digest(map_obj)
    tl = timeline_from_plan(src, out_fps, src_fps, video, audio, audio_duration,
                            speed_effects=Path(path).suffix.lower() in SPEED_FORMATS,
                            kind=str(map_obj.get("kind", "align")), digest=digest, fcpx=fmt == "fcpx_xml",
                            audio_start=audio_start)
    write_timeline(tl, path, overwrite=overwrite)
    return {"path": str(path), "format": fmt, "segments": tl.metadata["avsync"]["segments"], "map_sha256": digest}


def export_offset(
    result: Any, path: str | os.PathLike[str], shift_s: float, drift_ms_per_min: float,
    audio_duration: float, *, overwrite: bool = False,
) -> dict[str, Any]:
    """Write the timeline of a ``detect-offset`` measurement: the audio slipped by ``shift_s``."""
    fmt = export_format(path)
    obj = result.to_json() if hasattr(result, "to_json") else dict(result)
    digest = map_digest(obj)
    tl = timeline_from_offset(obj["file"], float(obj["fps"]), float(obj["duration"]), audio_duration,
                              shift_s, drift_ms_per_min, digest=digest, fcpx=fmt == "fcpx_xml")
    write_timeline(tl, path, overwrite=overwrite)
    return {"path": str(path), "format": fmt, "shift_ms": round(shift_s * 1000, 3),
            "drift_ms_per_min": round(drift_ms_per_min, 3), "words": _slip_words(shift_s), "sha256": digest}
