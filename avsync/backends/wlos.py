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
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from avsync.backends import BackendInfo, register
from avsync.backends.syncnet import (
    SUB,
    PairTrainable,
    _pair_batch,
    dims_from_dict,
    lag_bins,
    load_net,
    mfcc_frames,
    n_frames,
    visual_frames,
    visual_input,
    windows,
)
from avsync.errors import CannotMeasure
from avsync.features import AudioFeatures, VisualFeatures
from avsync.train import Batch, register_trainable
from avsync.types import Affinity, Offset, Signal

DEFAULT_CHECKPOINT = "wlos-motion"
N_MFCC = 12


@dataclass(frozen=True)
class WLOSDims:
    """Everything needed to rebuild the wlos network (stored in its checkpoint)."""

    input_kind: str = "motion"  # motion (8×8 grid) | lips (lip keypoint y velocities)
    visual_in: int = 64  # picture values per frame
    n_mfcc: int = N_MFCC  # MFCCs per audio row
    sub: int = SUB  # audio rows per video frame
    frames: int = 10  # picture window, frames
    max_drift: int = 9  # largest |drift| predicted, frames; the audio window is frames + 2·max_drift
    channels: int = 48  # conv width of both streams
    fc: int = 128  # hidden width before the two heads
    pretrain_steps: int = 300  # C³ classifier pre-training steps before the regression fine-tuning
    sigma: float = 1.5  # width (frames) of the affinity bump at each prediction

    @property
    def audio_frames(self) -> int:
        return self.frames + 2 * self.max_drift

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


TINY_WLOS = WLOSDims(channels=4, fc=8, pretrain_steps=2)


