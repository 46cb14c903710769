"""Feature extraction: audio envelopes and log-mel, visual keypoints and motion.

Contract (other stages rely on these containers only):

- :class:`AudioFeatures` — the reference or clip audio as envelopes on a uniform clock.
- :class:`VisualFeatures` — what the picture does, resampled onto a uniform grid at the
  video's nominal frame rate (presentation times are honoured, so variable frame rate
  input is right), starting at t=0 = the first frame's presentation time.

The extraction functions live in :mod:`avsync.features.extract`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from avsync.types import Signal

MODES = ("auto", "dance", "speech", "general")


@dataclass(frozen=True)
class AudioFeatures:
    """Audio features of one file.

    Attributes
    ----------
    onset : Signal, (T, 1)
        Onset-strength envelope (spectral flux), 100 Hz, normalised to unit variance.
    speech : Signal, (T, 1)
        Speech-band (300–3000 Hz) log-RMS envelope, 100 Hz.
    logmel : Signal, (T, 128)
        128-bin log-mel spectrogram (dB), 100 Hz.
    duration : float
        Audio duration in seconds.
    sr : int
        Sample rate the features were computed at.
    """

    onset: Signal
    speech: Signal
    logmel: Signal
    duration: float
    sr: int


@dataclass(frozen=True)
class Face:
    """One tracked face of a picture with several faces (lip features as in :class:`VisualFeatures`).

    Attributes
    ----------
    envelope, keypoints, mouth : Signal
        This face's mouth-opening activity (T, 1), lip keypoints (T, 40) and mouth opening (T, 1).
    detection_rate : float
        Fraction of frames where this face was found.
    position : tuple of float
        Median mouth position (x, y) in isotropic image units (pixels / longest side).
    size : float
        Median inter-ocular distance, same units.
    """

    envelope: Signal
    keypoints: Signal
    mouth: Signal
    detection_rate: float
    position: tuple[float, float]
    size: float


@dataclass(frozen=True)
class VisualFeatures:
    """Visual features of one video, on a uniform grid at ``fps`` starting at t = 0.

    Attributes
    ----------
    mode : str
        'dance', 'speech' or 'general' — what was used (auto resolved).
    kind : str
        'pose', 'lips' or 'motion': which visual source fed ``envelope``.
    envelope : Signal, (T, 1)
        1-D visual activity whose peaks should coincide with audio onsets (pose: joint
        speed/acceleration novelty; lips: mouth-opening; motion: frame-difference flux).
    grid : Signal, (T, G*G)
        Frame-difference motion energy on a coarse G×G grid (always computed).
    keypoints : Signal or None, (T, K*2)
        Cleaned keypoints (x, y in [0, 1], mid-hip subtracted for pose), NaN-free.
    mouth : Signal or None, (T, 1)
        Mouth opening (lip distance / face size) when a face was found.
    detection_rate : float
        Fraction of frames where the person / face was detected (0 for 'motion').
    fps : float
        Nominal frame rate of the grid.
    frame_times : ndarray, (N,)
        Presentation times (s) of the source frames, relative to the first.
    note : str
        Human words on what was used, e.g. "no person found: motion features".
    faces : tuple of Face
        When the picture holds several faces each found often enough: all of them, left to
        right; ``envelope``, ``keypoints`` and ``mouth`` are then those of the face found most
        often (``extra["main_face"]`` is its index). Empty otherwise.
    """

    mode: str
    kind: str
    envelope: Signal
    grid: Signal
    keypoints: Signal | None
    mouth: Signal | None
    detection_rate: float
    fps: float
    frame_times: np.ndarray
    note: str = ""
    extra: dict = field(default_factory=dict)
    faces: tuple[Face, ...] = ()

    def with_face(self, i: int) -> VisualFeatures:
        """These features with face ``i`` of :attr:`faces` as the picture's face (and no others)."""
        f = self.faces[i]
        return dataclasses.replace(self, envelope=f.envelope, keypoints=f.keypoints, mouth=f.mouth,
                                   detection_rate=f.detection_rate, faces=())
