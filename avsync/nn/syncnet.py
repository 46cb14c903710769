"""The SyncNet network (Chung & Zisserman, "Out of time: automated lip sync in the wild",
ACCV-W 2016), as built here: two streams map a short picture window and the matching 0.2 s
of sound to L2-normalised embeddings (see :mod:`avsync.backends.syncnet`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from avsync.nn.blocks import conv_bn_relu, grid_side
from avsync.nn.inputs import N_BANDS, SUB


@dataclass(frozen=True)
class SyncNetDims:
    """Everything needed to rebuild a :class:`SyncNetModel` (stored in its checkpoint)."""

    input_kind: str = "motion"  # motion (8×8 grid) | lips (lip keypoint y velocities)
    visual_in: int = 64  # picture values per frame
    bands: int = N_BANDS  # audio bands per sub-frame row
    sub: int = SUB  # audio rows per video frame
    frames: int = 5  # picture window (frames); the audio window is frames × sub rows
    channels: tuple[int, ...] = (16, 32, 64)  # conv widths of both streams
    fc: int = 128  # hidden fully connected width
    embed: int = 64  # embedding size (L2-normalised)
    margin: float = 1.0  # contrastive margin on the Euclidean distance
    conf_c50: float = 0.1  # LSE-C at which the reported confidence is 0.5

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d


TINY_SYNCNET = SyncNetDims(channels=(4, 8, 8), fc=16, embed=8)


class SyncNetModel(nn.Module):
    """Picture stream (frames stacked as channels, as SyncNet's early fusion) and audio
    stream (a rows × bands image), each conv → FC → L2-normalised embedding."""

    def __init__(self, dims: SyncNetDims) -> None:
        super().__init__()
        self.dims = dims
        self.side = grid_side(dims.input_kind, dims.visual_in)
        c1, c2, c3 = dims.channels
        g = self.side
        self.margin = float(dims.margin)
        if g:
            self.vconv = nn.Sequential(
                *conv_bn_relu(2, dims.frames, c1), *conv_bn_relu(2, c1, c2), nn.MaxPool2d(2), *conv_bn_relu(2, c2, c3)
            )
            vflat = c3 * (g // 2) * (g // 2)
        else:
            self.vconv = nn.Sequential(*conv_bn_relu(1, dims.visual_in, c1), *conv_bn_relu(1, c1, c2),
                                       *conv_bn_relu(1, c2, c3))
            vflat = c3 * dims.frames
        self.vfc = nn.Sequential(nn.Linear(vflat, dims.fc), nn.ReLU(inplace=True), nn.Linear(dims.fc, dims.embed))
        self.aconv = nn.Sequential(
            *conv_bn_relu(2, 1, c1), nn.MaxPool2d((1, 2)), *conv_bn_relu(2, c1, c2), nn.MaxPool2d(2),
            *conv_bn_relu(2, c2, c3), nn.AdaptiveAvgPool2d((5, 4)),
        )
        self.afc = nn.Sequential(nn.Linear(c3 * 20, dims.fc), nn.ReLU(inplace=True), nn.Linear(dims.fc, dims.embed))

    def embed_visual(self, v: torch.Tensor) -> torch.Tensor:
        """(B, frames, visual_in) → (B, embed)."""
        b, g = v.shape[0], self.side
        x = v.reshape(b, self.dims.frames, g, g) if g else v.transpose(1, 2)
        return F.normalize(self.vfc(self.vconv(x).reshape(b, -1)), dim=1)

    def embed_audio(self, a: torch.Tensor) -> torch.Tensor:
        """(B, frames, sub · bands) → (B, embed)."""
        b = a.shape[0]
        x = a.reshape(b, 1, self.dims.frames * self.dims.sub, self.dims.bands)
        return F.normalize(self.afc(self.aconv(x).reshape(b, -1)), dim=1)