def _make_wlos(dims: WLOSDims) -> Any:
    import torch
    from torch import nn

    c = dims.channels

    def c1d(cin: int, cout: int, k: int = 3) -> list[Any]:
        return [nn.Conv1d(cin, cout, k, padding=k // 2), nn.BatchNorm1d(cout), nn.ReLU(inplace=True)]

    class WLOSNet(nn.Module):
        """Two 1-D conv streams → concatenation → FC → (sync logit, drift in frames)."""

        def __init__(self) -> None:
            super().__init__()
            self.vconv = nn.Sequential(*c1d(dims.visual_in, c), *c1d(c, c))
            self.aconv = nn.Sequential(*c1d(dims.n_mfcc, c, 5), nn.MaxPool1d(2), *c1d(c, c), nn.MaxPool1d(2),
                                       *c1d(c, c))
            flat = c * dims.frames + c * (dims.audio_frames * dims.sub // 4)
            self.fc = nn.Sequential(nn.Linear(flat, dims.fc), nn.ReLU(inplace=True), nn.Dropout(0.1))
            self.sync_head = nn.Linear(dims.fc, 1)
            self.drift_head = nn.Linear(dims.fc, 1)
            # optimisation steps taken (saved with the weights: the loop's resume keeps the phase)
            self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))

        def forward(self, a: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """a (B, audio_frames, sub · n_mfcc), v (B, frames, visual_in) → (logit (B,), drift (B,) frames)."""
            b = a.shape[0]
            ar = a.reshape(b, dims.audio_frames * dims.sub, dims.n_mfcc).transpose(1, 2)
            h = torch.cat([self.vconv(v.transpose(1, 2)).reshape(b, -1), self.aconv(ar).reshape(b, -1)], dim=1)
            h = self.fc(h)
            return self.sync_head(h)[:, 0], dims.max_drift * torch.tanh(self.drift_head(h)[:, 0])

    return WLOSNet()


# ----------------------------------------------------------------------------------------
# Training


class WLOSTrainable(PairTrainable):
    """C³ pre-training then drift regression, in the shared loop.

    Pairs: picture window around frame k, audio window around ``target[k] + d``. Drifts d
    are drawn uniformly in [−27, 27] frames (a third in [−1, 1]); the sync label is |d| ≤ 1.
    Steps < ``pretrain_steps``: BCE on the sync logit only (C³ classifier). Afterwards:
    L1 on d / max_drift over pairs with |d| ≤ max_drift, plus 0.2 × BCE.
    Validation: ``error`` = mean |predicted − true| drift in frames over fixed pairs with
    |d| ≤ 9 (the regression target), also the sync accuracy.
    """

    name = "wlos"
    audio_fn = staticmethod(mfcc_frames)
    default_pairs = 24

    def dims(self, clips: list[Any], opts: Any) -> dict[str, Any]:
        steps = int(getattr(opts, "steps", 1000))
        return self._dims(WLOSDims, visual_in=int(clips[0].visual.shape[1]),
                          pretrain_steps=max(1, min(300, int(0.35 * steps))))

    def make_model(self, dims: dict[str, Any]) -> Any:
        m = _make_wlos(dims_from_dict(WLOSDims, dims))
        m.pretrain_steps = int(dims.get("pretrain_steps", 300))
        return m

    def make_batch(self, samples: list[Any], rng: Any, augment: dict | None, device: str) -> Batch:
        n = self.pairs if rng is not None else 4 * self.pairs  # more fixed pairs for validation
        return _pair_batch(samples, rng, augment, device, self.kind, N_MFCC, 10, n, _wlos_shift,
                           audio_width=10 + 2 * 9, margin=15)

    def loss(self, model: Any, batch: Batch) -> tuple[Any, dict[str, float]]:
        import torch.nn.functional as F

        t = batch.tensors
        logit, drift = model(t["aud"], t["vis"])
        d = t["shift"]
        y = (d.abs() <= 1).float()
        bce = F.binary_cross_entropy_with_logits(logit, y)
        inr = (d.abs() <= 9).float()
        l1 = ((drift - d).abs() / 9.0 * inr).sum() / inr.sum().clamp_min(1.0)
        pre = model.training and int(model.steps_done) < int(getattr(model, "pretrain_steps", 0))
        if model.training:
            model.steps_done += 1
        loss = bce if pre else l1 + 0.2 * bce
        return loss, {"bce": float(bce.detach()), "l1_frames": float(l1.detach()) * 9.0, "phase": 0.0 if pre else 1.0}

    def val_metrics(self, model: Any, batch: Batch) -> dict[str, float]:
        t = batch.tensors
        logit, drift = model(t["aud"], t["vis"])
        d = t["shift"]
        inr = d.abs() <= 9
        err = float((drift - d).abs()[inr].mean()) if bool(inr.any()) else 9.0
        acc = float(((logit > 0) == (d.abs() <= 1)).float().mean())
        within1 = float(((drift - d).abs()[inr] <= 1).float().mean()) if bool(inr.any()) else 0.0
        return {"error": err, "within1": within1, "sync_acc": acc}

    def describe(self, dims: dict[str, Any]) -> str:
        d = dims_from_dict(WLOSDims, dims)
        pic = ("the 8×8 motion grid" if d.input_kind == "motion"
               else "lip-keypoint vertical velocities (keypoint stand-in for vertical optical flow)")
        return f"""wlos: drift-regression CNN on {d.frames}-frame windows, as built here:

- Picture stream: {d.frames} frames of {pic},
  1-D conv {d.channels}→{d.channels}.
- Audio stream: {d.n_mfcc} MFCCs (DCT-II of the log-mel) × {d.audio_frames * d.sub} rows ({d.audio_frames} frames:
  the picture window ± {d.max_drift}), 1-D conv {d.channels} ×3 with pooling.
- Fusion: concatenation → FC {d.fc} → sync logit (C³ classifier) and drift = {d.max_drift}·tanh(·) frames.
- Schedule: {d.pretrain_steps} steps of C³ pre-training (BCE, in sync = |d| ≤ 1), then fine-tuning as the
  regressor (L1 on d/{d.max_drift}, + 0.2 × BCE to keep the sync head for the coarse search).
- Reduced from the paper: motion grid (or lip keypoints) instead of Farneback flow of mouth crops,
  tens of thousands of parameters, minutes of CPU training; lags beyond ±{d.max_drift} frames are reached
  by scanning coarse shifts (steps of {d.max_drift} frames) scored by the sync head."""


def _wlos_shift(rng: np.random.Generator, m: int) -> np.ndarray:
    near = rng.integers(-1, 2, size=m)
    reg = rng.integers(-9, 10, size=m)
    far = rng.integers(-27, 28, size=m)
    u = rng.random(m)
    return np.where(u < 0.3, near, np.where(u < 0.75, reg, far))


register_trainable("wlos", WLOSTrainable)


# ----------------------------------------------------------------------------------------
# Inference backend


class WLOSBackend:
    """wlos as an offset and alignment backend.

    Parameters
    ----------
    device : str
        auto | cpu | cuda.
    checkpoint : str or None
        Registry name, file path, ``"tiny-test"`` (seeded random weights, offline) or None
        (``wlos-motion``).
    hop : int
        Audio frames between analysed windows (rows in between are interpolated).
    """

    name = "wlos"

    def __init__(self, device: str = "auto", checkpoint: str | None = None, hop: int = 2, **_: Any) -> None:
        self.model, self.dims, self.metrics, self.device = load_net(
            "wlos", checkpoint, device, WLOSDims, _make_wlos, TINY_WLOS, DEFAULT_CHECKPOINT
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
        import torch

        fps = float(visual.fps)
        raw = visual_frames(visual, self.kind)
        if raw is None:
            raise CannotMeasure(f"this wlos checkpoint needs {self.kind} features, which the video lacks")
        if len(raw) < 2:
            raise CannotMeasure("too few video frames to measure")
        a = mfcc_frames(audio, fps, n_mfcc=self.dims.n_mfcc)
        v = visual_input(raw, self.kind)
        n = lag_bins(max_shift, fps)
        step = self.dims.max_drift
        kc = int(np.ceil(n / step))
        coarse = np.arange(-kc, kc + 1) * step
        rows = np.arange(0, len(a), self.hop)
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
        return rows, est, prob, coarse, n, fps

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
