"""avmatch: a binary audio-visual match CNN with dynamic time warping over its scores.

The network decides whether a 0.64 s log-mel segment and a 16-frame picture clip belong
together (match / non-match, binary cross-entropy); the alignment runs DTW over the match
scores of every (audio frame, picture frame) pair in a band to adjust the timing of the
video frames, as the match-then-DTW papers propose.

Inputs (per video frame, on the video clock)
    picture: 16 frames of the 8×8 motion grid (``'motion'``) or of lip keypoint vertical
    velocities (``'lips'``); audio: 16 frames × 4 sub-frame rows × 32 log-mel bands
    (64 rows ≈ 0.64 s at 25 fps).

Structure
    audio branch: 2-D conv stack on the (64 rows × 32 bands) image → embedding;
    picture branch: 3-D conv stack on the (16 × 8 × 8) clip (1-D conv for lips) → embedding;
    match head: MLP on the concatenated embeddings → one logit. The branches are separable,
    so a whole band of pairs costs one embedding per frame plus one small MLP per pair.

Inference
    ``logit[i, j]`` = match of audio frame i with picture frame i + j − n.
    ``offset``: argmax over lags of the mean log-probability of a match (parabolic
    refinement); confidence = (mean match probability at the best lag − its median over
    lags) / (1 − median).
    ``affinity``: DTW (open begin/end) over the cost −log σ(logit); the Affinity is a
    Gaussian ridge along the DTW path weighted by the per-row score margin.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from avsync.backends import BackendInfo, register
from avsync.backends.syncnet import (
    N_BANDS,
    SUB,
    PairTrainable,
    _pair_batch,
    audio_frames,
    band_table,
    dims_from_dict,
    dtw_lag_path,
    embed_chunks,
    lag_bins,
    load_net,
    nanmean_cols,
    parabolic,
    ridge_affinity,
    row_margin,
    shift_scan_error,
    smooth_rows,
    visual_frames,
    visual_input,
    windows,
)
from avsync.errors import CannotMeasure
from avsync.features import AudioFeatures, VisualFeatures
from avsync.train import Batch, register_trainable
from avsync.types import Affinity, Offset, Signal

DEFAULT_CHECKPOINT = "avmatch-motion"


@dataclass(frozen=True)
class AVMatchDims:
    """Everything needed to rebuild the avmatch network (stored in its checkpoint)."""

    input_kind: str = "motion"  # motion (8×8 grid) | lips (lip keypoint y velocities)
    visual_in: int = 64  # picture values per frame
    bands: int = N_BANDS  # log-mel bands per audio row
    sub: int = SUB  # audio rows per video frame
    frames: int = 16  # clip length (frames); audio = frames × sub rows ≈ 0.64 s
    channels: tuple[int, ...] = (8, 16, 32)  # conv widths of both branches
    embed: int = 64  # branch embedding size
    head: int = 64  # hidden width of the match MLP

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d


TINY_AVMATCH = AVMatchDims(channels=(2, 4, 4), embed=8, head=8)


def _make_avmatch(dims: AVMatchDims) -> Any:
    import math

    import torch
    from torch import nn

    c1, c2, c3 = dims.channels
    g = int(round(math.sqrt(dims.visual_in)))
    grid = dims.input_kind == "motion" and g * g == dims.visual_in

    def c3d(cin: int, cout: int) -> list[Any]:
        return [nn.Conv3d(cin, cout, 3, padding=1), nn.BatchNorm3d(cout), nn.ReLU(inplace=True)]

    def c2d(cin: int, cout: int) -> list[Any]:
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    def c1d(cin: int, cout: int) -> list[Any]:
        return [nn.Conv1d(cin, cout, 3, padding=1), nn.BatchNorm1d(cout), nn.ReLU(inplace=True)]

    class AVMatchNet(nn.Module):
        """Audio 2-D CNN + picture 3-D CNN → embeddings → MLP match logit."""

        def __init__(self) -> None:
            super().__init__()
            if grid:
                self.vconv = nn.Sequential(
                    *c3d(1, c1), nn.MaxPool3d(2), *c3d(c1, c2), nn.MaxPool3d(2), *c3d(c2, c3),
                    nn.AdaptiveAvgPool3d((2, 1, 1)),
                )
                vflat = c3 * 2
            else:
                self.vconv = nn.Sequential(*c1d(dims.visual_in, c2), nn.MaxPool1d(2), *c1d(c2, c3),
                                           nn.AdaptiveAvgPool1d(4))
                vflat = c3 * 4
            self.vfc = nn.Linear(vflat, dims.embed)
            self.aconv = nn.Sequential(
                *c2d(1, c1), nn.MaxPool2d(2), *c2d(c1, c2), nn.MaxPool2d(2), *c2d(c2, c3), nn.MaxPool2d(2),
                nn.AdaptiveAvgPool2d((4, 2)),
            )
            self.afc = nn.Linear(c3 * 8, dims.embed)
            self.head = nn.Sequential(nn.ReLU(), nn.Linear(2 * dims.embed, dims.head), nn.ReLU(inplace=True),
                                      nn.Linear(dims.head, 1))

        def embed_visual(self, v: torch.Tensor) -> torch.Tensor:
            """(B, frames, visual_in) → (B, embed)."""
            b = v.shape[0]
            x = v.reshape(b, 1, dims.frames, g, g) if grid else v.transpose(1, 2)
            return self.vfc(self.vconv(x).reshape(b, -1))

        def embed_audio(self, a: torch.Tensor) -> torch.Tensor:
            """(B, frames, sub · bands) → (B, embed)."""
            b = a.shape[0]
            return self.afc(self.aconv(a.reshape(b, 1, dims.frames * dims.sub, dims.bands)).reshape(b, -1))

        def match(self, ea: torch.Tensor, ev: torch.Tensor) -> torch.Tensor:
            """Match logit (B,) of embedding pairs (B, embed) × 2."""
            return self.head(torch.cat([ea, ev], dim=1))[:, 0]

    return AVMatchNet()


# ----------------------------------------------------------------------------------------
# Training


def _avmatch_shift(rng: np.random.Generator, m: int) -> np.ndarray:
    neg = rng.integers(2, 25, size=m) * rng.choice([-1, 1], size=m)
    return np.where(rng.random(m) < 0.5, 0, neg)


class AVMatchTrainable(PairTrainable):
    """Match / non-match training of the avmatch CNN in the shared loop.

    Pairs from each distorted window: half matching (audio centred on the picture clip's own
    audio frame), half shifted by 2–24 frames; binary cross-entropy. Validation: the offset
    search over ±15 frames (mean match log-probability); ``error`` = mean |estimated shift|
    in frames; also the pair classification accuracy.
    """

    name = "avmatch"

    def dims(self, clips: list[Any], opts: Any) -> dict[str, Any]:
        return self._dims(AVMatchDims, visual_in=int(clips[0].visual.shape[1]))

    def make_model(self, dims: dict[str, Any]) -> Any:
        return _make_avmatch(dims_from_dict(AVMatchDims, dims))

    def make_batch(self, samples: list[Any], rng: Any, augment: dict | None, device: str) -> Batch:
        return _pair_batch(samples, rng, augment, device, self.kind, N_BANDS, 16, self.pairs, _avmatch_shift)

    def loss(self, model: Any, batch: Batch) -> tuple[Any, dict[str, float]]:
        import torch.nn.functional as F

        t = batch.tensors
        logit = model.match(model.embed_audio(t["aud"]), model.embed_visual(t["vis"]))
        loss = F.binary_cross_entropy_with_logits(logit, t["y"])
        acc = float(((logit.detach() > 0).float() == t["y"]).float().mean())
        return loss, {"bce": float(loss.detach()), "pair_acc": acc}

    def val_metrics(self, model: Any, batch: Batch) -> dict[str, float]:
        import torch

        loss, parts = self.loss(model, batch)
        t = batch.tensors
        from avsync.backends.syncnet import _full_embeddings

        ea, ev = _full_embeddings(model, t, 16)

        def score(b: int, k: np.ndarray, i: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                lg = model.match(torch.from_numpy(ea[b, i]), torch.from_numpy(ev[b, k]))
            return torch.nn.functional.logsigmoid(lg).numpy()

        r = shift_scan_error(score, t["target"], 15, lower_better=False)
        return {**r, "bce": parts["bce"], "pair_acc": parts["pair_acc"]}

    def describe(self, dims: dict[str, Any]) -> str:
        d = dims_from_dict(AVMatchDims, dims)
        return f"""avmatch: binary audio-visual match CNN + DTW over its scores, as built here:

- Picture branch: {d.frames}-frame clip of {'the 8×8 motion grid, 3-D conv' if d.input_kind == 'motion'
                                              else 'lip-keypoint vertical velocities, 1-D conv'}
  {d.channels[0]}→{d.channels[1]}→{d.channels[2]} with pooling → {d.embed}-d.
- Audio branch: {d.frames * d.sub} rows (≈0.64 s) × {d.bands} log-mel bands, 2-D conv
  {d.channels[0]}→{d.channels[1]}→{d.channels[2]} with pooling → {d.embed}-d.
- Match head: MLP {2 * d.embed}→{d.head}→1 logit; binary cross-entropy on matching pairs and pairs shifted
  by 2–24 frames (50/50).
- Reduced from the paper: motion grid instead of lip-region crops (Big Buck Bunny has no talking
  faces), late fusion of separable branch embeddings (so a whole lag band costs one MLP per pair),
  tens of thousands of parameters, minutes of CPU training."""


register_trainable("avmatch", AVMatchTrainable)


# ----------------------------------------------------------------------------------------
# Inference backend


class AVMatchBackend:
    """avmatch as an offset and alignment backend.

    Parameters
    ----------
    device : str
        auto | cpu | cuda.
    checkpoint : str or None
        Registry name, file path, ``"tiny-test"`` (seeded random weights, offline) or None
        (``avmatch-motion``).
    use_dtw : bool
        Affinity = ridge along the DTW path (default, as the paper); False = the raw match
        logits (for comparison).
    smooth_frames : int
        Rows averaged along each lag before DTW.
    """

    name = "avmatch"

    def __init__(self, device: str = "auto", checkpoint: str | None = None, use_dtw: bool = True,
                 smooth_frames: int = 3, **_: Any) -> None:
        self.model, self.dims, self.metrics, self.device = load_net(
            "avmatch", checkpoint, device, AVMatchDims, _make_avmatch, TINY_AVMATCH, DEFAULT_CHECKPOINT
        )
        self.kind = self.dims.input_kind
        self.use_dtw = bool(use_dtw)
        self.smooth = int(smooth_frames)

    def logits(self, audio: AudioFeatures, visual: VisualFeatures, max_shift: float) -> tuple[np.ndarray, int, float]:
        """Banded match logits ``L[i, j]`` of audio frame i and picture frame i + j − n.

        Returns
        -------
        (L of shape (Na, 2n + 1) with NaN outside the video, n, fps)
        """
        import torch

        fps = float(visual.fps)
        raw = visual_frames(visual, self.kind)
        if raw is None:
            raise CannotMeasure(f"this avmatch checkpoint needs {self.kind} features, which the video lacks")
        if len(raw) < 2:
            raise CannotMeasure("too few video frames to measure")
        a = audio_frames(audio, fps)
        v = visual_input(raw, self.kind)
        w = self.dims.frames
        ea = embed_chunks(self.model.embed_audio, windows(a, w), self.device)
        ev = embed_chunks(self.model.embed_visual, windows(v, w), self.device)
        n = lag_bins(max_shift, fps)

        def fn(x: np.ndarray, y: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return self.model.match(torch.from_numpy(x).to(self.device),
                                        torch.from_numpy(y).to(self.device)).cpu().numpy()

        return band_table(ea, ev, n, fn), n, fps

    def affinity(self, audio: AudioFeatures, visual: VisualFeatures, max_shift: float) -> Affinity:
        """DTW over the match cost −log σ(logit) → ridge Affinity (or raw logits with use_dtw=False)."""
        lg, n, fps = self.logits(audio, visual, max_shift)
        lg = smooth_rows(lg, self.smooth)
        if not self.use_dtw:
            return Affinity(scores=lg, lags=np.arange(-n, n + 1) / fps, rate=fps, start=0.0)
        with np.errstate(invalid="ignore"):
            cost = np.logaddexp(0.0, -lg)  # −log σ(logit), NaN stays NaN
        lag = dtw_lag_path(cost)
        conf = row_margin(cost, lag, lower_better=True)
        from avsync.path import smooth_series

        conf = smooth_series(conf, int(round(0.5 * fps)), order=0)
        return ridge_affinity(lag, 0.05 + 0.95 * conf, n, fps)

    def offset(self, audio: AudioFeatures, visual: VisualFeatures, max_shift: float) -> Offset:
        """Best lag by mean match log-probability.

        Returns
        -------
        Offset
            ``seconds`` (positive = audio leads); ``confidence`` = (p_best − median p) /
            (1 − median p) with p the mean match probability per lag; ``drift`` = best lag
            per 2 s window; ``extra``: ``p_best``, ``p_median``, ``mean_logp`` per lag.
        """
        lg, n, fps = self.logits(audio, visual, max_shift)
        lags = np.arange(-n, n + 1) / fps
        with np.errstate(invalid="ignore"):
            logp = -np.logaddexp(0.0, -lg)
        mlp = nanmean_cols(logp, max(5, len(lg) // 4))
        if not np.isfinite(mlp).any():
            raise CannotMeasure("picture and sound do not overlap enough to measure an offset")
        k = int(np.nanargmax(mlp))
        sec = float(lags[k] + parabolic(-mlp, k) / fps)
        p = nanmean_cols(np.exp(logp), max(5, len(lg) // 4))
        pb, pm = float(p[k]), float(np.nanmedian(p))
        conf = float(np.clip((pb - pm) / max(1.0 - pm, 1e-6), 0.0, 1.0))
        win, hop = max(4, int(round(2 * fps))), max(1, int(round(0.5 * fps)))
        drift = []
        for s in range(0, max(1, len(lg) - win + 1), hop):
            md = nanmean_cols(logp[s : s + win], max(2, win // 4))
            drift.append(float(lags[int(np.nanargmax(md))]) if np.isfinite(md).any() else sec)
        return Offset(
            seconds=sec, confidence=conf, drift=Signal(np.array(drift)[:, None], fps / hop, win / (2 * fps)),
            extra={"p_best": pb, "p_median": pm, "mean_logp": [float(x) for x in mlp],
                   "method": "avmatch: max mean match log-probability"},
        )


register(BackendInfo(
    name="avmatch",
    description="binary audio-visual match CNN (0.64 s log-mel × 16-frame clip) + DTW over its scores",
    trainable=True,
    factory=lambda **kw: AVMatchBackend(**kw),
    tasks=("align", "offset"),
))
