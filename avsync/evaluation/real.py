"""Real-footage protocol (issue 13, point 1): detect-offset and align on real synced clips.

Behind ``avsync bench DIR --protocol real`` and ``make bench``. It uses only public avsync APIs
(``avsync.media``, ``avsync.render``, ``avsync.warps``, ``avsync.soundtrack``, ``avsync.offset``,
``avsync.align``, ``avsync.features.extract``, ``avsync.types``) plus numpy, scipy and PyAV.

Sign convention (as everywhere in avsync): a **positive offset means the audio leads the
picture** (the sound of an event comes earlier than its picture).

Clips and split
---------------
A folder of clips believed to be in sync (default: the project's shared real footage,
``../shared/media/real`` beside the repository, or ``$AVSYNC_REAL_MEDIA``). Its
``MANIFEST.tsv`` (columns ``file``, ``category``, ``repo``, ...) names each clip's category and
source; :func:`split_table` puts whole sources or speakers into ``fit`` or ``check`` (never
parts of one clip), or a split table (TSV ``file, category, group, part``) can be given. A
folder without a manifest is one category, ``all``, every clip in the check part.
Categories: speech, dance, music, event, control (control = no visible sync cue; the
manifest's ``other`` counts as control).

All durations below use ``L = min(picture length, sound length)`` of the clip, the picture
length being the last frame's time plus one frame period (:func:`avsync.media.frame_times`)
and the sound length the decoded samples on the video's clock
(:func:`avsync.media.load_audio`).

detect-offset cases
-------------------
Picture window ``[m, m + D)`` of the original, sound window ``[m + off, m + off + D)``:
output frame ``k`` shows the source frame nearest to ``m + k / fps`` (``m`` is snapped to a
source frame time, so on constant-rate sources it is that frame exactly) and output sample
``i`` is source sample ``round((m + off) * sr) + i``. An event at source time ``T`` is then
heard at ``T - m - off`` and seen at ``T - m``: the sound is ``off`` s early, i.e. the case's
true offset is ``+off`` (audio leads) for ``off > 0``.

- clips with ``L >= 9 s``: :attr:`ProtocolOptions.grid_per_clip` (5) offsets drawn without
  replacement from Synchformer's 21-class grid (-2 .. +2 s, 0.2 s steps; search range
  ±2 s) and :attr:`ProtocolOptions.uniform_per_long_clip` (3) uniform in ±1 s (search ±1 s);
- ``4 s <= L < 9 s``: :attr:`ProtocolOptions.uniform_per_short_clip` (4) uniform in ±0.6 s;
- ``L < 4 s``: 4 uniform in ±0.4 s.

Window length: ``D = min(max_window, L - R)`` for offset range ``R`` (floored to whole
frames): the longest window with which *every* offset of the range fits the clip (for
``|off| = R`` only one start does), so D does not depend on the drawn offset and gives
nothing away; ``max_window`` = 10 s. ``m`` is drawn uniformly among the frame times where
both windows fit, ``[max(0, -off), L - D - max(0, off)]``. A case whose ``D`` would be
shorter than :attr:`ProtocolOptions.min_window` (2 s) is skipped (and counted). The
estimator's search range (``max_shift``) is the case's offset range ``R``.

Each **untouched original** is a case too (truth 0): the file itself is passed, as it
comes, with its container, codec, odd frame rate and stream start times. Its search range
is the widest its duration class uses (±2 s for ``L >= 9 s``, ±0.6 s, ±0.4 s). Originals
shorter than ``min_window`` are skipped.

align cases
-----------
Per clip an excerpt ``[m, m + A)`` with ``A = min(align_window, L)`` (10 s) is written with
its own sound (the *reference*, in sync by construction). Its picture is re-timed by
:func:`avsync.warps.random_warp` (seeded; 0.6-1.6x speed segments, freezes, skips, the
displacement of the speed changes bounded by 1 s plus a global shift within ±1 s, as the
bench's protocol (a) uses it) and written
- without audio (``picture`` case; aligned with ``sync_by='picture'``), and
- with the reference sound played along the same warp (:func:`avsync.soundtrack.warp_audio`)
  and heard as a camera microphone hears it (:func:`camera_mic`: band-pass 250-3800 Hz, a
  23 ms echo at half amplitude, white noise at 10 dB SNR) (``camera`` case; aligned with
  ``sync_by='soundtrack'``).
Both are aligned to the reference, and scored exactly as ``avsync.evaluation.protocol`` scores its
protocol (a): for output frame ``k`` the original frame shown is ``plan[shown[k]]``,
``d = plan[shown[k]] - k`` frames; on moving frames (motion energy above 10 % of its median
over moving frames) ITU = share with ``-45 ms <= d / fps <= +125 ms``, AFE = mean ``|d|``,
±1 = share with ``|d| <= 1``. The ``none`` row leaves the distorted file as it is.

Files
-----
Cases are written once under a cache folder (default: ``cases/`` next to this file) and
reused; each name carries a hash of everything that shaped it (source name and size,
kind, offset, window, rate, encoder settings, protocol version). Picture: libx264 at the
source's frame rate (as avsync measures it; variable-rate sources become constant-rate),
``crf 18``, preset ``ultrafast``, size, pixel aspect and rotation kept. Sound: mono, at the
source's sample rate, AAC in .mp4 (the AAC encoder delay is recorded in the mp4 edit list
and removed on decoding; checked on flash/beep clips, see the report).

Metrics
-------
Per category with a "do nothing" row beside each (offset 0; the distorted clip as is):
within ±1 frame (``|err| <= 1 / fps``); grid Acc@1 (``|err| < 0.1 s``, grid cases only);
originals within ±1 frame; AUROC of the confidence (right = within ±1 frame) over all cases
of the category; mean confidence (the control row is the "no sync cue" figure); share of
"cannot tell" verdicts and of cases the estimator could not measure (CannotMeasure, scored
as wrong with confidence 0).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import importlib
import importlib.util
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

PROTOCOL_VERSION = 1
CATEGORIES = ("speech", "dance", "music", "event", "control", "all")
PARTS = ("fit", "check", "all")
DEFAULT_MEDIA = Path(os.environ.get("AVSYNC_REAL_MEDIA",
                                    Path(__file__).resolve().parents[3] / "shared" / "media" / "real"))
# Dataset repositories whose files are distinct source videos: each file is its own group.
PER_FILE_REPOS = frozenset({"Hangz-nju-cuhk/Talking-Face_PC-AVS", "OpenNLPLab/AVSBench", "v-iashin/SpecVQGAN",
                            "open-mmlab/FoleyCrafter", "XYPB/CondFoleyGen", "DAMO-NLP-SG/Video-LLaMA",
                            "DAMO-NLP-SG/VideoLLaMA2"})
CHECK_SHARE = 0.45  # at most this share of a category's clips goes to the check part


def default_cache() -> Path:
    """Where case files are written (reused across runs): ``<avsync cache>/real-cases``."""
    from avsync.cache import cache_dir

    return cache_dir() / "real-cases"


def _group(row: dict[str, str]) -> str:
    """The source or speaker group of a manifest row (footage known to repeat across
    repositories is merged: the same speaker in several repositories is one group)."""
    f = row["file"].lower()
    if "obama" in f:
        return "speaker:obama"
    if "alexandriaocasiocortez" in f or "aoc_gt" in f or f == "video-retalking__face_3.mp4":
        return "speaker:aoc"
    if row.get("repo", "") in PER_FILE_REPOS:
        return "file:" + row["file"]
    return "repo:" + row.get("repo", row["file"])


def split_table(media_dir: str | os.PathLike[str]) -> list[dict[str, str]]:
    """The fit/check split of a folder with a ``MANIFEST.tsv``: rows ``file, category, group, part``.

    Groups (see :func:`_group`) are never split. Within each category, groups are ordered by a
    sha1 of their name and go to ``check`` while that keeps the check part at most
    :data:`CHECK_SHARE` of the category's clips (the first group always does); the rest is
    ``fit``. Deterministic: the same manifest gives the same split. Without a manifest every
    clip is category ``all``, part ``check``.
    """
    d = Path(media_dir)
    man = d / "MANIFEST.tsv"
    if not man.is_file():
        exts = {".mp4", ".mov", ".mkv", ".avi", ".mpg", ".webm", ".m4v"}
        return [{"file": p.name, "category": "all", "group": "file:" + p.name, "part": "check"}
                for p in sorted(d.iterdir()) if p.suffix.lower() in exts]
    with open(man, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    cat = {r["file"]: ("control" if r["category"] in ("control", "other") else r["category"]) for r in rows}
    groups: dict[str, list[str]] = {}
    for r in rows:
        groups.setdefault(_group(r), []).append(r["file"])
    gcat = {g: max(sorted({cat[x] for x in fs}), key=lambda c, fs=fs: sum(cat[x] == c for x in fs))
            for g, fs in groups.items()}
    part: dict[str, str] = {}
    for c in sorted(set(gcat.values())):
        gs = sorted((g for g in groups if gcat[g] == c), key=lambda g: hashlib.sha1(g.encode()).hexdigest())
        total, n_check = sum(len(groups[g]) for g in gs), 0
        for g in gs:
            first = n_check == 0 and len(groups[g]) < total
            if n_check + len(groups[g]) <= CHECK_SHARE * total or first:
                part[g], n_check = "check", n_check + len(groups[g])
            else:
                part[g] = "fit"
    return [{"file": r["file"], "category": cat[r["file"]], "group": _group(r), "part": part[_group(r)]}
            for r in rows]
GRID_STEP = 0.2  # s, Synchformer's class width
ITU_EARLY = 0.045  # s: a picture shown this much early (audio lags) ... see score_plan
ITU_LATE = 0.125

# An offset estimator: (path, max_shift) -> (offset_s, confidence, verdict), optionally with a
# fourth element, a JSON-able dict of anything worth keeping for error analysis.
Estimator = Callable[[str, float], tuple[Any, ...]]


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class ProtocolOptions:
    """How the cases are made. Every field enters the case hashes that name the files."""

    seed: int = 0  # every random draw derives from (seed, clip name)
    max_window: float = 10.0  # cap on the detect-offset window D, s
    min_window: float = 2.0  # cases whose picture window would be shorter are skipped, s
    long_clip: float = 9.0  # L >= this: grid and ±long_range cases, s
    mid_clip: float = 4.0  # mid_clip <= L < long_clip: ±mid_range; shorter: ±short_range, s
    grid_range: float = 2.0  # search range of grid cases (the grid's own span), s
    long_range: float = 1.0  # uniform offsets of long clips, ± s
    mid_range: float = 0.6  # uniform offsets of 4-9 s clips, ± s
    short_range: float = 0.4  # uniform offsets of clips under 4 s, ± s
    grid_per_clip: int = 5  # grid classes per long clip, without replacement
    uniform_per_long_clip: int = 3  # uniform offsets per long clip
    uniform_per_short_clip: int = 4  # uniform offsets per clip under long_clip
    originals: bool = True  # add each untouched original (truth 0)
    align_window: float = 10.0  # length of the align excerpt, s
    align_max_shift: float = 2.0  # align search range (covers the warp's 1 s + 1 s), s
    mic_band: tuple[float, float] = (250.0, 3800.0)  # camera microphone band, Hz
    mic_echo: float = 0.023  # echo delay, s
    mic_echo_gain: float = 0.5  # echo amplitude relative to the direct sound
    mic_snr_db: float = 10.0  # white noise, dB below the (band-passed, echoed) sound
    crf: int = 18  # libx264 quality of the case files
    preset: str = "ultrafast"  # libx264 preset of the case files

    def hash_fields(self) -> dict[str, Any]:
        """The fields that shape a case file's content (not which cases are drawn)."""
        return {"crf": self.crf, "preset": self.preset, "version": PROTOCOL_VERSION}


