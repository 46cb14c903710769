"""The papers' evaluation protocols on any folder of synced clips.

(a) Non-uniform (AlignNet / temporal-autoencoder protocols): each clip's picture is
    distorted by a seeded random monotonic warp — alternately AlignNet-style speed changes
    (0.6×–1.6×, short freezes and skips, a global shift) and temporal-autoencoder-style
    drops/duplicates (≤ 25 frames displacement, ≤ 4 repeats) — and rendered as a real video
    file (no audio). Every backend then aligns that file to the clip's original audio through
    the same path as ``avsync align``; for each output frame k we know which original frame it
    shows, ``orig[k]``, so the error is ``d = orig[k] − k`` frames. Scored on frames with
    moving content (static frames look the same whichever is shown):
      - AFE: average |d| in frames;
      - ITU: fraction of frames with −45 ms ≤ d/fps ≤ +125 ms (showing the picture d frames
        early means the audio lags; ITU-R BT.1359 allows 125 ms of lag and 45 ms of lead);
      - ±1: fraction with |d| ≤ 1;
      - the four frame criteria of the output plan (duplicated, dropped, consecutive, unique).
    The row ``none`` is the distorted video left as it is. The row ``soundtrack`` repeats the
    protocol with the distorted file carrying the clip's own soundtrack played along the same
    warp (varispeed) and aligned by that soundtrack (``--sync-by soundtrack``): audio against
    audio, the case of a video that recorded its own sound.
(b) Global offset: the clip's audio features are shifted against its picture by random
    shifts within ±15 frames (speech protocol) and by every step of the in-the-wild grid
    (−2 s .. +2 s in 0.2 s steps); each backend's offset estimate is scored by accuracy within
    ±1 frame, and on the grid by Acc@1 (the estimate rounded to the nearest grid class).
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from avsync import options as check
from avsync.progress import Progress
from avsync.types import Signal

GRID = tuple(round(x, 1) for x in np.arange(-2.0, 2.0001, 0.2))
PROTOCOLS = ("all", "nonuniform", "offset")  # (a) and (b), (a) only, (b) only


@dataclass(frozen=True)
class BenchOptions:
    seed: int = 0  # everything random derives from this
    nonuniform: bool = True  # run protocol (a)
    # protocol (a) again with the distorted file carrying its own soundtrack, warped with its
    # picture, aligned by that soundtrack (row "soundtrack")
    soundtrack: bool = True
    offset: bool = True  # run protocol (b)
    random_shifts: int = 4  # random ±15-frame shifts per clip in (b)
    max_shift: float = 2.0  # lag search range for align, seconds
    offset_max_shift: float = 2.5  # search range for protocol (b), seconds
    device: str = "cpu"  # auto | cpu | cuda | cuda:N (learned backends)
    work_dir: str | None = None  # where distorted renders are cached (default: cache dir)
    max_clips: int | None = None  # use only the first N clips

    def __post_init__(self) -> None:
        check.whole_within("seed", self.seed, 0)
        check.whole_within("random_shifts", self.random_shifts, 0)
        check.positive("max_shift", self.max_shift)
        check.positive("offset_max_shift", self.offset_max_shift)
        check.device("device", self.device)
        if self.max_clips is not None:
            check.whole_within("max_clips", self.max_clips, 1)

    @staticmethod
    def protocols(name: str) -> dict[str, bool]:
        """The switches of a protocol name (PROTOCOLS): ``{"nonuniform": ..., "offset": ...}``."""
        check.one_of("protocol", name, PROTOCOLS)
        return {"nonuniform": name in ("all", "nonuniform"), "offset": name in ("all", "offset")}


@dataclass
class BackendRow:
    backend: str
    n_clips: int = 0
    afe: float = float("nan")
    itu: float = float("nan")
    acc1: float = float("nan")
    duplicated: int = 0
    dropped: int = 0
    consecutive: int = 0
    unique: int = 0
    offset_acc1f: float = float("nan")
    grid_acc1: float = float("nan")
    s_per_min: float = float("nan")
    s_per_min_offset: float = float("nan")
    errors: list[str] = field(default_factory=list)


@dataclass
class BenchResult:
    data_dir: str
    n_clips: int
    options: dict[str, Any]
    protocol: str
    rows: list[BackendRow]
    features_s_per_min: float

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        return d


SOUNDTRACK_TEXT = " (row soundtrack: the file also carries its own soundtrack, warped with it, and is aligned by it)"


def protocol_text(opts: BenchOptions) -> str:
    return (
        f"seed {opts.seed}; (a) non-uniform: per clip a random monotonic warp, alternating AlignNet-style "
        f"speed changes 0.6x-1.6x with freezes/skips/global shift (|displacement| <= 1 s) and TAE-style "
        f"drops/duplicates (<= 25 frames displacement, <= 4 repeats), rendered to a real file and aligned "
        f"with max_shift {opts.max_shift} s; scored on moving frames"
        f"{SOUNDTRACK_TEXT if opts.soundtrack else ''}. (b) offset: {opts.random_shifts} random "
        f"shifts within +-15 frames per clip and the grid -2..+2 s step 0.2 s, search +-{opts.offset_max_shift} s."
    )


def split_backend(spec: str) -> tuple[str, str | None]:
    """'alignnet' → ('alignnet', None); 'alignnet:my.pt' → ('alignnet', 'my.pt') — a backend with
    a checkpoint of your own (a registry name or a path)."""
    name, _, ckpt = spec.partition(":")
    return name, (ckpt or None)


def list_clips(data_dir: str | os.PathLike[str]) -> list[Path]:
    exts = {".mp4", ".mkv", ".mov", ".avi", ".webm"}
    return sorted(p for p in Path(data_dir).rglob("*") if p.suffix.lower() in exts and not p.name.startswith("."))


def shift_audio(afeat: Any, seconds: float) -> Any:
    """Audio features of the same clip with its audio made to lead the picture by ``seconds``.

    ``a'(t) = a(t + seconds)``; samples past the ends take the signal's minimum (silence).
    """

    def sh(sig: Signal) -> Signal:
        t = sig.times
        src = t + seconds
        out = np.empty_like(sig.values, dtype=np.float32)
        lo = sig.values.min(axis=0)
        for d in range(sig.values.shape[1]):
            out[:, d] = np.interp(src, t, sig.values[:, d], left=lo[d], right=lo[d])
        return Signal(out, sig.rate, sig.start)

    return replace(afeat, onset=sh(afeat.onset), speech=sh(afeat.speech), logmel=sh(afeat.logmel))


def moving_mask(grid: np.ndarray, n: int) -> np.ndarray:
    """Frames whose content changes: motion energy (row sum of the motion ``grid``, summed in its
    own dtype) above 10% of its median over moving frames; edge-padded to ``n`` frames."""
    e = np.asarray(grid).sum(axis=1)[:n]
    if len(e) < n:
        e = np.pad(e, (0, n - len(e)), mode="edge")
    nz = e[e > 1e-6]
    if len(nz) == 0:
        return np.zeros(n, bool)
    return e > 0.1 * np.median(nz)


def render_distorted(clip: str | os.PathLike[str], plan: np.ndarray, fps: float, out: str | os.PathLike[str],
                     soundtrack: bool = False, crf: int = 20, preset: str = "ultrafast") -> None:
    """Write ``clip``'s picture re-timed by ``plan`` (frame m shows original frame plan[m]).

    Without ``soundtrack`` the file has no audio; with it, it carries the clip's own audio
    played along the same plan (varispeed, :func:`avsync.soundtrack.warp_audio`), as a
    recording whose clock wandered would.
    """
    import tempfile

    from scipy.io import wavfile

    from avsync.media import load_audio
    from avsync.render import render
    from avsync.soundtrack import warp_audio

    if not soundtrack:
        render(clip, plan, fps, out, audio_path=None, crf=crf, preset=preset, overwrite=True)
        return
    sr = 44100
    y = warp_audio(load_audio(clip, sr=sr), sr, plan, fps)
    with tempfile.TemporaryDirectory(prefix="avsync-distort-") as tmp:
        wav = Path(tmp) / "soundtrack.wav"
        wavfile.write(wav, sr, (np.clip(y, -1.0, 1.0) * 32767).astype(np.int16))
        render(clip, plan, fps, out, audio_path=wav, crf=crf, preset=preset, overwrite=True)


def _distorted(clip: Path, idx: int, n: int, fps: float, seed: int, work: Path,
               soundtrack: bool = False) -> tuple[Path, np.ndarray]:
    from avsync.warps import random_warp, tae_warp

    rng = np.random.default_rng([seed, idx])
    plan = random_warp(n, fps, rng) if idx % 2 == 0 else tae_warp(n, rng)
    plan = np.asarray(plan, dtype=np.int64)
    key = hashlib.sha256(f"{clip.resolve()}|{clip.stat().st_size}|{seed}|{idx}".encode()).hexdigest()[:16]
    out = work / f"{clip.stem}_{key}{'_st' if soundtrack else ''}.mp4"
    if not out.exists():
        render_distorted(clip, plan, fps, out, soundtrack=soundtrack)
    return out, plan


# Per backend row, per metric, the values gathered over the clips (see _row).
Tally = dict[str, dict[str, list[Any]]]


class _Clip(NamedTuple):
    """One synced clip and what every protocol needs of it."""

    path: Path
    index: int
    afeat: Any  # AudioFeatures of its own audio
    vfeat: Any  # VisualFeatures of its picture (auto mode)
    fps: float
    n: int  # frames
    minutes: float
    moving: np.ndarray  # (n,) bool: frames whose content changes


def _add(acc: Tally, b: str, key: str, value: Any) -> None:
    acc[b].setdefault(key, []).append(value)


def run_bench(
    data_dir: str | os.PathLike[str],
    backends: list[str],
    opts: BenchOptions = BenchOptions(),
    progress: Progress | None = None,
) -> BenchResult:
    """Run protocols (a) and (b) for every backend on every clip of ``data_dir``."""
    from avsync.backends import get_backend

    clips = _bench_clips(data_dir, opts)
    work = _work_dir(opts)
    names = _row_names(backends, opts)
    models = {b: get_backend(split_backend(b)[0], device=opts.device, checkpoint=split_backend(b)[1])
              for b in backends}
    acc: Tally = {b: {} for b in names}
    feat_time, total_minutes = 0.0, 0.0
    for ci, path in enumerate(clips):
        if progress:
            progress("bench", ci, len(clips))
        t0 = time.perf_counter()
        clip = _load_clip(path, ci, names, acc)
        if clip is None:
            continue
        feat_time += time.perf_counter() - t0
        total_minutes += clip.minutes
        if opts.nonuniform:
            _nonuniform(clip, names, work, opts, acc)
        if opts.offset:
            _offsets(clip, backends, models, opts, acc)
    if progress:
        progress("bench", len(clips), len(clips))
    return BenchResult(
        data_dir=str(data_dir), n_clips=len(clips), options=asdict(opts), protocol=protocol_text(opts),
        rows=[_row(b, acc[b], len(clips)) for b in names], features_s_per_min=feat_time / max(1e-9, total_minutes),
    )


def _bench_clips(data_dir: str | os.PathLike[str], opts: BenchOptions) -> list[Path]:
    from avsync.errors import InputError

    clips = list_clips(data_dir)
    if opts.max_clips:
        clips = clips[: opts.max_clips]
    if not clips:
        raise InputError(f"no video clips found in '{data_dir}'")
    return clips


def _work_dir(opts: BenchOptions) -> Path:
    from avsync.cache import cache_dir

    work = Path(opts.work_dir) if opts.work_dir else cache_dir() / "bench"
    work.mkdir(parents=True, exist_ok=True)
    return work


def _row_names(backends: list[str], opts: BenchOptions) -> list[str]:
    """The table's rows: ``none`` (the distortion left as is) and ``soundtrack`` around the backends."""
    names = ["none", *backends] if opts.nonuniform else list(backends)
    if opts.nonuniform and opts.soundtrack:
        names.append("soundtrack")
    return names


