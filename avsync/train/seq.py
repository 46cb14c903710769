"""What the sequence trainables (tae, avst) share: the visual kind from the mode, clip
preparation, the training-time audio input (SpecAugment on the phase rows), and the
(frame rate, visual input width) their dims derive from."""

from __future__ import annotations

from typing import Any

import numpy as np

from avsync.backends._inputs import seq_audio_frames, seq_audio_input, seq_visual_raw
from avsync.errors import InputError
from avsync.features import AudioFeatures, VisualFeatures
from avsync.nn.inputs import AUDIO_IN, BANDS, PHASES
from avsync.train import MODE_KIND
from avsync.train.augment import spec_augment
from avsync.train.data import ClipArrays


def audio_window(a: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """The network's audio input of a training window: :func:`avsync.backends._inputs.seq_audio_input`,
    plus SpecAugment time masks (on the 4T sub-frame steps) and band masks (≤ 6 bands) when
    ``rng`` is given.

    Parameters
    ----------
    a : ndarray, shape (T, 128)
        From :func:`avsync.backends._inputs.seq_audio_frames`.

    Returns
    -------
    ndarray, shape (T, 128), float32
    """
    x = seq_audio_input(a)
    if rng is None:
        return x
    t = len(a)
    return spec_augment(x.reshape(t * PHASES, BANDS), rng, max_freq=6, fill=0.0).reshape(t, AUDIO_IN).astype(np.float32)


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
        raw = seq_visual_raw(visual, self.kind)
        if raw is None:
            return None
        return ClipArrays(name, seq_audio_frames(audio, visual.fps, len(raw)), raw, float(visual.fps),
                          visual_is_diff=self.kind == "motion")

    @staticmethod
    def clip_shape(clips: list[ClipArrays]) -> tuple[float, int]:
        """(median fps, visual input width: value and change per frame) of the training clips."""
        fps = float(np.median([c.fps for c in clips])) if clips else 25.0
        vin = 2 * int(clips[0].visual.shape[1]) if clips else 128
        return fps, vin
