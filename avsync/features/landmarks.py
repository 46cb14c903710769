"""Body pose and lip landmarks (mediapipe), and per-track cleaning.

Coordinates everywhere in this module are *isotropic image units*: pixel coordinates
divided by the longest side of the frame, so x is in [0, w/L] and y in [0, h/L] with
L = max(w, h), and a distance means the same in x and y.

mediapipe is imported lazily (it is slow to import and logs through glog; set
``GLOG_minloglevel=2``). Pose uses ``model_complexity=1`` only: the other complexities
try to download a model at first use.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

N_POSE = 33
# mediapipe pose indices
L_SHOULDER, R_SHOULDER, L_HIP, R_HIP = 11, 12, 23, 24
BODY_JOINTS = tuple(range(11, 33))  # shoulders down; face points (0-10) are jittery

# 20 lip points from the 468-point face mesh, in the order of the classic 68-point
# layout (points 48-67): 12 on the outer contour clockwise from the left corner, then 8
# on the inner contour.
LIPS_OUTER = (61, 40, 37, 0, 267, 270, 291, 321, 314, 17, 84, 91)
LIPS_INNER = (78, 81, 13, 311, 308, 402, 14, 178)
LIPS = LIPS_OUTER + LIPS_INNER
N_LIPS = len(LIPS)
INNER_TOP, INNER_BOTTOM = 13, 14  # mid-points of the inner lip contour
EYE_OUTER_L, EYE_OUTER_R = 33, 263  # outer eye corners (inter-ocular distance)

DETECT_SIDE = 640  # frames are downscaled so their longest side is about this, pixels


def detect_size(width: int, height: int, side: int = DETECT_SIDE) -> tuple[int, int]:
    """Size (w, h), both even, to downscale a frame to for detection (never upscales)."""
    s = min(1.0, side / max(width, height))
    return max(2, int(round(width * s / 2)) * 2), max(2, int(round(height * s / 2)) * 2)


@dataclass
class FaceResult:
    """One face-mesh detection.

    Attributes
    ----------
    lips : ndarray, (20, 2)
        Lip points (:data:`LIPS` order), isotropic image units.
    opening : float
        Inner-lip vertical distance / inter-ocular distance (dimensionless; ~0 closed,
        ~0.3-0.6 wide open).
    face_size : float
        Inter-ocular (outer eye corners) distance, isotropic image units.
    """

    lips: np.ndarray
    opening: float
    face_size: float


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Silence file descriptor 2 while mediapipe's native code starts up.

    Its C++ (absl/glog/TFLite) messages are written before GLOG_minloglevel is honoured and
    would break the one-error-line promise of the CLI. Python-level errors raised inside are
    still raised (and printed later, with stderr restored).
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except OSError:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class LandmarkDetector:
    """mediapipe pose and/or face mesh on RGB frames. Use as a context manager.

    Parameters
    ----------
    pose, face : bool
        Which models to load.
    static : bool
        True for unrelated frames (probing), False for a video (tracking between frames,
        faster and steadier).
    """

    def __init__(self, pose: bool = True, face: bool = True, static: bool = False) -> None:
        os.environ.setdefault("GLOG_minloglevel", "2")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        with quiet_native_stderr():
            self._create(pose, face, static)

    def _create(self, pose: bool, face: bool, static: bool) -> None:
        import mediapipe as mp

        self._pose = (
            mp.solutions.pose.Pose(
                static_image_mode=static,
                model_complexity=1,
                smooth_landmarks=False,
                min_detection_confidence=0.5,
                min_tracking_confidence=0.5,
            )
            if pose
            else None
        )
        self._face = (
            mp.solutions.face_mesh.FaceMesh(
                static_image_mode=static,
                max_num_faces=1,
                refine_landmarks=False,
                min_detection_confidence=0.5,
                min_tracking_confidence=0.5,
            )
            if face
            else None
        )
        # The first process() call prints TFLite delegate messages from native code: do it here,
        # inside the quiet block, on a blank frame.
        blank = np.zeros((64, 64, 3), np.uint8)
        for m in (self._pose, self._face):
            if m is not None:
                m.process(blank)

    def __enter__(self) -> LandmarkDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for m in (self._pose, self._face):
            if m is not None:
                m.close()
        self._pose = self._face = None

    @staticmethod
    def _scale(rgb: np.ndarray) -> tuple[float, float]:
        h, w = rgb.shape[:2]
        side = float(max(w, h))
        return w / side, h / side

    def pose(self, rgb: np.ndarray) -> np.ndarray | None:
        """Pose of the main person in one frame.

        Parameters
        ----------
        rgb : ndarray, (H, W, 3) uint8

        Returns
        -------
        ndarray, (33, 3) or None
            x, y (isotropic image units) and visibility in [0, 1] per joint; None when no
            person is found.
        """
        if self._pose is None:
            raise RuntimeError("pose model not loaded")
        res = self._pose.process(np.ascontiguousarray(rgb))
        if res.pose_landmarks is None:
            return None
        sx, sy = self._scale(rgb)
        lm = res.pose_landmarks.landmark
        return np.array([(p.x * sx, p.y * sy, p.visibility) for p in lm], dtype=np.float32)

    def face(self, rgb: np.ndarray) -> FaceResult | None:
        """Lips and mouth opening of the main face in one frame (None when no face)."""
        if self._face is None:
            raise RuntimeError("face mesh not loaded")
        res = self._face.process(np.ascontiguousarray(rgb))
        if not res.multi_face_landmarks:
            return None
        sx, sy = self._scale(rgb)
        lm = res.multi_face_landmarks[0].landmark

        def pt(i: int) -> np.ndarray:
            return np.array((lm[i].x * sx, lm[i].y * sy), dtype=np.float32)

        lips = np.stack([pt(i) for i in LIPS])
        iod = float(np.linalg.norm(pt(EYE_OUTER_L) - pt(EYE_OUTER_R)))
        gap = float(np.linalg.norm(pt(INNER_TOP) - pt(INNER_BOTTOM)))
        return FaceResult(lips=lips, opening=gap / max(iod, 1e-6), face_size=iod)


def _interp_gaps(x: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``x`` (T,) over frames where ``ok`` is False; edges held.
    All-invalid input gives zeros."""
    if not ok.any():
        return np.zeros_like(x)
    idx = np.arange(len(x))
    return np.interp(idx, idx[ok], x[ok])


