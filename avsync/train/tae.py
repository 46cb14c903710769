"""Training of the temporal autoencoder (:mod:`avsync.nn.tae`) in the shared loop."""

from __future__ import annotations

from typing import Any

import numpy as np

from avsync.backends._inputs import seq_visual_input
from avsync.errors import InputError
from avsync.train import Batch, register_trainable
from avsync.train.augment import hflip_grid
from avsync.train.data import ClipArrays
from avsync.train.seq import SeqTrainable, audio_window
from avsync.types import in_itu_window


def window_targets(plan: np.ndarray, n: int, n_a: int, n_v: int, rng: np.random.Generator,
                   jitter: int) -> tuple[int, int, np.ndarray]:
    """One (audio window, video window) pair inside a distorted training sample.

    Parameters
    ----------
    plan : ndarray of int, shape (T,)
        Distorted frame m shows original frame plan[m] (the audio is on the original clock).
    n : int
        Frames in the sample (audio and distorted video).
    n_a, n_v : int
        Window lengths.
    rng : numpy.random.Generator
    jitter : int
        The video window's centre is moved by up to ± this many frames from the true match.

    Returns
    -------
    a0 : int
        First audio frame of the window.
    v0 : int
        First video frame of the window.
    target : ndarray of int64, shape (n_a,)
        Video index (0 … n_v − 1) per audio step; −100 where it falls outside the window.
    """
    from avsync.warps import invert_plan

    gt = invert_plan(plan, n)
    a0 = int(rng.integers(0, n - n_a + 1))
    centre = int(gt[a0 + n_a // 2]) + int(rng.integers(-jitter, jitter + 1))
    v0 = int(np.clip(centre - n_v // 2, 0, max(n - n_v, 0)))
    t = gt[a0 : a0 + n_a] - v0
    t = np.where((t >= 0) & (t < n_v), t, -100).astype(np.int64)
    return a0, v0, t


class TAETrainable(SeqTrainable):
    """The temporal autoencoder for :func:`avsync.train.loop.train`.

    Each loop sample (a randomly warped window) gives ``per_sample`` (1 s audio, 3 s video)
    pairs; the target of every audio step is the distorted frame that shows it
    (:func:`avsync.warps.invert_plan`).

    Parameters
    ----------
    mode : str
        general → motion grid, dance → pose keypoints, speech → lip keypoints.
    per_sample : int
        Window pairs drawn from every sample.
    **model
        Overrides of :func:`avsync.nn.tae.default_dims` (``emb``, ``width``, ``hidden``, ``aux_weight``).
    """

    name = "tae"

    def __init__(self, mode: str = "general", per_sample: int = 4, **model: Any) -> None:
        super().__init__(mode, **model)
        self.per_sample = int(per_sample)
        self._n: tuple[int, int] | None = None

    def dims(self, clips: list[ClipArrays], opts: Any) -> dict[str, Any]:
        from avsync.nn.tae import default_dims

        fps, vin = self.clip_shape(clips)
        return default_dims(fps, vin, self.kind, **self.model_opts)

    def make_model(self, dims: dict[str, Any]) -> Any:
        self._n = (int(dims["n_a"]), int(dims["n_v"]))
        self.aux_weight = float(dims.get("aux_weight", 0.5))
        from avsync.nn.tae import make_net

        return make_net(dims)

    def make_batch(self, samples: list[Any], rng: Any, augment: dict[str, bool] | None, device: str) -> Batch:
        import torch

        if self._n is None:
            raise RuntimeError("make_model must be called before make_batch")
        n_a, n_v = self._n
        r = rng if rng is not None else np.random.default_rng(12345)
        aug = augment or {}
        auds, viss, tgts = [], [], []
        for s in samples:
            n = len(s.target)
            if n < n_v:
                raise InputError(f"training windows of {n} frames are shorter than the video window ({n_v})")
            raw = s.visual
            if aug.get("flip") and self.kind == "motion" and r.random() < 0.5:
                raw = hflip_grid(raw)
            vis = seq_visual_input(raw, self.kind)
            aud = audio_window(s.audio, r if aug.get("spec") else None)
            for _ in range(self.per_sample):
                a0, v0, t = window_targets(s.plan, n, n_a, n_v, r, jitter=n_a // 2)
                auds.append(aud[a0 : a0 + n_a])
                viss.append(vis[v0 : v0 + n_v])
                tgts.append(t)
        tensors = {
            "audio": torch.from_numpy(np.stack(auds)).to(device),
            "visual": torch.from_numpy(np.stack(viss)).to(device),
            "target": torch.from_numpy(np.stack(tgts)).to(device),
            "fps": float(samples[0].fps),
        }
        return Batch(tensors, len(tgts))

    def loss(self, model: Any, batch: Batch) -> tuple[Any, dict[str, float]]:
        from avsync.nn.tae import tae_loss

        b = batch.tensors
        return tae_loss(model(b["audio"], b["visual"]), b["target"], self.aux_weight)

    def val_metrics(self, model: Any, batch: Batch) -> dict[str, float]:
        from avsync.nn.tae import tae_loss

        b = batch.tensors
        out = model(b["audio"], b["visual"])
        pred = out["logits"].argmax(-1).cpu().numpy()
        t = b["target"].cpu().numpy()
        ok = t >= 0
        err = np.abs(pred - t)[ok].astype(np.float64)
        _, parts = tae_loss(out, b["target"], self.aux_weight)
        return {
            "error": float(err.mean()),
            "within1": float((err <= 1).mean()),
            "itu": float(np.mean(in_itu_window((t - pred)[ok] / b["fps"]))),
            "acc": float((err == 0).mean()),
            "loss": float(parts["ce"]),
        }

    def describe(self, dims: dict[str, Any]) -> str:
        return model_description(dims)


def model_description(dims: dict[str, Any]) -> str:
    """Markdown: inputs, structure and what differs from the paper."""
    kind = dims.get("kind", "motion")
    vis = {"motion": "8×8 motion grid (frame-difference energy): per cell log energy and its change — "
                     "Big Buck Bunny is a cartoon without talking faces, so this variant uses the "
                     "motion grid instead of the paper's lip region",
           "lips": "lip keypoints: velocity and acceleration", "pose": "pose keypoints: velocity and acceleration"}
    return f"""Temporal autoencoder for lip sync (`avsync/nn/tae.py`).

- Windows: {dims['n_a']} audio steps against {dims['n_v']} video frames at {dims['fps']:g} fps
  ({dims['n_a'] / dims['fps']:.2g} s of audio against {dims['n_v'] / dims['fps']:.2g} s of picture; the paper:
  25 against 75 at 25 fps).
- Embeddings (the distance vectors' source): two 1-D CNN encoders (4 conv layers, width
  {dims['width']}, receptive field 9 frames) → {dims['emb']}-d unit vectors, trained jointly.
  Audio: 128-bin log-mel pooled to 32 bands, 4 samples per video frame. Picture: {vis.get(kind, kind)}.
- Input per audio step: squared distances to the {dims['n_v']} video embeddings.
- Encoder: linear {dims['n_v']}→{dims['hidden']} + bidirectional LSTM ({dims['hidden']}).
  Decoder: LSTM cell with input feeding and dot-product attention over the encoder states;
  logits = linear head − s · distance (learned s; starts as nearest-neighbour matching).
- Loss: cross-entropy of the video index per audio step + {dims.get('aux_weight', 0.5)} × cross-entropy
  of −8 · distance (auxiliary InfoNCE on the embeddings).
- Inference as in the paper: stride-10 windows (at 25 fps) → ≤ 3 votes per audio step, max-vote
  candidates, longest monotonic sequence by DP, skip and continue, adaptive Laplacian smoothing
  (smallest σ meeting monotonicity and a speed bound), tail padded with the last frame.
  Added here: the video window is centred on a coarse global lag found from the embedding
  distances, so offsets up to `max_shift` (not only ±1 s) are reachable.
- Reduced vs. the paper: small encoders and LSTMs (hidden {dims['hidden']}), decoder fed with
  the encoder state instead of its previous prediction, trained for minutes on one CPU on
  {"lip keypoints of a few minutes of talking faces" if kind == "lips" else kind + " features"} rather than on
  a lip-reading corpus."""


register_trainable("tae", TAETrainable)
