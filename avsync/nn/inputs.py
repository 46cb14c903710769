"""What the networks take in: input widths and point layouts (no torch here).

The networks in :mod:`avsync.nn` are built for these widths, and the numpy input
preparation in :mod:`avsync.backends._inputs` produces arrays of them, so both import them
from here (this module imports neither torch nor the feature extractors).
"""

from __future__ import annotations

from avsync.errors import InputError

# ------------------------------------------------------------------------------------------
# syncnet, avmatch, wlos: audio rows on the video clock

SUB = 4  # audio rows per video frame (≈ 100 Hz at 25 fps)
N_BANDS = 32  # log-mel bands after averaging the 128 bins in groups of 4
N_MFCC = 12  # MFCCs per audio row (wlos)

# ------------------------------------------------------------------------------------------
# tae, avst: the log-mel pooled to bands, sampled at phases around each frame time

BANDS = 32  # log-mel bands after pooling 128 bins by 4
PHASES = 4  # audio samples per video frame
AUDIO_IN = BANDS * PHASES

# ------------------------------------------------------------------------------------------
# alignnet: points (keypoints or motion-grid cells) and their left/right pairs

# mediapipe pose indices of the 19-point body subset: nose, eyes, ears, shoulders, elbows,
# wrists, hips, knees, ankles, foot tips (left before right in each pair).
BODY19 = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28, 31, 32)
BODY19_PAIRS = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16), (17, 18))
# the 20 lip points in avsync.features.landmarks.LIPS order; mirrored pairs of the face mesh
LIPS20_PAIRS = ((0, 6), (1, 5), (2, 4), (7, 11), (8, 10), (12, 16), (13, 15), (17, 19))
GRID = 8  # motion grid cells per side (features.motion.GRID)


def tie_from_pairs(n: int, pairs: tuple[tuple[int, int], ...]) -> tuple[int, ...]:
    """Shared-weight index per point: the two points of a pair get the same index."""
    tie = list(range(n))
    for i, j in pairs:
        tie[j] = tie[i]
    uniq = {v: k for k, v in enumerate(dict.fromkeys(tie))}
    return tuple(uniq[v] for v in tie)


def grid_pairs(g: int = GRID) -> tuple[tuple[int, int], ...]:
    """Mirrored (left/right) cells of a row-major g×g grid."""
    return tuple((r * g + c, r * g + g - 1 - c) for r in range(g) for c in range(g // 2))


def layout(kind: str) -> tuple[int, int, tuple[tuple[int, int], ...]]:
    """(points, channels per point, left/right pairs) of an AlignNet input kind."""
    if kind == "motion":
        return GRID * GRID, 2, grid_pairs()
    if kind == "pose":
        return len(BODY19), 4, BODY19_PAIRS
    if kind == "lips":
        return 20, 4, LIPS20_PAIRS
    raise InputError(f"unknown AlignNet input kind '{kind}'")
