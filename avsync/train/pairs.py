"""What the pair-based trainables (syncnet, avmatch, wlos) share: clip preparation, the
papers' augmentations on a window, (picture window, audio window) pairs at chosen shifts, and
the SyncNet offset protocol on validation windows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, fields
from typing import Any

import numpy as np

from avsync.backends._inputs import audio_frames, embed_chunks, n_frames, visual_frames, visual_input, windows
from avsync.errors import InputError
from avsync.features import AudioFeatures, VisualFeatures
from avsync.nn.inputs import SUB
from avsync.train import Batch
from avsync.train.augment import hflip_grid, spec_augment
from avsync.train.data import ClipArrays


def prepare_clip(audio: AudioFeatures, visual: VisualFeatures, name: str, kind: str, audio_fn: Callable) -> Any:
    """Reduce a clip to :class:`avsync.train.data.ClipArrays` (per-frame audio + raw picture)."""
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


class PairTrainable:
    """What the pair-based trainables (syncnet, avmatch, wlos) share: the input kind from the
    mode, clip preparation, and checkpoint dims = the defaults overridden by the model options
    given to ``avsync train --option``."""

    audio_fn: Callable[..., np.ndarray] = staticmethod(audio_frames)  # audio rows per video frame
    default_pairs = 16  # pairs per window and step

    def __init__(self, mode: str = "general", pairs: int | None = None, **model: Any) -> None:
        self.mode = mode
        self.kind = str(model.get("input_kind") or ("lips" if mode == "speech" else "motion"))
        self.pairs = int(self.default_pairs if pairs is None else pairs)
        self.model_opts = model

    def prepare(self, audio: AudioFeatures, visual: VisualFeatures, name: str) -> Any:
        return prepare_clip(audio, visual, name, self.kind, self.audio_fn)

    def visual_width(self, clips: list[Any]) -> int:
        """Picture values per frame the network sees for this input kind (lipshape: shape and
        velocity, two per raw coordinate), from the first clip."""
        return int(visual_input(np.asarray(clips[0].visual[:8]), self.kind).shape[1])

    def dims_with(self, dims_cls: Any, **defaults: Any) -> dict[str, Any]:
        """``dims_cls`` for this input kind: ``defaults`` overridden by the model options."""
        d = dims_cls(input_kind=self.kind, **defaults)
        known = {f.name for f in fields(dims_cls)}
        over = {k: (tuple(v) if isinstance(v, list) else v) for k, v in self.model_opts.items() if k in known}
        return dims_cls(**{**asdict(d), **over}).to_dict()


def pair_batch(
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


def full_embeddings(model: Any, t: dict[str, Any], width: int, audio_width: int | None = None) -> tuple[Any, Any]:
    """Embeddings of every frame of every validation window: (B, T, E) audio and picture."""
    dev = next(model.parameters()).device
    vf, af = t["vis_full"], t["aud_full"]
    b, tt = vf.shape[:2]
    vw = np.concatenate([windows(vf[i], width) for i in range(b)])
    aw = np.concatenate([windows(af[i], audio_width or width) for i in range(b)])
    ev = embed_chunks(model.embed_visual, vw, str(dev)).reshape(b, tt, -1)
    ea = embed_chunks(model.embed_audio, aw, str(dev)).reshape(b, tt, -1)
    return ea, ev
