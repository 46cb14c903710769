"""SyncNet (Chung & Zisserman, "Out of time: automated lip sync in the wild", ACCV-W 2016)
and its dynamic-temporal-alignment use (Halperin, Ephrat & Peleg, "Dynamic temporal
alignment of speech to lips", ICASSP 2019).

Two streams map a short picture window and the matching 0.2 s of sound to embeddings that
are close when the two are in step and far apart otherwise (contrastive loss on matching
and shifted pairs).

Inputs (both per video frame, on the video clock)
    picture: 5 frames of the 8×8 motion grid (``input_kind='motion'``, any footage) or of
    lip keypoint vertical velocities (``'lips'``); audio: 4 sub-frame rows of a 32-band
    log-mel per video frame (128 mel bins averaged in groups of 4), so a 5-frame window
    carries 20 rows ≈ 0.2 s at 24–25 fps, like SyncNet's 20 MFCC steps.

``syncnet``
    ``offset``: for every shift s in [−max_shift, +max_shift] (frame steps) the mean distance
    between the picture embedding of frame i + s and the audio embedding of frame i; the
    offset is the argmin (parabolic sub-frame refinement). LSE-D = that minimum mean
    distance, LSE-C = median − minimum (the figures of Prajwal et al.); confidence =
    LSE-C / (LSE-C + c50) with ``c50`` stored in the checkpoint (the LSE-C at which we are
    50 % sure). Per-frame confidence = median − distance at the chosen shift per frame,
    smoothed. ``affinity``: minus the distance, per (audio frame, lag), averaged over a few
    rows along each lag.

``syncnet-dtw``
    The same embeddings; dynamic time warping (:func:`avsync.path.banded_dtw`, open begin
    and end) through the banded distance matrix gives one picture frame per audio frame;
    the Affinity is a Gaussian ridge along that path, weighted by the per-row distance
    margin, so ``align`` follows the DTW path under its speed limits.

This module also holds the input helpers shared with :mod:`avsync.backends.avmatch` and
:mod:`avsync.backends.wlos`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from avsync.backends import BackendInfo, register
from avsync.errors import CannotMeasure, InputError
from avsync.features import AudioFeatures, VisualFeatures
from avsync.train import Batch, register_trainable
from avsync.types import Affinity, Offset, Signal

SUB = 4  # audio rows per video frame (≈ 100 Hz at 25 fps)
N_BANDS = 32  # log-mel bands after averaging the 128 bins in groups of 4
GRID_SIDE = 8  # motion grid cells per side (features.motion.GRID)
DEFAULT_CHECKPOINT = {"motion": "syncnet-motion", "lips": "syncnet-lips"}

# ----------------------------------------------------------------------------------------
# Shared input helpers (also used by avmatch and wlos)


def n_frames(audio: AudioFeatures, fps: float) -> int:
    """Number of audio rows on the video clock: ``round(duration × fps)``, at least 1."""
    return max(1, int(round(float(audio.duration) * fps)))


def logmel_subframes(audio: AudioFeatures, fps: float, n: int, sub: int = SUB) -> np.ndarray:
    """The 128-bin log-mel on a grid of ``sub`` rows per video frame.

    Row ``r`` is the log-mel at time ``r / (sub × fps)`` (linear interpolation of the 100 Hz
    track, ends held), so video frame ``k`` owns rows ``k·sub … k·sub + sub − 1``.

    Returns
    -------
    ndarray, shape (n * sub, 128), float32
    """
    lm = audio.logmel
    x = np.asarray(lm.values, dtype=np.float32)
    t_new = np.arange(n * sub) / (sub * fps)
    t_old = lm.start + np.arange(len(x)) / lm.rate
    idx = np.interp(t_new, t_old, np.arange(len(x), dtype=np.float64))
    i0 = np.clip(np.floor(idx).astype(np.int64), 0, len(x) - 1)
    i1 = np.minimum(i0 + 1, len(x) - 1)
    w = (idx - i0).astype(np.float32)[:, None]
    return x[i0] * (1 - w) + x[i1] * w


def _cmvn(x: np.ndarray) -> np.ndarray:
    """Per-column mean removal and one global scale (float32)."""
    x = x - x.mean(axis=0, keepdims=True)
    return (x / max(float(x.std()), 1e-4)).astype(np.float32)


def audio_frames(audio: AudioFeatures, fps: float, n: int | None = None) -> np.ndarray:
    """SyncNet / avmatch audio input per video frame.

    Returns
    -------
    ndarray, shape (N, SUB * N_BANDS), float32
        Row ``k`` = the ``SUB`` sub-frame rows of frame ``k``, each 32 bands (mean of 4 mel
        bins), per-band mean removed and globally scaled to unit variance.
    """
    n = n_frames(audio, fps) if n is None else int(n)
    lm = logmel_subframes(audio, fps, n)
    bands = lm.reshape(len(lm), N_BANDS, -1).mean(axis=2)
    return _cmvn(bands).reshape(n, SUB * N_BANDS)


def mfcc_frames(audio: AudioFeatures, fps: float, n: int | None = None, n_mfcc: int = 12) -> np.ndarray:
    """MFCCs from the log-mel (DCT-II, orthonormal, coefficients 1 … n_mfcc) per video frame.

    Returns
    -------
    ndarray, shape (N, SUB * n_mfcc), float32
        Row ``k`` = the ``SUB`` sub-frame MFCC vectors of frame ``k``, cepstral mean and
        variance normalised over the input.
    """
    from scipy.fft import dct

    n = n_frames(audio, fps) if n is None else int(n)
    lm = logmel_subframes(audio, fps, n)
    c = dct(lm.astype(np.float64), type=2, norm="ortho", axis=1)[:, 1 : n_mfcc + 1]
    c = c - c.mean(axis=0, keepdims=True)
    c = c / np.maximum(c.std(axis=0, keepdims=True), 1e-4)
    return c.astype(np.float32).reshape(n, SUB * n_mfcc)


def visual_frames(visual: VisualFeatures, kind: str) -> np.ndarray | None:
    """Raw per-frame picture input: motion grid energies (N, 64) for ``'motion'``; lip
    keypoint y coordinates (N, K) for ``'lips'`` (None when no face was tracked).

    The motion grid is a frame-difference quantity (warped by summation in training); lip
    y positions are states (warped by indexing); :func:`visual_input` turns either into the
    network input.
    """
    if kind == "motion":
        return np.asarray(visual.grid.values, dtype=np.float32)
    if kind == "lips":
        if visual.keypoints is None or visual.kind != "lips":
            return None
        kp = np.asarray(visual.keypoints.values, dtype=np.float32)
        return kp[:, 1::2].copy()
    raise InputError(f"unknown picture input kind '{kind}' (motion | lips)")


def visual_input(raw: np.ndarray, kind: str) -> np.ndarray:
    """Network picture input from a raw sequence (a whole clip or a training window).

    motion: ``log1p(energy / mean energy)``; lips: vertical velocity of every lip point
    divided by its robust scale (the "vertical optical flow of the lip region" of WLOS,
    from keypoints since we have no mouth crops).

    Returns
    -------
    ndarray, shape (N, D), float32
    """
    raw = np.asarray(raw, dtype=np.float32)
    if kind == "motion":
        scale = float(np.mean(np.maximum(raw, 0))) + 1e-6
        return np.log1p(np.maximum(raw, 0) / scale).astype(np.float32)
    v = np.diff(raw, axis=0, prepend=raw[:1])
    s = float(np.median(np.abs(v))) * 1.4826 + 1e-6
    return np.clip(v / s, -10, 10).astype(np.float32)


def windows(x: np.ndarray, width: int, centre: np.ndarray | None = None) -> np.ndarray:
    """Windows of ``width`` rows around each centre (zero rows outside the sequence).

    Window of centre ``k`` = rows ``k − width // 2 … k − width // 2 + width − 1``.

    Parameters
    ----------
    x : ndarray, shape (N, D)
    width : int
    centre : ndarray of int, shape (M,), optional
        Default: every row.

    Returns
    -------
    ndarray, shape (M, width, D)
    """
    n, d = x.shape
    centre = np.arange(n) if centre is None else np.asarray(centre, dtype=np.int64)
    lo = width // 2
    pad = np.zeros((n + 2 * width, d), dtype=x.dtype)
    pad[width : width + n] = x
    idx = centre[:, None] - lo + np.arange(width)[None, :] + width
    idx = np.clip(idx, 0, len(pad) - 1)
    return pad[idx]


def lag_bins(max_shift: float, fps: float) -> int:
    """Half-width ``n`` of the lag grid ``k / fps, k = −n … n`` covering ±max_shift s."""
    if max_shift <= 0:
        raise InputError(f"max_shift must be positive, got {max_shift}")
    return max(1, int(math.ceil(max_shift * fps - 1e-9)))


def band_table(a: np.ndarray, v: np.ndarray, n: int, fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
    """Pairwise scores in a band: ``out[i, j] = fn(a[i], v[i + j − n])``.

    Parameters
    ----------
    a : ndarray, shape (Na, E)
        One row per audio frame.
    v : ndarray, shape (Nv, E)
        One row per picture frame.
    n : int
        Lag half-width in frames.
    fn : callable
        ``fn(A, V)`` with A, V of shape (M, E) → (M,).

    Returns
    -------
    ndarray, shape (Na, 2n + 1), float64
        NaN where the picture frame is outside the video.
    """
    na, nv = len(a), len(v)
    out = np.full((na, 2 * n + 1), np.nan)
    for j, s in enumerate(range(-n, n + 1)):
        i0, i1 = max(0, -s), min(na, nv - s)
        if i1 > i0:
            out[i0:i1, j] = fn(a[i0:i1], v[i0 + s : i1 + s])
    return out


def parabolic(y: np.ndarray, k: int) -> float:
    """Sub-bin position of the extremum at ``k`` from a parabola through y[k−1 … k+1]."""
    if k <= 0 or k >= len(y) - 1 or not np.all(np.isfinite(y[k - 1 : k + 2])):
        return 0.0
    den = y[k - 1] - 2 * y[k] + y[k + 1]
    if abs(den) < 1e-12:
        return 0.0
    return float(np.clip(0.5 * (y[k - 1] - y[k + 1]) / den, -0.5, 0.5))


def nanmean_cols(t: np.ndarray, min_rows: int) -> np.ndarray:
    """Column means over finite entries; NaN for columns with fewer than ``min_rows``."""
    ok = np.isfinite(t)
    cnt = ok.sum(axis=0)
    s = np.where(ok, t, 0.0).sum(axis=0)
    return np.where(cnt >= max(1, min_rows), s / np.maximum(cnt, 1), np.nan)


def smooth_rows(t: np.ndarray, width: int) -> np.ndarray:
    """NaN-aware moving average down each column (same lag), ``width`` rows."""
    if width <= 1:
        return t
    from scipy.ndimage import uniform_filter1d

    ok = np.isfinite(t).astype(np.float64)
    num = uniform_filter1d(np.where(ok > 0, t, 0.0), width, axis=0, mode="nearest")
    den = uniform_filter1d(ok, width, axis=0, mode="nearest")
    return np.where(ok > 0, num / np.maximum(den, 1e-9), np.nan)


def dtw_lag_path(cost: np.ndarray) -> np.ndarray:
    """Halperin-style DTW through a banded cost table; the lag bin per row.

    Cell ``(i, j)`` of ``cost`` pairs audio frame ``i`` with picture frame ``q = i + j − n``;
    in (audio, picture) coordinates the band starts at column ``i`` of a ``Na × (Na + L − 1)``
    matrix. Steps (1, 0), (0, 1), (1, 1), open begin and end; NaN cells (outside the video)
    cost the table's maximum.

    Parameters
    ----------
    cost : ndarray, shape (Na, L)
        Non-negative costs (lower = better match).

    Returns
    -------
    ndarray of float64, shape (Na,)
        Lag bin index (0 … L−1, fractional where the path moves horizontally) per row.
    """
    from avsync.path import banded_dtw

    c = np.asarray(cost, dtype=np.float64)
    na, nl = c.shape
    fin = c[np.isfinite(c)]
    if fin.size == 0:
        raise CannotMeasure("no overlap between picture and sound to align")
    fill = float(fin.max())
    c = np.where(np.isfinite(c), c, fill)
    c = c - float(c.min())
    pi, pq, _ = banded_dtw(c, np.arange(na), na + nl - 1, open_begin=True, open_end=True)
    counts = np.bincount(pi, minlength=na)
    q_mean = np.bincount(pi, weights=pq, minlength=na) / np.maximum(counts, 1)
    return np.clip(q_mean - np.arange(na), 0, nl - 1)


def ridge_affinity(
    lag_bin: np.ndarray, weight: np.ndarray, n: int, fps: float, sigma: float = 1.5
) -> Affinity:
    """An Affinity that is a Gaussian ridge along a lag path.

    ``scores[i, j] = weight[i] · exp(−(j − lag_bin[i])² / (2 σ²))``.

    Parameters
    ----------
    lag_bin : ndarray, shape (Na,)
        Lag bin (0 … 2n) per row, may be fractional.
    weight : ndarray, shape (Na,)
        Per-row confidence in [0, 1] (rows near 0 leave the DP free to interpolate).
    n : int
        Lag half-width; lags = (−n … n) / fps.
    fps : float
    sigma : float
        Ridge width, lag bins.
    """
    j = np.arange(2 * n + 1)[None, :]
    sc = np.asarray(weight, dtype=np.float64)[:, None] * np.exp(
        -((j - np.asarray(lag_bin, dtype=np.float64)[:, None]) ** 2) / (2 * sigma**2)
    )
    return Affinity(scores=sc, lags=np.arange(-n, n + 1) / fps, rate=float(fps), start=0.0)


def row_margin(t: np.ndarray, j: np.ndarray, lower_better: bool = True) -> np.ndarray:
    """Per-row confidence of choosing column ``j[i]``: ``(median − t[i, j]) / (median − min)``
    (for costs; mirrored for scores), in [0, 1]; 0 for rows without finite entries."""
    s = -t if lower_better else t
    ok = np.isfinite(s).any(axis=1)
    out = np.zeros(len(s))
    if not ok.any():
        return out
    ss = s[ok]
    med = np.nanmedian(ss, axis=1)
    top = np.nanmax(ss, axis=1)
    jj = np.clip(np.round(j[ok]).astype(np.int64), 0, s.shape[1] - 1)
    pick = ss[np.arange(len(ss)), jj]
    pick = np.where(np.isfinite(pick), pick, med)
    out[ok] = np.clip((pick - med) / np.maximum(top - med, 1e-12), 0.0, 1.0)
    return out


def dims_from_dict(cls: type, d: dict[str, Any]) -> Any:
    """Rebuild a frozen dims dataclass from plain checkpoint values (lists → tuples)."""
    known = {f.name for f in fields(cls)}
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in known}
    return cls(**kw)


def load_net(
    backend: str, checkpoint: str | None, device: str, dims_cls: type, make: Callable[[Any], Any],
    tiny: Any, default: str,
) -> tuple[Any, Any, dict[str, Any], str]:
    """Build a network from a checkpoint name/path, or the seeded tiny test model.

    Returns
    -------
    (model in eval mode, dims, checkpoint metrics, resolved device)
    """
    from avsync.device import resolve_device
    from avsync.hub import build_model

    dev = resolve_device(device)
    model, dims, ck = build_model(checkpoint, backend=backend, default=default, make=make, tiny_dims=tiny,
                                  device=dev, parse_dims=lambda d: dims_from_dict(dims_cls, d))
    return model, dims, dict(ck.get("metrics") or {}), dev


def embed_chunks(fn: Callable[[Any], Any], x: np.ndarray, device: str, chunk: int = 512) -> np.ndarray:
    """Apply ``fn`` (a torch module call) to ``x`` in chunks under ``no_grad``; numpy out."""
    import torch

    outs = []
    with torch.no_grad():
        for s in range(0, len(x), chunk):
            outs.append(fn(torch.from_numpy(np.ascontiguousarray(x[s : s + chunk])).to(device)).cpu().numpy())
    return np.concatenate(outs, axis=0) if outs else np.zeros((0, 1), np.float32)


def prepare_clip(audio: AudioFeatures, visual: VisualFeatures, name: str, kind: str, audio_fn: Callable) -> Any:
    """Reduce a clip to :class:`avsync.train.data.ClipArrays` (per-frame audio + raw picture)."""
    from avsync.train.data import ClipArrays

    raw = visual_frames(visual, kind)
    if raw is None or len(raw) < 8:
        return None
    fps = float(visual.fps)
    n = min(len(raw), n_frames(audio, fps))
    a = audio_fn(audio, fps, n)
    return ClipArrays(name, a[:n], raw[:n], fps, visual_is_diff=kind == "motion")


def augment_window(
    aud: np.ndarray, vis_raw: np.ndarray, kind: str, rng: np.random.Generator, augment: dict | None, bands: int
) -> tuple[np.ndarray, np.ndarray]:
    """The papers' augmentations on one sample window: horizontal flip of the motion grid
    (lip y-velocities are flip-invariant), SpecAugment on the (T·SUB, bands) audio rows."""
    from avsync.train.augment import hflip_grid, spec_augment

    if augment and augment.get("flip") and kind == "motion" and rng.random() < 0.5:
        vis_raw = hflip_grid(vis_raw)
    if augment and augment.get("spec"):
        t = len(aud)
        rows = spec_augment(aud.reshape(t * SUB, bands), rng, max_time=0.05, max_freq=max(1, bands // 8), fill=0.0)
        aud = rows.reshape(t, SUB * bands)
    return aud, vis_raw


def pick_pairs(
    targets: list[np.ndarray], rng: np.random.Generator, per_sample: int, margin: int,
    shift_fn: Callable[[np.random.Generator, int], np.ndarray],
) -> list[tuple[int, int, int, int]]:
    """Draw (sample, picture frame k, audio centre i, shift d) with ``i = target[k] + d``.

    ``margin`` keeps windows inside the sample; ``shift_fn(rng, m)`` draws m shifts.
    """
    out = []
    for b, tg in enumerate(targets):
        t = len(tg)
        if t <= 2 * margin:
            continue
        ks = rng.integers(margin, t - margin, size=per_sample * 3)
        ds = shift_fn(rng, len(ks))
        got = 0
        for k, d in zip(ks, ds, strict=True):
            i = int(round(float(tg[k]))) + int(d)
            if margin <= i < t - margin:
                out.append((b, int(k), i, int(d)))
                got += 1
                if got == per_sample:
                    break
    return out


def shift_scan_error(
    score: Callable[[int, np.ndarray, np.ndarray], np.ndarray], targets: np.ndarray, max_s: int, lower_better: bool,
) -> dict[str, float]:
    """The SyncNet offset protocol on distorted validation windows.

    For each window b and shift s in [−max_s, max_s], the mean over picture frames k of
    ``score(b, k, target[k] + s)``; the window's estimate ŝ is the best shift (0 is right).

    Returns
    -------
    dict
        ``error`` = mean |ŝ| (frames), ``acc1`` = share with |ŝ| ≤ 1, ``acc0`` = share with ŝ = 0.
    """
    est = []
    for b in range(targets.shape[0]):
        tg = np.round(targets[b]).astype(np.int64)
        t = len(tg)
        means = []
        for s in range(-max_s, max_s + 1):
            i = tg + s
            ok = (i >= 0) & (i < t)
            k = np.nonzero(ok)[0]
            means.append(float(np.mean(score(b, k, i[ok]))) if len(k) >= 4 else np.nan)
        m = np.array(means)
        if not np.isfinite(m).any():
            continue
        j = int(np.nanargmin(m) if lower_better else np.nanargmax(m))
        est.append(j - max_s)
    e = np.abs(np.array(est, dtype=np.float64))
    if e.size == 0:
        return {"error": float(max_s), "acc1": 0.0, "acc0": 0.0}
    return {"error": float(e.mean()), "acc1": float((e <= 1).mean()), "acc0": float((e == 0).mean())}


# ----------------------------------------------------------------------------------------
# The network


@dataclass(frozen=True)
class SyncNetDims:
    """Everything needed to rebuild a :class:`SyncNetModel` (stored in its checkpoint)."""

    input_kind: str = "motion"  # motion (8×8 grid) | lips (lip keypoint y velocities)
    visual_in: int = 64  # picture values per frame
    bands: int = N_BANDS  # audio bands per sub-frame row
    sub: int = SUB  # audio rows per video frame
    frames: int = 5  # picture window (frames); the audio window is frames × sub rows
    channels: tuple[int, ...] = (16, 32, 64)  # conv widths of both streams
    fc: int = 128  # hidden fully connected width
    embed: int = 64  # embedding size (L2-normalised)
    margin: float = 1.0  # contrastive margin on the Euclidean distance
    conf_c50: float = 0.1  # LSE-C at which the reported confidence is 0.5

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d


TINY_SYNCNET = SyncNetDims(channels=(4, 8, 8), fc=16, embed=8)


def _conv2d(cin: int, cout: int) -> list[Any]:
    from torch import nn

    return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _conv1d(cin: int, cout: int, k: int = 3) -> list[Any]:
    from torch import nn

    return [nn.Conv1d(cin, cout, k, padding=k // 2), nn.BatchNorm1d(cout), nn.ReLU(inplace=True)]


def _make_syncnet(dims: SyncNetDims) -> Any:
    import torch
    import torch.nn.functional as F
    from torch import nn

    c1, c2, c3 = dims.channels
    g = int(round(math.sqrt(dims.visual_in)))
    grid = dims.input_kind == "motion" and g * g == dims.visual_in

    class SyncNetModel(nn.Module):
        """Picture stream (frames stacked as channels, as SyncNet's early fusion) and audio
        stream (a rows × bands image), each conv → FC → L2-normalised embedding."""

        def __init__(self) -> None:
            super().__init__()
            self.margin = float(dims.margin)
            if grid:
                self.vconv = nn.Sequential(
                    *_conv2d(dims.frames, c1), *_conv2d(c1, c2), nn.MaxPool2d(2), *_conv2d(c2, c3)
                )
                vflat = c3 * (g // 2) * (g // 2)
            else:
                self.vconv = nn.Sequential(*_conv1d(dims.visual_in, c1), *_conv1d(c1, c2), *_conv1d(c2, c3))
                vflat = c3 * dims.frames
            self.vfc = nn.Sequential(nn.Linear(vflat, dims.fc), nn.ReLU(inplace=True), nn.Linear(dims.fc, dims.embed))
            self.aconv = nn.Sequential(
                *_conv2d(1, c1), nn.MaxPool2d((1, 2)), *_conv2d(c1, c2), nn.MaxPool2d(2), *_conv2d(c2, c3),
                nn.AdaptiveAvgPool2d((5, 4)),
            )
            self.afc = nn.Sequential(nn.Linear(c3 * 20, dims.fc), nn.ReLU(inplace=True), nn.Linear(dims.fc, dims.embed))

        def embed_visual(self, v: torch.Tensor) -> torch.Tensor:
            """(B, frames, visual_in) → (B, embed)."""
            b = v.shape[0]
            x = v.reshape(b, dims.frames, g, g) if grid else v.transpose(1, 2)
            return F.normalize(self.vfc(self.vconv(x).reshape(b, -1)), dim=1)

        def embed_audio(self, a: torch.Tensor) -> torch.Tensor:
            """(B, frames, sub · bands) → (B, embed)."""
            b = a.shape[0]
            x = a.reshape(b, 1, dims.frames * dims.sub, dims.bands)
            return F.normalize(self.afc(self.aconv(x).reshape(b, -1)), dim=1)

    return SyncNetModel()


# ----------------------------------------------------------------------------------------
# Training


class PairTrainable:
    """What the pair-based trainables (syncnet, avmatch, wlos) share: the input kind from the
    mode, clip preparation, and checkpoint dims = the defaults overridden by the model options
    given to ``avsync train --option``."""

    audio_fn: Callable[..., np.ndarray] = staticmethod(audio_frames)  # audio rows per video frame
    default_pairs = 16  # pairs per window and step

    def __init__(self, mode: str = "general", pairs: int | None = None, **model: Any) -> None:
        self.mode = mode
        self.kind = "lips" if mode == "speech" else "motion"
        self.pairs = int(self.default_pairs if pairs is None else pairs)
        self.model_opts = model

    def prepare(self, audio: AudioFeatures, visual: VisualFeatures, name: str) -> Any:
        return prepare_clip(audio, visual, name, self.kind, self.audio_fn)

    def _dims(self, dims_cls: Any, **defaults: Any) -> dict[str, Any]:
        d = dims_cls(input_kind=self.kind, **defaults)
        known = {f.name for f in fields(dims_cls)}
        over = {k: (tuple(v) if isinstance(v, list) else v) for k, v in self.model_opts.items() if k in known}
        return dims_cls(**{**asdict(d), **over}).to_dict()


class SyncNetTrainable(PairTrainable):
    """Contrastive training of :class:`SyncNetModel` in the shared loop.

    From each distorted window, ``pairs`` (picture frame k, audio frame target[k] + d)
    pairs: half matching (d = 0), half not (3 ≤ |d| ≤ 20 frames, SyncNet's shifted
    negatives from the same clip). Loss (Hadsell et al., as in SyncNet):
    ``y·d² + (1 − y)·max(margin − d, 0)²`` on the Euclidean distance d of the embeddings.
    Validation: the SyncNet offset search over ±15 frames on the fixed windows; ``error`` =
    mean |estimated shift| in frames (0 is right).
    """

    name = "syncnet"

    def dims(self, clips: list[Any], opts: Any) -> dict[str, Any]:
        return self._dims(SyncNetDims, visual_in=int(clips[0].visual.shape[1]))

    def make_model(self, dims: dict[str, Any]) -> Any:
        return _make_syncnet(dims_from_dict(SyncNetDims, dims))

    def make_batch(self, samples: list[Any], rng: Any, augment: dict | None, device: str) -> Batch:
        return _pair_batch(samples, rng, augment, device, self.kind, N_BANDS, 5, self.pairs, _syncnet_shift)

    def loss(self, model: Any, batch: Batch) -> tuple[Any, dict[str, float]]:
        t = batch.tensors
        ea = model.embed_audio(t["aud"])
        ev = model.embed_visual(t["vis"])
        d = (ea - ev).pow(2).sum(1).clamp_min(1e-9).sqrt()
        y = t["y"]
        m = float(getattr(model, "margin", 1.0))
        loss = (y * d.pow(2) + (1 - y) * (m - d).clamp_min(0).pow(2)).mean()
        return loss, {"contrastive": float(loss.detach())}

    def val_metrics(self, model: Any, batch: Batch) -> dict[str, float]:
        loss, _ = self.loss(model, batch)
        t = batch.tensors
        ea, ev = _full_embeddings(model, t, 5)
        r = shift_scan_error(lambda b, k, i: np.linalg.norm(ev[b, k] - ea[b, i], axis=1), t["target"], 15, True)
        return {**r, "loss": float(loss)}

    def describe(self, dims: dict[str, Any]) -> str:
        return syncnet_description(dims)


def _syncnet_shift(rng: np.random.Generator, m: int) -> np.ndarray:
    neg = rng.integers(3, 21, size=m) * rng.choice([-1, 1], size=m)
    return np.where(rng.random(m) < 0.5, 0, neg)


def _pair_batch(
    samples: list[Any], rng: Any, augment: dict | None, device: str, kind: str, bands: int, width: int,
    per_sample: int, shift_fn: Callable, audio_width: int | None = None, margin: int | None = None,
) -> Batch:
    """Pairs of picture windows (width frames around k) and audio windows (audio_width frames
    around i = target[k] + d) from distorted samples, plus the whole windows for validation."""
    import torch

    rng = rng if rng is not None else np.random.default_rng(12345)
    audio_width = audio_width or width
    margin = margin if margin is not None else max(width, audio_width) // 2 + 1
    auds, viss, tgs = [], [], []
    for s in samples:
        a, v = augment_window(np.asarray(s.audio, np.float32), np.asarray(s.visual, np.float32), kind, rng, augment,
                              bands)
        auds.append(a)
        viss.append(visual_input(v, kind))
        tgs.append(np.asarray(s.target, np.float64))
    pairs = pick_pairs(tgs, rng, per_sample, margin, shift_fn)
    if not pairs:
        raise InputError("training windows too short for the network's windows")
    pv = np.stack([windows(viss[b], width, np.array([k]))[0] for b, k, _, _ in pairs])
    pa = np.stack([windows(auds[b], audio_width, np.array([i]))[0] for b, _, i, _ in pairs])
    d = np.array([p[3] for p in pairs], dtype=np.float32)
    tens = {
        "vis": torch.from_numpy(pv).to(device),
        "aud": torch.from_numpy(pa).to(device),
        "shift": torch.from_numpy(d).to(device),
        "y": torch.from_numpy((d == 0).astype(np.float32)).to(device),
        # whole windows (numpy) for the validation offset search
        "vis_full": np.stack(viss),
        "aud_full": np.stack(auds),
        "target": np.stack(tgs),
    }
    return Batch(tensors=tens, size=len(pairs))


def _full_embeddings(model: Any, t: dict[str, Any], width: int, audio_width: int | None = None) -> tuple[Any, Any]:
    """Embeddings of every frame of every validation window: (B, T, E) audio and picture."""
    dev = next(model.parameters()).device
    vf, af = t["vis_full"], t["aud_full"]
    b, tt = vf.shape[:2]
    vw = np.concatenate([windows(vf[i], width) for i in range(b)])
    aw = np.concatenate([windows(af[i], audio_width or width) for i in range(b)])
    ev = embed_chunks(model.embed_visual, vw, str(dev)).reshape(b, tt, -1)
    ea = embed_chunks(model.embed_audio, aw, str(dev)).reshape(b, tt, -1)
    return ea, ev


def syncnet_description(dims: dict[str, Any]) -> str:
    d = dims_from_dict(SyncNetDims, dims)
    return f"""SyncNet (Chung & Zisserman 2016), two-stream contrastive embedding network, as built here:

- Picture stream: {d.frames} frames of {'the 8×8 motion grid stacked as channels (SyncNet early fusion)'
                                       if d.input_kind == 'motion' else 'lip-keypoint vertical velocities'},
  conv {d.channels[0]}→{d.channels[1]}→pool→{d.channels[2]} → FC {d.fc} → {d.embed}-d embedding (L2-normalised).
- Audio stream: {d.frames * d.sub} rows (≈0.2 s) × {d.bands} log-mel bands as a 1-channel image,
  conv {d.channels[0]}→pool→{d.channels[1]}→pool→{d.channels[2]} → FC {d.fc} → {d.embed}-d embedding.
- Loss: contrastive (margin {d.margin}) on matching pairs and pairs shifted by 3–20 frames.
- Reduced from the paper: 8×8 frame-difference motion grid instead of 111×111 mouth crops
  (Big Buck Bunny has no talking faces), 32 log-mel bands instead of 13 MFCCs, ~0.3 M instead of
  ~13 M parameters, minutes of CPU training on 11 s cartoon clips instead of BBC news.
- Confidence = LSE-C / (LSE-C + {d.conf_c50:g})."""


register_trainable("syncnet", SyncNetTrainable)


# ----------------------------------------------------------------------------------------
# Inference backends


class SyncNetBackend:
    """SyncNet as an offset and alignment backend.

    Parameters
    ----------
    device : str
        auto | cpu | cuda.
    checkpoint : str or None
        Registry name, file path, ``"tiny-test"`` (seeded random weights, offline) or None
        (``syncnet-motion``).
    smooth_frames : int
        Rows averaged along each lag in :meth:`affinity` (the per-frame distances are noisy).
    use_dtw : bool
        ``syncnet-dtw``: the Affinity is a ridge along the DTW path (Halperin et al.).
    """

    def __init__(self, device: str = "auto", checkpoint: str | None = None, smooth_frames: int = 5,
                 use_dtw: bool = False, **_: Any) -> None:
        self.model, self.dims, self.metrics, self.device = load_net(
            "syncnet", checkpoint, device, SyncNetDims, _make_syncnet, TINY_SYNCNET, DEFAULT_CHECKPOINT["motion"]
        )
        self.kind = self.dims.input_kind
        self.smooth = int(smooth_frames)
        self.use_dtw = bool(use_dtw)
        self.name = "syncnet-dtw" if use_dtw else "syncnet"

    def embeddings(self, audio: AudioFeatures, visual: VisualFeatures) -> tuple[np.ndarray, np.ndarray, float]:
        """Per-frame embeddings.

        Returns
        -------
        audio_emb : ndarray, shape (Na, E)
            Audio frame i = the 0.2 s around time i / fps.
        visual_emb : ndarray, shape (Nv, E)
            Picture frame k = the 5 frames around k.
        fps : float
        """
        fps = float(visual.fps)
        raw = visual_frames(visual, self.kind)
        if raw is None:
            raise CannotMeasure(f"this {self.name} checkpoint needs {self.kind} features, which the video lacks")
        if len(raw) < 2:
            raise CannotMeasure("too few video frames to measure")
        a = audio_frames(audio, fps)
        v = visual_input(raw, self.kind)
        w = self.dims.frames
        ea = embed_chunks(self.model.embed_audio, windows(a, w), self.device)
        ev = embed_chunks(self.model.embed_visual, windows(v, w), self.device)
        return ea, ev, fps

    def distances(
        self, audio: AudioFeatures, visual: VisualFeatures, max_shift: float
    ) -> tuple[np.ndarray, int, float]:
        """Banded distance table ``D[i, j] = ‖a_i − v_{i+j−n}‖`` (NaN outside the video).

        Returns
        -------
        (D of shape (Na, 2n + 1), n, fps)
        """
        ea, ev, fps = self.embeddings(audio, visual)
        n = lag_bins(max_shift, fps)
        d = band_table(ea, ev, n, lambda x, y: np.linalg.norm(x - y, axis=1))
        return d, n, fps

    def affinity(self, audio: AudioFeatures, visual: VisualFeatures, max_shift: float) -> Affinity:
        """Affinity on the video clock: minus the (row-smoothed) embedding distance, or for
        ``syncnet-dtw`` a ridge along the DTW path weighted by the per-row margin."""
        d, n, fps = self.distances(audio, visual, max_shift)
        ds = smooth_rows(d, self.smooth)
        if self.use_dtw:
            lag = dtw_lag_path(ds)
            conf = row_margin(ds, lag, lower_better=True)
            from avsync.path import smooth_series

            conf = smooth_series(conf, int(round(0.5 * fps)), order=0)
            return ridge_affinity(lag, 0.05 + 0.95 * conf, n, fps)
        return Affinity(scores=-ds, lags=np.arange(-n, n + 1) / fps, rate=fps, start=0.0)

    def offset(self, audio: AudioFeatures, visual: VisualFeatures, max_shift: float) -> Offset:
        """SyncNet offset search: argmin over lags of the mean distance.

        Returns
        -------
        Offset
            ``seconds`` (positive = audio leads), ``confidence`` = LSE-C / (LSE-C + c50),
            ``drift`` = per-2 s-window best lag (s), ``extra``: ``lse_c``, ``lse_d``,
            ``frame_confidence`` (Signal (Na, 1) at fps: median − distance at the offset,
            smoothed over 9 frames), ``mean_distance`` (list per lag), ``method``.
        """
        d, n, fps = self.distances(audio, visual, max_shift)
        lags = np.arange(-n, n + 1) / fps
        if self.use_dtw:
            lag = dtw_lag_path(smooth_rows(d, self.smooth))
            conf = row_margin(d, lag)
            lag_s = lags[0] + lag / fps
            w = conf + 1e-6
            order = np.argsort(lag_s)
            cw = np.cumsum(w[order])
            sec = float(lag_s[order][np.searchsorted(cw, 0.5 * cw[-1])])
            mdist = nanmean_cols(d, max(5, len(d) // 4))
            lse_d = float(np.nanmin(mdist)) if np.isfinite(mdist).any() else float("nan")
            lse_c = float(np.nanmedian(mdist) - lse_d)
            return Offset(seconds=sec, confidence=float(np.clip(np.mean(conf), 0, 1)),
                          drift=Signal(lag_s[:, None], fps, 0.0),
                          extra={"lse_c": lse_c, "lse_d": lse_d, "method": "syncnet-dtw: weighted median of DTW path",
                                 "frame_confidence": Signal(conf[:, None], fps, 0.0)})
        mdist = nanmean_cols(d, max(5, len(d) // 4))
        if not np.isfinite(mdist).any():
            raise CannotMeasure("picture and sound do not overlap enough to measure an offset")
        k = int(np.nanargmin(mdist))
        lse_d = float(mdist[k])
        lse_c = float(np.nanmedian(mdist) - lse_d)
        sec = float(lags[k] + parabolic(mdist, k) / fps)
        c50 = float(self.dims.conf_c50)
        conf = lse_c / (lse_c + c50) if lse_c > 0 else 0.0
        # per-frame confidence (SyncNet demo: median over shifts − distance at the offset)
        from scipy.ndimage import median_filter

        fconf = np.nanmedian(np.where(np.isfinite(d), d, np.nan), axis=1) - d[:, k]
        fconf = median_filter(np.nan_to_num(fconf, nan=0.0), size=9, mode="nearest")
        # drift: best lag per 2 s window (hop 0.5 s)
        win, hop = max(4, int(round(2 * fps))), max(1, int(round(0.5 * fps)))
        drift = []
        for s in range(0, max(1, len(d) - win + 1), hop):
            md = nanmean_cols(d[s : s + win], max(2, win // 4))
            drift.append(float(lags[int(np.nanargmin(md))]) if np.isfinite(md).any() else sec)
        return Offset(
            seconds=sec, confidence=float(np.clip(conf, 0.0, 1.0)),
            drift=Signal(np.array(drift)[:, None], fps / hop, win / (2 * fps)),
            extra={"lse_c": lse_c, "lse_d": lse_d, "frame_confidence": Signal(fconf[:, None], fps, 0.0),
                   "mean_distance": [float(x) for x in mdist], "method": "syncnet: min mean distance"},
        )


def _syncnet_factory(**kw: Any) -> SyncNetBackend:
    return SyncNetBackend(**{k: v for k, v in kw.items() if k != "use_dtw"})


def _syncnet_dtw_factory(**kw: Any) -> SyncNetBackend:
    return SyncNetBackend(use_dtw=True, **{k: v for k, v in kw.items() if k != "use_dtw"})


register(BackendInfo(
    name="syncnet",
    description="SyncNet contrastive picture/sound embeddings; offset = min mean distance (LSE-C/LSE-D)",
    trainable=True,
    factory=_syncnet_factory,
    tasks=("align", "offset"),
))
register(BackendInfo(
    name="syncnet-dtw",
    description="SyncNet embeddings + dynamic time warping of the distance matrix (Halperin et al.)",
    trainable=True,
    factory=_syncnet_dtw_factory,
    tasks=("align", "offset"),
))
