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

Its training is :mod:`avsync.train.alignnet`. Checkpoints: ``tiny-test`` builds seeded random
weights offline; the default is the registry's ``alignnet-motion`` (trained here on the Big
Buck Bunny development split). This module imports torch only when a backend is built.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from avsync.backends import BackendInfo, register
from avsync.backends._inputs import alignnet_audio_input, alignnet_visual_input, alignnet_visual_raw, audio_at_fps
from avsync.errors import CannotMeasure
from avsync.features import AudioFeatures, VisualFeatures
from avsync.types import Affinity, Correspondence, Offset

DEFAULT_CHECKPOINT = {"motion": "alignnet-motion", "pose": "alignnet-motion", "lips": "alignnet-motion"}


class AlignNetBackend:
    """AlignNet as an alignment backend.

    Parameters
    ----------
    device, checkpoint
        As for every learned backend (:mod:`avsync.backends`); default checkpoint ``alignnet-motion``.
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
        from avsync.nn.alignnet import TINY_ALIGNNET, AlignNet, AlignNetDims

        if threads:
            torch.set_num_threads(int(threads))
        self.device = resolve_device(device)
        self.model, dims, ck = build_model(
            checkpoint, backend="alignnet", default=DEFAULT_CHECKPOINT["motion"], make=AlignNet,
            tiny_dims=TINY_ALIGNNET, device=self.device,
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
        raw = alignnet_visual_raw(visual, self.kind)
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
        return self._blend(raw, a_all, starts, w)

    def _blend(self, raw: np.ndarray, a_all: np.ndarray, starts: list[int], w: int) -> tuple[np.ndarray, np.ndarray]:
        """The network on windows of ``w`` frames at ``starts`` (the audio window clipped into
        the audio), blended with Hann weights: (audio position, confidence) per video frame."""
        import torch

        from avsync.nn.alignnet import resample_1d

        n_v, n_a = len(raw), len(a_all)
        acc = np.zeros(n_v)
        cacc = np.zeros(n_v)
        wsum = np.zeros(n_v)
        taper = np.hanning(w + 2)[1:-1] + 1e-3
        vis_in, aud_in, offs = [], [], []
        for s in starts:
            sa = min(s, n_a - w)
            vis_in.append(alignnet_visual_input(raw[s : s + w], self.kind))
            aud_in.append(alignnet_audio_input(a_all[sa : sa + w]))
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