# --------------------------------------------------------------------------- clips


@dataclass(frozen=True)
class Clip:
    """One source clip of the real-footage folder.

    Attributes
    ----------
    file : str
        File name inside the media folder.
    path : str
    category : str
        speech | dance | music | event | control.
    part : str
        fit | check.
    group : str
        Source or speaker group of the split.
    """

    file: str
    path: str
    category: str
    part: str
    group: str


@dataclass(frozen=True)
class ClipInfo:
    """What case generation needs to know about a clip (from its packets and its sound).

    Attributes
    ----------
    fps : float
        Frame rate as avsync measures it (:func:`avsync.media.probe`).
    n_frames : int
    video_s, audio_s : float
        Picture length (last frame time + 1/fps) and sound length on the video's clock, s.
    length : float
        ``min(video_s, audio_s)``, s.
    sr : int
        Sample rate of the sound.
    size : int
        File size in bytes (enters the case hashes).
    """

    fps: float
    n_frames: int
    video_s: float
    audio_s: float
    length: float
    sr: int
    size: int


def load_clips(
    media_dir: str | os.PathLike[str] = DEFAULT_MEDIA,
    split: str | os.PathLike[str] | None = None,
    part: str = "check",
    categories: Sequence[str] | None = None,
    limit: int | None = None,
) -> list[Clip]:
    """The clips of one part of the split, in the split table's order.

    Parameters
    ----------
    media_dir : path
        Folder holding the clips.
    split : path, optional
        TSV with columns file, category, group, part; default :func:`split_table` of the folder.
    part : {'check', 'fit', 'all'}
    categories : sequence of str, optional
        Keep only these categories.
    limit : int, optional
        At most this many clips per category (the first ones of the table).

    Returns
    -------
    list of Clip
        Clips whose file is missing are left out.
    """
    if part not in PARTS:
        raise ValueError(f"part must be one of {', '.join(PARTS)} (got '{part}')")
    cats = set(categories) if categories else set(CATEGORIES)
    bad = cats - set(CATEGORIES)
    if bad:
        raise ValueError(f"unknown categories: {', '.join(sorted(bad))}")
    out: list[Clip] = []
    per_cat: dict[str, int] = {}
    if split is None:
        table = split_table(media_dir)
    else:
        with open(split, newline="") as f:
            table = list(csv.DictReader(f, delimiter="\t"))
    for row in table:
        cat = row["category"]
        p = Path(media_dir) / row["file"]
        if cat not in cats or (part != "all" and row["part"] != part) or not p.is_file():
            continue
        if limit is not None and per_cat.get(cat, 0) >= limit:
            continue
        per_cat[cat] = per_cat.get(cat, 0) + 1
        out.append(Clip(row["file"], str(p), cat, row["part"], row["group"]))
    return out


