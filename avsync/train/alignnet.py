"""Training of AlignNet (:mod:`avsync.nn.alignnet`) in the shared loop."""

from __future__ import annotations

from typing import Any

import numpy as np

from avsync.backends._inputs import alignnet_audio_input, alignnet_visual_input, alignnet_visual_raw, audio_at_fps
from avsync.errors import InputError
from avsync.features import AudioFeatures, VisualFeatures
from avsync.nn.inputs import layout, tie_from_pairs
from avsync.train import MODE_KIND, Batch, register_trainable
from avsync.train.augment import hflip_grid, hflip_keypoints, spec_augment
from avsync.train.data import ClipArrays
from avsync.types import in_itu_window


class AlignNetTrainable:
    """AlignNet for :func:`avsync.train.loop.train`.

    Parameters
    ----------
    mode : str
        general → motion grid, dance → 19 body keypoints, speech → 20 lip points.
    mu : float
        Weight of the monotonic hinge term.
    ce : float
        Weight of the auxiliary affinity cross-entropy (not in the paper; 0 = off).
    **model : AlignNetDims fields (ablations: spatial_attention, temporal_attention, pyramid, ...)
    """

    name = "alignnet"

    def __init__(self, mode: str = "general", mu: float = 1.0, ce: float = 0.0, **model: Any) -> None:
        if mode not in MODE_KIND:
            raise InputError(f"unknown mode '{mode}' for alignnet (general, dance or speech)")
        self.mode = mode
        self.kind = MODE_KIND[mode]
        self.mu = float(mu)
        self.ce = float(ce)
        self.model_opts = model
        self.n_points, self.per_point, self.pairs = layout(self.kind)

    def prepare(self, audio: AudioFeatures, visual: VisualFeatures, name: str) -> ClipArrays | None:
        raw = alignnet_visual_raw(visual, self.kind)
        if raw is None:
            return None
        a = audio_at_fps(audio, visual.fps, len(raw))
        return ClipArrays(name, a, raw, float(visual.fps), visual_is_diff=self.kind == "motion")

    def dims(self, clips: list[ClipArrays], opts: Any) -> dict[str, Any]:
        from avsync.nn.alignnet import AlignNetDims

        d = AlignNetDims(
            n_points=self.n_points, per_point=self.per_point, point_tie=tie_from_pairs(self.n_points, self.pairs),
            audio_in=int(clips[0].audio.shape[1]) if clips else 128, input_kind=self.kind,
            **{k: (tuple(v) if isinstance(v, list) else v) for k, v in self.model_opts.items()},
        )
        return d.to_dict()

    def make_model(self, dims: dict[str, Any]) -> Any:
        from avsync.nn.alignnet import AlignNet, AlignNetDims

        return AlignNet(AlignNetDims.from_dict(dims))

    def make_batch(self, samples: list[Any], rng: Any, augment: dict[str, bool] | None, device: str) -> Batch:
        import torch

        vs, as_, ts = [], [], []
        for s in samples:
            raw, a = s.visual, s.audio
            if augment and augment.get("flip") and rng.random() < 0.5:
                raw = hflip_grid(raw) if self.kind == "motion" else hflip_keypoints(raw, self.pairs)
            a = alignnet_audio_input(a)
            if augment and augment.get("spec"):
                a = spec_augment(a, rng, fill=0.0)
            t = len(s.target)
            vs.append(alignnet_visual_input(raw, self.kind))
            as_.append(a)
            ts.append(2.0 * s.target / max(t - 1, 1) - 1.0)
        tensors = {
            "visual": torch.from_numpy(np.stack(vs)).to(device),
            "audio": torch.from_numpy(np.stack(as_)).to(device),
            "target": torch.from_numpy(np.stack(ts).astype(np.float32)).to(device),
            "fps": float(samples[0].fps),
        }
        return Batch(tensors, len(samples))

    def loss(self, model: Any, batch: Batch) -> tuple[Any, dict[str, float]]:
        from avsync.nn.alignnet import alignnet_loss

        b = batch.tensors
        out = model(b["visual"], b["audio"])
        return alignnet_loss(out, b["target"], mu=self.mu, ce=self.ce)

    def val_metrics(self, model: Any, batch: Batch) -> dict[str, float]:
        b = batch.tensors
        out = model(b["visual"], b["audio"])
        t = b["target"].shape[-1]
        half = (t - 1) / 2.0
        pred = ((out["corr"] + 1.0) * half).cpu().numpy()
        true = ((b["target"] + 1.0) * half).cpu().numpy()
        err = np.abs(pred - true)
        _, parts = self.loss(model, batch)
        return {
            "error": float(err.mean()),
            "within1": float((err <= 1.0 + 1e-6).mean()),
            "itu": float(np.mean(in_itu_window((true - pred) / b["fps"]))),
            "loss": float(parts["l1"] + self.mu * parts["hinge"]),
        }

    def describe(self, dims: dict[str, Any]) -> str:
        return model_description(dims)


def model_description(dims: dict[str, Any]) -> str:
    """Markdown: inputs, structure and what differs from the paper."""
    kind = dims.get("input_kind", "motion")
    inp = {
        "motion": "8×8 motion grid (frame-difference energy on 160-px-wide gray frames): per cell log energy "
                  "and its change (128 channels) — the paper has no such input; it stands in for keypoints "
                  "on footage without people",
        "pose": "19 body keypoints (mediapipe subset, mid-hip subtracted): velocity and acceleration (x, y)",
        "lips": "20 lip points (face mesh): velocity and acceleration (x, y)",
    }[kind]
    return f"""AlignNet (Wang et al., WACV 2020), `avsync/nn/alignnet.py`.

- Visual input: {inp}. Audio: 128-bin log-mel, box-smoothed and resampled to the frame rate,
  per-bin normalised over the window.
- Spatial attention: {'one learned weight per point, tied for left/right pairs' if dims.get('spatial_attention')
                      else 'off'} ({dims.get('n_points')} points).
- Temporal attention: {'audio self-attention → a per-step gate re-weighting the audio features'
                       if dims.get('temporal_attention') else 'off'}.
- Pyramids: one per modality, channels {dims.get('channels')}, temporal downscale 1/{dims.get('strides', [0])[0]}
  then 1/2 per level; coarse-to-fine: audio features sampled at the upsampled coarser
  correspondence ± {dims.get('band')} samples (warp + band), softmax affinity over those audio
  positions, correspondence = soft-argmax + a learned refinement, in (−1, 1); finest level
  linearly upsampled to the input length. Pyramid: {'on' if dims.get('pyramid') else 'off (single level)'}.
- Loss: Σ_l λ_l L1 + μ Σ_l λ_l hinge(c_l[t] − c_l[t+1]), λ = 1, ½, ¼, ⅛.
- Reduced vs. the paper: banded affinity (± band samples per level) instead of a full one; the
  affinity is followed by a small conv refinement instead of the paper's estimator network; trained
  for minutes on one CPU on a small corpus rather than on the paper's dance/speech datasets."""


register_trainable("alignnet", AlignNetTrainable)
