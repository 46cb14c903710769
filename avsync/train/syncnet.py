"""Contrastive training of the SyncNet network (:mod:`avsync.nn.syncnet`) in the shared loop."""

from __future__ import annotations

from typing import Any

import numpy as np

from avsync.backends._inputs import dims_from_dict
from avsync.nn.inputs import N_BANDS
from avsync.train import Batch, register_trainable
from avsync.train.pairs import PairTrainable, full_embeddings, pair_batch, shift_scan_error


class SyncNetTrainable(PairTrainable):
    """Contrastive training of :class:`avsync.nn.syncnet.SyncNetModel` in the shared loop.

    From each distorted window, ``pairs`` (picture frame k, audio frame target[k] + d)
    pairs: half matching (d = 0), half not (3 ≤ |d| ≤ 20 frames, SyncNet's shifted
    negatives from the same clip). Loss (Hadsell et al., as in SyncNet):
    ``y·d² + (1 − y)·max(margin − d, 0)²`` on the Euclidean distance d of the embeddings.
    Validation: the SyncNet offset search over ±15 frames on the fixed windows; ``error`` =
    mean |estimated shift| in frames (0 is right).
    """

    name = "syncnet"

    def dims(self, clips: list[Any], opts: Any) -> dict[str, Any]:
        from avsync.nn.syncnet import SyncNetDims

        return self.dims_with(SyncNetDims, visual_in=self.visual_width(clips))

    def make_model(self, dims: dict[str, Any]) -> Any:
        from avsync.nn.syncnet import SyncNetDims, SyncNetModel

        return SyncNetModel(dims_from_dict(SyncNetDims, dims))

    def make_batch(self, samples: list[Any], rng: Any, augment: dict | None, device: str) -> Batch:
        return pair_batch(samples, rng, augment, device, self.kind, N_BANDS, 5, self.pairs, syncnet_shift)

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
        ea, ev = full_embeddings(model, t, 5)
        r = shift_scan_error(lambda b, k, i: np.linalg.norm(ev[b, k] - ea[b, i], axis=1), t["target"], 15, True)
        return {**r, "loss": float(loss)}

    def describe(self, dims: dict[str, Any]) -> str:
        return syncnet_description(dims)


def syncnet_shift(rng: np.random.Generator, m: int) -> np.ndarray:
    """SyncNet's pair shifts: half 0 (matching), half ±3 … 20 frames (shifted negatives)."""
    neg = rng.integers(3, 21, size=m) * rng.choice([-1, 1], size=m)
    return np.where(rng.random(m) < 0.5, 0, neg)


def syncnet_description(dims: dict[str, Any]) -> str:
    """Markdown for the model card: inputs, structure and what differs from the paper."""
    from avsync.nn.syncnet import SyncNetDims

    d = dims_from_dict(SyncNetDims, dims)
    picture = {"motion": "the 8×8 motion grid stacked as channels (SyncNet early fusion)",
               "lips": "lip-keypoint vertical velocities",
               "lipshape": "the 20 face-mesh lip points (x, y, centred, one scale) and their velocities"}
    reduced = ("8×8 frame-difference motion grid instead of 111×111 mouth crops\n  (Big Buck Bunny has no talking "
               "faces), 32 log-mel bands instead of 13 MFCCs, ~0.3 M instead of\n  ~13 M parameters, minutes of CPU "
               "training on 11 s cartoon clips instead of BBC news."
               if d.input_kind == "motion" else
               "face-mesh lip keypoints instead of 111×111 grey mouth crops, 32 log-mel bands\n  instead of 13 MFCCs, "
               "a 1-D conv over the picture window instead of a 2-D/3-D conv tower, tens of\n  thousands instead "
               "of ~13 M parameters, minutes of CPU training on a few minutes of talking faces\n  instead of "
               "hundreds of hours of BBC news.")
    return f"""SyncNet (Chung & Zisserman 2016), two-stream contrastive embedding network, as built here:

- Picture stream: {d.frames} frames of {picture.get(d.input_kind, d.input_kind)},
  conv {d.channels[0]}→{d.channels[1]}→pool→{d.channels[2]} → FC {d.fc} → {d.embed}-d embedding (L2-normalised).
- Audio stream: {d.frames * d.sub} rows (≈0.2 s) × {d.bands} log-mel bands as a 1-channel image,
  conv {d.channels[0]}→pool→{d.channels[1]}→pool→{d.channels[2]} → FC {d.fc} → {d.embed}-d embedding.
- Loss: contrastive (margin {d.margin}) on matching pairs and pairs shifted by 3–20 frames.
- Reduced from the paper: {reduced}
- Confidence = LSE-C / (LSE-C + {d.conf_c50:g})."""


register_trainable("syncnet", SyncNetTrainable)