def clip_info(clip: Clip) -> ClipInfo:
    """Measure a clip's frame rate, frame count and picture / sound lengths."""
    from avsync.media import frame_times, load_audio, probe

    info = probe(clip.path)
    ft = frame_times(clip.path)
    fps = float(info.fps)
    sr = int(info.audio_rate)
    y = load_audio(clip.path, sr=sr)
    video_s = float(ft[-1]) + 1.0 / fps
    audio_s = len(y) / sr
    return ClipInfo(fps=fps, n_frames=len(ft), video_s=video_s, audio_s=audio_s,
                    length=min(video_s, audio_s), sr=sr, size=os.path.getsize(clip.path))


def _clip_key(file: str) -> int:
    return int(hashlib.sha256(file.encode()).hexdigest()[:12], 16)


def _case_hash(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]


def _stem(file: str) -> str:
    s = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(file).stem)
    return s[:48]


# --------------------------------------------------------------------------- offset cases


@dataclass(frozen=True)
class OffsetCase:
    """One detect-offset case.

    Attributes
    ----------
    case_id : str
        Hash of the case's parameters (also in the file name).
    clip, category, part : str
    kind : str
        'grid', 'uniform' or 'original'.
    truth : float
        True offset, s (positive = audio leads).
    max_shift : float
        Search range to pass to the estimator, ± s (the case's offset range).
    start : float
        Picture window start ``m`` in the original, s (0 for originals).
    duration : float
        Window length ``D``, s (the clip's length for originals).
    fps : float
        Frame rate of the case file.
    path : str
        The file to measure.
    """

    case_id: str
    clip: str
    category: str
    part: str
    kind: str
    truth: float
    max_shift: float
    start: float
    duration: float
    fps: float
    path: str


def _offset_range(length: float, opts: ProtocolOptions) -> list[tuple[str, float]]:
    """(kind, range) of the shifted cases of a clip of ``length`` s, in drawing order."""
    if length >= opts.long_clip - 1e-6:
        return [("grid", opts.grid_range), ("uniform", opts.long_range)]
    if length >= opts.mid_clip - 1e-6:
        return [("uniform", opts.mid_range)]
    return [("uniform", opts.short_range)]


def plan_offset_cases(clip: Clip, info: ClipInfo, cache: str | os.PathLike[str],
                      opts: ProtocolOptions = ProtocolOptions()) -> tuple[list[OffsetCase], list[str]]:
    """The detect-offset cases of one clip (not written yet) and why any were skipped.

    Returns
    -------
    cases : list of OffsetCase
    skipped : list of str
        One line per skipped case type.
    """
    from avsync.evaluation.protocol import GRID

    rng = np.random.default_rng([opts.seed, _clip_key(clip.file), 1])
    cases: list[OffsetCase] = []
    skipped: list[str] = []
    fps, L = info.fps, info.length
    ranges = _offset_range(L, opts)
    draws: list[tuple[str, float, float]] = []  # kind, offset, range
    for kind, R in ranges:
        if kind == "grid":
            picks = rng.choice(len(GRID), size=min(opts.grid_per_clip, len(GRID)), replace=False)
            draws += [("grid", float(GRID[i]), R) for i in sorted(picks)]
        else:
            n = opts.uniform_per_long_clip if len(ranges) > 1 else opts.uniform_per_short_clip
            draws += [("uniform", float(x), R) for x in rng.uniform(-R, R, size=n)]
    for kind, off, R in draws:
        n_frames = int(math.floor(min(opts.max_window, L - R) * fps + 1e-6))
        win = n_frames / fps
        u = float(rng.random())  # drawn for every case, so skipping one does not shift the rest
        if win < opts.min_window - 1e-9:
            msg = f"{clip.file}: {kind} ±{R:g} s cases skipped (window {max(win, 0):.2f} s < {opts.min_window:g} s)"
            if msg not in skipped:
                skipped.append(msg)
            continue
        # both windows inside the clip: m >= 0, m + off >= 0, m + D <= L, m + off + D <= L;
        # m on a frame (i / fps): the picture window then starts exactly on a source frame
        lo = math.ceil(max(0.0, -off) * fps - 1e-6)
        hi = math.floor((L - win - max(0.0, off)) * fps + 1e-6)
        m = (lo + int(math.floor(u * (max(hi, lo) - lo + 1)))) / fps
        m = min(m, max(hi, lo) / fps)
        params = {"clip": clip.file, "size": info.size, "kind": kind, "off": round(off, 6), "m": round(m, 6),
                  "frames": n_frames, "fps": round(fps, 6), "sr": info.sr, **opts.hash_fields()}
        cid = _case_hash(params)
        path = Path(cache) / "offset" / f"{_stem(clip.file)}-{kind}-{cid}.mp4"
        cases.append(OffsetCase(cid, clip.file, clip.category, clip.part, kind, round(off, 6), R, round(m, 6),
                                win, fps, str(path)))
    if opts.originals:
        R = max(r for _, r in ranges)
        if info.video_s < opts.min_window:
            skipped.append(f"{clip.file}: original skipped (picture {info.video_s:.2f} s < {opts.min_window:g} s)")
        else:
            cid = _case_hash({"clip": clip.file, "size": info.size, "kind": "original"})
            cases.append(OffsetCase(cid, clip.file, clip.category, clip.part, "original", 0.0, R, 0.0,
                                    info.length, fps, clip.path))
    return cases, skipped


def write_window(src: str, out: str | os.PathLike[str], *, fps: float, sr: int, start: float, n_frames: int,
                 audio_start: float, opts: ProtocolOptions = ProtocolOptions(),
                 samples: np.ndarray | None = None) -> None:
    """Write a picture window of ``src`` with a sound window of ``src`` (or given samples).

    Parameters
    ----------
    src : str
        The source clip.
    out : path
        Output .mp4 (written atomically; an existing file is replaced).
    fps : float
        Output frame rate (the source's).
    sr : int
        Sample rate of the sound.
    start : float
        Picture window start, s on the source's picture clock (first frame = 0): output frame
        ``k`` shows the source frame nearest to ``start + k / fps``.
    n_frames : int
        Output frames.
    audio_start : float
        Sound window start, s on the same clock (``start + off`` for a case of offset ``off``).
    samples : ndarray (S,), optional
        Mono source sound at ``sr`` on the video's clock (decoded if not given).
    """
    from scipy.io import wavfile

    from avsync.media import frame_times, load_audio
    from avsync.render import frame_plan, render
    from avsync.types import Correspondence

    ft = frame_times(src)
    t = start + np.arange(n_frames) / fps
    plan = frame_plan(Correspondence(src_time=t, rate=fps), ft)
    y = load_audio(src, sr=sr) if samples is None else np.asarray(samples, np.float32)
    n_audio = int(math.floor(n_frames / fps * sr + 1e-6))
    a0 = int(round(audio_start * sr))
    seg = np.zeros(n_audio, np.float32)
    lo, hi = max(0, a0), min(len(y), a0 + n_audio)
    if hi > lo:
        seg[lo - a0:hi - a0] = y[lo:hi]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="realbench-") as tmp:
        wav = Path(tmp) / "sound.wav"
        wavfile.write(wav, sr, seg)
        render(src, plan, fps, out, audio_path=wav, crf=opts.crf, preset=opts.preset, overwrite=True)


def build_offset_case(case: OffsetCase, clip: Clip, info: ClipInfo,
                      opts: ProtocolOptions = ProtocolOptions()) -> None:
    """Write ``case.path`` unless it exists (originals are the clip itself)."""
    if case.kind == "original" or Path(case.path).exists():
        return
    n_frames = int(round(case.duration * case.fps))
    write_window(clip.path, case.path, fps=case.fps, sr=info.sr, start=case.start, n_frames=n_frames,
                 audio_start=case.start + case.truth, opts=opts)