def _load_clip(path: Path, index: int, names: list[str], acc: Tally) -> _Clip | None:
    """The clip's features; None (and a note on every row) when it is not a usable synced clip."""
    from avsync.errors import AvsyncError
    from avsync.features.extract import extract_audio, extract_visual

    try:
        afeat = extract_audio(path)
        vfeat = extract_visual(path, "auto")
    except AvsyncError as e:  # not a usable synced clip: say so on every row, go on
        for b in names:
            acc[b].setdefault("errors", []).append(f"{path.name}: skipped: {e}")
        return None
    fps = float(vfeat.fps)
    n = len(vfeat.frame_times)
    return _Clip(path, index, afeat, vfeat, fps, n, n / fps / 60, moving_mask(vfeat.grid.values, n))


def _nonuniform(clip: _Clip, names: list[str], work: Path, opts: BenchOptions, acc: Tally) -> None:
    """Protocol (a) on one clip: distort its picture, align it back with every row, score the frames."""
    from avsync.errors import AvsyncError
    from avsync.media import frame_times

    dist, plan = _distorted(clip.path, clip.index, clip.n, clip.fps, opts.seed, work)
    dtimes = frame_times(dist)
    for b in names:
        try:
            shown = _shown_frames(b, clip, dist, dtimes, plan, work, opts, acc)
            _score_frames(b, shown, plan, clip, acc)
        except AvsyncError as e:
            acc[b].setdefault("errors", []).append(f"{clip.path.name}: {e}")


