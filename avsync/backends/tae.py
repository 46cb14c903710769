"""``tae``: the temporal-autoencoder lip-sync aligner, as a learned backend.

For every audio step of a short audio window (1 s: 25 steps at 25 fps) the network sees
the vector of distances between that step's audio embedding and the embeddings of every
frame of a 3 s video window around it (75 frames at 25 fps). An LSTM encoder reads the
distance vectors; an attention LSTM decoder predicts, for every audio step, the index of
the video frame that belongs to it (a 75-way classification, cross-entropy).

Inference follows the paper:

1. audio windows with a stride of 10 steps (at 25 fps) → up to 3 votes per audio step;
2. per audio step, keep the candidate video frames with the most votes;
3. dynamic programming for the longest monotonic (non-decreasing) sequence through the
   candidates; audio steps left out are skipped and filled between their neighbours;
4. adaptive Laplacian smoothing: the smallest Laplace-kernel width σ whose result meets
   the smoothness criterion (monotonic, picture speed at most ``max_speed``);
5. the tail after the last assigned step is padded with the last frame.

The embeddings whose distances form the input come from two small learned 1-D CNN
encoders (audio: 32-band log-mel at 4 phases per video frame; picture: motion grid or
keypoint velocities), trained jointly with the LSTMs. An auxiliary InfoNCE-style term on
the raw distances (nearest video frame = the right one) speeds up their training.

The scale follows the clip's frame rate: ``n_a = round(fps)`` audio steps against
``3 n_a`` video frames (the checkpoint stores its rate; clips at another rate are
resampled onto it).

This module imports torch only when a model or backend is built.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from avsync.backends import BackendInfo, register
from avsync.errors import CannotMeasure, InputError
from avsync.features import AudioFeatures, VisualFeatures
from avsync.train import Batch, register_trainable
from avsync.train.data import ClipArrays
from avsync.types import Affinity, Correspondence, Offset, Signal, in_itu_window

DEFAULT_CHECKPOINT = "tae-motion"
MODE_KIND = {"general": "motion", "dance": "pose", "speech": "lips", "auto": "motion"}
BANDS = 32  # log-mel bands after pooling 128 bins by 4
PHASES = 4  # audio samples per video frame
AUDIO_IN = BANDS * PHASES
GRID_PAIRS = tuple((r * 8 + c, r * 8 + 7 - c) for r in range(8) for c in range(4))


# ------------------------------------------------------------------------------------------
# Inputs (shared with avsync.backends.avst)


def audio_frames(audio: AudioFeatures, fps: float, n: int) -> np.ndarray:
    """Log-mel on the video clock with sub-frame detail.

    The 128-bin log-mel (100 Hz) is pooled into 32 bands (mean of 4 adjacent bins) and
    sampled by linear interpolation at 4 phases around each frame time ``k / fps``
    (offsets −3/8, −1/8, +1/8, +3/8 of a frame).

    Parameters
    ----------
    audio : AudioFeatures
    fps : float
        Video frame rate.
    n : int
        Frames wanted.

    Returns
    -------
    ndarray, shape (n, 128)
        Phase-major: columns ``q * 32 + b`` hold band ``b`` at phase ``q``. dB values.
    """
    lm = np.asarray(audio.logmel.values, dtype=np.float32)
    if lm.shape[1] % BANDS:
        raise InputError(f"log-mel width {lm.shape[1]} is not a multiple of {BANDS}")
    pooled = lm.reshape(len(lm), BANDS, -1).mean(2)
    t_old = audio.logmel.start + np.arange(len(lm)) / audio.logmel.rate
    phase = (np.arange(PHASES) + 0.5) / PHASES - 0.5
    t_new = (np.arange(n)[:, None] + phase[None, :]) / float(fps)
    out = np.empty((n, PHASES, BANDS), np.float32)
    for b in range(BANDS):
        out[:, :, b] = np.interp(t_new, t_old, pooled[:, b])
    return out.reshape(n, AUDIO_IN)


def audio_input(a: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """Per-band standardisation over the window (and SpecAugment masks when ``rng`` is given).

    Parameters
    ----------
    a : ndarray, shape (T, 128)
        From :func:`audio_frames`.
    rng : numpy.random.Generator, optional
        Apply SpecAugment time masks (on the 4T sub-frame steps) and band masks (≤ 6 bands).

    Returns
    -------
    ndarray, shape (T, 128), float32
    """
    t = len(a)
    x = a.reshape(t * PHASES, BANDS)
    x = (x - x.mean(0, keepdims=True)) / np.maximum(x.std(0, keepdims=True), 1e-3)
    if rng is not None:
        from avsync.train.augment import spec_augment

        x = spec_augment(x, rng, max_freq=6, fill=0.0)
    return x.reshape(t, AUDIO_IN).astype(np.float32)


def visual_raw(visual: VisualFeatures, kind: str) -> np.ndarray | None:
    """The per-frame visual array: motion grid (T, 64) or keypoints (T, K*2); None if missing."""
    if kind == "motion":
        return np.asarray(visual.grid.values, dtype=np.float32)
    if visual.keypoints is None:
        return None
    return np.asarray(visual.keypoints.values, dtype=np.float32)


def visual_input(raw: np.ndarray, kind: str) -> np.ndarray:
    """Network input from a raw visual window.

    Parameters
    ----------
    raw : ndarray, shape (T, D)
        Motion grid energies (difference-type) or keypoint positions.
    kind : str
        'motion' → per cell log energy (relative to the window mean) and its change;
        otherwise → per coordinate velocity and acceleration.

    Returns
    -------
    ndarray, shape (T, 2 D), float32
        Standardised over the whole window.
    """
    if kind == "motion":
        g = np.log1p(np.maximum(raw, 0) / (float(np.mean(raw)) + 1e-6))
        x = np.concatenate([g, np.diff(g, axis=0, prepend=g[:1])], 1)
    else:
        v = np.diff(raw, axis=0, prepend=raw[:1])
        x = np.concatenate([v, np.diff(v, axis=0, prepend=v[:1])], 1)
    return ((x - x.mean()) / max(float(x.std()), 1e-4)).astype(np.float32)


def kind_for(visual: VisualFeatures, preferred: str) -> str:
    """The visual kind a checkpoint needs, if present, else 'motion' is refused clearly."""
    if preferred != "motion" and visual.keypoints is None:
        raise CannotMeasure(f"this checkpoint needs {preferred} keypoints, which were not found "
                            f"({visual.note or visual.kind})")
    return preferred


def resample_rows(x: np.ndarray, rate: float, new_rate: float, n: int) -> np.ndarray:
    """Linear resampling of (T, D) rows from ``rate`` to ``new_rate`` (edges held), n rows."""
    if abs(rate - new_rate) < 1e-6 and len(x) == n:
        return x
    t_old = np.arange(len(x)) / rate
    t_new = np.arange(n) / new_rate
    return np.stack([np.interp(t_new, t_old, x[:, d]) for d in range(x.shape[1])], 1).astype(np.float32)


# ------------------------------------------------------------------------------------------
# Network


def _build_modules() -> dict[str, Any]:
    """torch module classes (defined lazily so importing this file does not import torch)."""
    import torch
    from torch import nn

    class FrameEncoder(nn.Module):
        """(B, T, D_in) → (B, T, E) unit-norm per-frame embeddings (1-D CNN, receptive field 9)."""

        def __init__(self, d_in: int, width: int, emb: int) -> None:
            super().__init__()
            self.net = nn.Sequential(
                nn.Conv1d(d_in, width, 5, padding=2), nn.GELU(),
                nn.Conv1d(width, width, 3, padding=1), nn.GELU(),
                nn.Conv1d(width, width, 3, padding=1), nn.GELU(),
                nn.Conv1d(width, emb, 1),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.net(x.transpose(1, 2)).transpose(1, 2)
            return nn.functional.normalize(y, dim=-1)

    class TAENet(nn.Module):
        """Distance vectors → LSTM encoder → attention LSTM decoder → video index per audio step.

        Parameters
        ----------
        dims : dict
            ``audio_in, visual_in, n_a, n_v, emb, width, hidden``.
        """

        def __init__(self, dims: dict[str, Any]) -> None:
            super().__init__()
            self.dims = dict(dims)
            n_v, h, e = int(dims["n_v"]), int(dims["hidden"]), int(dims["emb"])
            self.n_a, self.n_v = int(dims["n_a"]), n_v
            self.audio_enc = FrameEncoder(int(dims["audio_in"]), int(dims["width"]), e)
            self.visual_enc = FrameEncoder(int(dims["visual_in"]), int(dims["width"]), e)
            self.inp = nn.Linear(n_v, h)
            self.encoder = nn.LSTM(h, h // 2, batch_first=True, bidirectional=True)
            self.decoder = nn.LSTMCell(2 * h, h)
            self.att = nn.Linear(h, h, bias=False)
            self.comb = nn.Linear(2 * h, h)
            self.out = nn.Linear(h, n_v)
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)
            # the raw (negative) distances enter the logits directly: an untrained decoder
            # starts as nearest-neighbour matching and learns corrections
            self.dist_scale = nn.Parameter(torch.tensor(8.0))

        def embed(self, audio: torch.Tensor, visual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """(B, Ta, Da), (B, Tv, Dv) → unit embeddings (B, Ta, E), (B, Tv, E)."""
            return self.audio_enc(audio), self.visual_enc(visual)

        @staticmethod
        def distances(ea: torch.Tensor, ev: torch.Tensor) -> torch.Tensor:
            """Squared distances of unit embeddings: (B, n_a, n_v) in [0, 4]."""
            return (2.0 - 2.0 * ea @ ev.transpose(1, 2)).clamp(min=0.0)

        def decode(self, dist: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
            """Distance vectors (B, n_a, n_v) → logits (B, n_a, n_v).

            ``mask`` (B, n_v) bool marks valid video positions (False = padding)."""
            if mask is not None:
                dist = dist.masked_fill(~mask[:, None, :], 4.0)
            enc, _ = self.encoder(torch.tanh(self.inp(dist - 2.0)))  # (B, n_a, h)
            b, n, h = enc.shape
            hx = enc.new_zeros(b, h)
            cx = enc.new_zeros(b, h)
            ctx = enc.new_zeros(b, h)
            keys = self.att(enc)  # (B, n_a, h)
            outs = []
            for i in range(n):
                hx, cx = self.decoder(torch.cat([enc[:, i], ctx], -1), (hx, cx))
                w = torch.softmax((keys @ hx[:, :, None]).squeeze(-1) / h**0.5, -1)  # (B, n_a)
                ctx = (w[:, :, None] * enc).sum(1)
                outs.append(torch.tanh(self.comb(torch.cat([hx, ctx], -1))))
            logits = self.out(torch.stack(outs, 1)) - self.dist_scale * dist
            if mask is not None:
                logits = logits.masked_fill(~mask[:, None, :], -1e4)
            return logits

        def forward(self, audio: torch.Tensor, visual: torch.Tensor,
                    mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
            """audio (B, n_a, Da), visual (B, n_v, Dv) → ``logits`` (B, n_a, n_v), ``dist``."""
            ea, ev = self.embed(audio, visual)
            dist = self.distances(ea, ev)
            return {"logits": self.decode(dist, mask), "dist": dist}

    return {"TAENet": TAENet, "FrameEncoder": FrameEncoder}


def default_dims(fps: float = 25.0, visual_in: int = 128, kind: str = "motion", **kw: Any) -> dict[str, Any]:
    """Model dimensions for a frame rate: ``n_a = round(fps)`` audio steps, ``n_v = 3 n_a``."""
    n_a = max(4, int(round(fps)))
    d = {"audio_in": AUDIO_IN, "visual_in": int(visual_in), "n_a": n_a, "n_v": 3 * n_a, "emb": 32,
         "width": 64, "hidden": 64, "fps": float(fps), "kind": kind, "aux_weight": 0.5}
    d.update(kw)
    return d


def make_net(dims: dict[str, Any]) -> Any:
    """A fresh :class:`TAENet` for ``dims``."""
    return _build_modules()["TAENet"](dims)


def tae_loss(out: dict[str, Any], target: Any, aux_weight: float = 0.5) -> tuple[Any, dict[str, float]]:
    """Cross-entropy of the predicted video index (+ ``aux_weight`` × the same on −8·distance).

    Parameters
    ----------
    out : dict
        ``logits`` (B, n_a, n_v), ``dist`` (B, n_a, n_v).
    target : LongTensor, shape (B, n_a)
        Video index per audio step; −100 where the right frame is outside the window.
    """
    import torch.nn.functional as F

    n_v = out["logits"].shape[-1]
    ce = F.cross_entropy(out["logits"].reshape(-1, n_v), target.reshape(-1), ignore_index=-100)
    aux = F.cross_entropy((-8.0 * out["dist"]).reshape(-1, n_v), target.reshape(-1), ignore_index=-100)
    return ce + aux_weight * aux, {"ce": float(ce.detach()), "aux": float(aux.detach())}


# ------------------------------------------------------------------------------------------
# Training interface


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


class SeqTrainable:
    """What the sequence trainables (tae, avst) share: the visual kind from the mode, clip
    preparation, and the (frame rate, visual input width) their dims derive from."""

    name = ""

    def __init__(self, mode: str = "general", **model: Any) -> None:
        if mode not in MODE_KIND:
            raise InputError(f"unknown mode '{mode}' for {self.name} (general, dance or speech)")
        self.mode = mode
        self.kind = MODE_KIND[mode]
        self.model_opts = model

    def prepare(self, audio: AudioFeatures, visual: VisualFeatures, name: str) -> ClipArrays | None:
        raw = visual_raw(visual, self.kind)
        if raw is None:
            return None
        return ClipArrays(name, audio_frames(audio, visual.fps, len(raw)), raw, float(visual.fps),
                          visual_is_diff=self.kind == "motion")

    @staticmethod
    def clip_shape(clips: list[ClipArrays]) -> tuple[float, int]:
        """(median fps, visual input width: value and change per frame) of the training clips."""
        fps = float(np.median([c.fps for c in clips])) if clips else 25.0
        vin = 2 * int(clips[0].visual.shape[1]) if clips else 128
        return fps, vin


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
        Overrides of :func:`default_dims` (``emb``, ``width``, ``hidden``, ``aux_weight``).
    """

    name = "tae"

    def __init__(self, mode: str = "general", per_sample: int = 4, **model: Any) -> None:
        super().__init__(mode, **model)
        self.per_sample = int(per_sample)
        self._n: tuple[int, int] | None = None

    def dims(self, clips: list[ClipArrays], opts: Any) -> dict[str, Any]:
        fps, vin = self.clip_shape(clips)
        return default_dims(fps, vin, self.kind, **self.model_opts)

    def make_model(self, dims: dict[str, Any]) -> Any:
        self._n = (int(dims["n_a"]), int(dims["n_v"]))
        self.aux_weight = float(dims.get("aux_weight", 0.5))
        return make_net(dims)

    def make_batch(self, samples: list[Any], rng: Any, augment: dict[str, bool] | None, device: str) -> Batch:
        import torch

        from avsync.train.augment import hflip_grid

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
            vis = visual_input(raw, self.kind)
            aud = audio_input(s.audio, r if aug.get("spec") else None)
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
        b = batch.tensors
        return tae_loss(model(b["audio"], b["visual"]), b["target"], self.aux_weight)

    def val_metrics(self, model: Any, batch: Batch) -> dict[str, float]:
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
    return f"""Temporal autoencoder for lip sync (`avsync/backends/tae.py`).

- Windows: {dims['n_a']} audio steps against {dims['n_v']} video frames at {dims['fps']:g} fps
  (1 s of audio against 3 s of picture; the paper: 25 against 75 at 25 fps).
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
  Added here: the 3 s video window is centred on a coarse global lag found from the embedding
  distances, so offsets up to `max_shift` (not only ±1 s) are reachable.
- Reduced vs. the paper: small encoders and LSTMs (hidden {dims['hidden']}), decoder fed with
  the encoder state instead of its previous prediction, trained for minutes on one CPU on
  motion features rather than on a lip-reading corpus."""


