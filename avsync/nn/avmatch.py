"""The avmatch network: a binary audio-visual match CNN on (0.64 s log-mel, 16-frame picture
clip) pairs (see :mod:`avsync.backends.avmatch`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from avsync.nn.blocks import conv_bn_relu, grid_side
from avsync.nn.inputs import N_BANDS, SUB


@dataclass(frozen=True)
class AVMatchDims:
    """Everything needed to rebuild the avmatch network (stored in its checkpoint)."""

    input_kind: str = "motion"  # motion (8×8 grid) | lips (lip keypoint y velocities)
    visual_in: int = 64  # picture values per frame
    bands: int = N_BANDS  # log-mel bands per audio row
    sub: int = SUB  # audio rows per video frame
    frames: int = 16  # clip length (frames); audio = frames × sub rows ≈ 0.64 s
    channels: tuple[int, ...] = (8, 16, 32)  # conv widths of both branches
    embed: int = 64  # branch embedding size
    head: int = 64  # hidden width of the match MLP

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d


TINY_AVMATCH = AVMatchDims(channels=(2, 4, 4), embed=8, head=8)


class AVMatchNet(nn.Module):
    """Audio 2-D CNN + picture 3-D CNN → embeddings → MLP match logit.

    The branches are separable, so a whole band of pairs costs one embedding per frame plus
    one small MLP per pair.
    """

    def __init__(self, dims: AVMatchDims) -> None:
        super().__init__()
        self.dims = dims
        self.side = grid_side(dims.input_kind, dims.visual_in)
        c1, c2, c3 = dims.channels
        if self.side:
            self.vconv = nn.Sequential(
                *conv_bn_relu(3, 1, c1), nn.MaxPool3d(2), *conv_bn_relu(3, c1, c2), nn.MaxPool3d(2),
                *conv_bn_relu(3, c2, c3), nn.AdaptiveAvgPool3d((2, 1, 1)),
            )
            vflat = c3 * 2
        else:
            self.vconv = nn.Sequential(*conv_bn_relu(1, dims.visual_in, c2), nn.MaxPool1d(2),
                                       *conv_bn_relu(1, c2, c3), nn.AdaptiveAvgPool1d(4))
            vflat = c3 * 4
        self.vfc = nn.Linear(vflat, dims.embed)
        self.aconv = nn.Sequential(
            *conv_bn_relu(2, 1, c1), nn.MaxPool2d(2), *conv_bn_relu(2, c1, c2), nn.MaxPool2d(2),
            *conv_bn_relu(2, c2, c3), nn.MaxPool2d(2), nn.AdaptiveAvgPool2d((4, 2)),
        )
        self.afc = nn.Linear(c3 * 8, dims.embed)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(2 * dims.embed, dims.head), nn.ReLU(inplace=True),
                                  nn.Linear(dims.head, 1))

    def embed_visual(self, v: torch.Tensor) -> torch.Tensor:
        """(B, frames, visual_in) → (B, embed)."""
        b, g = v.shape[0], self.side
        x = v.reshape(b, 1, self.dims.frames, g, g) if g else v.transpose(1, 2)
        return self.vfc(self.vconv(x).reshape(b, -1))

    def embed_audio(self, a: torch.Tensor) -> torch.Tensor:
        """(B, frames, sub · bands) → (B, embed)."""
        b, d = a.shape[0], self.dims
        return self.afc(self.aconv(a.reshape(b, 1, d.frames * d.sub, d.bands)).reshape(b, -1))

    def match(self, ea: torch.Tensor, ev: torch.Tensor) -> torch.Tensor:
        """Match logit (B,) of embedding pairs (B, embed) × 2."""
        return self.head(torch.cat([ea, ev], dim=1))[:, 0]
