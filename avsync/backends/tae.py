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

The network is :mod:`avsync.nn.tae`, its training :mod:`avsync.train.tae`. The embeddings
whose distances form the input come from two small learned 1-D CNN encoders (audio: 32-band
log-mel at 4 phases per video frame; picture: motion grid or keypoint velocities), trained
jointly with the LSTMs. An auxiliary InfoNCE-style term on the raw distances (nearest video
frame = the right one) speeds up their training.

The scale follows the clip's frame rate: ``n_a = round(fps)`` audio steps against
``3 n_a`` video frames (the checkpoint stores its rate; clips at another rate are
resampled onto it).

This module imports torch only when a model or backend is built.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from avsync.backends import BackendInfo, register
from avsync.backends._inputs import (
    SeqKindNets,
    kind_for,
    resample_rows,
    seq_audio_frames,
    seq_audio_input,
    seq_visual_input,
    seq_visual_raw,
)
from avsync.errors import CannotMeasure
from avsync.features import AudioFeatures, VisualFeatures
from avsync.types import Affinity, Correspondence, Offset, Signal

DEFAULT_CHECKPOINT = {"motion": "tae-motion", "lips": "tae-lips"}


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


class TAEBackend(SeqKindNets):
    """The temporal autoencoder as an alignment / offset backend.

    Parameters
    ----------
    device, checkpoint
        As for every learned backend (:mod:`avsync.backends`); default checkpoint: ``tae-lips``
        for picture features with a tracked face (speech mode), else ``tae-motion``
        (:data:`DEFAULT_CHECKPOINT`, chosen per input; an explicit checkpoint wins).
    stride : int or None
        Audio window stride in steps (default: 10 at 25 fps, scaled to the model's rate).
    sigma_frames : float
        Width of the Gaussian ridge around the TAE path in the Affinity.
    max_speed : float
        Speed bound of the smoothness criterion (picture frames per audio step).
    threads : int, optional
        torch CPU threads.
    """

    NET = "tae"
    DEFAULT_CHECKPOINT = DEFAULT_CHECKPOINT

    name = "tae"

    def __init__(self, device: str = "auto", checkpoint: str | None = None, stride: int | None = None,
                 sigma_frames: float = 1.5, max_speed: float = 2.0, threads: int | None = None, **_: Any) -> None:
        import torch

        from avsync.device import resolve_device

        if threads:
            torch.set_num_threads(int(threads))
        self.device = resolve_device(device)
        self.stride_request = int(stride) if stride else None
        self.sigma = float(sigma_frames)
        self.max_speed = float(max_speed)
        self.start_nets(checkpoint)

    @staticmethod
    def net_types() -> tuple[Any, dict[str, Any]]:
        from avsync.nn.tae import TINY_TAE, make_net

        return make_net, TINY_TAE

    def configure(self) -> None:
        """Window lengths and stride of the selected network."""
        self.n_a, self.n_v = int(self.dims["n_a"]), int(self.dims["n_v"])
        self.stride = self.stride_request or max(1, int(round(10 * self.fps / 25.0)))

    # -- the paper's inference ---------------------------------------------------------------

    def _embeddings(self, audio: AudioFeatures, visual: VisualFeatures) -> tuple[Any, Any, int, int]:
        import torch

        kind = kind_for(visual, self.kind)
        raw = seq_visual_raw(visual, kind)
        assert raw is not None
        n_v = int(np.floor(len(raw) / visual.fps * self.fps + 1e-6))
        n_a = int(np.floor(audio.duration * self.fps + 1e-6))
        if min(n_a, n_v) < self.n_a:
            raise CannotMeasure(f"too short for tae: needs at least {self.n_a / self.fps:.1f} s of audio and picture")
        raw = resample_rows(raw, float(visual.fps), self.fps, n_v)
        vis = seq_visual_input(raw, kind)
        aud = seq_audio_input(seq_audio_frames(audio, self.fps, n_a))
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
        self.choose(visual)
        ea, ev, n_a, n_v = self._embeddings(audio, visual)
        big_l = max(1, int(round(max_shift * self.fps)))
        coarse = self._coarse_lag(ea, ev, big_l) if big_l > (self.n_v - self.n_a) // 2 else 0
        votes, prob = self._votes(ea, ev, n_a, n_v, big_l, coarse)
        chosen = longest_monotonic(max_vote_candidates(votes))
        filled, _ = fill_skipped(chosen)
        mapping, sigma = adaptive_smooth(filled, self.max_speed)
        return {"mapping": mapping, "chosen": chosen, "votes": votes, "prob": prob, "sigma": sigma,
                "coarse": coarse, "fps": self.fps}

    def _votes(self, ea: Any, ev: Any, n_a: int, n_v: int, big_l: int, coarse: int
               ) -> tuple[list[dict[int, int]], np.ndarray]:
        """Audio windows at the stride, each against the video window around it (centred on
        ``coarse``): the decoder's choice per audio step as votes, and the windows' mean
        probability per lag in ±big_l, shape (n_a, 2 big_l + 1)."""
        import torch

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
        return votes, prob

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