# --------------------------------------------------------------------------- align cases


@dataclass(frozen=True)
class AlignCase:
    """One align case: a warped picture to bring back onto the reference sound.

    Attributes
    ----------
    case_id, clip, category, part : str
    kind : str
        'picture' (no audio; ``sync_by='picture'``) or 'camera' (the warped, degraded own
        sound; ``sync_by='soundtrack'``).
    reference : str
        The excerpt with its own sound, in sync: the audio to align to.
    distorted : str
        The warped file.
    plan_path : str
        ``.npy`` int64 (M,): distorted frame m shows excerpt frame plan[m].
    start, duration : float
        Excerpt window in the original, s.
    fps : float
    n_frames : int
        Frames of the excerpt.
    max_displacement : float
        Largest ``|plan[m] - m| / fps`` of the warp, s.
    """

    case_id: str
    clip: str
    category: str
    part: str
    kind: str
    reference: str
    distorted: str
    plan_path: str
    start: float
    duration: float
    fps: float
    n_frames: int
    max_displacement: float


def plan_align_cases(clip: Clip, info: ClipInfo, cache: str | os.PathLike[str],
                     opts: ProtocolOptions = ProtocolOptions()) -> tuple[list[AlignCase], list[str], np.ndarray | None]:
    """The two align cases of a clip (not written yet), skip notes, and the warp plan."""
    from avsync.warps import random_warp

    rng = np.random.default_rng([opts.seed, _clip_key(clip.file), 2])
    fps, L = info.fps, info.length
    n = int(math.floor(min(opts.align_window, L) * fps + 1e-6))
    u = float(rng.random())
    if n / fps < opts.min_window - 1e-9:
        return [], [f"{clip.file}: align cases skipped (picture {n / fps:.2f} s < {opts.min_window:g} s)"], None
    A = n / fps
    m = math.floor(u * max(0.0, L - A) * fps + 1e-6) / fps
    plan = np.asarray(random_warp(n, fps, rng), dtype=np.int64)
    base = {"clip": clip.file, "size": info.size, "m": round(m, 6), "frames": n, "fps": round(fps, 6),
            "sr": info.sr, "seed": opts.seed, **opts.hash_fields()}
    rid = _case_hash({**base, "kind": "reference"})
    d = Path(cache) / "align"
    ref = d / f"{_stem(clip.file)}-ref-{rid}.mp4"
    disp = float(np.max(np.abs(plan - np.arange(len(plan)))) / fps)
    cases = []
    for kind in ("picture", "camera"):
        extra = {} if kind == "picture" else {"band": list(opts.mic_band), "echo": opts.mic_echo,
                                               "gain": opts.mic_echo_gain, "snr": opts.mic_snr_db}
        cid = _case_hash({**base, "kind": kind, **extra})
        cases.append(AlignCase(cid, clip.file, clip.category, clip.part, kind, str(ref),
                               str(d / f"{_stem(clip.file)}-{kind}-{cid}.mp4"),
                               str(d / f"{_stem(clip.file)}-{kind}-{cid}.plan.npy"),
                               round(m, 6), A, fps, n, round(disp, 4)))
    return cases, [], plan


def camera_mic(y: np.ndarray, sr: int, rng: np.random.Generator,
               opts: ProtocolOptions = ProtocolOptions()) -> np.ndarray:
    """The sound as a camera microphone hears it.

    Band-pass ``opts.mic_band`` (4th-order Butterworth, zero phase so that no delay is
    added), an echo ``opts.mic_echo`` s later at ``opts.mic_echo_gain``, then white
    Gaussian noise ``opts.mic_snr_db`` dB below the result's mean power; peak-normalised
    to 0.9.

    Parameters
    ----------
    y : ndarray (S,) float
    sr : int
    rng : numpy.random.Generator

    Returns
    -------
    ndarray (S,) float32
    """
    from scipy.signal import butter, sosfiltfilt

    x = np.asarray(y, dtype=np.float64)
    lo, hi = opts.mic_band
    hi = min(hi, 0.45 * sr)
    sos = butter(4, [lo, hi], btype="bandpass", fs=sr, output="sos")
    x = sosfiltfilt(sos, x) if len(x) > 64 else x
    k = int(round(opts.mic_echo * sr))
    e = x.copy()
    if 0 < k < len(x):
        e[k:] += opts.mic_echo_gain * x[:-k]
    p = float(np.mean(e**2))
    noise = rng.standard_normal(len(e)) * math.sqrt(max(p, 1e-12) / 10 ** (opts.mic_snr_db / 10))
    out = e + noise
    peak = float(np.max(np.abs(out))) if len(out) else 0.0
    return (out * (0.9 / peak if peak > 0 else 1.0)).astype(np.float32)


def build_align_cases(cases: list[AlignCase], plan: np.ndarray, clip: Clip, info: ClipInfo,
                      opts: ProtocolOptions = ProtocolOptions()) -> None:
    """Write the reference excerpt, the warped files and the plans (those missing)."""
    from scipy.io import wavfile

    from avsync.media import frame_times, load_audio
    from avsync.render import frame_plan, render
    from avsync.soundtrack import warp_audio
    from avsync.types import Correspondence

    if not cases:
        return
    c0 = cases[0]
    y = None
    if not Path(c0.reference).exists():
        y = load_audio(clip.path, sr=info.sr)
        write_window(clip.path, c0.reference, fps=c0.fps, sr=info.sr, start=c0.start, n_frames=c0.n_frames,
                     audio_start=c0.start, opts=opts, samples=y)
    ft = frame_times(clip.path)
    exc = frame_plan(Correspondence(src_time=c0.start + np.arange(c0.n_frames) / c0.fps, rate=c0.fps), ft)
    src_plan = exc[plan]  # distorted frame m shows source frame exc[plan[m]]
    for case in cases:
        if Path(case.distorted).exists() and Path(case.plan_path).exists():
            continue
        Path(case.distorted).parent.mkdir(parents=True, exist_ok=True)
        if case.kind == "picture":
            render(clip.path, src_plan, case.fps, case.distorted, audio_path=None, crf=opts.crf,
                   preset=opts.preset, overwrite=True)
        else:
            if y is None:
                y = load_audio(clip.path, sr=info.sr)
            a0 = int(round(case.start * info.sr))
            seg = np.zeros(int(math.floor(case.n_frames / case.fps * info.sr + 1e-6)), np.float32)
            part = y[a0:a0 + len(seg)]
            seg[:len(part)] = part
            rng = np.random.default_rng([opts.seed, _clip_key(clip.file), 3])
            warped = warp_audio(seg, info.sr, plan, case.fps)
            # floor the length so the render does not pad the picture by a frame
            warped = warped[: int(math.floor(len(plan) / case.fps * info.sr + 1e-6))]
            mic = camera_mic(warped, info.sr, rng, opts)
            with tempfile.TemporaryDirectory(prefix="realbench-") as tmp:
                wav = Path(tmp) / "mic.wav"
                wavfile.write(wav, info.sr, mic)
                render(clip.path, src_plan, case.fps, case.distorted, audio_path=wav, crf=opts.crf,
                       preset=opts.preset, overwrite=True)
        tmp_plan = Path(case.plan_path).with_suffix(".part.npy")
        np.save(tmp_plan, plan)
        os.replace(tmp_plan, case.plan_path)