register_trainable("tae", TAETrainable)


# ------------------------------------------------------------------------------------------
# Inference: votes, longest monotonic sequence, adaptive Laplacian smoothing


def max_vote_candidates(votes: list[dict[int, int]]) -> list[list[int]]:
    """Per audio step, the video indices with the most votes (ties kept, ascending)."""
    out = []
    for v in votes:
        if not v:
            out.append([])
            continue
        top = max(v.values())
        out.append(sorted(k for k, c in v.items() if c == top))
    return out


def longest_monotonic(candidates: list[list[int]]) -> np.ndarray:
    """Longest non-decreasing sequence choosing at most one candidate per step.

    Parameters
    ----------
    candidates : list of list of int
        Candidate video indices per audio step (may be empty).

    Returns
    -------
    ndarray of int64, shape (N,)
        The chosen index per step, −1 for steps left out (O(N K log N) patience DP).
    """
    import bisect

    n = len(candidates)
    tails: list[int] = []  # tails[L-1] = smallest last value of a sequence of length L
    tail_node: list[int] = []
    nodes: list[tuple[int, int, int]] = []  # (step, value, predecessor node)
    for i, cands in enumerate(candidates):
        updates = []
        for c in cands:
            k = bisect.bisect_right(tails, c)  # sequences from earlier steps only
            pred = tail_node[k - 1] if k > 0 else -1
            updates.append((k, c, pred))
        for k, c, pred in updates:
            nodes.append((i, c, pred))
            if k == len(tails):
                tails.append(c)
                tail_node.append(len(nodes) - 1)
            elif c < tails[k]:
                tails[k] = c
                tail_node[k] = len(nodes) - 1
    out = np.full(n, -1, dtype=np.int64)
    node = tail_node[-1] if tail_node else -1
    while node >= 0:
        i, c, node = nodes[node]
        out[i] = c
    return out


