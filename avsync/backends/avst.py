"""``avst``: an audio-visual synchronisation transformer, as a learned backend.

CNN audio tokens (from the log-mel, one per video frame) and visual tokens (motion grid or
keypoints, one per frame) with sinusoidal time encodings and modality embeddings go
through a transformer:

- ``encoder`` variant (shipped): one joint self-attention encoder over
  ``[CLS] + audio + visual``; the head scores sync from the [CLS] output concatenated with
  the max-pool over all output tokens;
- ``decoder`` variant: ``[CLS] + visual`` tokens self-attend and cross-attend to the
  (separately encoded) audio tokens; same head.

Any window length works (key-padding masks for mixed lengths). Training is InfoNCE: a
visual window's own audio against the same clip's audio shifted by other lags.

``offset()`` scores every candidate shift within ±max_shift on sliding windows, averages
the per-window log-softmax over shifts, takes the argmax with parabolic refinement and a
confidence from the margin to the best shift more than 2 frames away. ``affinity()``
writes the per-window log-softmax over lags onto the audio rows (sliding windows × lags).

The network is :mod:`avsync.nn.avst`, its training :mod:`avsync.train.avst`. This module imports
torch only when a backend is built.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from avsync.backends import BackendInfo, register
from avsync.backends._inputs import (
    SeqKindNets,
    kind_for,
    parabolic,
    resample_rows,
    seq_audio_frames,
    seq_audio_input,
    seq_visual_input,
    seq_visual_raw,
)
from avsync.errors import CannotMeasure
from avsync.features import AudioFeatures, VisualFeatures
from avsync.types import Affinity, Offset, Signal

DEFAULT_CHECKPOINT = {"motion": "avst-motion", "lips": "avst-lips"}


class AVSTBackend(SeqKindNets):
    """AVST as an offset / alignment backend.

    Parameters
    ----------
    device, checkpoint
        As for every learned backend (:mod:`avsync.backends`); default checkpoint: ``avst-lips``
        for picture features with a tracked face (speech mode), else ``avst-motion``
        (:data:`DEFAULT_CHECKPOINT`, chosen per input; an explicit checkpoint wins).
    window : float or None
        Window length in seconds (default: the checkpoint's training window).
    hop : float
        Window hop as a fraction of the window (offset); the affinity uses a quarter of it.
    threads : int, optional
        torch CPU threads.
    """

    NET = "avst"
    DEFAULT_CHECKPOINT = DEFAULT_CHECKPOINT

    name = "avst"

    def __init__(self, device: str = "auto", checkpoint: str | None = None, window: float | None = None,
                 hop: float = 0.5, threads: int | None = None, **_: Any) -> None:
        import torch

        from avsync.device import resolve_device

        if threads:
            torch.set_num_threads(int(threads))
        self.device = resolve_device(device)
        self.window_request = float(window) if window else None
        self.hop = float(hop)
        self.start_nets(checkpoint)

    @staticmethod
    def net_types() -> tuple[Any, dict[str, Any]]:
        from avsync.nn.avst import TINY_AVST, make_net

        return make_net, TINY_AVST

    def configure(self) -> None:
        """Window length of the selected network (unless given)."""
        self.window = self.window_request or float(self.dims.get("window_seconds", 3.0))

    def _inputs(self, audio: AudioFeatures, visual: VisualFeatures) -> tuple[np.ndarray, np.ndarray]:
        self.choose(visual)
        kind = kind_for(visual, self.kind)
        raw = seq_visual_raw(visual, kind)
        assert raw is not None
        n_v = int(np.floor(len(raw) / visual.fps * self.fps + 1e-6))
        n_a = int(np.floor(audio.duration * self.fps + 1e-6))
        if min(n_a, n_v) < 8:
            raise CannotMeasure("too short for avst")
        vis = seq_visual_input(resample_rows(raw, float(visual.fps), self.fps, n_v), kind)
        aud = seq_audio_input(seq_audio_frames(audio, self.fps, n_a))
        return aud, vis

    def window_scores(self, aud: np.ndarray, vis: np.ndarray, starts: np.ndarray, lags: np.ndarray,
                      length: int) -> np.ndarray:
        """Scores of picture windows ``[m0, m0 + length)`` against audio ``[m0 − k, …)``.

        Returns
        -------
        ndarray, shape (len(starts), len(lags))
            NaN where the audio window falls outside the clip.
        """
        import torch

        out = np.full((len(starts), len(lags)), np.nan)
        pairs = [(w, j) for w, m0 in enumerate(starts) for j, k in enumerate(lags)
                 if m0 - k >= 0 and m0 - k + length <= len(aud)]
        with torch.no_grad():
            for c in range(0, len(pairs), 256):
                chunk = pairs[c : c + 256]
                a = np.stack([aud[starts[w] - lags[j] : starts[w] - lags[j] + length] for w, j in chunk])
                v = np.stack([vis[starts[w] : starts[w] + length] for w, _ in chunk])
                s = self.model(torch.from_numpy(a).to(self.device), torch.from_numpy(v).to(self.device))
                for (w, j), x in zip(chunk, s.cpu().numpy(), strict=True):
                    out[w, j] = x
        return out

    @staticmethod
    def _log_softmax_rows(s: np.ndarray) -> np.ndarray:
        m = np.nanmax(s, axis=1, keepdims=True)
        z = np.log(np.nansum(np.exp(s - m), axis=1, keepdims=True))
        return s - m - z

    def offset(self, audio: AudioFeatures, visual: VisualFeatures, max_shift: float) -> Offset:
        """Global offset: the shift with the best mean log-softmax over sliding windows.

        Returns
        -------
        Offset
            ``seconds`` (parabolic refinement), ``confidence`` = 1 − exp(−margin) (margin in
            nats to the best shift more than 2 frames away), ``drift`` = per-window argmax lag,
            ``extra['margin']`` (nats) and ``extra['window_seconds']``.
        """
        aud, vis = self._inputs(audio, visual)
        length, big_l, hi = self._offset_windows(len(aud), len(vis), max_shift)
        hop = max(1, int(length * self.hop))
        starts = np.arange(big_l, hi + 1, hop)
        if starts[-1] != hi:
            starts = np.append(starts, hi)
        lags = np.arange(-big_l, big_l + 1)
        lp = self._log_softmax_rows(self.window_scores(aud, vis, starts, lags, length))
        curve = np.nanmean(lp, axis=0)
        k = int(np.nanargmax(curve))
        pos = k + parabolic(curve, k, maximum=True)
        far = np.abs(lags - lags[k]) > 2
        margin = float(curve[k] - np.nanmax(curve[far])) if far.any() else 0.0
        per_win = lags[np.nanargmax(lp, axis=1)] / self.fps
        rate = self.fps / hop
        drift = Signal(per_win[:, None], rate, float((starts[0] + length / 2) / self.fps))
        return Offset(float((pos - big_l) / self.fps), float(1.0 - math.exp(-max(margin, 0.0))), drift,
                      {"margin": margin, "window_seconds": length / self.fps})

    def _offset_windows(self, n_a: int, n_v: int, max_shift: float) -> tuple[int, int, int]:
        """(window length, lag half-width, last window start) of :meth:`offset`: windows whose
        audio is in range for every lag; the window shrinks for short clips, then the lags."""
        big_l = max(1, int(round(max_shift * self.fps)))
        length = int(round(self.window * self.fps))
        while True:
            hi = min(n_v - length, n_a - length - big_l)
            if hi >= big_l or length <= int(self.fps):
                break
            length = max(int(self.fps), int(length * 0.8))
        if hi < big_l:
            big_l = max(1, min(big_l, (min(n_a, n_v) - length) // 2))
            hi = min(n_v - length, n_a - length - big_l)
            if hi < big_l:
                raise CannotMeasure(f"too short for avst at ±{max_shift:g} s")
        return length, big_l, hi

    def affinity(self, audio: AudioFeatures, visual: VisualFeatures, max_shift: float) -> Affinity:
        """Sliding windows × lags: per window the log-softmax over lags, written onto the audio
        rows whose time is the window's audio centre (linear interpolation between windows).

        Returns
        -------
        Affinity
            scores (N_a, 2L+1) log-probabilities, rate = the model's fps, lags = (−L … L) / fps.
        """
        aud, vis = self._inputs(audio, visual)
        n_a, n_v = len(aud), len(vis)
        big_l = max(1, int(round(max_shift * self.fps)))
        length = min(int(round(self.window * self.fps)), n_a, n_v)
        hop = max(1, int(length * self.hop / 2))
        starts = np.arange(0, n_v - length + 1, hop)
        if starts[-1] != n_v - length:
            starts = np.append(starts, n_v - length)
        lags = np.arange(-big_l, big_l + 1)
        lp = self._log_softmax_rows(self.window_scores(aud, vis, starts, lags, length))
        floor = float(np.nanmin(lp)) if np.isfinite(lp).any() else 0.0
        rows = np.arange(n_a, dtype=np.float64)
        scores = np.full((n_a, len(lags)), floor)
        for j, k in enumerate(lags):
            ok = np.isfinite(lp[:, j])
            if not ok.any():
                continue
            centre = starts[ok] - k + length / 2.0  # audio frame at the window centre
            scores[:, j] = np.interp(rows, centre, lp[ok, j])
        return Affinity(scores.astype(np.float32), lags / self.fps, self.fps, 0.0)


register(BackendInfo(
    name="avst",
    description="Audio-visual sync transformer ([CLS] sync score over CNN tokens, InfoNCE), learned",
    trainable=True,
    factory=AVSTBackend,
    tasks=("align", "offset"),
))