# --------------------------------------------------------------------------- building


@dataclass
class CaseSet:
    """Cases of one run, with what was skipped.

    Attributes
    ----------
    offset : list of OffsetCase
    align : list of AlignCase
    skipped : list of str
    seconds : float
        Wall time spent writing case files.
    """

    offset: list[OffsetCase] = field(default_factory=list)
    align: list[AlignCase] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _build_clip(
    args: tuple[Clip, str, ProtocolOptions, bool, bool],
) -> tuple[list[OffsetCase], list[AlignCase], list[str]]:
    clip, cache, opts, want_offset, want_align = args
    info = clip_info(clip)
    oc: list[OffsetCase] = []
    ac: list[AlignCase] = []
    skipped: list[str] = []
    if want_offset:
        oc, sk = plan_offset_cases(clip, info, cache, opts)
        skipped += sk
        for c in oc:
            build_offset_case(c, clip, info, opts)
    if want_align:
        ac, sk, plan = plan_align_cases(clip, info, cache, opts)
        skipped += sk
        if plan is not None:
            build_align_cases(ac, plan, clip, info, opts)
    return oc, ac, skipped


def _pool(jobs: int) -> Any:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"))


def _map(fn: Callable[[Any], Any], items: Sequence[Any], jobs: int, log: Callable[[str], None] | None,
         label: Callable[[Any, Any], str] | None = None) -> list[Any]:
    """``[fn(x) for x in items]``, in a spawn pool of ``jobs`` workers when jobs > 1, in order."""
    out: list[Any] = []
    if jobs <= 1 or len(items) <= 1:
        for i, x in enumerate(items):
            r = fn(x)
            out.append(r)
            if log and label:
                log(f"[{i + 1}/{len(items)}] {label(x, r)}")
        return out
    with _pool(jobs) as ex:
        for i, (x, r) in enumerate(zip(items, ex.map(fn, items), strict=True)):
            out.append(r)
            if log and label:
                log(f"[{i + 1}/{len(items)}] {label(x, r)}")
    return out


def build_cases(clips: Sequence[Clip], cache: str | os.PathLike[str] | None = None,
                opts: ProtocolOptions = ProtocolOptions(), *, offset: bool = True, align: bool = True,
                jobs: int = 1, log: Callable[[str], None] | None = None) -> CaseSet:
    """Plan every case of ``clips`` and write the files that are not in ``cache`` yet.

    Parameters
    ----------
    clips : sequence of Clip
    cache : path
        Case folder (``offset/`` and ``align/`` under it).
    opts : ProtocolOptions
    offset, align : bool
        Which case types.
    jobs : int
        Worker processes.
    log : callable, optional
        Receives one line per clip.

    Returns
    -------
    CaseSet
    """
    t0 = time.perf_counter()
    cache = default_cache() if cache is None else cache
    Path(cache).mkdir(parents=True, exist_ok=True)
    res = _map(_build_clip, [(c, str(cache), opts, offset, align) for c in clips], jobs, log,
               lambda x, r: f"cases of {x[0].file}: {len(r[0])} offset, {len(r[1])} align")
    cs = CaseSet()
    for oc, ac, sk in res:
        cs.offset += oc
        cs.align += ac
        cs.skipped += sk
    cs.seconds = time.perf_counter() - t0
    return cs


# --------------------------------------------------------------------------- offset runner


def classical_offset(path: str, max_shift: float) -> tuple[float, float, str, dict[str, Any]]:
    """The default estimator: ``avsync.offset.detect_offset`` (classical backend, default
    options) with the case's search range. The fourth element (mode, visual kind, method,
    backend confidence, window agreement, period, note) goes into the JSON."""
    from avsync.offset import OffsetOptions, detect_offset

    r = detect_offset(path, OffsetOptions(max_shift=float(max_shift)))
    extra = {"mode": r.mode, "visual_kind": r.extra.get("visual_kind"), "method": r.method,
             "backend_confidence": r.extra.get("backend_confidence"),
             "window_agreement": r.extra.get("window_agreement"), "period_s": r.extra.get("period"),
             "note": r.note}
    return float(r.offset_s), float(r.confidence), str(r.verdict), extra


@dataclass(frozen=True)
class BackendOffset:
    """An estimator for any backend: ``avsync.offset.detect_offset`` with ``backend`` (and
    ``checkpoint``), default options, the case's search range. Picklable, for worker processes."""

    backend: str = "classical"
    checkpoint: str | None = None

    def __call__(self, path: str, max_shift: float) -> tuple[float, float, str, dict[str, Any]]:
        from avsync.offset import OffsetOptions, detect_offset

        r = detect_offset(path, OffsetOptions(backend=self.backend, checkpoint=self.checkpoint,
                                              max_shift=float(max_shift), device="cpu"))
        extra = {"mode": r.mode, "visual_kind": r.extra.get("visual_kind"), "method": r.method, "note": r.note}
        return float(r.offset_s), float(r.confidence), str(r.verdict), extra


def load_callable(spec: str) -> Callable[..., Any]:
    """``'module:function'`` or ``'path/to/file.py:function'`` → the callable (an estimator
    or an aligner)."""
    mod_name, _, fn = spec.rpartition(":")
    if not mod_name or not fn:
        raise ValueError(f"estimator must be 'module:function' (got '{spec}')")
    if mod_name.endswith(".py") or os.sep in mod_name:
        p = Path(mod_name).resolve()
        if str(p.parent) not in sys.path:
            sys.path.insert(0, str(p.parent))
        mod_name = p.stem
    mod = importlib.import_module(mod_name)
    f = getattr(mod, fn, None)
    if not callable(f):
        raise ValueError(f"'{spec}': no such function")
    return f  # type: ignore[no-any-return]


@dataclass
class OffsetOutcome:
    """One estimator answer on one case.

    Attributes
    ----------
    case : OffsetCase
    estimate : float
        Offset read, s (0 when the estimator could not measure).
    confidence : float
    verdict : str
        The estimator's verdict; 'cannot measure' when it raised CannotMeasure, 'error'
        for any other exception.
    error : float
        ``estimate - truth``, s.
    right : bool
        ``|error| <= 1 / fps``.
    seconds : float
        Wall time of the estimator call.
    message : str
    extra : dict
        The estimator's fourth return element, if any.
    """

    case: OffsetCase
    estimate: float
    confidence: float
    verdict: str
    error: float
    right: bool
    seconds: float
    message: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(d.pop("case"))
        return d


def _offset_job(args: tuple[OffsetCase, Estimator | str]) -> tuple[float, float, str, float, str, dict[str, Any]]:
    case, est = args
    from avsync.errors import CannotMeasure

    fn = load_callable(est) if isinstance(est, str) else est
    t0 = time.perf_counter()
    try:
        got = fn(case.path, case.max_shift)
        extra = dict(got[3]) if len(got) > 3 and isinstance(got[3], dict) else {}
        return float(got[0]), float(got[1]), str(got[2]), time.perf_counter() - t0, "", extra
    except CannotMeasure as e:
        return 0.0, 0.0, "cannot measure", time.perf_counter() - t0, str(e), {}
    except Exception as e:  # noqa: BLE001 - one bad case must not stop the run; it is recorded
        return 0.0, 0.0, "error", time.perf_counter() - t0, f"{type(e).__name__}: {e}", {}


