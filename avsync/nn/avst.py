"""The audio-visual synchronisation transformer of the ``avst`` backend (see
:mod:`avsync.backends.avst`).

CNN audio tokens and visual tokens (one per video frame) with sinusoidal time encodings and
modality embeddings go through a transformer:

- ``encoder`` variant: one joint self-attention encoder over ``[CLS] + audio + visual``;
  the head scores sync from the [CLS] output concatenated with the max-pool over all output
  tokens;
- ``decoder`` variant: ``[CLS] + visual`` tokens self-attend and cross-attend to the
  (separately encoded) audio tokens; same head.

Any window length works (key-padding masks for mixed lengths).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from avsync.errors import InputError
from avsync.nn.inputs import AUDIO_IN

VARIANTS = ("encoder", "decoder")


def sinusoid(t: int, d: int, device: Any) -> torch.Tensor:
    """Sinusoidal time encodings, shape (t, d)."""
    pos = torch.arange(t, device=device, dtype=torch.float32)[:, None]
    i = torch.arange(0, d, 2, device=device, dtype=torch.float32)
    ang = pos / (10000.0 ** (i / d))
    pe = torch.zeros(t, d, device=device)
    pe[:, 0::2] = torch.sin(ang)
    pe[:, 1::2] = torch.cos(ang)
    return pe


class Tokens(nn.Module):
    """(B, T, D_in) → (B, T, d) tokens: a small 1-D CNN (receptive field 7 frames)."""

    def __init__(self, d_in: int, d: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv1d(d_in, d, 5, padding=2), nn.GELU(), nn.Conv1d(d, d, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.transpose(1, 2)).transpose(1, 2)


class AVST(nn.Module):
    """Sync scorer over (audio window, visual window) pairs of equal length.

    Parameters
    ----------
    dims : dict
        ``audio_in, visual_in, d_model, heads, layers, ff, dropout, variant``.
    """

    def __init__(self, dims: dict[str, Any]) -> None:
        super().__init__()
        self.dims = dict(dims)
        d = int(dims["d_model"])
        self.variant = str(dims.get("variant", "encoder"))
        if self.variant not in VARIANTS:
            raise InputError(f"unknown avst variant '{self.variant}' (encoder or decoder)")
        self.audio_tok = Tokens(int(dims["audio_in"]), d)
        self.visual_tok = Tokens(int(dims["visual_in"]), d)
        self.pair = nn.Linear(d, d)
        self.modality = nn.Parameter(torch.zeros(3, d))
        self.cls = nn.Parameter(0.02 * torch.randn(1, 1, d))
        kw = {"d_model": d, "nhead": int(dims["heads"]), "dim_feedforward": int(dims["ff"]),
              "dropout": float(dims.get("dropout", 0.1)), "batch_first": True, "norm_first": True}
        n = int(dims["layers"])
        if self.variant == "encoder":
            self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(**kw), n, enable_nested_tensor=False)
        else:
            self.audio_encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(**kw), n,
                                                       enable_nested_tensor=False)
            self.decoder = nn.TransformerDecoder(nn.TransformerDecoderLayer(**kw), n)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Sequential(nn.Linear(2 * d, d), nn.GELU(), nn.Linear(d, 1))

    def forward(self, audio: torch.Tensor, visual: torch.Tensor,
                lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Sync scores.

        Parameters
        ----------
        audio : Tensor, shape (B, T, audio_in)
        visual : Tensor, shape (B, T, visual_in)
            Frame k of both is meant to be simultaneous.
        lengths : LongTensor, shape (B,), optional
            Valid frames per item (the rest is padding).

        Returns
        -------
        Tensor, shape (B,)
            Unnormalised log-score (higher = in sync).
        """
        b, t, _ = audio.shape
        pe = sinusoid(t, self.cls.shape[-1], audio.device)
        ta, tv = self.audio_tok(audio), self.visual_tok(visual)
        a = ta + pe + self.modality[0]
        v = tv + pe + self.modality[1]
        p = self.pair(ta * tv) + pe + self.modality[2]  # frame-pair tokens: same-time interaction
        pad = None
        if lengths is not None:
            pad = torch.arange(t, device=audio.device)[None, :] >= lengths[:, None]  # (B, T)
        cls = self.cls.expand(b, 1, -1)
        no_pad = torch.zeros(b, 1, dtype=torch.bool, device=audio.device)
        if self.variant == "encoder":
            x = torch.cat([cls, a, v, p], 1)
            mask = None if pad is None else torch.cat([no_pad, pad, pad, pad], 1)
            y = self.norm(self.encoder(x, src_key_padding_mask=mask))
        else:
            mem = self.audio_encoder(a, src_key_padding_mask=pad)
            x = torch.cat([cls, v + p], 1)
            mask = None if pad is None else torch.cat([no_pad, pad], 1)
            y = self.norm(self.decoder(x, mem, tgt_key_padding_mask=mask, memory_key_padding_mask=pad))
        tokens = y[:, 1:]
        if mask is not None:
            tokens = tokens.masked_fill(mask[:, 1:, None], -1e4)
        pooled = tokens.max(1).values
        return self.head(torch.cat([y[:, 0], pooled], -1)).squeeze(-1)


def default_dims(visual_in: int = 128, kind: str = "motion", fps: float = 25.0, **kw: Any) -> dict[str, Any]:
    """Model dimensions (encoder variant by default)."""
    d = {"audio_in": AUDIO_IN, "visual_in": int(visual_in), "d_model": 64, "heads": 4, "layers": 2, "ff": 128,
         "dropout": 0.1, "variant": "encoder", "kind": kind, "fps": float(fps), "window_seconds": 3.0,
         "min_seconds": 2.0, "neg_seconds": 1.0, "negatives": 10}
    d.update(kw)
    if d["variant"] not in VARIANTS:
        raise InputError(f"unknown avst variant '{d['variant']}' (encoder or decoder)")
    return d


TINY_AVST = default_dims(128, "motion", 25.0, d_model=32, heads=2, layers=1, ff=64)


def make_net(dims: dict[str, Any]) -> AVST:
    """A fresh :class:`AVST` for ``dims``."""
    return AVST(dims)
