"""Match / non-match training of the avmatch network (:mod:`avsync.nn.avmatch`) in the shared loop."""

from __future__ import annotations

from typing import Any

import numpy as np

from avsync.backends._inputs import dims_from_dict
from avsync.nn.inputs import N_BANDS
from avsync.train import Batch, register_trainable
from avsync.train.pairs import PairTrainable, full_embeddings, pair_batch, shift_scan_error


def avmatch_shift(rng: np.random.Generator, m: int) -> np.ndarray:
    """avmatch's pair shifts: half 0 (match), half ±2 … 24 frames (non-match)."""
    neg = rng.integers(2, 25, size=m) * rng.choice([-1, 1], size=m)
    return np.where(rng.random(m) < 0.5, 0, neg)


PICTURE = {"motion": "the 8×8 motion grid, 3-D conv",
           "lips": "lip-keypoint vertical velocities, 1-D conv",
           "lipshape": "the 20 face-mesh lip points (x, y, centred, one scale) and their velocities, 1-D conv"}


class AVMatchTrainable(PairTrainable):
    """Match / non-match training of the avmatch CNN in the shared loop.

    Pairs from each distorted window: half matching (audio centred on the picture clip's own
    audio frame), half shifted by 2–24 frames; binary cross-entropy. Validation: the offset
    search over ±15 frames (mean match log-probability); ``error`` = mean |estimated shift|
    in frames; also the pair classification accuracy.
    """

    name = "avmatch"

    def dims(self, clips: list[Any], opts: Any) -> dict[str, Any]:
        from avsync.nn.avmatch import AVMatchDims

        return self.dims_with(AVMatchDims, visual_in=self.visual_width(clips))

    def make_model(self, dims: dict[str, Any]) -> Any:
        from avsync.nn.avmatch import AVMatchDims, AVMatchNet

        return AVMatchNet(dims_from_dict(AVMatchDims, dims))

    def make_batch(self, samples: list[Any], rng: Any, augment: dict | None, device: str) -> Batch:
        return pair_batch(samples, rng, augment, device, self.kind, N_BANDS, 16, self.pairs, avmatch_shift)

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
        ea, ev = full_embeddings(model, t, 16)

        def score(b: int, k: np.ndarray, i: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                lg = model.match(torch.from_numpy(ea[b, i]), torch.from_numpy(ev[b, k]))
            return torch.nn.functional.logsigmoid(lg).numpy()

        r = shift_scan_error(score, t["target"], 15, lower_better=False)
        return {**r, "bce": parts["bce"], "pair_acc": parts["pair_acc"]}

    def describe(self, dims: dict[str, Any]) -> str:
        from avsync.nn.avmatch import AVMatchDims

        d = dims_from_dict(AVMatchDims, dims)
        return f"""avmatch: binary audio-visual match CNN + DTW over its scores, as built here:

- Picture branch: {d.frames}-frame clip of {PICTURE.get(d.input_kind, d.input_kind)}
  {d.channels[0] if d.input_kind == 'motion' else d.visual_in}→{d.channels[1]}→{d.channels[2]} with pooling
  → {d.embed}-d.
- Audio branch: {d.frames * d.sub} rows (≈0.64 s) × {d.bands} log-mel bands, 2-D conv
  {d.channels[0]}→{d.channels[1]}→{d.channels[2]} with pooling → {d.embed}-d.
- Match head: MLP {2 * d.embed}→{d.head}→1 logit; binary cross-entropy on matching pairs and pairs shifted
  by 2–24 frames (50/50).
- Reduced from the paper: {'motion grid' if d.input_kind == 'motion' else 'face-mesh lip points'} instead of
  lip-region crops, late fusion of separable branch embeddings (so a whole lag band costs one MLP per pair),
  tens of thousands of parameters, minutes of CPU training."""


register_trainable("avmatch", AVMatchTrainable)