def fill_skipped(chosen: np.ndarray) -> tuple[np.ndarray, int]:
    """Skip and continue: steps without a choice are interpolated between their kept
    neighbours; before the first kept step the lag is held; after the last kept step the
    last frame is repeated (the paper's tail padding).

    Returns
    -------
    (mapping, last) : ndarray of float64 (N,), int
        Video index per audio step, and the last kept step (−1 if none).
    """
    n = len(chosen)
    kept = np.flatnonzero(chosen >= 0)
    if kept.size == 0:
        return np.arange(n, dtype=np.float64), -1
    idx = np.arange(n)
    m = np.interp(idx, kept, chosen[kept].astype(np.float64))
    head = idx < kept[0]
    m[head] = chosen[kept[0]] - (kept[0] - idx[head])  # constant lag before the first vote
    m[idx > kept[-1]] = chosen[kept[-1]]  # pad the tail with the last frame
    return m, int(kept[-1])


def laplace_smooth(m: np.ndarray, sigma: float) -> np.ndarray:
    """Convolution with a normalised Laplace kernel ``exp(−|k| / σ)`` (edges renormalised)."""
    if sigma <= 0:
        return np.asarray(m, dtype=np.float64)
    r = int(np.ceil(5 * sigma))
    k = np.exp(-np.abs(np.arange(-r, r + 1)) / sigma)
    num = np.convolve(np.pad(m, r, mode="edge"), k, mode="valid")
    return num / k.sum()


