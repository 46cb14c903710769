"""``alignnet``: dense audio-visual correspondence with AlignNet (Wang et al., WACV 2020).

The network (:mod:`avsync.nn.alignnet`) predicts, for every video frame of a window, the
audio frame it belongs to. This backend

1. turns the features into the network's inputs at the video frame rate — keypoint
   velocity and acceleration (a 19-point body subset of mediapipe's 33, or the 20 lip
   points) or, for footage without people, the 8×8 motion grid's log energy and its
   change; the 128-bin log-mel, smoothed, resampled to the frame rate and normalised;
2. runs it on overlapping windows (Hann-weighted blend);
3. inverts the per-video-frame prediction into a per-audio-frame picture time and writes it
   as an :class:`~avsync.types.Affinity` (a Gaussian ridge of width ``sigma_frames`` around
   the predicted lag), so the shared monotonic DP in :mod:`avsync.path` smooths it.
   :meth:`AlignNetBackend.predict` gives the raw prediction.

Checkpoints: ``tiny-test`` builds seeded random weights offline; the default is the
registry's ``alignnet-motion`` (trained here on the Big Buck Bunny development split).
This module imports torch only when a backend is built.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from avsync.backends import BackendInfo, register
from avsync.errors import CannotMeasure, InputError
from avsync.features import AudioFeatures, VisualFeatures
from avsync.train import Batch, register_trainable
from avsync.train.data import ClipArrays
from avsync.types import Affinity, Correspondence, Offset, in_itu_window

DEFAULT_CHECKPOINT = {"motion": "alignnet-motion", "pose": "alignnet-motion", "lips": "alignnet-motion"}
MODE_KIND = {"general": "motion", "dance": "pose", "speech": "lips", "auto": "motion"}

# mediapipe pose indices of the 19-point body subset: nose, eyes, ears, shoulders, elbows,
# wrists, hips, knees, ankles, foot tips (left before right in each pair).
BODY19 = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28, 31, 32)
BODY19_PAIRS = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16), (17, 18))
# the 20 lip points in avsync.features.landmarks.LIPS order; mirrored pairs of the face mesh
LIPS20_PAIRS = ((0, 6), (1, 5), (2, 4), (7, 11), (8, 10), (12, 16), (13, 15), (17, 19))
GRID = 8


def tie_from_pairs(n: int, pairs: tuple[tuple[int, int], ...]) -> tuple[int, ...]:
    """Shared-weight index per point: the two points of a pair get the same index."""
    tie = list(range(n))
    for i, j in pairs:
        tie[j] = tie[i]
    uniq = {v: k for k, v in enumerate(dict.fromkeys(tie))}
    return tuple(uniq[v] for v in tie)


def grid_pairs(g: int = GRID) -> tuple[tuple[int, int], ...]:
    """Mirrored (left/right) cells of a row-major g×g grid."""
    return tuple((r * g + c, r * g + g - 1 - c) for r in range(g) for c in range(g // 2))


def layout(kind: str) -> tuple[int, int, tuple[tuple[int, int], ...]]:
    """(points, channels per point, left/right pairs) of an input kind."""
    if kind == "motion":
        return GRID * GRID, 2, grid_pairs()
    if kind == "pose":
        return len(BODY19), 4, BODY19_PAIRS
    if kind == "lips":
        return 20, 4, LIPS20_PAIRS
    raise InputError(f"unknown AlignNet input kind '{kind}'")


# ------------------------------------------------------------------------------------------
# Inputs


def audio_at_fps(audio: AudioFeatures, fps: float, n: int) -> np.ndarray:
    """Log-mel (T, 128) at 100 Hz → (n, 128) at ``fps`` (box-smoothed over one frame, then
    linearly interpolated at the frame times k / fps)."""
    lm = audio.logmel
    x = np.asarray(lm.values, dtype=np.float32)
    w = max(1, int(round(lm.rate / fps)))
    if w > 1 and len(x) >= w:
        k = np.ones(w, np.float32) / w
        x = np.stack([np.convolve(x[:, d], k, mode="same") for d in range(x.shape[1])], 1)
    t_new = np.arange(n) / fps
    t_old = lm.start + np.arange(len(x)) / lm.rate
    return np.stack([np.interp(t_new, t_old, x[:, d]) for d in range(x.shape[1])], 1).astype(np.float32)


def visual_raw(visual: VisualFeatures, kind: str) -> np.ndarray | None:
    """The per-frame visual array warps apply to: grid energies (T, 64) for 'motion'
    (difference-type), keypoint positions (T, K*2) for 'pose' / 'lips'. None if missing."""
    if kind == "motion":
        return np.asarray(visual.grid.values, dtype=np.float32)
    if visual.keypoints is None:
        return None
    kp = np.asarray(visual.keypoints.values, dtype=np.float32)
    k = kp.shape[1] // 2
    if kind == "pose":
        if k == 33:
            kp = kp.reshape(-1, 33, 2)[:, BODY19].reshape(len(kp), -1)
        elif k != len(BODY19):
            return None
    elif kind == "lips" and k != 20:
        return None
    return kp


def _standardise(x: np.ndarray, axis: int | None) -> np.ndarray:
    m = x.mean(axis=0 if axis == 0 else None, keepdims=True)
    s = x.std(axis=0 if axis == 0 else None, keepdims=True)
    return ((x - m) / np.maximum(s, 1e-4)).astype(np.float32)


def visual_input(raw: np.ndarray, kind: str) -> np.ndarray:
    """Network input (T, P*c) from a raw window: motion → per cell (log energy, its change);
    keypoints → per point (vx, vy, ax, ay). Standardised over the window."""
    t = len(raw)
    if kind == "motion":
        scale = float(np.mean(raw)) + 1e-6
        g = np.log1p(np.maximum(raw, 0) / scale)
        dg = np.diff(g, axis=0, prepend=g[:1])
        x = np.stack([g, dg], axis=-1)  # (T, 64, 2)
    else:
        p = raw.reshape(t, -1, 2)
        v = np.diff(p, axis=0, prepend=p[:1])
        a = np.diff(v, axis=0, prepend=v[:1])
        x = np.concatenate([v, a], axis=-1)  # (T, K, 4)
    return _standardise(x.reshape(t, -1), axis=None)


def audio_input(a: np.ndarray) -> np.ndarray:
    """Per-bin mean/variance normalisation of a (T, 128) log-mel window."""
    return _standardise(a, axis=0)


# ------------------------------------------------------------------------------------------
# Training interface


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
        raw = visual_raw(visual, self.kind)
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

        from avsync.train.augment import hflip_grid, hflip_keypoints, spec_augment

        vs, as_, ts = [], [], []
        for s in samples:
            raw, a = s.visual, s.audio
            if augment and augment.get("flip") and rng.random() < 0.5:
                raw = hflip_grid(raw) if self.kind == "motion" else hflip_keypoints(raw, self.pairs)
            a = audio_input(a)
            if augment and augment.get("spec"):
                a = spec_augment(a, rng, fill=0.0)
            t = len(s.target)
            vs.append(visual_input(raw, self.kind))
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


# ------------------------------------------------------------------------------------------
# Inference backend


class AlignNetBackend:
    """AlignNet as an alignment backend.

    Parameters
    ----------
    device : str
        auto | cpu | cuda.
    checkpoint : str or None
        Registry name, file path, ``"tiny-test"`` (seeded random weights, offline) or None
        (the default for the input kind: ``alignnet-motion``).
    sigma_frames : float
        Width of the Gaussian ridge written into the Affinity around the predicted lag.
    hop : float
        Window hop as a fraction of the window.
    threads : int
        torch CPU threads.
    """

    name = "alignnet"

    def __init__(self, device: str = "auto", checkpoint: str | None = None, sigma_frames: float = 1.5,
                 hop: float = 0.5, threads: int | None = None, **_: Any) -> None:
        import torch

        from avsync.device import resolve_device
        from avsync.hub import build_model
        from avsync.nn.alignnet import AlignNet, AlignNetDims

        if threads:
            torch.set_num_threads(int(threads))
        self.device = resolve_device(device)
        self.model, dims, ck = build_model(
            checkpoint, backend="alignnet", default=DEFAULT_CHECKPOINT["motion"], make=AlignNet,
            tiny_dims=AlignNetDims(point_tie=tie_from_pairs(GRID * GRID, grid_pairs())), device=self.device,
            parse_dims=AlignNetDims.from_dict)
        self.window = int(ck.get("config", {}).get("window_frames", 240))
        self.dims = dims
        self.kind = dims.input_kind
        self.sigma = float(sigma_frames)
        self.hop = float(hop)

    # -- the raw network output ------------------------------------------------------------

    def predict(self, audio: AudioFeatures, visual: VisualFeatures) -> np.ndarray:
        """Audio frame position (float, at the video rate) of every video frame.

        Returns
        -------
        ndarray, shape (N_v,)
            Blend of the overlapping windows' predictions (Hann weights).
        """
        return self.predict_with_confidence(audio, visual)[0]

    def predict_with_confidence(self, audio: AudioFeatures, visual: VisualFeatures) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`predict`, plus a per-video-frame confidence in [0, 1]: the peakedness
        (1 − normalised entropy) of the finest level's soft affinity over audio positions.

        Returns
        -------
        pos, conf : ndarray, shape (N_v,) each
        """
        import torch

        from avsync.nn.alignnet import resample_1d

        raw = visual_raw(visual, self.kind)
        if raw is None:
            raise CannotMeasure(f"this AlignNet checkpoint needs {self.kind} keypoints, which "
                                f"were not found ({visual.note or visual.kind})")
        fps = float(visual.fps)
        n_a = max(1, int(np.ceil(audio.duration * fps - 1e-6)))
        a_all = audio_at_fps(audio, fps, n_a)
        n_v = len(raw)
        w = min(self.window, n_v, n_a)
        if w < 48:
            raise CannotMeasure(f"too short for AlignNet: {w} frames (at least 48 needed)")
        hop = max(1, int(w * self.hop))
        starts = list(range(0, max(n_v - w, 0) + 1, hop))
        if starts[-1] != n_v - w:
            starts.append(n_v - w)
        acc = np.zeros(n_v)
        cacc = np.zeros(n_v)
        wsum = np.zeros(n_v)
        taper = np.hanning(w + 2)[1:-1] + 1e-3
        vis_in, aud_in, offs = [], [], []
        for s in starts:
            sa = min(s, n_a - w)
            vis_in.append(visual_input(raw[s : s + w], self.kind))
            aud_in.append(audio_input(a_all[sa : sa + w]))
            offs.append((s, sa))
        with torch.no_grad():
            for i in range(0, len(starts), 16):
                v = torch.from_numpy(np.stack(vis_in[i : i + 16])).to(self.device)
                a = torch.from_numpy(np.stack(aud_in[i : i + 16])).to(self.device)
                out = self.model(v, a)
                c = out["corr"].cpu().numpy().astype(np.float64)
                aff = out["affinity"].clamp_min(1e-9)
                ent = -(aff * aff.log()).sum(1) / np.log(aff.shape[1])  # (B, T_1) in [0, 1]
                peak = resample_1d(1.0 - ent, w).cpu().numpy().astype(np.float64)
                for k, (s, sa) in enumerate(offs[i : i + 16]):
                    pos = sa + (c[k] + 1.0) * (w - 1) / 2.0
                    acc[s : s + w] += taper * pos
                    cacc[s : s + w] += taper * peak[k]
                    wsum[s : s + w] += taper
        wsum = np.maximum(wsum, 1e-9)
        return acc / wsum, np.clip(cacc / wsum, 0.0, 1.0)

    def correspondence_raw(self, audio: AudioFeatures, visual: VisualFeatures) -> Correspondence:
        """The network's prediction inverted onto the audio clock, without the DP."""
        fps = float(visual.fps)
        src, conf = self._picture_frame_per_audio_frame(audio, visual)
        return Correspondence(src / fps, fps, confidence=conf)

    def _picture_frame_per_audio_frame(self, audio: AudioFeatures, visual: VisualFeatures
                                       ) -> tuple[np.ndarray, np.ndarray]:
        """Inverse of the (made monotonic) prediction: picture frame (float) and confidence
        for every audio frame, shape (N_a,) each."""
        pos, conf = self.predict_with_confidence(audio, visual)
        fps = float(visual.fps)
        n_a = max(1, int(np.ceil(audio.duration * fps - 1e-6)))
        mono = np.maximum.accumulate(pos)
        mono = mono + np.arange(len(mono)) * 1e-6  # strictly increasing for interpolation
        frames = np.arange(len(mono), dtype=np.float64)
        m = np.interp(np.arange(n_a), mono, frames)
        return m, np.interp(m, frames, conf)

    # -- Backend protocol ------------------------------------------------------------------

    def affinity(self, audio: AudioFeatures, visual: VisualFeatures, max_shift: float) -> Affinity:
        """Banded scores over lags in ±max_shift: a Gaussian ridge (width ``sigma_frames``)
        around the network's lag for every audio frame, as high as the network's confidence
        there (peakedness of its soft affinity), so unrelated audio gives low ridges.

        Returns
        -------
        Affinity
            scores (N_a, 2L+1) in [0, 1], rate = video fps, lags = (−L … L) / fps.
        """
        fps = float(visual.fps)
        m, conf = self._picture_frame_per_audio_frame(audio, visual)
        lag = m - np.arange(len(m))  # frames; positive = picture later = audio leads
        n_l = max(1, int(round(max_shift * fps)))
        lag = np.clip(lag, -n_l, n_l)
        lags = np.arange(-n_l, n_l + 1, dtype=np.float64)
        scores = conf[:, None] * np.exp(-((lags[None, :] - lag[:, None]) ** 2) / (2.0 * self.sigma**2))
        return Affinity(scores.astype(np.float32), lags / fps, fps, 0.0)

    def offset(self, audio: AudioFeatures, visual: VisualFeatures, max_shift: float) -> Offset:
        """Global offset: the DP lag path over :meth:`affinity`, summarised."""
        from avsync.path import lag_path_to_offset, viterbi_lags

        aff = self.affinity(audio, visual, max_shift)
        path, conf = viterbi_lags(aff)
        return lag_path_to_offset(aff, path, conf)


register(BackendInfo(
    name="alignnet",
    description="AlignNet dense correspondence (keypoint / motion-grid + log-mel pyramids), learned",
    trainable=True,
    factory=AlignNetBackend,
    tasks=("align", "offset"),
))
