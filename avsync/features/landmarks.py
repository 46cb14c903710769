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
import math
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

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

    @property
    def centre(self) -> np.ndarray:
        """(2,) mean of the lip points: where the mouth is, isotropic image units."""
        return self.lips.mean(axis=0)


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
        self._face = _face_mesh(static) if face else None
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
        return _face_result(res.multi_face_landmarks[0].landmark, (0.0, sx), (0.0, sy))


def _face_result(lm, ax: tuple[float, float], ay: tuple[float, float]) -> FaceResult:  # type: ignore[no-untyped-def]
    """A :class:`FaceResult` from one face mesh's normalised landmarks ``lm``: image x (isotropic
    units) = ``ax[0] + lm.x * ax[1]``, likewise y."""

    def pt(i: int) -> np.ndarray:
        return np.array((ax[0] + lm[i].x * ax[1], ay[0] + lm[i].y * ay[1]), dtype=np.float32)

    lips = np.stack([pt(i) for i in LIPS])
    iod = float(np.linalg.norm(pt(EYE_OUTER_L) - pt(EYE_OUTER_R)))
    gap = float(np.linalg.norm(pt(INNER_TOP) - pt(INNER_BOTTOM)))
    return FaceResult(lips=lips, opening=gap / max(iod, 1e-6), face_size=iod)


def _face_mesh(static: bool):  # type: ignore[no-untyped-def]
    """mediapipe's face mesh for one face (the settings every face mesh here uses)."""
    import mediapipe as mp

    return mp.solutions.face_mesh.FaceMesh(static_image_mode=static, max_num_faces=1, refine_landmarks=False,
                                           min_detection_confidence=0.5, min_tracking_confidence=0.5)


def _started(make: Any) -> Any:
    """The mediapipe model ``make()`` builds, after a first process() call on a blank frame, both
    with native stderr silenced (as :class:`LandmarkDetector` starts its models): they print
    absl/TFLite start-up lines that would break the CLI's one-line errors."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    with quiet_native_stderr():
        model = make()
        model.process(np.zeros((64, 64, 3), np.uint8))
    return model


def _full_range_detector():  # type: ignore[no-untyped-def]
    """mediapipe's full-range face detector (faces down to a few per cent of the frame; the face
    mesh's own detector is the short-range one and misses faces that small), started."""
    import mediapipe as mp

    return _started(lambda: mp.solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.5))


def _boxes(detector, rgb: np.ndarray) -> list[tuple[float, float, float]]:  # type: ignore[no-untyped-def]
    """Faces found by ``detector``: (centre x, centre y, size) in pixels, size = the larger box side."""
    h, w = rgb.shape[:2]
    res = detector.process(np.ascontiguousarray(rgb))
    out = []
    for d in res.detections or []:
        b = d.location_data.relative_bounding_box
        out.append(((b.xmin + b.width / 2) * w, (b.ymin + b.height / 2) * h, max(b.width * w, b.height * h)))
    return out


class FaceCounter:
    """How many faces a frame holds (full-range detector). Use as a context manager."""

    def __init__(self) -> None:
        self._det = _full_range_detector()

    def __enter__(self) -> FaceCounter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._det.close()

    def count(self, rgb: np.ndarray) -> int:
        return len(_boxes(self._det, rgb))


CROP_SCALE = 2.2  # several faces: each face mesh sees a square this many face-box sides wide
RECENTRE = 0.25  # ... a crop moves to its face when the face has moved this many face sides from its centre
REDETECT = 2.0  # ... and the faces are looked for again at least this often, s


class FaceTracks:
    """Several faces through a video, each followed by its own face mesh on a crop around it.

    The full-range detector finds the faces (on the first frame, every :data:`REDETECT` s, and on
    every frame while a face is lost); each new face opens a track (at most ``max_faces``) with
    its own face mesh in tracking mode, fed a square crop :data:`CROP_SCALE` face sides wide. A
    detection continues the track whose face it overlaps (centre within half a face side) and
    re-places the crop of a lost one. A crop stays put while its face stays within
    :data:`RECENTRE` face sides of its centre, then moves onto it: moving it every frame made the
    mouth opening correlate 0.81 with the full-frame mesh's on the same face, keeping it still
    0.89. A face that leaves and another that comes in where it was share a track.
    Use as a context manager.
    """

    def __init__(self, max_faces: int, fps: float) -> None:
        self.max_faces = int(max_faces)
        self._every = max(1, int(round(REDETECT * fps)))
        self._boxes_px: list[tuple[float, float, float]] = []  # per track: centre x, y, size (pixels)
        self._meshes: list[Any] = []
        self._lost_tracks: list[bool] = []  # per track: its face mesh found nothing last time
        self._frame = 0
        self._det = _full_range_detector()

    def __enter__(self) -> FaceTracks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for m in [self._det, *self._meshes]:
            m.close()
        self._meshes = []

    @staticmethod
    def _new_mesh() -> Any:
        return _started(lambda: _face_mesh(static=False))

    def _redetect(self, rgb: np.ndarray) -> None:
        for cx, cy, size in _boxes(self._det, rgb):
            near = [k for k, (x, y, s) in enumerate(self._boxes_px) if math.hypot(cx - x, cy - y) <= 0.5 * max(s, size)]
            if near:
                k = near[0]
                if self._lost_tracks[k]:
                    self._boxes_px[k] = (cx, cy, size)
            elif len(self._boxes_px) < self.max_faces:
                self._boxes_px.append((cx, cy, size))
                self._meshes.append(self._new_mesh())
                self._lost_tracks.append(True)

    def process(self, rgb: np.ndarray) -> list[tuple[int, FaceResult]]:
        """(track index, face) of every face followed in this frame (RGB, (H, W, 3) uint8)."""
        h, w = rgb.shape[:2]
        side = float(max(w, h))
        if self._frame % self._every == 0 or any(self._lost_tracks) or not self._boxes_px:
            self._redetect(rgb)
        self._frame += 1
        out = []
        for k, (cx, cy, size) in enumerate(self._boxes_px):
            half = CROP_SCALE * size / 2
            x0, y0 = int(max(0, cx - half)), int(max(0, cy - half))
            x1, y1 = int(min(w, cx + half)), int(min(h, cy + half))
            if x1 - x0 < 8 or y1 - y0 < 8:
                self._lost_tracks[k] = True
                continue
            res = self._meshes[k].process(np.ascontiguousarray(rgb[y0:y1, x0:x1]))
            if not res.multi_face_landmarks:
                self._lost_tracks[k] = True
                continue
            lm = res.multi_face_landmarks[0].landmark
            cw, ch = x1 - x0, y1 - y0
            out.append((k, _face_result(lm, (x0 / side, cw / side), (y0 / side, ch / side))))
            xs = np.array([p.x for p in lm]) * cw + x0
            ys = np.array([p.y for p in lm]) * ch + y0
            mx, my = float(xs.mean()), float(ys.mean())
            if math.hypot(mx - cx, my - cy) > RECENTRE * size:  # the crop stays put while the face is well inside
                self._boxes_px[k] = (mx, my, float(max(np.ptp(xs), np.ptp(ys))))
            self._lost_tracks[k] = False
        return out


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