def run_offset(cases: Sequence[OffsetCase], estimator: Estimator | str | None = None, *, jobs: int = 1,
               log: Callable[[str], None] | None = None) -> list[OffsetOutcome]:
    """Run an offset estimator over the cases.

    Parameters
    ----------
    cases : sequence of OffsetCase
    estimator : callable or str, optional
        ``(path, max_shift) -> (offset_s, confidence, verdict[, extra dict])``, or its
        ``'module:function'`` spec (resolved in each worker); default :func:`classical_offset`.
        :class:`avsync.errors.CannotMeasure` counts as "cannot tell": a wrong answer with
        confidence 0 (verdict 'cannot measure'); other exceptions likewise, verdict 'error'.
    jobs : int
        Worker processes (spawned; a callable must be importable by name).
    log : callable, optional
        Receives one line per case.

    Returns
    -------
    list of OffsetOutcome, in the order of ``cases``.
    """
    est: Estimator | str = classical_offset if estimator is None else estimator

    def label(x: tuple[OffsetCase, Any], r: tuple[Any, ...]) -> str:
        c = x[0]
        return (f"{c.clip[:50]} {c.kind} truth {c.truth * 1000:+.0f} ms -> {r[0] * 1000:+.0f} ms "
                f"(conf {r[1]:.2f}, {r[2]}) {r[3]:.1f} s")

    raw = _map(_offset_job, [(c, est) for c in cases], jobs, log, label)
    out = []
    for c, (o, conf, v, s, msg, extra) in zip(cases, raw, strict=True):
        err = o - c.truth
        right = v not in ("cannot measure", "error") and abs(err) <= 1.0 / c.fps + 1e-9
        out.append(OffsetOutcome(c, o, conf, v, err, bool(right), s, msg, extra))
    return out


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for ``labels`` (True = positive); ties count
    half. NaN when either class is empty."""
    from scipy.stats import rankdata

    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(s)
    return float((r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


@dataclass
class OffsetRow:
    """Offset metrics of one category (or 'all') for one estimator (or 'do nothing').

    Attributes
    ----------
    category, row : str
    n_shifted : int
        Shifted (grid + uniform) cases.
    within_1f : float
        Share of shifted cases within ±1 frame.
    n_grid : int
    grid_acc1 : float
        Share of grid cases with ``|error| < 0.1 s``.
    n_orig : int
    orig_right : int
        Originals within ±1 frame.
    auroc : float
        Of the confidence, right vs wrong, over all cases (shifted and originals).
    mean_conf : float
    cannot_tell : float
        Share of cases (all) with verdict 'cannot tell' or 'cannot measure'.
    cannot_measure : int
        Cases the estimator raised on (CannotMeasure or another error).
    seconds_per_case : float
    """

    category: str
    row: str
    n_shifted: int = 0
    within_1f: float = float("nan")
    n_grid: int = 0
    grid_acc1: float = float("nan")
    n_orig: int = 0
    orig_right: int = 0
    auroc: float = float("nan")
    mean_conf: float = float("nan")
    cannot_tell: float = float("nan")
    cannot_measure: int = 0
    seconds_per_case: float = float("nan")


def offset_rows(outcomes: Sequence[OffsetOutcome], name: str = "estimator") -> list[OffsetRow]:
    """Per category (in :data:`CATEGORIES` order, then 'all'): the estimator's row and the
    'do nothing' row (offset 0) beside it."""
    rows: list[OffsetRow] = []
    for cat in CATEGORIES:  # "all" last
        oc = [o for o in outcomes if cat == "all" or o.case.category == cat]
        if not oc:
            continue
        sh = [o for o in oc if o.case.kind != "original"]
        gr = [o for o in oc if o.case.kind == "grid"]
        og = [o for o in oc if o.case.kind == "original"]
        r = OffsetRow(cat, name, n_shifted=len(sh), n_grid=len(gr), n_orig=len(og))
        if sh:
            r.within_1f = float(np.mean([o.right for o in sh]))
        if gr:
            r.grid_acc1 = float(np.mean([o.verdict not in ("cannot measure", "error") and abs(o.error) < 0.1 - 1e-9
                                         for o in gr]))
        r.orig_right = int(sum(o.right for o in og))
        r.auroc = auroc(np.array([o.confidence for o in oc]), np.array([o.right for o in oc]))
        r.mean_conf = float(np.mean([o.confidence for o in oc]))
        r.cannot_tell = float(np.mean([o.verdict in ("cannot tell", "cannot measure", "error") for o in oc]))
        r.cannot_measure = int(sum(o.verdict in ("cannot measure", "error") for o in oc))
        r.seconds_per_case = float(np.mean([o.seconds for o in oc]))
        rows.append(r)
        z = OffsetRow(cat, "do nothing", n_shifted=len(sh), n_grid=len(gr), n_orig=len(og))
        if sh:
            z.within_1f = float(np.mean([abs(o.case.truth) <= 1.0 / o.case.fps + 1e-9 for o in sh]))
        if gr:
            z.grid_acc1 = float(np.mean([abs(o.case.truth) < 0.1 - 1e-9 for o in gr]))
        z.orig_right = len(og)
        rows.append(z)
    return rows


def _f(x: float, fmt: str = ".2f") -> str:
    return "—" if x != x else format(x, fmt)


def offset_markdown(rows: Sequence[OffsetRow]) -> str:
    """The offset rows as a markdown table."""
    head = ("| category | row | shifted | ±1 frame | grid | grid Acc@1 | originals ±1 frame | AUROC | "
            "mean conf | cannot tell | cannot measure | s/case |")
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        nothing = r.row == "do nothing"
        lines.append(
            f"| {r.category} | {r.row} | {r.n_shifted} | {_f(r.within_1f)} | {r.n_grid} | {_f(r.grid_acc1)} | "
            f"{r.orig_right}/{r.n_orig} | {'—' if nothing else _f(r.auroc)} | {'—' if nothing else _f(r.mean_conf)} | "
            f"{'—' if nothing else _f(r.cannot_tell)} | {'—' if nothing else r.cannot_measure} | "
            f"{'—' if nothing else _f(r.seconds_per_case, '.1f')} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- align runner

# An aligner: (distorted, reference, sync_by, max_shift) -> (Correspondence, info dict).
Aligner = Callable[[str, str, str, float], tuple[Any, dict[str, Any]]]


def avsync_aligner(distorted: str, reference: str, sync_by: str, max_shift: float,
                   render_output: bool = False, backend: str = "classical",
                   checkpoint: str | None = None) -> tuple[Any, dict[str, Any]]:
    """The default aligner: avsync's align measurement (``sync_by`` as given; ``backend`` and
    ``checkpoint`` as in :class:`avsync.align.AlignOptions`).

    With ``render_output`` it runs :func:`avsync.align.align` end to end (writing the
    re-timed file to a temp folder) and returns its correspondence; otherwise
    :func:`avsync.align.compute_correspondence`, the measurement ``align`` makes before it
    renders (the same correspondence, without the encode).

    Returns
    -------
    corr : avsync.types.Correspondence
    info : dict
        sync_by followed, evidence, note, stage seconds.
    """
    from avsync.align import AlignOptions, align, compute_correspondence

    opts = AlignOptions(sync_by=sync_by, max_shift=max_shift, device="cpu", backend=backend, checkpoint=checkpoint)
    if render_output:
        with tempfile.TemporaryDirectory(prefix="realbench-align-") as tmp:
            r = align(distorted, reference, Path(tmp) / "out.mp4", opts)
        return r.correspondence, {"sync_by": r.sync_by, "evidence": r.evidence, "note": r.note,
                                  "seconds": r.seconds}
    m = compute_correspondence(distorted, reference, opts)
    return m.corr, {"sync_by": m.sync_by, "evidence": m.evidence, "note": m.note, "seconds": m.seconds}


@dataclass(frozen=True)
class BackendAligner:
    """An aligner for any backend: :func:`avsync_aligner` with ``backend`` (and ``checkpoint``)
    in the align options. Picklable, for worker processes."""

    backend: str = "classical"
    checkpoint: str | None = None

    def __call__(self, distorted: str, reference: str, sync_by: str,
                 max_shift: float) -> tuple[Any, dict[str, Any]]:
        return avsync_aligner(distorted, reference, sync_by, max_shift,
                              backend=self.backend, checkpoint=self.checkpoint)


def moving_frames(grid: np.ndarray, n: int) -> np.ndarray:
    """Frames whose content changes: motion energy (row sum of the motion grid) above 10 %
    of its median over frames with any motion (as avsync.evaluation.protocol's protocol (a)).

    Parameters
    ----------
    grid : ndarray (T, G)
        Motion grid of the undistorted picture (``VisualFeatures.grid.values``).
    n : int
        Frames to score.

    Returns
    -------
    ndarray (n,) bool
    """
    from avsync.evaluation.protocol import moving_mask

    return moving_mask(np.asarray(grid, dtype=np.float64), n)


def score_plan(shown: np.ndarray, plan: np.ndarray, n: int, fps: float, moving: np.ndarray) -> dict[str, Any]:
    """Score an alignment as protocol (a) does.

    Parameters
    ----------
    shown : ndarray (K,) int
        Distorted frame shown as output frame k.
    plan : ndarray (M,) int
        Distorted frame m shows original frame plan[m].
    n : int
        Original frames (output frames scored).
    fps : float
    moving : ndarray (n,) bool

    Returns
    -------
    dict
        d (n,) frame errors ``plan[shown[k]] - k``, and on moving frames: afe, itu, acc1,
        n_scored.
    """
    s = np.asarray(shown, dtype=np.int64)[:n]
    if len(s) < n:
        s = np.pad(s, (0, n - len(s)), mode="edge")
    s = np.clip(s, 0, len(plan) - 1)
    d = (np.asarray(plan)[s] - np.arange(n)).astype(np.float64)
    m = moving if moving.any() else np.ones(n, bool)
    dm = d[m]
    return {
        "d": d,
        "afe": float(np.mean(np.abs(dm))),
        "itu": float(np.mean((dm / fps >= -ITU_EARLY - 1e-9) & (dm / fps <= ITU_LATE + 1e-9))),
        "acc1": float(np.mean(np.abs(dm) <= 1)),
        "n_scored": int(m.sum()),
        "itu_hits": int(np.sum((dm / fps >= -ITU_EARLY - 1e-9) & (dm / fps <= ITU_LATE + 1e-9))),
        "acc1_hits": int(np.sum(np.abs(dm) <= 1)),
        "abs_sum": float(np.sum(np.abs(dm))),
    }


@dataclass
class AlignOutcome:
    """One aligner answer on one align case, with the 'none' score beside it.

    Attributes
    ----------
    case : AlignCase
    itu, acc1, afe : float
        Of the alignment, on moving frames.
    none_itu, none_acc1, none_afe : float
        Of the distorted file left as it is.
    n_scored : int
        Moving frames scored.
    sync_by : str
        What the aligner followed ('picture' / 'soundtrack'), 'error' when it failed.
    kept : bool
        The aligner kept the source timing (its evidence check failed).
    seconds : float
    message : str
    hits : dict
        Pooled counts (itu_hits, acc1_hits, abs_sum, and the same for none).
    """

    case: AlignCase
    itu: float
    acc1: float
    afe: float
    none_itu: float
    none_acc1: float
    none_afe: float
    n_scored: int
    sync_by: str
    kept: bool
    seconds: float
    message: str = ""
    hits: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(d.pop("case"))
        return d


def _align_job(args: tuple[AlignCase, Aligner | str | None, float]) -> dict[str, Any]:
    case, aligner, max_shift = args
    from avsync.errors import AvsyncError
    from avsync.features.extract import extract_visual
    from avsync.media import frame_times
    from avsync.render import frame_plan

    plan = np.load(case.plan_path)
    n = case.n_frames
    vref = extract_visual(case.reference, "general")
    moving = moving_frames(np.asarray(vref.grid.values), n)
    none = score_plan(np.minimum(np.arange(n), len(plan) - 1), plan, n, case.fps, moving)
    fn = avsync_aligner if aligner is None else (load_callable(aligner) if isinstance(aligner, str) else aligner)
    sync_by = "picture" if case.kind == "picture" else "soundtrack"
    t0 = time.perf_counter()
    msg = ""
    kept = False
    try:
        corr, info = fn(case.distorted, case.reference, sync_by, max_shift)
        secs = time.perf_counter() - t0
        shown = frame_plan(corr, frame_times(case.distorted))
        got = score_plan(shown, plan, n, case.fps, moving)
        ev = info.get("evidence", {}) or {}
        kept = bool(ev.get("checked") and not ev.get("passed"))
        followed = str(info.get("sync_by", sync_by))
        msg = str(info.get("note", ""))
    except AvsyncError as e:
        secs = time.perf_counter() - t0
        got, followed, msg = none, "error", f"{type(e).__name__}: {e}"
    except Exception as e:  # noqa: BLE001 - recorded, the run goes on
        secs = time.perf_counter() - t0
        got, followed, msg = none, "error", f"{type(e).__name__}: {e}"
    return {"got": {k: v for k, v in got.items() if k != "d"}, "none": {k: v for k, v in none.items() if k != "d"},
            "sync_by": followed, "kept": kept, "seconds": secs, "message": msg}


def run_align(cases: Sequence[AlignCase], aligner: Aligner | str | None = None, *, max_shift: float = 2.0,
              jobs: int = 1, log: Callable[[str], None] | None = None) -> list[AlignOutcome]:
    """Align every case's distorted file to its reference and score it (and 'none').

    Parameters
    ----------
    cases : sequence of AlignCase
    aligner : callable or str, optional
        ``(distorted, reference, sync_by, max_shift) -> (Correspondence, info)`` or its
        ``'module:function'`` spec; default :func:`avsync_aligner`. ``sync_by`` is 'picture'
        for picture cases and 'soundtrack' for camera cases. ``info`` may hold 'sync_by',
        'evidence' (a dict with 'checked' and 'passed') and 'note'. A failure scores as 'none'.
        An aligner with a ``kinds`` attribute (e.g. ``('camera',)`` for an audio-to-audio
        peer) runs only on the cases of those kinds.
    max_shift : float
        Search range, s.
    jobs : int
    log : callable, optional

    Returns
    -------
    list of AlignOutcome, in the order of ``cases`` (of the aligner's kinds).
    """
    def label(x: tuple[AlignCase, Any, float], r: dict[str, Any]) -> str:
        c = x[0]
        return (f"{c.clip[:50]} {c.kind}: ITU {r['got']['itu']:.2f} (none {r['none']['itu']:.2f}) "
                f"AFE {r['got']['afe']:.1f} via {r['sync_by']}{' kept timing' if r['kept'] else ''} "
                f"{r['seconds']:.1f} s")

    kinds = getattr(load_callable(aligner) if isinstance(aligner, str) else aligner, "kinds", None)
    if kinds is not None:
        cases = [c for c in cases if c.kind in kinds]
    raw = _map(_align_job, [(c, aligner, max_shift) for c in cases], jobs, log, label)
    out = []
    for c, r in zip(cases, raw, strict=True):
        g, z = r["got"], r["none"]
        out.append(AlignOutcome(
            c, g["itu"], g["acc1"], g["afe"], z["itu"], z["acc1"], z["afe"], g["n_scored"], r["sync_by"], r["kept"],
            r["seconds"], r["message"],
            {"itu_hits": g["itu_hits"], "acc1_hits": g["acc1_hits"], "abs_sum": g["abs_sum"],
             "none_itu_hits": z["itu_hits"], "none_acc1_hits": z["acc1_hits"], "none_abs_sum": z["abs_sum"]}))
    return out


@dataclass
class AlignRow:
    """Align metrics of one category and one row.

    Attributes
    ----------
    category, row : str
        row: 'picture', 'camera-mic soundtrack' or 'none'.
    n_cases : int
    itu, acc1, afe : float
        Pooled over the moving frames of all cases (as protocol (a)).
    itu_case_mean : float
        Mean of the per-case ITU shares.
    kept : int
        Cases where the evidence check kept the source timing.
    errors : int
    seconds_per_case : float
    """

    category: str
    row: str
    n_cases: int = 0
    itu: float = float("nan")
    acc1: float = float("nan")
    afe: float = float("nan")
    itu_case_mean: float = float("nan")
    kept: int = 0
    errors: int = 0
    seconds_per_case: float = float("nan")


def align_rows(outcomes: Sequence[AlignOutcome]) -> list[AlignRow]:
    """Per category (then 'all'): the picture row, the camera-mic soundtrack row and 'none'
    (the distorted files as they are; the same warp for both kinds of a clip)."""
    rows: list[AlignRow] = []
    for cat in CATEGORIES:  # "all" last
        oc = [o for o in outcomes if cat == "all" or o.case.category == cat]
        if not oc:
            continue
        for kind, name in (("picture", "picture"), ("camera", "camera-mic soundtrack")):
            ok = [o for o in oc if o.case.kind == kind]
            if not ok:
                continue
            n = sum(o.n_scored for o in ok)
            rows.append(AlignRow(cat, name, len(ok), sum(o.hits["itu_hits"] for o in ok) / n,
                                 sum(o.hits["acc1_hits"] for o in ok) / n, sum(o.hits["abs_sum"] for o in ok) / n,
                                 float(np.mean([o.itu for o in ok])), sum(o.kept for o in ok),
                                 sum(o.sync_by == "error" for o in ok), float(np.mean([o.seconds for o in ok]))))
        base = [o for o in oc if o.case.kind == "picture"] or oc
        n = sum(o.n_scored for o in base)
        rows.append(AlignRow(cat, "none", len(base), sum(o.hits["none_itu_hits"] for o in base) / n,
                             sum(o.hits["none_acc1_hits"] for o in base) / n,
                             sum(o.hits["none_abs_sum"] for o in base) / n,
                             float(np.mean([o.none_itu for o in base]))))
    return rows


def align_markdown(rows: Sequence[AlignRow]) -> str:
    """The align rows as a markdown table."""
    lines = ["| category | row | cases | ITU (moving frames) | ITU per-case mean | ±1 frame | AFE (frames) | "
             "kept source timing | errors | s/case |", "|" + "---|" * 10]
    for r in rows:
        nothing = r.row == "none"
        lines.append(f"| {r.category} | {r.row} | {r.n_cases} | {_f(r.itu, '.3f')} | {_f(r.itu_case_mean, '.3f')} | "
                     f"{_f(r.acc1, '.3f')} | {_f(r.afe)} | {'—' if nothing else r.kept} | "
                     f"{'—' if nothing else r.errors} | {'—' if nothing else _f(r.seconds_per_case, '.1f')} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- CLI


def _write_json(path: str | os.PathLike[str], obj: Any) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, default=_json_default)
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return asdict(o)
    raise TypeError(type(o).__name__)


@dataclass
class RealResult:
    """What :func:`run_real` measured.

    Attributes
    ----------
    part : str
    n_clips : int
    offset : dict of str to list of OffsetOutcome
        Per estimator name.
    align : dict of str to list of AlignOutcome
        Per aligner name.
    skipped : list of str
    seconds : float
    """

    part: str
    n_clips: int
    offset: dict[str, list[OffsetOutcome]] = field(default_factory=dict)
    align: dict[str, list[AlignOutcome]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def markdown(self) -> str:
        """The per-category tables (offset rows of every estimator, then align rows)."""
        parts = []
        if self.offset:
            rows: list[OffsetRow] = []
            for name, outs in self.offset.items():
                got = offset_rows(outs, name)
                rows += got if not rows else [r for r in got if r.row != "do nothing"]
            rows.sort(key=lambda r: ([*CATEGORIES].index(r.category), r.row == "do nothing"))
            parts.append(offset_markdown(rows))
        for name, aouts in self.align.items():
            parts.append(f"aligner: {name}\n\n" + align_markdown(align_rows(aouts)))
        return "\n\n".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {"part": self.part, "n_clips": self.n_clips, "skipped": self.skipped, "seconds": self.seconds,
                "offset": {k: [o.to_json() for o in v] for k, v in self.offset.items()},
                "align": {k: [o.to_json() for o in v] for k, v in self.align.items()}}


def run_real(
    media_dir: str | os.PathLike[str] = DEFAULT_MEDIA, *, part: str = "check",
    estimators: dict[str, Estimator | str | None] | None = None,
    aligners: dict[str, Aligner | str | None] | None = None,
    categories: Sequence[str] | None = None, limit: int | None = None, split: str | os.PathLike[str] | None = None,
    cache: str | os.PathLike[str] | None = None, opts: ProtocolOptions = ProtocolOptions(), jobs: int = 1,
    log: Callable[[str], None] | None = None,
) -> RealResult:
    """The real-footage protocol on ``media_dir``: write the cases, run every estimator and aligner.

    Parameters
    ----------
    estimators : dict, optional
        Name -> offset estimator (or its ``'module:function'`` spec; None = avsync classical).
        Empty / None: no offset cases.
    aligners : dict, optional
        Name -> aligner (None = avsync's align). Empty / None: no align cases.
    """
    t0 = time.perf_counter()
    clips = load_clips(media_dir, split, part, categories, limit)
    if not clips:
        from avsync.errors import InputError

        raise InputError(f"no clips of part '{part}' in '{media_dir}'")
    cs = build_cases(clips, cache, opts, offset=bool(estimators), align=bool(aligners), jobs=jobs, log=log)
    res = RealResult(part, len(clips), skipped=cs.skipped)
    for name, est in (estimators or {}).items():
        res.offset[name] = run_offset(cs.offset, est, jobs=jobs, log=log)
    for name, al in (aligners or {}).items():
        res.align[name] = run_align(cs.align, al, max_shift=opts.align_max_shift, jobs=jobs, log=log)
    res.seconds = time.perf_counter() - t0
    return res


def iter_json_cases(path: str | os.PathLike[str]) -> Iterable[dict[str, Any]]:
    """The per-case records of a ``--json`` file."""
    with open(path) as f:
        yield from json.load(f)["cases"]
