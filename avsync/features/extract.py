"""Feature extraction from files: one decode pass per video, cached by content.

:func:`extract_visual` decodes the video once (downscaled), always computes the
frame-difference motion grid, and runs mediapipe pose ('dance') or face mesh ('speech')
on the same frames. :func:`extract_audio` loads the audio on the video's clock and
computes the audio envelopes. Both cache their result under ``cache_dir()/features``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from avsync import cache as _cache
from avsync.errors import CannotMeasure, InputError
from avsync.features import MODES, AudioFeatures, VisualFeatures
from avsync.features.audio import audio_features
from avsync.features.landmarks import (
    DETECT_SIDE,
    L_HIP,
    N_LIPS,
    N_POSE,
    R_HIP,
    LandmarkDetector,
    clean_track,
    detect_size,
)
from avsync.features.motion import GRID, MOTION_WIDTH, MotionGrid, motion_envelope, mouth_envelope, pose_envelope
from avsync.progress import Progress
from avsync.types import Signal

log = logging.getLogger(__name__)

MIN_DETECTION = 0.30  # below this detection rate the person tracks are not used
PROBE_SEEK = 2.0  # auto probe: seek when the next probe time is this far (s) ahead, else decode on
PROBE_MAX_DECODE = 12  # auto probe: most frames decoded for one probe
N_PROBE = 12  # frames looked at by mode='auto'
SPEECH_FACE_SIZE = 0.06  # inter-ocular distance / longest side above which a face "is the subject"
# auto: a body must be found in this fraction of the probe frames for 'dance' (pose also
# fires on cartoon characters now and then: Big Buck Bunny gets 3-7 hits out of 12)
PROBE_BODY = 0.75


# --------------------------------------------------------------------------------------
# helpers


def _nominal_fps(info) -> float:
    fps = float(info.fps or 0.0)
    return fps if 1.0 <= fps <= 1000.0 else 25.0


def _to_grid(t_src: np.ndarray, values: np.ndarray, fps: float, n: int) -> np.ndarray:
    """Linear interpolation of ``values`` (N, D) at times ``t_src`` (N,) onto k / fps."""
    t_new = np.arange(n) / fps
    v = values.reshape(len(t_src), -1).astype(np.float64)
    out = np.empty((n, v.shape[1]), np.float32)
    for d in range(v.shape[1]):
        out[:, d] = np.interp(t_new, t_src, v[:, d])
    return out


def _gray_small(img: np.ndarray) -> np.ndarray:
    """Gray frame about MOTION_WIDTH wide (longest side) from an RGB or gray image."""
    import cv2

    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    h, w = img.shape
    s = MOTION_WIDTH / max(h, w)
    if s < 1.0:
        img = cv2.resize(img, (max(GRID, round(w * s)), max(GRID, round(h * s))), interpolation=cv2.INTER_AREA)
    return img


def _probe_mode(path: str, duration: float) -> tuple[str, dict]:
    """Look at ~N_PROBE frames spread over the clip and pick 'speech', 'dance' or 'general'."""
    import av

    times = (np.arange(N_PROBE) + 0.5) / N_PROBE * max(duration, 1e-3)
    faces, poses, sizes, seen = 0, 0, [], 0
    with av.open(path) as c, LandmarkDetector(pose=True, face=True, static=True) as det:
        vs = c.streams.video[0]
        vs.thread_type = "AUTO"
        tb = float(vs.time_base) if vs.time_base else 1.0
        start = float(vs.start_time * tb) if vs.start_time is not None else 0.0
        frames = None
        pos = -np.inf  # time of the last decoded frame, relative to start
        taken: set[int] = set()
        for t in times:
            # Any frame near t will do. Seek only when t is far ahead (else decode on), and
            # never decode more than PROBE_MAX_DECODE frames for one probe: decoding forward
            # from a key frame to t costs up to a whole GOP of full-size frames.
            frame = None
            try:
                if frames is None or t - pos > PROBE_SEEK:
                    c.seek(int((start + t) / tb), stream=vs, backward=True, any_frame=False)
                    frames = c.decode(vs)
                for _ in range(PROBE_MAX_DECODE):
                    frame = next(frames)
                    pos = float(frame.time) - start if frame.time is not None else pos
                    if pos >= t - 1e-3:
                        break
            except (av.error.FFmpegError, StopIteration):
                frames, frame = None, None
            if frame is None or frame.pts in taken:
                continue
            taken.add(frame.pts)
            w, h = detect_size(frame.width, frame.height)
            rgb = frame.to_ndarray(width=w, height=h, format="rgb24")
            seen += 1
            f = det.face(rgb)
            if f is not None:
                faces += 1
                sizes.append(f.face_size)
            if det.pose(rgb) is not None:
                poses += 1
    stats = {
        "probe_frames": seen,
        "probe_faces": faces,
        "probe_poses": poses,
        "probe_face_size": float(np.median(sizes)) if sizes else 0.0,
    }
    if seen == 0:
        return "general", stats
    if faces >= 0.5 * seen and stats["probe_face_size"] >= SPEECH_FACE_SIZE:
        return "speech", stats
    if poses >= PROBE_BODY * seen:
        return "dance", stats
    if faces >= PROBE_BODY * seen:
        return "speech", stats
    return "general", stats


# --------------------------------------------------------------------------------------
# visual


def _visual_to_npz(v: VisualFeatures) -> dict[str, np.ndarray]:
    d = {
        "mode": np.array(v.mode),
        "kind": np.array(v.kind),
        "note": np.array(v.note),
        "envelope": v.envelope.values,
        "grid": v.grid.values,
        "fps": np.array(v.fps),
        "detection_rate": np.array(v.detection_rate),
        "frame_times": v.frame_times,
        "extra": np.array(json.dumps(v.extra)),
    }
    if v.keypoints is not None:
        d["keypoints"] = v.keypoints.values
    if v.mouth is not None:
        d["mouth"] = v.mouth.values
    return d


def _visual_from_npz(d: dict[str, np.ndarray]) -> VisualFeatures:
    fps = float(d["fps"])
    return VisualFeatures(
        mode=str(d["mode"]),
        kind=str(d["kind"]),
        envelope=Signal(d["envelope"], fps, 0.0),
        grid=Signal(d["grid"], fps, 0.0),
        keypoints=Signal(d["keypoints"], fps, 0.0) if "keypoints" in d else None,
        mouth=Signal(d["mouth"], fps, 0.0) if "mouth" in d else None,
        detection_rate=float(d["detection_rate"]),
        fps=fps,
        frame_times=d["frame_times"],
        note=str(d["note"]),
        extra=json.loads(str(d["extra"])),
    )


def extract_visual(
    path: str | os.PathLike,
    mode: str = "auto",
    *,
    cache: bool = True,
    progress: Progress | None = None,
) -> VisualFeatures:
    """Visual features of a video in one decode pass.

    Parameters
    ----------
    path : path-like
        Any video PyAV reads.
    mode : {'auto', 'dance', 'speech', 'general'}
        'dance' runs mediapipe pose (33 points), 'speech' face-mesh lips (20 points),
        'general' only the motion grid. 'auto' looks at ~12 frames spread over the clip
        and picks 'speech' when a large face is in most of them, 'dance' when a body is,
        else 'general'.
    cache : bool
        Read / write the result under ``cache_dir()/features`` (keyed by file content).
    progress : Progress, optional
        Called as ``progress("features", frames_done, n_frames)``.

    Returns
    -------
    VisualFeatures
        Every Signal on the uniform grid ``k / fps`` (fps = nominal rate), k = 0 .. N-1,
        t = 0 at the first frame; sources are interpolated from the frames' presentation
        times, so variable-frame-rate input lands right. ``keypoints`` are (T, 66) for
        pose (isotropic image units — pixels / longest side — minus the mid-hip point) and
        (T, 40) for lips (minus the lip centroid, divided by the inter-ocular distance,
        i.e. face-size invariant). When the chosen detector finds the person in fewer
        than 30% of frames, ``kind`` is 'motion' and ``note`` says so.

    Raises
    ------
    InputError
        Unreadable file, no video stream, unknown mode.
    """
    from avsync import media

    if mode not in MODES:
        raise InputError(f"unknown mode '{mode}' (choose from {', '.join(MODES)})")
    p = str(path)
    info = media.probe(p)
    if not info.has_video:
        raise InputError(f"no video stream in '{p}'")
    key = (
        _cache.file_key(p, what="visual", mode=mode, grid=GRID, motion_width=MOTION_WIDTH, detect_side=DETECT_SIDE)
        if cache
        else ""
    )
    if cache:
        hit = _cache.load_npz(key)
        if hit is not None:
            try:
                return _visual_from_npz(hit)
            except (KeyError, ValueError, TypeError):
                log.debug("ignoring malformed cache entry %s", key)

    extra: dict = {}
    chosen = mode
    if mode == "auto":
        chosen, extra = _probe_mode(p, info.duration)
    fps = _nominal_fps(info)
    want_pose, want_face = chosen == "dance", chosen == "speech"
    need_rgb = want_pose or want_face
    n_est = info.n_frames or None

    times: list[float] = []
    grid_rows: list[np.ndarray] = []
    pose_rows: list[np.ndarray] = []
    lip_rows: list[np.ndarray] = []
    mouth_rows: list[tuple[float, float]] = []
    found: list[bool] = []
    mgrid = MotionGrid(GRID)
    det = LandmarkDetector(pose=want_pose, face=want_face, static=False) if need_rgb else None
    reader = media.iter_frames(p, max_side=DETECT_SIDE if need_rgb else MOTION_WIDTH, gray=not need_rgb, upright=True)
    nan_pose = np.full((N_POSE, 3), np.nan, np.float32)
    nan_lips = np.full((N_LIPS, 2), np.nan, np.float32)
    try:
        if progress is not None:
            progress("features", 0, n_est)
        for i, t, img in reader:
            gap = (t - times[-1]) * fps if times and t > times[-1] else 1.0
            times.append(t)
            grid_rows.append(mgrid.update(_gray_small(img), gap))
            if want_pose:
                r = det.pose(img)
                found.append(r is not None)
                pose_rows.append(nan_pose if r is None else r)
            elif want_face:
                f = det.face(img)
                found.append(f is not None)
                lip_rows.append(nan_lips if f is None else f.lips)
                mouth_rows.append((np.nan, np.nan) if f is None else (f.opening, f.face_size))
            if progress is not None and (i + 1) % 10 == 0:
                progress("features", i + 1, n_est)
    finally:
        reader.close()
        if det is not None:
            det.close()
    if not times:
        raise InputError(f"cannot read '{p}': no video frame could be decoded")
    if progress is not None:
        progress("features", len(times), len(times))

    t_src = np.asarray(times, np.float64)
    if np.any(np.diff(t_src) <= 0):  # decode order glitches: keep the clock monotonic
        order = np.argsort(t_src, kind="stable")
        t_src = t_src[order]
        keep = np.concatenate([[True], np.diff(t_src) > 0])
        idx = order[keep]
        t_src = t_src[keep]
    else:
        idx = np.arange(len(t_src))
    n = int(np.floor(t_src[-1] * fps + 0.5)) + 1
    grid = _to_grid(t_src, np.stack(grid_rows)[idx], fps, n)
    motion_env = motion_envelope(grid)

    rate = float(np.mean(found)) if found else 0.0
    kind, keypoints, mouth, note = "motion", None, None, ""
    envelope = motion_env
    who = "person" if want_pose else "face"
    if need_rgb and rate < MIN_DETECTION:
        note = f"no {who} found in {round(100 * (1 - rate))}% of frames: using motion features"
    elif want_pose:
        raw = np.stack(pose_rows)[idx]
        ok = np.asarray(found)[idx]
        xy = clean_track(raw[:, :, :2], ok)
        kp = _to_grid(t_src, xy, fps, n).reshape(n, N_POSE, 2)
        envelope = pose_envelope(kp, fps)
        hip = (kp[:, L_HIP] + kp[:, R_HIP]) / 2
        keypoints = Signal((kp - hip[:, None]).reshape(n, -1), fps, 0.0)
        kind = "pose"
        note = f"pose found in {round(100 * rate)}% of frames"
    elif want_face:
        ok = np.asarray(found)[idx]
        lips = clean_track(np.stack(lip_rows)[idx], ok)
        mo = clean_track(np.asarray(mouth_rows, np.float64)[idx][:, None, :], ok)[:, 0]
        lips_g = _to_grid(t_src, lips, fps, n).reshape(n, N_LIPS, 2)
        mo_g = _to_grid(t_src, mo, fps, n)
        iod = np.maximum(mo_g[:, 1], 1e-6)
        rel = (lips_g - lips_g.mean(axis=1, keepdims=True)) / iod[:, None, None]
        keypoints = Signal(rel.reshape(n, -1), fps, 0.0)
        mouth = Signal(mo_g[:, :1], fps, 0.0)
        envelope = mouth_envelope(mo_g[:, 0], fps)
        kind = "lips"
        note = f"face found in {round(100 * rate)}% of frames"
    else:
        note = "motion features (frame differences)"
    if mode == "auto":
        note = f"auto mode chose '{chosen}'; {note}"

    out = VisualFeatures(
        mode=chosen,
        kind=kind,
        envelope=Signal(envelope, fps, 0.0),
        grid=Signal(grid, fps, 0.0),
        keypoints=keypoints,
        mouth=mouth,
        detection_rate=rate if need_rgb else 0.0,
        fps=fps,
        frame_times=t_src,
        note=note,
        extra=extra,
    )
    if cache:
        _cache.save_npz(key, _visual_to_npz(out))
    return out


# --------------------------------------------------------------------------------------
# audio


def extract_audio(path: str | os.PathLike, sr: int = 22050, *, cache: bool = True) -> AudioFeatures:
    """Audio features of a file (onset, speech envelope, log-mel at 100 Hz).

    The audio is decoded as mono at ``sr`` Hz and placed on the video's clock when the
    file has a video stream (t = 0 at the video's start; see :func:`avsync.media.load_audio`),
    else t = 0 is the first audio sample.

    Raises
    ------
    InputError
        Unreadable file or no audio stream.
    CannotMeasure
        The audio is digital silence.
    """
    from avsync import media

    p = str(path)
    if not Path(p).is_file():
        raise InputError(f"cannot read '{p}': no such file")
    key = _cache.file_key(p, what="audio", sr=int(sr), rate=100.0) if cache else ""
    if cache:
        d = _cache.load_npz(key)
        if d is not None:
            try:
                return AudioFeatures(
                    onset=Signal(d["onset"], 100.0, float(d["start"])),
                    speech=Signal(d["speech"], 100.0, float(d["start"])),
                    logmel=Signal(d["logmel"], 100.0, float(d["start"])),
                    duration=float(d["duration"]),
                    sr=int(d["sr"]),
                )
            except (KeyError, ValueError, TypeError):
                log.debug("ignoring malformed cache entry %s", key)
    y = media.load_audio(p, sr=sr)
    if y.size == 0 or not np.any(np.abs(y) > 1e-6):
        raise CannotMeasure(f"the audio of '{p}' is digital silence: nothing to align to")
    feats = audio_features(y, sr)
    if cache:
        _cache.save_npz(
            key,
            {
                "onset": feats.onset.values,
                "speech": feats.speech.values,
                "logmel": feats.logmel.values,
                "duration": np.array(feats.duration),
                "sr": np.array(feats.sr),
                "start": np.array(0.0),
            },
        )
    return feats