def _shown_frames(b: str, clip: _Clip, dist: Path, dtimes: np.ndarray, plan: np.ndarray, work: Path,
                  opts: BenchOptions, acc: Tally) -> np.ndarray:
    """For every output frame of row ``b``'s alignment, the distorted frame it shows (n,)."""
    from avsync.align import AlignOptions, compute_correspondence
    from avsync.render import frame_plan

    n = clip.n
    if b == "none":
        return np.minimum(np.arange(n), len(plan) - 1)
    if b == "soundtrack":
        dist_st, _ = _distorted(clip.path, clip.index, n, clip.fps, opts.seed, work, soundtrack=True)
        m = compute_correspondence(dist_st, clip.path, AlignOptions(
            sync_by="soundtrack", max_shift=opts.max_shift, device=opts.device))
        _add(acc, b, "sec", m.seconds.get("soundtrack", 0) + m.seconds.get("path", 0))
    else:
        name, ckpt = split_backend(b)
        m = compute_correspondence(dist, clip.path, AlignOptions(
            backend=name, checkpoint=ckpt, max_shift=opts.max_shift, device=opts.device, sync_by="picture"))
        _add(acc, b, "sec", m.seconds.get("backend", 0) + m.seconds.get("path", 0))
    _add(acc, b, "min", clip.minutes)
    shown = frame_plan(m.corr, dtimes)[:n]
    return np.pad(shown, (0, n - len(shown)), mode="edge") if len(shown) < n else shown


