"""C³ pre-training then drift regression of the wlos network (:mod:`avsync.nn.wlos`) in the
shared loop."""

from __future__ import annotations

from typing import Any

import numpy as np

from avsync.backends._inputs import dims_from_dict, mfcc_frames
from avsync.nn.inputs import N_MFCC
from avsync.train import Batch, register_trainable
from avsync.train.pairs import PairTrainable, pair_batch


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
        from avsync.nn.wlos import WLOSDims

        steps = int(getattr(opts, "steps", 1000))
        return self.dims_with(WLOSDims, visual_in=self.visual_width(clips),
                              pretrain_steps=max(1, min(300, int(0.35 * steps))))

    def make_model(self, dims: dict[str, Any]) -> Any:
        from avsync.nn.wlos import WLOSDims, WLOSNet

        m = WLOSNet(dims_from_dict(WLOSDims, dims))
        m.pretrain_steps = int(dims.get("pretrain_steps", 300))
        return m

    def make_batch(self, samples: list[Any], rng: Any, augment: dict | None, device: str) -> Batch:
        n = self.pairs if rng is not None else 4 * self.pairs  # more fixed pairs for validation
        return pair_batch(samples, rng, augment, device, self.kind, N_MFCC, 10, n, wlos_shift,
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
        from avsync.nn.wlos import WLOSDims

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


def wlos_shift(rng: np.random.Generator, m: int) -> np.ndarray:
    """wlos's pair drifts: 30 % in [−1, 1], 45 % in [−9, 9], the rest in [−27, 27] frames."""
    near = rng.integers(-1, 2, size=m)
    reg = rng.integers(-9, 10, size=m)
    far = rng.integers(-27, 28, size=m)
    u = rng.random(m)
    return np.where(u < 0.3, near, np.where(u < 0.75, reg, far))


register_trainable("wlos", WLOSTrainable)
