"""``avst``: an audio-visual synchronisation transformer, as a learned backend.

CNN audio tokens (from the log-mel, one per video frame) and visual tokens (motion grid or
keypoints, one per frame) with sinusoidal time encodings and modality embeddings go
through a transformer:

- ``encoder`` variant (shipped): one joint self-attention encoder over
  ``[CLS] + audio + visual``; the head scores sync from the [CLS] output concatenated with
  the max-pool over all output tokens;
- ``decoder`` variant: ``[CLS] + visual`` tokens self-attend and cross-attend to the
  (separately encoded) audio tokens; same head.

Any window length works (key-padding masks for mixed lengths). Training is InfoNCE: a
visual window's own audio against the same clip's audio shifted by other lags.

``offset()`` scores every candidate shift within ±max_shift on sliding windows, averages
the per-window log-softmax over shifts, takes the argmax with parabolic refinement and a
confidence from the margin to the best shift more than 2 frames away. ``affinity()``
writes the per-window log-softmax over lags onto the audio rows (sliding windows × lags).

This module imports torch only when a model or backend is built.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from avsync.backends import BackendInfo, register
from avsync.backends.tae import (
    AUDIO_IN,
    SeqTrainable,
    audio_frames,
    audio_input,
    kind_for,
    resample_rows,
    visual_input,
    visual_raw,
)
from avsync.errors import CannotMeasure, InputError
from avsync.features import AudioFeatures, VisualFeatures
from avsync.train import Batch, register_trainable
from avsync.train.data import ClipArrays
from avsync.types import Affinity, Offset, Signal, in_itu_window

DEFAULT_CHECKPOINT = "avst-motion"
VARIANTS = ("encoder", "decoder")


# ------------------------------------------------------------------------------------------
# Network


def _build_modules() -> dict[str, Any]:
    import torch
    from torch import nn

    def sinusoid(t: int, d: int, device: Any) -> torch.Tensor:
        pos = torch.arange(t, device=device, dtype=torch.float32)[:, None]
        i = torch.arange(0, d, 2, device=device, dtype=torch.float32)
        ang = pos / (10000.0 ** (i / d))
        pe = torch.zeros(t, d, device=device)
        pe[:, 0::2] = torch.sin(ang)
        pe[:, 1::2] = torch.cos(ang)
        return pe

    class Tokens(nn.Module):
        """(B, T, D_in) → (B, T, d) tokens: a small 1-D CNN (receptive field 7 frames)."""

        def __init__(self, d_in: int, d: int) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Conv1d(d_in, d, 5, padding=2), nn.GELU(), nn.Conv1d(d, d, 3, padding=1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x.transpose(1, 2)).transpose(1, 2)

    class AVST(nn.Module):
        """Sync scorer over (audio window, visual window) pairs of equal length.

        Parameters
        ----------
        dims : dict
            ``audio_in, visual_in, d_model, heads, layers, ff, dropout, variant``.
        """

        def __init__(self, dims: dict[str, Any]) -> None:
            super().__init__()
            self.dims = dict(dims)
            d = int(dims["d_model"])
            self.variant = str(dims.get("variant", "encoder"))
            if self.variant not in VARIANTS:
                raise InputError(f"unknown avst variant '{self.variant}' (encoder or decoder)")
            self.audio_tok = Tokens(int(dims["audio_in"]), d)
            self.visual_tok = Tokens(int(dims["visual_in"]), d)
            self.pair = nn.Linear(d, d)
            self.modality = nn.Parameter(torch.zeros(3, d))
            self.cls = nn.Parameter(0.02 * torch.randn(1, 1, d))
            kw = {"d_model": d, "nhead": int(dims["heads"]), "dim_feedforward": int(dims["ff"]),
                  "dropout": float(dims.get("dropout", 0.1)), "batch_first": True, "norm_first": True}
            n = int(dims["layers"])
            if self.variant == "encoder":
                self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(**kw), n, enable_nested_tensor=False)
            else:
                self.audio_encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(**kw), n,
                                                           enable_nested_tensor=False)
                self.decoder = nn.TransformerDecoder(nn.TransformerDecoderLayer(**kw), n)
            self.norm = nn.LayerNorm(d)
            self.head = nn.Sequential(nn.Linear(2 * d, d), nn.GELU(), nn.Linear(d, 1))

        def forward(self, audio: torch.Tensor, visual: torch.Tensor,
                    lengths: torch.Tensor | None = None) -> torch.Tensor:
            """Sync scores.

            Parameters
            ----------
            audio : Tensor, shape (B, T, audio_in)
            visual : Tensor, shape (B, T, visual_in)
                Frame k of both is meant to be simultaneous.
            lengths : LongTensor, shape (B,), optional
                Valid frames per item (the rest is padding).

            Returns
            -------
            Tensor, shape (B,)
                Unnormalised log-score (higher = in sync).
            """
            b, t, _ = audio.shape
            pe = sinusoid(t, self.cls.shape[-1], audio.device)
            ta, tv = self.audio_tok(audio), self.visual_tok(visual)
            a = ta + pe + self.modality[0]
            v = tv + pe + self.modality[1]
            p = self.pair(ta * tv) + pe + self.modality[2]  # frame-pair tokens: same-time interaction
            pad = None
            if lengths is not None:
                pad = torch.arange(t, device=audio.device)[None, :] >= lengths[:, None]  # (B, T)
            cls = self.cls.expand(b, 1, -1)
            no_pad = torch.zeros(b, 1, dtype=torch.bool, device=audio.device)
            if self.variant == "encoder":
                x = torch.cat([cls, a, v, p], 1)
                mask = None if pad is None else torch.cat([no_pad, pad, pad, pad], 1)
                y = self.norm(self.encoder(x, src_key_padding_mask=mask))
            else:
                mem = self.audio_encoder(a, src_key_padding_mask=pad)
                x = torch.cat([cls, v + p], 1)
                mask = None if pad is None else torch.cat([no_pad, pad], 1)
                y = self.norm(self.decoder(x, mem, tgt_key_padding_mask=mask, memory_key_padding_mask=pad))
            tokens = y[:, 1:]
            if mask is not None:
                tokens = tokens.masked_fill(mask[:, 1:, None], -1e4)
            pooled = tokens.max(1).values
            return self.head(torch.cat([y[:, 0], pooled], -1)).squeeze(-1)

    return {"AVST": AVST}


def default_dims(visual_in: int = 128, kind: str = "motion", fps: float = 25.0, **kw: Any) -> dict[str, Any]:
    """Model dimensions (encoder variant by default)."""
    d = {"audio_in": AUDIO_IN, "visual_in": int(visual_in), "d_model": 64, "heads": 4, "layers": 2, "ff": 128,
         "dropout": 0.1, "variant": "encoder", "kind": kind, "fps": float(fps), "window_seconds": 3.0,
         "min_seconds": 2.0, "neg_seconds": 1.0, "negatives": 10}
    d.update(kw)
    if d["variant"] not in VARIANTS:
        raise InputError(f"unknown avst variant '{d['variant']}' (encoder or decoder)")
    return d


def make_net(dims: dict[str, Any]) -> Any:
    """A fresh AVST module for ``dims``."""
    return _build_modules()["AVST"](dims)


# ------------------------------------------------------------------------------------------
# Training interface


def shifted_pairs(plan: np.ndarray, n: int, length: int, shifts: np.ndarray,
                  rng: np.random.Generator) -> tuple[int, np.ndarray]:
    """A visual window of a distorted sample and, per candidate shift, its audio frames.

    Parameters
    ----------
    plan : ndarray of int, shape (n,)
        Distorted frame m shows original frame plan[m] (audio is on the original clock).
    n : int
        Frames in the sample.
    length : int
        Window length in frames.
    shifts : ndarray of int, shape (K,)
        Candidate audio shifts in frames; shift k pairs picture frame m with audio frame
        ``plan[m] + k``, i.e. lag −k (0 = the true pairing).
    rng : numpy.random.Generator

    Returns
    -------
    m0 : int
        First distorted frame of the visual window.
    audio_idx : ndarray of int, shape (K, length)
        Audio frame per candidate and window frame, clipped into [0, n).
    """
    kmax = int(np.abs(shifts).max()) if len(shifts) else 0
    starts = np.arange(0, n - length + 1)
    ok = (plan[starts] - kmax >= 0) & (plan[starts + length - 1] + kmax <= n - 1)
    pool = starts[ok] if ok.any() else starts
    m0 = int(rng.choice(pool))
    idx = plan[m0 : m0 + length][None, :] + np.asarray(shifts)[:, None]
    return m0, np.clip(idx, 0, n - 1)


class AVSTTrainable(SeqTrainable):
    """AVST for :func:`avsync.train.loop.train` (InfoNCE over shifts of the same clip).

    Per loop sample: one visual window of a random length (``min_seconds`` … ``window_seconds``,
    the same within a batch) of the distorted picture; the positive is the audio of the frames
    it shows, the negatives the same clip's audio shifted by ``negatives`` random lags within
    ±``neg_seconds`` (|shift| ≥ 2 frames). Validation scores every shift within ±0.5 s.

    Parameters
    ----------
    mode : str
        general → motion grid, dance → pose keypoints, speech → lip keypoints.
    **model
        Overrides of :func:`default_dims` (``variant``, ``d_model``, ``layers``, ...).
    """

    name = "avst"

    def __init__(self, mode: str = "general", **model: Any) -> None:
        super().__init__(mode, **model)
        self.d: dict[str, Any] | None = None

    def dims(self, clips: list[ClipArrays], opts: Any) -> dict[str, Any]:
        fps, vin = self.clip_shape(clips)
        return default_dims(vin, self.kind, fps, **self.model_opts)

    def make_model(self, dims: dict[str, Any]) -> Any:
        self.d = dict(dims)
        return make_net(dims)

    def make_batch(self, samples: list[Any], rng: Any, augment: dict[str, bool] | None, device: str) -> Batch:
        import torch

        from avsync.train.augment import hflip_grid

        if self.d is None:
            raise RuntimeError("make_model must be called before make_batch")
        fps = float(samples[0].fps)
        n = min(len(s.target) for s in samples)
        val = rng is None
        r = np.random.default_rng(4321) if val else rng
        kneg = max(2, int(round(self.d["neg_seconds"] * fps)))
        if val:
            length = min(n - 2, int(round(self.d["window_seconds"] * fps)))
            kv = max(2, int(round(0.5 * fps)))
            shifts = np.arange(-kv, kv + 1)
        else:
            lo = int(round(self.d["min_seconds"] * fps))
            length = int(r.integers(min(lo, n // 2), min(int(round(self.d["window_seconds"] * fps)), n // 2) + 1))
        auds, viss, tgts = [], [], []
        for s in samples:
            raw = s.visual[:n]
            if augment and augment.get("flip") and self.kind == "motion" and r.random() < 0.5:
                raw = hflip_grid(raw)
            vis = visual_input(raw, self.kind)
            aud = audio_input(s.audio[:n], r if augment and augment.get("spec") else None)
            if not val:
                far = np.concatenate([np.arange(-kneg, -1), np.arange(2, kneg + 1)])
                near = np.array([-3, -2, 2, 3])
                rest = r.choice(far, size=max(0, int(self.d["negatives"]) - 4), replace=False)
                shifts = np.concatenate([[0], near, rest])
            m0, idx = shifted_pairs(s.plan[:n], n, length, shifts, r)
            auds.append(aud[idx])  # (K, L, Da)
            viss.append(vis[m0 : m0 + length])
            tgts.append(int(np.flatnonzero(shifts == 0)[0]))
        tensors = {
            "audio": torch.from_numpy(np.stack(auds)).to(device),  # (B, K, L, Da)
            "visual": torch.from_numpy(np.stack(viss)).to(device),  # (B, L, Dv)
            "target": torch.tensor(tgts, dtype=torch.long, device=device),
            "shifts": torch.from_numpy(np.asarray(shifts)).to(device),
            "fps": fps,
        }
        return Batch(tensors, len(samples))

    @staticmethod
    def scores(model: Any, batch: Batch) -> Any:
        """(B, K) sync scores of every candidate."""
        b = batch.tensors
        bsz, k, length, da = b["audio"].shape
        vis = b["visual"][:, None].expand(bsz, k, length, b["visual"].shape[-1])
        return model(b["audio"].reshape(bsz * k, length, da), vis.reshape(bsz * k, length, -1)).reshape(bsz, k)

    def loss(self, model: Any, batch: Batch) -> tuple[Any, dict[str, float]]:
        import torch.nn.functional as F

        s = self.scores(model, batch)
        loss = F.cross_entropy(s, batch.tensors["target"])
        return loss, {"nce": float(loss.detach())}

    def val_metrics(self, model: Any, batch: Batch) -> dict[str, float]:
        import torch.nn.functional as F

        s = self.scores(model, batch)
        shifts = batch.tensors["shifts"].cpu().numpy()
        k = shifts[s.argmax(1).cpu().numpy()]
        err = np.abs(k).astype(np.float64)
        return {
            "error": float(err.mean()),
            "within1": float((err <= 1).mean()),
            "itu": float(np.mean(in_itu_window(-k / batch.tensors["fps"]))),
            "acc": float((err == 0).mean()),
            "loss": float(F.cross_entropy(s, batch.tensors["target"])),
        }

    def describe(self, dims: dict[str, Any]) -> str:
        return model_description(dims)


def model_description(dims: dict[str, Any]) -> str:
    """Markdown: inputs, structure and what differs from the paper."""
    kind = dims.get("kind", "motion")
    vis = ("8×8 motion grid (frame-difference energy): per cell log energy and its change — Big Buck Bunny "
           "is a cartoon without talking faces, so this variant uses the motion grid, not lip crops"
           if kind == "motion" else f"{kind} keypoints: velocity and acceleration")
    var = ("encoder: one joint self-attention encoder over [CLS] + audio + visual tokens; head on the "
           "[CLS] output ⊕ max-pool over all tokens" if dims.get("variant") == "encoder" else
           "decoder: audio tokens self-attend; [CLS] + visual tokens self-attend and cross-attend to them; "
           "head on the [CLS] output ⊕ max-pool over the visual tokens")
    return f"""Audio-visual synchronisation transformer (`avsync/backends/avst.py`), variant **{dims.get('variant')}**.

