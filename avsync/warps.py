"""Random monotonic time distortions of a video: the project's ground-truth generator.

A *plan* describes a distorted video: its frame ``m`` shows original frame ``plan[m]``.
Plans are non-decreasing (time never runs backwards) and bounded: frame ``m`` of the
distorted video is never more than a set number of seconds away from what it shows. The
example, the bench and self-supervised training all distort synced clips with these
functions, so they are pure numpy and reproducible from a seeded ``numpy.random.Generator``.

Ground truth for alignment: if the distorted picture is aligned back to the original audio,
output frame ``k`` (time ``k / fps`` on the audio's clock) should show distorted frame
``invert_plan(plan, n)[k]``. The lag of the distorted picture at audio time ``k / fps``
is therefore ``(invert_plan(plan, n)[k] - k) / fps`` (positive = audio leads).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["random_warp", "tae_warp", "invert_plan", "plan_lag"]


def _speed_schedule(
    rng: np.random.Generator, fps: float, speed_range: tuple[float, float], segment_seconds: tuple[float, float]
) -> tuple[float, float, float]:
    """A segment: (length in frames, target speed, ramp length in frames). Speeds are
    drawn log-uniformly so that slowing down and speeding up are equally likely."""
    length = rng.uniform(*segment_seconds) * fps
    lo, hi = math.log(speed_range[0]), math.log(speed_range[1])
    speed = math.exp(rng.uniform(lo, hi))
    ramp = min(0.5 * fps, 0.5 * length)
    return length, speed, ramp


def random_warp(
    n_frames: int,
    fps: float,
    rng: np.random.Generator,
    *,
    speed_range: tuple[float, float] = (0.6, 1.6),
    segment_seconds: tuple[float, float] = (1.0, 3.0),
    freeze_prob: float = 0.01,
    max_freeze_frames: int = 4,
    skip_prob: float = 0.01,
    max_skip_frames: int = 3,
    max_shift: float = 1.0,
    max_displacement: float = 1.0,
) -> np.ndarray:
    """A random, smooth, monotonic re-timing of ``n_frames`` frames.

    The picture plays at a piecewise-constant speed (segments of ``segment_seconds``,
    speed log-uniform in ``speed_range``, raised-cosine transitions of up to 0.5 s), with
    occasional short freezes and skips, plus one global shift. The speed is steered back
    towards 1 whenever the accumulated displacement exceeds half of ``max_displacement``,
    and clamped so that it never exceeds it.

    Parameters
    ----------
    n_frames : int
        Frames of the original video.
    fps : float
        Frame rate (used to convert the seconds below to frames).
    rng : numpy.random.Generator
    speed_range : (float, float)
        Slowest and fastest segment speeds (original frames per distorted frame).
    segment_seconds : (float, float)
        Range of segment lengths, seconds of distorted video.
    freeze_prob : float
        Probability per distorted frame that a freeze starts.
    max_freeze_frames : int
        A freeze shows the same frame 2..``max_freeze_frames`` times in total.
    skip_prob : float
        Probability per distorted frame of a skip.
    max_skip_frames : int
        A skip jumps over 1..``max_skip_frames`` extra original frames.
    max_shift : float
        The global shift is uniform in ``[-max_shift, max_shift]`` seconds; positive delays
        the picture (audio leads): the first frame is held at the start.
    max_displacement : float
        Bound, seconds, on the displacement due to the speed changes, freezes and skips.

    Returns
    -------
    plan : ndarray of int64, shape (M,)
        Distorted frame ``m`` shows original frame ``plan[m]``; non-decreasing, values in
        ``[0, n_frames)``, ``|m - plan[m]| <= (max_displacement + max_shift) * fps + 1``.
        The distorted video ends when the original does (M is near ``n_frames``).
    """
    if n_frames < 1:
        raise ValueError("n_frames must be >= 1")
    if not 0 < speed_range[0] <= speed_range[1]:
        raise ValueError("speed_range must be positive and ordered")
    bound = max_displacement * fps
    shift = rng.uniform(-max_shift, max_shift) * fps
    speed = _SpeedCourse(rng, fps, speed_range, segment_seconds, bound)
    events = _FreezesAndSkips(rng, freeze_prob, max_freeze_frames, skip_prob, max_skip_frames)
    plan: list[int] = []
    pos = 0.0  # original-frame position before the shift
    m = 0
    max_len = int(3 * n_frames / speed_range[0]) + 10 * int(fps) + 10
    while m < max_len:
        f = int(round(pos - shift))
        if f > n_frames - 1:
            break
        plan.append(min(max(f, 0), n_frames - 1))
        step, freeze = events.step(speed.next(pos - m))
        if freeze:  # snap to a frame centre so the frozen frame is shown exactly n times
            pos = round(pos - shift) + shift
        m += 1
        nxt = pos + step
        # displacement bound on the unshifted position, and monotonic
        nxt = min(max(nxt, m - bound), m + bound)
        pos = max(pos, nxt)
    return np.asarray(plan, dtype=np.int64)


class _SpeedCourse:
    """The speed of :func:`random_warp`, frame by frame: segments of a target speed reached by a
    raised-cosine ramp; a new segment's target is flipped towards 1 when the displacement so far
    exceeds half the bound in its direction."""

    def __init__(self, rng: np.random.Generator, fps: float, speed_range: tuple[float, float],
                 segment_seconds: tuple[float, float], bound: float) -> None:
        self.rng, self.fps, self.speed_range, self.segment_seconds, self.bound = (
            rng, fps, speed_range, segment_seconds, bound)
        self.seg_left, self.speed, self.target, self.ramp, self.ramp_from, self.ramp_pos = 0.0, 1.0, 1.0, 1.0, 1.0, 1.0

    def next(self, displacement: float) -> float:
        """The speed of the next distorted frame, given the displacement (frames) so far."""
        if self.seg_left <= 0:
            self.seg_left, target, self.ramp = _speed_schedule(self.rng, self.fps, self.speed_range,
                                                               self.segment_seconds)
            if displacement > 0.5 * self.bound and target > 1.0:
                target = 1.0 / target  # ahead: slow down
            elif displacement < -0.5 * self.bound and target < 1.0:
                target = 1.0 / target  # behind: speed up
            self.target = float(np.clip(target, self.speed_range[0], self.speed_range[1]))
            self.ramp_from, self.ramp_pos = self.speed, 0.0
        if self.ramp_pos < self.ramp:
            w = 0.5 - 0.5 * math.cos(math.pi * (self.ramp_pos + 1.0) / self.ramp)
            self.speed = self.ramp_from + (self.target - self.ramp_from) * min(w, 1.0)
            self.ramp_pos += 1.0
        else:
            self.speed = self.target
        self.seg_left -= 1.0
        return self.speed


class _FreezesAndSkips:
    """Occasional freezes (the same frame 2..max_freeze times) and skips (1..max_skip extra frames)."""

    def __init__(self, rng: np.random.Generator, freeze_prob: float, max_freeze: int, skip_prob: float,
                 max_skip: int) -> None:
        self.rng, self.freeze_prob, self.max_freeze, self.skip_prob, self.max_skip = (
            rng, freeze_prob, max_freeze, skip_prob, max_skip)
        self.freeze_left = 0

    def step(self, speed: float) -> tuple[float, bool]:
        """How far the next frame advances at ``speed``, and whether a freeze starts here."""
        if self.freeze_left > 0:
            self.freeze_left -= 1
            return 0.0, False
        if self.rng.random() < self.freeze_prob and self.max_freeze >= 2:
            self.freeze_left = int(self.rng.integers(1, self.max_freeze)) - 1
            return 0.0, True
        if self.rng.random() < self.skip_prob and self.max_skip >= 1:
            return speed + int(self.rng.integers(1, self.max_skip + 1)), False
        return speed, False


def tae_warp(
    n_frames: int,
    rng: np.random.Generator,
    max_displacement_frames: int = 25,
    max_repeat: int = 4,
    drop_prob: float = 0.1,
    dup_prob: float = 0.05,
) -> np.ndarray:
    """Random frame drops and duplicates (temporal-autoencoder paper style).

    Each original frame, in order, is dropped (probability ``drop_prob``), duplicated
    (probability ``dup_prob``: shown 2..``max_repeat`` times) or shown once, subject to the
    displacement ``|m - plan[m]|`` never exceeding ``max_displacement_frames`` (a choice
    that would break it is replaced by the nearest allowed repeat count).

    Parameters
    ----------
    n_frames : int
    rng : numpy.random.Generator
    max_displacement_frames : int
    max_repeat : int
    drop_prob, dup_prob : float
        Defaults balance drops against the extra frames of duplicates (mean 2 extra).

    Returns
    -------
    plan : ndarray of int64, shape (M,)
        Non-decreasing original frame indices; M is within ``max_displacement_frames`` of
        ``n_frames``.
    """
    if n_frames < 1:
        raise ValueError("n_frames must be >= 1")
    plan: list[int] = []
    d_max = int(max_displacement_frames)
    for f in range(n_frames):
        u = rng.random()
        if u < drop_prob:
            reps = 0
        elif u < drop_prob + dup_prob:
            reps = int(rng.integers(2, max_repeat + 1))
        else:
            reps = 1
        # after this frame the next original frame f+1 would sit at index len(plan)+reps:
        # keep len(plan)+reps-(f+1) within [-d_max, d_max]; always show the first frame
        lo_r = max(0, -d_max + f + 1 - len(plan), 1 if f == 0 else 0)
        hi_r = d_max + f + 1 - len(plan)
        reps = min(max(reps, lo_r), max(hi_r, lo_r))
        plan.extend([f] * reps)
    return np.asarray(plan, dtype=np.int64)


def invert_plan(plan: np.ndarray, n_orig: int) -> np.ndarray:
    """For each original frame, the distorted frame that best shows it.

    Parameters
    ----------
    plan : ndarray of int, shape (M,)
        Non-decreasing; distorted frame ``m`` shows original frame ``plan[m]``.
    n_orig : int
        Frames of the original video.

    Returns
    -------
    gt : ndarray of int64, shape (n_orig,)
        ``gt[f]`` = the middle of the run of distorted frames showing ``f``; if ``f`` is
        never shown (skipped, or beyond either end), the middle of the run of the nearest
        shown original frame (the earlier one on ties). Non-decreasing. This is the
        alignment ground truth: output frame ``k`` should show distorted frame ``gt[k]``.
    """
    plan = np.asarray(plan, dtype=np.int64)
    if plan.size == 0:
        raise ValueError("empty plan")
    if np.any(np.diff(plan) < 0):
        raise ValueError("plan must be non-decreasing")
    vals, first, counts = np.unique(plan, return_index=True, return_counts=True)
    mid = first + (counts - 1) // 2
    f = np.arange(int(n_orig))
    hi = np.clip(np.searchsorted(vals, f), 0, vals.size - 1)
    lo = np.clip(hi - 1, 0, vals.size - 1)
    pick = np.where(np.abs(vals[lo] - f) <= np.abs(vals[hi] - f), lo, hi)
    return mid[pick]


def plan_lag(plan: np.ndarray, n_orig: int, fps: float) -> np.ndarray:
    """True lag of the distorted picture against the original audio, seconds.

    Returns
    -------
    ndarray of float64, shape (n_orig,)
        ``(invert_plan(plan, n_orig)[k] - k) / fps``: at audio time ``k / fps`` the
        matching picture is this much later in the distorted video (positive = audio leads).
    """
    gt = invert_plan(plan, n_orig)
    return (gt - np.arange(int(n_orig))) / float(fps)