def clean_track(
    xy: np.ndarray,
    valid: np.ndarray | None = None,
    *,
    median: int = 5,
    outlier: float = 4.0,
    savgol: int = 7,
    polyorder: int = 2,
) -> np.ndarray:
    """Clean keypoint tracks: drop outliers, fill gaps, smooth.

    Steps, per keypoint and coordinate: (1) frames marked invalid (or NaN) are dropped and
    filled by linear interpolation (edges held); (2) samples further than ``outlier``
    robust standard deviations (1.4826 × median absolute deviation of the residual, with a
    small floor) from a running median of width ``median`` are dropped and re-filled the
    same way — this removes spikes of up to ``median // 2`` frames; (3) Savitzky–Golay
    smoothing (window ``savgol`` frames, polynomial ``polyorder``).

    Parameters
    ----------
    xy : ndarray, (T, K, 2)
        Keypoint coordinates per frame (any unit); NaN marks a missing value.
    valid : ndarray, (T,) or (T, K) bool, optional
        Which frames (or frame × keypoint) hold a detection. Default: where ``xy`` is
        finite.

    Returns
    -------
    ndarray, (T, K, 2) float32
        NaN-free. A keypoint never detected is all zeros.
    """
    from scipy.signal import savgol_filter

    xy = np.asarray(xy, dtype=np.float64)
    if xy.ndim != 3 or xy.shape[2] != 2:
        raise ValueError(f"xy must be (T, K, 2), got {xy.shape}")
    T, K, _ = xy.shape
    ok = _valid_mask(xy, valid)
    out = np.zeros((T, K, 2), dtype=np.float64)
    if T == 0:
        return out.astype(np.float32)
    win = savgol if savgol % 2 else savgol + 1
    win = min(win, T if T % 2 else T - 1)
    for k in range(K):
        keep = ok[:, k].copy()
        for c in range(2):
            keep &= _inliers(_interp_gaps(xy[:, k, c], keep), keep, median, outlier)
        for c in range(2):
            x = _interp_gaps(xy[:, k, c], keep)
            if win > polyorder + 1:
                x = savgol_filter(x, win, polyorder, mode="interp")
            out[:, k, c] = x
    return out.astype(np.float32)


def _valid_mask(xy: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """(T, K) bool: finite points that ``valid`` ((T,) or (T, K), optional) marks as detected."""
    T, K, _ = xy.shape
    ok = np.isfinite(xy).all(axis=2)
    if valid is not None:
        v = np.asarray(valid, dtype=bool)
        if v.ndim == 1:
            v = np.broadcast_to(v[:, None], (T, K))
        if v.shape != (T, K):
            raise ValueError(f"valid must be (T,) or (T, K) = ({T}, {K}), got {v.shape}")
        ok &= v
    return ok


def _inliers(x: np.ndarray, keep: np.ndarray, median: int, outlier: float) -> np.ndarray:
    """(T,) bool: samples of the gap-filled series ``x`` within ``outlier`` robust deviations of
    its running median (all True when there are too few kept samples to judge)."""
    from scipy.ndimage import median_filter

    if not (median > 1 and keep.sum() > median):
        return np.ones(x.size, dtype=bool)
    med = median_filter(x, size=median, mode="nearest")
    res = x - med
    mad = np.median(np.abs(res[keep] - np.median(res[keep])))
    scale = max(1.4826 * mad, 0.01 * np.ptp(med[keep]), 1e-9)
    return np.abs(res) <= outlier * scale