def _score_frames(b: str, shown: np.ndarray, plan: np.ndarray, clip: _Clip, acc: Tally) -> None:
    """AFE, ITU and ±1 frame on the moving frames, and the output plan's frame criteria."""
    from avsync.render import plan_stats

    n, fps = clip.n, clip.fps
    orig = plan[shown]
    d = (orig - np.arange(n)).astype(float)
    m = clip.moving if clip.moving.any() else np.ones(n, bool)
    _add(acc, b, "abs", np.abs(d[m]))
    _add(acc, b, "itu", ((d[m] / fps >= -0.045 - 1e-9) & (d[m] / fps <= 0.125 + 1e-9)))
    _add(acc, b, "acc1", np.abs(d[m]) <= 1)
    st = plan_stats(orig, n).to_dict()
    for key in ("duplicated", "dropped", "consecutive", "unique"):
        _add(acc, b, key, st[key])


def _offsets(clip: _Clip, backends: list[str], models: dict[str, Any], opts: BenchOptions, acc: Tally) -> None:
    """Protocol (b) on one clip: the audio shifted by random and grid offsets, every backend's estimate."""
    from avsync.errors import AvsyncError

    fps = clip.fps
    rng = np.random.default_rng([opts.seed, clip.index, 7])
    rand = rng.integers(-15, 16, size=opts.random_shifts) / fps
    for b in backends:
        try:
            t2 = time.perf_counter()
            for s in rand:
                o = models[b].offset(shift_audio(clip.afeat, float(s)), clip.vfeat, opts.offset_max_shift)
                _add(acc, b, "off1f", abs(o.seconds - s) <= 1.0 / fps + 1e-9)
            for s in GRID:
                o = models[b].offset(shift_audio(clip.afeat, float(s)), clip.vfeat, opts.offset_max_shift)
                pred = round(round(o.seconds / 0.2) * 0.2, 1)
                _add(acc, b, "grid", abs(pred - s) < 1e-6)
            _add(acc, b, "osec", time.perf_counter() - t2)
            _add(acc, b, "omin", clip.minutes * (len(rand) + len(GRID)))
        except AvsyncError as e:
            acc[b].setdefault("errors", []).append(f"{clip.path.name}: {e}")


