"""The temporal-autoencoder network of the ``tae`` backend (see :mod:`avsync.backends.tae`).

For every audio step of a short audio window the network sees the vector of distances
between that step's audio embedding and the embeddings of every frame of a longer video
window around it; an LSTM encoder reads the distance vectors and an attention LSTM decoder
predicts, for every audio step, the index of the video frame that belongs to it. The
embeddings come from two small 1-D CNN encoders trained jointly with the LSTMs.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from avsync.nn.inputs import AUDIO_IN


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


def default_dims(fps: float = 25.0, visual_in: int = 128, kind: str = "motion", **kw: Any) -> dict[str, Any]:
    """Model dimensions for a frame rate: ``n_a = round(fps)`` audio steps, ``n_v = 3 n_a``."""
    n_a = max(4, int(round(fps)))
    d = {"audio_in": AUDIO_IN, "visual_in": int(visual_in), "n_a": n_a, "n_v": 3 * n_a, "emb": 32,
         "width": 64, "hidden": 64, "fps": float(fps), "kind": kind, "aux_weight": 0.5}
    d.update(kw)
    return d


TINY_TAE = default_dims(25.0, 128, "motion", emb=16, width=32, hidden=32)


def make_net(dims: dict[str, Any]) -> TAENet:
    """A fresh :class:`TAENet` for ``dims``."""
    return TAENet(dims)


def tae_loss(out: dict[str, Any], target: Any, aux_weight: float = 0.5) -> tuple[Any, dict[str, float]]:
    """Cross-entropy of the predicted video index (+ ``aux_weight`` × the same on −8·distance).

    Parameters
    ----------
    out : dict
        ``logits`` (B, n_a, n_v), ``dist`` (B, n_a, n_v).
    target : LongTensor, shape (B, n_a)
        Video index per audio step; −100 where the right frame is outside the window.
    """
    n_v = out["logits"].shape[-1]
    ce = F.cross_entropy(out["logits"].reshape(-1, n_v), target.reshape(-1), ignore_index=-100)
    aux = F.cross_entropy((-8.0 * out["dist"]).reshape(-1, n_v), target.reshape(-1), ignore_index=-100)
    return ce + aux_weight * aux, {"ce": float(ce.detach()), "aux": float(aux.detach())}
