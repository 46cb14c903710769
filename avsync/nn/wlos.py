"""The wlos network: a two-stream regression CNN predicting the audio-visual drift of a
10-frame window, with a C³-style sync classifier head (see :mod:`avsync.backends.wlos`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from avsync.nn.blocks import conv_bn_relu
from avsync.nn.inputs import N_MFCC, SUB


@dataclass(frozen=True)
class WLOSDims:
    """Everything needed to rebuild the wlos network (stored in its checkpoint)."""

    input_kind: str = "motion"  # motion (8×8 grid) | lips (lip keypoint y velocities)
    visual_in: int = 64  # picture values per frame
    n_mfcc: int = N_MFCC  # MFCCs per audio row
    sub: int = SUB  # audio rows per video frame
    frames: int = 10  # picture window, frames
    max_drift: int = 9  # largest |drift| predicted, frames; the audio window is frames + 2·max_drift
    channels: int = 48  # conv width of both streams
    fc: int = 128  # hidden width before the two heads
    pretrain_steps: int = 300  # C³ classifier pre-training steps before the regression fine-tuning
    sigma: float = 1.5  # width (frames) of the affinity bump at each prediction

    @property
    def audio_frames(self) -> int:
        return self.frames + 2 * self.max_drift

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


TINY_WLOS = WLOSDims(channels=4, fc=8, pretrain_steps=2)


class WLOSNet(nn.Module):
    """Two 1-D conv streams → concatenation → FC → (sync logit, drift in frames)."""

    def __init__(self, dims: WLOSDims) -> None:
        super().__init__()
        self.dims = dims
        c = dims.channels
        self.vconv = nn.Sequential(*conv_bn_relu(1, dims.visual_in, c), *conv_bn_relu(1, c, c))
        self.aconv = nn.Sequential(*conv_bn_relu(1, dims.n_mfcc, c, 5), nn.MaxPool1d(2), *conv_bn_relu(1, c, c),
                                   nn.MaxPool1d(2), *conv_bn_relu(1, c, c))
        flat = c * dims.frames + c * (dims.audio_frames * dims.sub // 4)
        self.fc = nn.Sequential(nn.Linear(flat, dims.fc), nn.ReLU(inplace=True), nn.Dropout(0.1))
        self.sync_head = nn.Linear(dims.fc, 1)
        self.drift_head = nn.Linear(dims.fc, 1)
        # optimisation steps taken (saved with the weights: the loop's resume keeps the phase)
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))

    def forward(self, a: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """a (B, audio_frames, sub · n_mfcc), v (B, frames, visual_in) → (logit (B,), drift (B,) frames)."""
        b, d = a.shape[0], self.dims
        ar = a.reshape(b, d.audio_frames * d.sub, d.n_mfcc).transpose(1, 2)
        h = torch.cat([self.vconv(v.transpose(1, 2)).reshape(b, -1), self.aconv(ar).reshape(b, -1)], dim=1)
        h = self.fc(h)
        return self.sync_head(h)[:, 0], d.max_drift * torch.tanh(self.drift_head(h)[:, 0])
