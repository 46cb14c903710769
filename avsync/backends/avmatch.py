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

The network is :mod:`avsync.nn.avmatch`, its training :mod:`avsync.train.avmatch`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from avsync.backends import BackendInfo, register
from avsync.backends._inputs import (
    KindNets,
    band_lag_table,
    dtw_ridge_affinity,
    frame_embeddings,
    nanmean_cols,
    parabolic,
    smooth_rows,
    window_best_lags,
)
from avsync.errors import CannotMeasure
from avsync.features import AudioFeatures, VisualFeatures
from avsync.types import Affinity, Offset, Signal

DEFAULT_CHECKPOINT = {"motion": "avmatch-motion", "lips": "avmatch-lips"}


class AVMatchBackend(KindNets):
    """avmatch as an offset and alignment backend.

    Parameters
    ----------
    device, checkpoint
        As for every learned backend (:mod:`avsync.backends`); default checkpoint: ``avmatch-lips``
        for picture features with a tracked face (speech mode), else ``avmatch-motion``
        (:data:`DEFAULT_CHECKPOINT`, chosen per input).
    use_dtw : bool
        Affinity = ridge along the DTW path (default, as the paper); False = the raw match
        logits (for comparison).
    smooth_frames : int
        Rows averaged along each lag before DTW.
    """

    NET = "avmatch"
    DEFAULT_CHECKPOINT = DEFAULT_CHECKPOINT

    name = "avmatch"

    def __init__(self, device: str = "auto", checkpoint: str | None = None, use_dtw: bool = True,
                 smooth_frames: int = 3, **_: Any) -> None:
        self.device_request = device
        self.use_dtw = bool(use_dtw)
        self.smooth = int(smooth_frames)
        self.start_nets(checkpoint)

    @staticmethod
    def net_types() -> tuple[type, Any, Any]:
        from avsync.nn.avmatch import TINY_AVMATCH, AVMatchDims, AVMatchNet

        return AVMatchDims, AVMatchNet, TINY_AVMATCH

    def logits(self, audio: AudioFeatures, visual: VisualFeatures, max_shift: float) -> tuple[np.ndarray, int, float]:
        """Banded match logits ``L[i, j]`` of audio frame i and picture frame i + j − n.

        Returns
        -------
        (L of shape (Na, 2n + 1) with NaN outside the video, n, fps)
        """
        import torch

        self.choose(visual)
        ea, ev, fps = frame_embeddings(self.model, audio, visual, self.kind, self.dims.frames, self.device, "avmatch")

        def fn(x: np.ndarray, y: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return self.model.match(torch.from_numpy(x).to(self.device),
                                        torch.from_numpy(y).to(self.device)).cpu().numpy()

        lg, n = band_lag_table(ea, ev, max_shift, fps, fn)
        return lg, n, fps

    def affinity(self, audio: AudioFeatures, visual: VisualFeatures, max_shift: float) -> Affinity:
        """DTW over the match cost −log σ(logit) → ridge Affinity (or raw logits with use_dtw=False)."""
        lg, n, fps = self.logits(audio, visual, max_shift)
        lg = smooth_rows(lg, self.smooth)
        if not self.use_dtw:
            return Affinity(scores=lg, lags=np.arange(-n, n + 1) / fps, rate=fps, start=0.0)
        with np.errstate(invalid="ignore"):
            cost = np.logaddexp(0.0, -lg)  # −log σ(logit), NaN stays NaN
        return dtw_ridge_affinity(cost, n, fps)

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
        win, hop, drift = window_best_lags(logp, lags, fps, sec, lower_better=False)
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