SIGMAS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0)


def adaptive_smooth(m: np.ndarray, max_speed: float = 2.0,
                    sigmas: tuple[float, ...] = SIGMAS) -> tuple[np.ndarray, float]:
    """Adaptive Laplacian smoothing: the smallest σ whose result is smooth enough.

    Criterion: every step of the smoothed mapping lies in ``[0, max_speed]`` frames
    (monotonic, the picture never plays faster than ``max_speed``).

    Returns
    -------
    (smoothed, sigma) : ndarray (N,), float
        If no σ meets it, the largest σ, made monotonic by a running maximum.
    """
    m = np.asarray(m, dtype=np.float64)
    for s in sigmas:
        y = laplace_smooth(m, s)
        d = np.diff(y)
        if d.size == 0 or (d.min() >= -1e-6 and d.max() <= max_speed + 1e-6):
            return y, float(s)
    return np.maximum.accumulate(laplace_smooth(m, sigmas[-1])), float(sigmas[-1])


class TAEBackend:
    """The temporal autoencoder as an alignment / offset backend.

    Parameters
    ----------
    device : str
        auto | cpu | cuda.
    checkpoint : str or None
        Registry name, file path, ``"tiny-test"`` (seeded random weights, offline) or None
        (``tae-motion``).
    stride : int or None
        Audio window stride in steps (default: 10 at 25 fps, scaled to the model's rate).
    sigma_frames : float
        Width of the Gaussian ridge around the TAE path in the Affinity.
    max_speed : float
        Speed bound of the smoothness criterion (picture frames per audio step).
    threads : int, optional
        torch CPU threads.
    """

    name = "tae"

    def __init__(self, device: str = "auto", checkpoint: str | None = None, stride: int | None = None,
                 sigma_frames: float = 1.5, max_speed: float = 2.0, threads: int | None = None, **_: Any) -> None:
        import torch

        from avsync.device import resolve_device
        from avsync.hub import build_model

        if threads:
            torch.set_num_threads(int(threads))
        self.device = resolve_device(device)
        self.model, dims, _ = build_model(
            checkpoint, backend="tae", default=DEFAULT_CHECKPOINT, make=make_net, device=self.device,
            tiny_dims=default_dims(25.0, 128, "motion", emb=16, width=32, hidden=32))
        self.dims = dims
        self.kind = str(dims.get("kind", "motion"))
        self.fps = float(dims["fps"])
        self.n_a, self.n_v = int(dims["n_a"]), int(dims["n_v"])
        self.stride = int(stride) if stride else max(1, int(round(10 * self.fps / 25.0)))
        self.sigma = float(sigma_frames)
        self.max_speed = float(max_speed)

    # -- the paper's inference ---------------------------------------------------------------

    def _embeddings(self, audio: AudioFeatures, visual: VisualFeatures) -> tuple[Any, Any, int, int]:
        import torch

        kind = kind_for(visual, self.kind)
        raw = visual_raw(visual, kind)
        assert raw is not None
        n_v = int(np.floor(len(raw) / visual.fps * self.fps + 1e-6))
        n_a = int(np.floor(audio.duration * self.fps + 1e-6))
        if min(n_a, n_v) < self.n_a:
            raise CannotMeasure(f"too short for tae: needs at least {self.n_a / self.fps:.1f} s of audio and picture")
        raw = resample_rows(raw, float(visual.fps), self.fps, n_v)
        vis = visual_input(raw, kind)
        aud = audio_input(audio_frames(audio, self.fps, n_a))
        with torch.no_grad():
            ea, ev = self.model.embed(torch.from_numpy(aud)[None].to(self.device),
                                      torch.from_numpy(vis)[None].to(self.device))
        return ea[0], ev[0], n_a, n_v

    def _coarse_lag(self, ea: Any, ev: Any, max_lag: int) -> int:
        """Lag (frames) minimising the mean embedding distance along a constant-lag diagonal."""
        d = (2.0 - 2.0 * ea @ ev.T).cpu().numpy()  # (n_a, n_v)
        n_a, n_v = d.shape
        best, best_k = np.inf, 0
        for k in range(-max_lag, max_lag + 1):
            i = np.arange(max(0, -k), min(n_a, n_v - k))
            if i.size < max(self.n_a, min(n_a, n_v) // 3):
                continue
            v = float(d[i, i + k].mean()) + 1e-4 * abs(k)  # ties go to the smaller lag
            if v < best:
                best, best_k = v, k
        return best_k

    def predict(self, audio: AudioFeatures, visual: VisualFeatures, max_shift: float = 2.0) -> dict[str, Any]:
        """Run the paper's inference.

        Returns
        -------
        dict
            ``mapping`` (N_a,) video frame (float, at the model rate) per audio step after
            smoothing; ``chosen`` (N_a,) the longest-monotonic-sequence choice (−1 = skipped);
            ``votes`` list of {video index: count}; ``prob`` (N_a, 2L+1) mean window probability
            per lag; ``sigma`` the smoothing width; ``coarse`` the window-centring lag (frames);
            ``fps`` the model rate.
        """
        import torch

        ea, ev, n_a, n_v = self._embeddings(audio, visual)
        big_l = max(1, int(round(max_shift * self.fps)))
        coarse = self._coarse_lag(ea, ev, big_l) if big_l > (self.n_v - self.n_a) // 2 else 0
        starts = list(range(0, n_a - self.n_a + 1, self.stride))
        if starts[-1] != n_a - self.n_a:
            starts.append(n_a - self.n_a)
        votes: list[dict[int, int]] = [{} for _ in range(n_a)]
        prob = np.zeros((n_a, 2 * big_l + 1))
        pcount = np.zeros(n_a)
        half = (self.n_v - self.n_a) // 2
        for b0 in range(0, len(starts), 32):
            chunk = starts[b0 : b0 + 32]
            a_idx = np.array([np.arange(s, s + self.n_a) for s in chunk])
            v0 = np.array([s + coarse - half for s in chunk])
            v_idx = v0[:, None] + np.arange(self.n_v)[None, :]
            valid = (v_idx >= 0) & (v_idx < n_v)
            with torch.no_grad():
                a = ea[torch.from_numpy(a_idx)]
                v = ev[torch.from_numpy(np.clip(v_idx, 0, n_v - 1))]
                mask = torch.from_numpy(valid).to(self.device)
                logits = self.model.decode(self.model.distances(a, v), mask)
                p = torch.softmax(logits, -1).cpu().numpy()
            pred = p.argmax(-1)
            for w, s in enumerate(chunk):
                for i in range(self.n_a):
                    j = int(v0[w] + pred[w, i])
                    votes[s + i][j] = votes[s + i].get(j, 0) + 1
                    lag = v_idx[w] - (s + i)
                    sel = valid[w] & (np.abs(lag) <= big_l)
                    prob[s + i, lag[sel] + big_l] += p[w, i, sel]
                    pcount[s + i] += 1
        prob /= np.maximum(pcount, 1)[:, None]
        chosen = longest_monotonic(max_vote_candidates(votes))
        filled, _ = fill_skipped(chosen)
        mapping, sigma = adaptive_smooth(filled, self.max_speed)
        return {"mapping": mapping, "chosen": chosen, "votes": votes, "prob": prob, "sigma": sigma,
                "coarse": coarse, "fps": self.fps}

    def correspondence_raw(self, audio: AudioFeatures, visual: VisualFeatures, max_shift: float = 2.0
                           ) -> Correspondence:
        """The TAE mapping as a Correspondence (model rate), without the shared DP."""
        r = self.predict(audio, visual, max_shift)
        return Correspondence(r["mapping"] / self.fps, self.fps)

    # -- Backend protocol ------------------------------------------------------------------

    def affinity(self, audio: AudioFeatures, visual: VisualFeatures, max_shift: float) -> Affinity:
        """Scores over lags in ±max_shift: a Gaussian ridge (``sigma_frames``) around the TAE
        path plus the windows' mean probabilities, on the model's clock.

        Returns
        -------
        Affinity
            scores (N_a, 2L+1) in [0, 2], rate = the model's fps, lags = (−L … L) / fps.
        """
        r = self.predict(audio, visual, max_shift)
        big_l = (r["prob"].shape[1] - 1) // 2
        lag = np.clip(r["mapping"] - np.arange(len(r["mapping"])), -big_l, big_l)
        lags = np.arange(-big_l, big_l + 1, dtype=np.float64)
        ridge = np.exp(-((lags[None, :] - lag[:, None]) ** 2) / (2.0 * self.sigma**2))
        scores = ridge + r["prob"] / np.maximum(r["prob"].max(1, keepdims=True), 1e-9)
        return Affinity(scores.astype(np.float32), lags / self.fps, self.fps, 0.0)

    def offset(self, audio: AudioFeatures, visual: VisualFeatures, max_shift: float) -> Offset:
        """Global offset: the median lag of the audio steps kept by the monotonic sequence.

        Confidence: the share of audio steps kept × the mean vote share of their choice.
        ``drift`` is the smoothed lag per audio step.
        """
        r = self.predict(audio, visual, max_shift)
        m, chosen = r["mapping"], r["chosen"]
        idx = np.arange(len(m))
        kept = chosen >= 0
        lag_kept = (chosen[kept] - idx[kept]) if kept.any() else (m - idx)
        big_l = max(1, int(round(max_shift * self.fps)))
        seconds = float(np.clip(np.median(lag_kept), -big_l, big_l) / self.fps)
        shares = [r["votes"][i][int(chosen[i])] / max(sum(r["votes"][i].values()), 1) for i in np.flatnonzero(kept)]
        conf = float(kept.mean() * (np.mean(shares) if shares else 0.0))
        q1, q3 = np.percentile(lag_kept / self.fps, [25, 75]) if len(lag_kept) else (0.0, 0.0)
        drift = Signal(((m - idx) / self.fps)[:, None], self.fps, 0.0)
        return Offset(seconds, conf, drift, {"lag_iqr": float(q3 - q1), "sigma": r["sigma"],
                                             "kept": float(kept.mean())})


register(BackendInfo(
    name="tae",
    description="Temporal autoencoder (distance vectors → LSTM encoder/attention decoder, votes + "
                "longest monotonic sequence + adaptive Laplacian smoothing), learned",
    trainable=True,
    factory=TAEBackend,
    tasks=("align", "offset"),
))
