"""Training samples, generated online from synced clips' cached features.

A clip is reduced once to two per-video-frame arrays on the same clock (:class:`ClipArrays`:
audio features resampled to the frame rate, visual features). A sample is a window of
``T`` frames whose *visual* sequence is distorted by a random monotonic warp ``plan``
(distorted frame ``m`` shows original frame ``plan[m]``, see :mod:`avsync.warps`) while the
audio stays on its clock; the target is, for every distorted video frame, the audio frame
it belongs to: ``plan[m]``.

Warps are those of the benchmark protocol: AlignNet-style smooth speed changes
(0.6×–1.6×, :func:`avsync.warps.random_warp`) and temporal-autoencoder-style frame drops
and duplicates (:func:`avsync.warps.tae_warp`). Frame-difference features (a motion grid)
are warped the way a frame dropping/duplicating renderer changes them: a duplicated frame
has no difference to its predecessor, a skip accumulates the skipped differences.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avsync.errors import InputError
from avsync.progress import Progress

VIDEO_EXTS = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".mpg", ".mpeg")


@dataclass(frozen=True)
class ClipArrays:
    """One synced clip as per-video-frame arrays.

    Attributes
    ----------
    name : str
        Clip identifier (file name).
    audio : ndarray, shape (N, Da)
        Audio features resampled to the video frame rate.
    visual : ndarray, shape (N, Dv)
        Visual features, one row per video frame.
    fps : float
        Frame rate of both arrays.
    visual_is_diff : bool
        True for frame-difference features (warped by summation), False for states such
        as keypoint positions (warped by indexing).
    """

    name: str
    audio: np.ndarray
    visual: np.ndarray
    fps: float
    visual_is_diff: bool = False

    def __len__(self) -> int:
        return int(min(len(self.audio), len(self.visual)))


@dataclass(frozen=True)
class Sample:
    """One training example.

    Attributes
    ----------
    audio : ndarray, shape (T, Da)
    visual : ndarray, shape (T, Dv)
        The distorted visual window.
    target : ndarray, shape (T,)
        Audio frame index (0 … T−1, float) of every distorted video frame.
    plan : ndarray of int, shape (T,)
        The warp: distorted frame m shows window frame plan[m].
    clip : str
    fps : float
    """

    audio: np.ndarray
    visual: np.ndarray
    target: np.ndarray
    plan: np.ndarray
    clip: str
    fps: float


def list_videos(data_dir: str | os.PathLike[str]) -> list[Path]:
    """Video files under ``data_dir`` (recursive, sorted; hidden files skipped)."""
    d = Path(data_dir)
    if not d.is_dir():
        raise InputError(f"'{d}' is not a directory of videos")
    return sorted(p for p in d.rglob("*") if p.suffix.lower() in VIDEO_EXTS and not p.name.startswith("."))


def split_by_video(paths: list[Path], val_fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    """Seeded split of whole videos into (train, validation).

    At least one video goes to each side when there are two or more; with one video,
    validation is empty (the caller validates on training windows and says so).
    """
    paths = sorted(paths)
    if len(paths) < 2 or val_fraction <= 0:
        return paths, []
    order = np.random.default_rng(seed).permutation(len(paths))
    n_val = min(len(paths) - 1, max(1, int(round(val_fraction * len(paths)))))
    val = sorted(paths[i] for i in order[:n_val])
    train = sorted(paths[i] for i in order[n_val:])
    return train, val


def load_features(
    paths: list[Path], mode: str, cache: bool = True, progress: Progress | None = None
) -> list[tuple[str, object, object]]:
    """Extract (or load cached) audio and visual features of every video.

    Returns
    -------
    list of (name, AudioFeatures, VisualFeatures)
        Videos without an audio stream are skipped.
    """
    from avsync.features.extract import extract_audio, extract_visual

    out = []
    for i, p in enumerate(paths):
        if progress is not None:
            progress("features", i, len(paths))
        try:
            a = extract_audio(p, cache=cache)
        except InputError:
            continue
        v = extract_visual(p, mode, cache=cache)
        out.append((p.name, a, v))
    if progress is not None:
        progress("features", len(paths), len(paths))
    return out


def warp_visual(visual: np.ndarray, plan: np.ndarray, is_diff: bool) -> np.ndarray:
    """Apply a frame plan to a visual feature sequence.

    Parameters
    ----------
    visual : ndarray, shape (N, D)
    plan : ndarray of int, shape (M,)
        Distorted frame m shows frame ``plan[m]`` (non-decreasing, in [0, N)).
    is_diff : bool
        Frame-difference features: row m becomes the sum of the differences between
        shown frames ``plan[m-1]`` and ``plan[m]`` (zero for a duplicate). Otherwise rows
        are indexed.

    Returns
    -------
    ndarray, shape (M, D)
    """
    plan = np.asarray(plan, dtype=np.int64)
    if not is_diff:
        return visual[plan]
    c = np.concatenate([np.zeros((1, visual.shape[1]), visual.dtype), np.cumsum(visual, axis=0)])
    prev = np.concatenate([[plan[0] - 1], plan[:-1]])
    prev = np.minimum(prev, plan)  # a backwards step (not produced by our warps) gives zero
    return (c[plan + 1] - c[prev + 1]).astype(visual.dtype)


def random_plan(n: int, fps: float, rng: np.random.Generator, p_identity: float = 0.1) -> np.ndarray:
    """A random monotonic warp of ``n`` frames: speed changes, drops/duplicates, or none.

    Returns
    -------
    ndarray of int, shape (n,)
        Values in [0, n).
    """
    from avsync.warps import random_warp, tae_warp

    u = rng.random()
    if u < p_identity:
        plan = np.arange(n)
    elif u < p_identity + (1 - p_identity) / 2:
        plan = random_warp(n, fps, rng)
    else:
        plan = tae_warp(n, rng)
    plan = np.asarray(plan, dtype=np.int64)
    if len(plan) < 2:  # a global shift can push a short window's whole warp out of it
        plan = np.arange(n)
    if len(plan) != n:  # be tolerant of warps that return another length
        plan = plan[np.linspace(0, len(plan) - 1, n).round().astype(int)]
    return np.clip(plan, 0, n - 1)


class SampleStream:
    """Endless random samples from a list of clips.

    Parameters
    ----------
    clips : list of ClipArrays
    window : int
        Window length T in frames (clips shorter than that give their full length).
    seed : int
    distort : bool
        Apply random warps (False: identity plans, for sanity checks).
    """

    def __init__(self, clips: list[ClipArrays], window: int, seed: int = 0, distort: bool = True) -> None:
        self.clips = [c for c in clips if len(c) >= 8]
        if not self.clips:
            raise InputError("no usable clips (each needs at least 8 frames of audio and video)")
        self.window = int(window)
        self.rng = np.random.default_rng(seed)
        self.distort = distort
        lengths = np.array([len(c) for c in self.clips], dtype=np.float64)
        self.p = lengths / lengths.sum()  # clips are picked in proportion to their length

    def sample(self) -> Sample:
        c = self.clips[int(self.rng.choice(len(self.clips), p=self.p))]
        n = len(c)
        t = min(self.window, n)
        s = int(self.rng.integers(0, n - t + 1))
        plan = random_plan(t, c.fps, self.rng) if self.distort else np.arange(t)
        vis = warp_visual(c.visual[s : s + t], plan, c.visual_is_diff)
        return Sample(
            audio=c.audio[s : s + t],
            visual=vis,
            target=plan.astype(np.float32),
            plan=plan,
            clip=c.name,
            fps=c.fps,
        )

    def batch(self, n: int) -> list[Sample]:
        """``n`` samples of the same length (the shortest drawn)."""
        out = [self.sample() for _ in range(n)]
        t = min(len(s.target) for s in out)
        if any(len(s.target) != t for s in out):
            out = [_crop(s, t) for s in out]
        return out


def _crop(s: Sample, t: int) -> Sample:
    # keep the first t distorted frames and express targets in a t-long audio window
    # starting at the first shown frame
    lo = int(s.plan[:t].min())
    lo = min(lo, len(s.audio) - t)
    plan = np.clip(s.plan[:t] - lo, 0, t - 1)
    return Sample(s.audio[lo : lo + t], s.visual[:t], plan.astype(np.float32), plan, s.clip, s.fps)


def fixed_samples(clips: list[ClipArrays], window: int, n: int, seed: int) -> list[Sample]:
    """A reproducible set of ``n`` distorted samples (validation / the card's numbers)."""
    return SampleStream(clips, window, seed=seed).batch(n)