- Tokens, one per video frame ({dims.get('fps', 25):g} fps): audio = 2-layer 1-D CNN over the 128-bin
  log-mel pooled to 32 bands at 4 phases per frame; visual = 2-layer 1-D CNN over the {vis}.
  Sinusoidal time encodings (shared by both modalities) + modality embeddings.
- Transformer: d_model {dims['d_model']}, {dims['heads']} heads, {dims['layers']} layers, feed-forward {dims['ff']},
  pre-norm. {var}.
- Variable length: any window length; key-padding masks for mixed lengths. Trained on windows of
  {dims['min_seconds']:g}–{dims['window_seconds']:g} s.
- Loss: InfoNCE — the visual window's own audio against {dims['negatives']} shifts of the same clip's audio
  within ±{dims['neg_seconds']:g} s (always including ±2, ±3 frames).
- Inference: every shift within ±max_shift on sliding {dims['window_seconds']:g} s windows; mean per-window
  log-softmax over shifts; argmax + parabolic refinement; confidence 1 − exp(−margin) with the margin
  to the best shift more than 2 frames away.
- Reduced vs. the paper: a small transformer (d {dims['d_model']}, {dims['layers']} layers) over per-frame tokens
  from tiny CNNs (no pretrained visual backbone), motion features instead of video frames, trained for
  minutes on one CPU."""


register_trainable("avst", AVSTTrainable)


# ------------------------------------------------------------------------------------------
# Inference


def parabolic(c: np.ndarray, k: int) -> float:
    """Sub-bin peak position around index ``k`` of curve ``c`` (vertex of the parabola)."""
    if k <= 0 or k >= len(c) - 1:
        return float(k)
    a, b, d = c[k - 1], c[k], c[k + 1]
    den = a - 2 * b + d
    if not np.isfinite(den) or den >= 0:
        return float(k)
    return float(k + np.clip(0.5 * (a - d) / den, -0.5, 0.5))


class AVSTBackend:
    """AVST as an offset / alignment backend.

    Parameters
    ----------
    device : str
        auto | cpu | cuda.
    checkpoint : str or None
        Registry name, file path, ``"tiny-test"`` (seeded random weights, offline) or None
        (``avst-motion``).
    window : float or None
        Window length in seconds (default: the checkpoint's training window).
    hop : float
        Window hop as a fraction of the window (offset); the affinity uses a quarter of it.
    threads : int, optional
        torch CPU threads.
    """

    name = "avst"

    def __init__(self, device: str = "auto", checkpoint: str | None = None, window: float | None = None,
                 hop: float = 0.5, threads: int | None = None, **_: Any) -> None:
        import torch

        from avsync.device import resolve_device
        from avsync.hub import build_model

        if threads:
            torch.set_num_threads(int(threads))
        self.device = resolve_device(device)
        self.model, dims, _ = build_model(
            checkpoint, backend="avst", default=DEFAULT_CHECKPOINT, make=make_net, device=self.device,
            tiny_dims=default_dims(128, "motion", 25.0, d_model=32, heads=2, layers=1, ff=64))
        self.dims = dims
        self.kind = str(dims.get("kind", "motion"))
        self.fps = float(dims["fps"])
        self.window = float(window or dims.get("window_seconds", 3.0))
        self.hop = float(hop)

    def _inputs(self, audio: AudioFeatures, visual: VisualFeatures) -> tuple[np.ndarray, np.ndarray]:
        kind = kind_for(visual, self.kind)
        raw = visual_raw(visual, kind)
        assert raw is not None
        n_v = int(np.floor(len(raw) / visual.fps * self.fps + 1e-6))
        n_a = int(np.floor(audio.duration * self.fps + 1e-6))
        if min(n_a, n_v) < 8:
            raise CannotMeasure("too short for avst")
        vis = visual_input(resample_rows(raw, float(visual.fps), self.fps, n_v), kind)
        aud = audio_input(audio_frames(audio, self.fps, n_a))
        return aud, vis

    def window_scores(self, aud: np.ndarray, vis: np.ndarray, starts: np.ndarray, lags: np.ndarray,
                      length: int) -> np.ndarray:
        """Scores of picture windows ``[m0, m0 + length)`` against audio ``[m0 − k, …)``.

        Returns
        -------
        ndarray, shape (len(starts), len(lags))
            NaN where the audio window falls outside the clip.
        """
        import torch

        out = np.full((len(starts), len(lags)), np.nan)
        pairs = [(w, j) for w, m0 in enumerate(starts) for j, k in enumerate(lags)
                 if m0 - k >= 0 and m0 - k + length <= len(aud)]
        with torch.no_grad():
            for c in range(0, len(pairs), 256):
                chunk = pairs[c : c + 256]
                a = np.stack([aud[starts[w] - lags[j] : starts[w] - lags[j] + length] for w, j in chunk])
                v = np.stack([vis[starts[w] : starts[w] + length] for w, _ in chunk])
                s = self.model(torch.from_numpy(a).to(self.device), torch.from_numpy(v).to(self.device))
                for (w, j), x in zip(chunk, s.cpu().numpy(), strict=True):
                    out[w, j] = x
        return out

    @staticmethod
    def _log_softmax_rows(s: np.ndarray) -> np.ndarray:
        m = np.nanmax(s, axis=1, keepdims=True)
        z = np.log(np.nansum(np.exp(s - m), axis=1, keepdims=True))
        return s - m - z

    def offset(self, audio: AudioFeatures, visual: VisualFeatures, max_shift: float) -> Offset:
        """Global offset: the shift with the best mean log-softmax over sliding windows.

        Returns
        -------
        Offset
            ``seconds`` (parabolic refinement), ``confidence`` = 1 − exp(−margin) (margin in
            nats to the best shift more than 2 frames away), ``drift`` = per-window argmax lag,
            ``extra['margin']`` (nats) and ``extra['window_seconds']``.
        """
        aud, vis = self._inputs(audio, visual)
        n_a, n_v = len(aud), len(vis)
        big_l = max(1, int(round(max_shift * self.fps)))
        length = int(round(self.window * self.fps))
        # windows whose audio is in range for every lag; shrink the window for short clips
        while True:
            hi = min(n_v - length, n_a - length - big_l)
            if hi >= big_l or length <= int(self.fps):
                break
            length = max(int(self.fps), int(length * 0.8))
        if hi < big_l:
            big_l = max(1, min(big_l, (min(n_a, n_v) - length) // 2))
            hi = min(n_v - length, n_a - length - big_l)
            if hi < big_l:
                raise CannotMeasure(f"too short for avst at ±{max_shift:g} s")
        hop = max(1, int(length * self.hop))
        starts = np.arange(big_l, hi + 1, hop)
        if starts[-1] != hi:
            starts = np.append(starts, hi)
        lags = np.arange(-big_l, big_l + 1)
        lp = self._log_softmax_rows(self.window_scores(aud, vis, starts, lags, length))
        curve = np.nanmean(lp, axis=0)
        k = int(np.nanargmax(curve))
        pos = parabolic(curve, k)
        far = np.abs(lags - lags[k]) > 2
        margin = float(curve[k] - np.nanmax(curve[far])) if far.any() else 0.0
        per_win = lags[np.nanargmax(lp, axis=1)] / self.fps
        rate = self.fps / hop
        drift = Signal(per_win[:, None], rate, float((starts[0] + length / 2) / self.fps))
        return Offset(float((pos - big_l) / self.fps), float(1.0 - math.exp(-max(margin, 0.0))), drift,
                      {"margin": margin, "window_seconds": length / self.fps})

    def affinity(self, audio: AudioFeatures, visual: VisualFeatures, max_shift: float) -> Affinity:
        """Sliding windows × lags: per window the log-softmax over lags, written onto the audio
        rows whose time is the window's audio centre (linear interpolation between windows).

        Returns
        -------
        Affinity
            scores (N_a, 2L+1) log-probabilities, rate = the model's fps, lags = (−L … L) / fps.
        """
        aud, vis = self._inputs(audio, visual)
        n_a, n_v = len(aud), len(vis)
        big_l = max(1, int(round(max_shift * self.fps)))
        length = min(int(round(self.window * self.fps)), n_a, n_v)
        hop = max(1, int(length * self.hop / 2))
        starts = np.arange(0, n_v - length + 1, hop)
        if starts[-1] != n_v - length:
            starts = np.append(starts, n_v - length)
        lags = np.arange(-big_l, big_l + 1)
        lp = self._log_softmax_rows(self.window_scores(aud, vis, starts, lags, length))
        floor = float(np.nanmin(lp)) if np.isfinite(lp).any() else 0.0
        rows = np.arange(n_a, dtype=np.float64)
        scores = np.full((n_a, len(lags)), floor)
        for j, k in enumerate(lags):
            ok = np.isfinite(lp[:, j])
            if not ok.any():
                continue
            centre = starts[ok] - k + length / 2.0  # audio frame at the window centre
            scores[:, j] = np.interp(rows, centre, lp[ok, j])
        return Affinity(scores.astype(np.float32), lags / self.fps, self.fps, 0.0)


register(BackendInfo(
    name="avst",
    description="Audio-visual sync transformer ([CLS] sync score over CNN tokens, InfoNCE), learned",
    trainable=True,
    factory=AVSTBackend,
    tasks=("align", "offset"),
))