def _row(b: str, a: dict[str, list[Any]], n_clips: int) -> BackendRow:
    """One table row from the values gathered for backend ``b``."""
    r = BackendRow(backend=b, n_clips=n_clips)

    def cat(key: str) -> np.ndarray:
        v = a.get(key, [])
        return np.concatenate([np.atleast_1d(x) for x in v]) if v else np.array([])

    if a.get("abs"):
        r.afe = float(cat("abs").mean())
        r.itu = float(cat("itu").mean())
        r.acc1 = float(cat("acc1").mean())
        for key in ("duplicated", "dropped", "consecutive", "unique"):
            setattr(r, key, int(np.sum(a[key])))
    if a.get("off1f"):
        r.offset_acc1f = float(cat("off1f").mean())
        r.grid_acc1 = float(cat("grid").mean())
        r.s_per_min_offset = float(np.sum(a["osec"]) / max(1e-9, np.sum(a["omin"])))
    if a.get("sec"):
        r.s_per_min = float(np.sum(a["sec"]) / max(1e-9, np.sum(a["min"])))
    r.errors = list(a.get("errors", []))
    return r


def markdown_table(res: BenchResult) -> str:
    head = ("| backend | AFE (frames) ↓ | ITU acc ↑ | ±1 frame ↑ | dup | del | cons | uniq | "
            "offset ±1 frame ↑ | grid Acc@1 ↑ | s/min align ↓ | s/min offset ↓ |")
    lines = [head, "|" + "---|" * 12]
    for r in res.rows:
        def f(x: float, p: str = ".3f") -> str:
            return "—" if x != x else format(x, p)

        dup = (r.duplicated, r.dropped, r.consecutive, r.unique) if r.afe == r.afe else ("—",) * 4
        lines.append(
            f"| {r.backend} | {f(r.afe, '.2f')} | {f(r.itu)} | {f(r.acc1)} | {dup[0]} | {dup[1]} | {dup[2]} | "
            f"{dup[3]} | {f(r.offset_acc1f)} | {f(r.grid_acc1)} | {f(r.s_per_min, '.2f')} | "
            f"{f(r.s_per_min_offset, '.2f')} |"
        )
    return "\n".join(lines)
