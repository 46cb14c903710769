"""wlos: a regression CNN that predicts the audio-visual drift of 10-frame windows.

After the lip-sync regression papers: a two-stream CNN sees a 10-frame picture window and
the sound around it and predicts the drift d ∈ [−9, 9] frames between them. It is first
pre-trained as a C³-style sync classifier (in sync / not in sync, binary cross-entropy),
then fine-tuned as the regressor (L1 on d / 9; the classifier head keeps a small weight so
it stays usable for the coarse search below). A clip's offset is a robust aggregate of the
per-window predictions.

Inputs (per video frame)
    picture: 10 frames of lip keypoint vertical velocities (``'lips'``: the "vertical optical
    flow of the lip region", from keypoints since we have no mouth crops) or of the 8×8
    motion grid (``'motion'``, footage without faces); audio: 12 MFCCs (DCT-II of the
    log-mel, coefficients 1–12) at 4 sub-frame rows per video frame, over the picture window
    widened by ±9 frames (28 frames, 112 rows) so every drift in range has its sound inside.

Inference
    For every audio frame i and every coarse lag c (steps of 9 frames over ±max_shift) the
    window pair (audio around i, picture around i + c) gives a drift d_ic and a sync
    probability p_ic; the lag estimate is c + d_ic. Affinity: ``scores[i, j] = Σ_c p_ic ·
    exp(−(j − (c + d_ic))² / 2σ²)`` (a Gaussian bump at each predicted lag). Offset: the
    peak of the summed bumps, refined by the median of the estimates within ±2 frames of it
    (robust aggregation over windows); confidence = the p-weighted share of estimates near
    the peak, above its chance level.

The network is :mod:`avsync.nn.wlos`, its training :mod:`avsync.train.wlos`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from avsync.backends import BackendInfo, register
from avsync.backends._inputs import (
    checked_visual_frames,
    lag_bins,
    load_net,
    mfcc_frames,
    n_frames,
    visual_input,
    windows,
)
from avsync.errors import CannotMeasure
from avsync.features import AudioFeatures, VisualFeatures
from avsync.types import Affinity, Offset, Signal

DEFAULT_CHECKPOINT = "wlos-motion"


class WLOSBackend:
    """wlos as an offset and alignment backend.

    Parameters
    ----------
    device, checkpoint
        As for every learned backend (:mod:`avsync.backends`); default checkpoint ``wlos-motion``.
    hop : int
        Audio frames between analysed windows (rows in between are interpolated).
    """

    name = "wlos"

    def __init__(self, device: str = "auto", checkpoint: str | None = None, hop: int = 2, **_: Any) -> None:
        from avsync.nn.wlos import TINY_WLOS, WLOSDims, WLOSNet

        self.model, self.dims, self.metrics, self.device = load_net(
            "wlos", checkpoint, device, WLOSDims, WLOSNet, TINY_WLOS, DEFAULT_CHECKPOINT
        )
        self.kind = self.dims.input_kind
        self.hop = max(1, int(hop))

    def predictions(
        self, audio: AudioFeatures, visual: VisualFeatures, max_shift: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, float]:
        """Per-window lag estimates over coarse lags.

        Returns
        -------
        rows : ndarray of int, shape (R,)
            Audio frames analysed.
        est : ndarray, shape (R, C)
            Lag estimate c + d (frames) per row and coarse lag; NaN where the picture window
            leaves the video.
        prob : ndarray, shape (R, C)
            Sync probability of each window pair (0 where NaN).
        coarse : ndarray of int, shape (C,)
        n : int
            Lag half-width in frames.
        fps : float
        """
        fps = float(visual.fps)
        raw = checked_visual_frames(visual, self.kind, "wlos")
        a = mfcc_frames(audio, fps, n_mfcc=self.dims.n_mfcc)
        v = visual_input(raw, self.kind)
        n = lag_bins(max_shift, fps)
        step = self.dims.max_drift
        kc = int(np.ceil(n / step))
        coarse = np.arange(-kc, kc + 1) * step
        rows = np.arange(0, len(a), self.hop)
        est, prob = self._score(a, v, rows, coarse)
        return rows, est, prob, coarse, n, fps

    def _score(self, a: np.ndarray, v: np.ndarray, rows: np.ndarray, coarse: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        """The network on (audio window around row i, picture window around i + c) for every
        analysed row and coarse lag: (lag estimate c + drift, sync probability), each (R, C)."""
        import torch

        est = np.full((len(rows), len(coarse)), np.nan)
        prob = np.zeros((len(rows), len(coarse)))
        aw = windows(a, self.dims.audio_frames, rows)
        half = self.dims.frames // 2
        with torch.no_grad():
            for ci, c in enumerate(coarse):
                k = rows + c
                ok = (k - half >= 0) & (k - half + self.dims.frames <= len(v))
                if not ok.any():
                    continue
                vw = windows(v, self.dims.frames, k[ok])
                for s in range(0, int(ok.sum()), 1024):
                    lg, dr = self.model(torch.from_numpy(aw[ok][s : s + 1024]).to(self.device),
                                        torch.from_numpy(vw[s : s + 1024]).to(self.device))
                    idx = np.nonzero(ok)[0][s : s + 1024]
                    est[idx, ci] = c + dr.cpu().numpy()
                    prob[idx, ci] = torch.sigmoid(lg).cpu().numpy()
        return est, prob

    def _bumps(self, est: np.ndarray, prob: np.ndarray, n: int) -> np.ndarray:
        """(R, 2n + 1): Σ_c p · exp(−(lag − est)² / 2σ²) per row."""
        j = np.arange(-n, n + 1)[None, None, :]
        e = np.where(np.isfinite(est), est, 1e9)[:, :, None]
        return (prob[:, :, None] * np.exp(-((j - e) ** 2) / (2 * self.dims.sigma**2))).sum(axis=1)

    def affinity(self, audio: AudioFeatures, visual: VisualFeatures, max_shift: float) -> Affinity:
        """Gaussian bumps at the predicted lags, weighted by the sync probability, per audio frame."""
        rows, est, prob, _, n, fps = self.predictions(audio, visual, max_shift)
        sc = self._bumps(est, prob, n)
        na = n_frames(audio, fps)
        full = np.empty((na, sc.shape[1]))
        for j in range(sc.shape[1]):
            full[:, j] = np.interp(np.arange(na), rows, sc[:, j])
        return Affinity(scores=full, lags=np.arange(-n, n + 1) / fps, rate=fps, start=0.0)

    def offset(self, audio: AudioFeatures, visual: VisualFeatures, max_shift: float) -> Offset:
        """Robust aggregate of the window predictions.

        Returns
        -------
        Offset
            ``seconds`` = median of the estimates within ±2 frames of the peak of the summed
            bumps (positive = audio leads); ``confidence`` = (near-peak weight share − chance)
            / (1 − chance); ``drift`` = per-row best estimate (s); ``extra``: ``n_windows``,
            ``near_share``, ``peak_lag``.
        """
        rows, est, prob, _, n, fps = self.predictions(audio, visual, max_shift)
        h = self._bumps(est, prob, n).sum(axis=0)
        if not np.any(h > 0):
            raise CannotMeasure("no window could be scored")
        jpk = int(np.argmax(h)) - n
        ok = np.isfinite(est) & (np.abs(est - jpk) <= 2) & (np.abs(est) <= n + 0.5)
        wsum = float(prob[np.isfinite(est)].sum())
        near = float(prob[ok].sum()) / max(wsum, 1e-9)
        if ok.sum() >= 1:
            vals, w = est[ok], prob[ok] + 1e-6
            order = np.argsort(vals)
            cw = np.cumsum(w[order])
            lag = float(vals[order][np.searchsorted(cw, 0.5 * cw[-1])])
        else:
            lag = float(jpk)
        chance = min(0.99, 5.0 / (2 * n + 1))
        conf = float(np.clip((near - chance) / (1 - chance), 0.0, 1.0))
        best = np.where(np.isfinite(est), prob, -1.0).argmax(axis=1)
        per_row = est[np.arange(len(rows)), best] / fps
        return Offset(
            seconds=lag / fps, confidence=conf, drift=Signal(np.nan_to_num(per_row)[:, None], fps / self.hop, 0.0),
            extra={"n_windows": int(np.isfinite(est).sum()), "near_share": near, "peak_lag": jpk / fps,
                   "method": "wlos: weighted median of window drifts near the peak"},
        )


register(BackendInfo(
    name="wlos",
    description="drift-regression CNN on 10-frame windows (C³ pre-training), robust aggregation over windows",
    trainable=True,
    factory=lambda **kw: WLOSBackend(**kw),
    tasks=("align", "offset"),
))
