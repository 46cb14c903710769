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
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from avsync import cache as _cache
from avsync.errors import CannotMeasure, InputError
from avsync.features import MODES, AudioFeatures, Face, VisualFeatures
from avsync.features.audio import audio_features
from avsync.features.landmarks import (
    DETECT_SIDE,
    L_HIP,
    N_LIPS,
    N_POSE,
    R_HIP,
    FaceCounter,
    FaceTracks,
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
MAX_FACES = 3  # most faces tracked in a picture with several
SEVERAL_FACES = 2  # probe frames showing two faces or more before several are tracked (each costs time)
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


def probe_mode(path: str | os.PathLike) -> str:
    """What ``mode='auto'`` picks for ``path``: 'speech', 'dance' or 'general'."""
    from avsync.media import probe

    return _probe_mode(str(path), probe(path).duration)[0]


def _probe_mode(path: str, duration: float) -> tuple[str, dict]:
    """Look at ~N_PROBE frames spread over the clip and pick 'speech', 'dance' or 'general'."""
    stats = _probe(path, duration)
    return _decide_mode(stats), stats


def _probe(path: str, duration: float, full: bool = True) -> dict:
    """On ~N_PROBE frames spread over the clip: how many show several faces, and (``full``) how
    many show a face to the face mesh, and a body to pose."""
    from avsync.media import open_container

    times = (np.arange(N_PROBE) + 0.5) / N_PROBE * max(duration, 1e-3)
    faces, several, poses, sizes, seen = 0, 0, 0, [], 0
    with open_container(path) as c, FaceCounter() as counter, \
            LandmarkDetector(pose=full, face=full, static=True) as det:
        for frame in _probe_frames(c, times):
            w, h = detect_size(frame.width, frame.height)
            rgb = frame.to_ndarray(width=w, height=h, format="rgb24")
            seen += 1
            several += counter.count(rgb) >= 2
            if not full:
                continue
            f = det.face(rgb)
            if f is not None:
                faces += 1
                sizes.append(f.face_size)
            if det.pose(rgb) is not None:
                poses += 1
    if not full:
        return {"probe_frames": seen, "probe_several_faces": several}
    return {
        "probe_frames": seen,
        "probe_faces": faces,
        "probe_several_faces": several,
        "probe_poses": poses,
        "probe_face_size": float(np.median(sizes)) if sizes else 0.0,
    }


def _probe_frames(c, times: np.ndarray):  # type: ignore[no-untyped-def]
    """One decoded frame near each of ``times`` (s from the stream's start), each frame once.

    Any frame near t will do. Seek only when t is far ahead (else decode on), and never decode
    more than PROBE_MAX_DECODE frames for one probe: decoding forward from a key frame to t
    costs up to a whole GOP of full-size frames."""
    import av

    vs = c.streams.video[0]
    vs.thread_type = "AUTO"
    tb = float(vs.time_base) if vs.time_base else 1.0
    start = float(vs.start_time * tb) if vs.start_time is not None else 0.0
    frames = None
    pos = -np.inf  # time of the last decoded frame, relative to start
    taken: set[int] = set()
    for t in times:
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
        yield frame


def _decide_mode(stats: dict) -> str:
    """'speech' when a large face is in most probe frames, 'dance' when a body is, else 'general'."""
    seen, faces, poses = stats["probe_frames"], stats["probe_faces"], stats["probe_poses"]
    if seen == 0:
        return "general"
    if faces >= 0.5 * seen and stats["probe_face_size"] >= SPEECH_FACE_SIZE:
        return "speech"
    if poses >= PROBE_BODY * seen:
        return "dance"
    if faces >= PROBE_BODY * seen:
        return "speech"
    return "general"


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
    if v.faces:
        d["face_envelope"] = np.stack([f.envelope.values for f in v.faces])
        d["face_keypoints"] = np.stack([f.keypoints.values for f in v.faces])
        d["face_mouth"] = np.stack([f.mouth.values for f in v.faces])
        d["face_meta"] = np.array(json.dumps(
            [{"rate": f.detection_rate, "position": list(f.position), "size": f.size} for f in v.faces]))
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
        faces=_faces_from_npz(d, fps),
    )


def _faces_from_npz(d: dict[str, np.ndarray], fps: float) -> tuple[Face, ...]:
    if "face_meta" not in d:
        return ()
    meta = json.loads(str(d["face_meta"]))
    return tuple(
        Face(Signal(d["face_envelope"][i], fps, 0.0), Signal(d["face_keypoints"][i], fps, 0.0),
             Signal(d["face_mouth"][i], fps, 0.0), float(m["rate"]),
             (float(m["position"][0]), float(m["position"][1])), float(m["size"]))
        for i, m in enumerate(meta)
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
        than 30% of frames, ``kind`` is 'motion' and ``note`` says so. With several faces in
        the picture ('speech'; the probe's full-range detector sees two or more in at least
        :data:`SEVERAL_FACES` probe frames), each face (up to :data:`MAX_FACES`) is tracked on its
        own and ``faces`` holds every one found in 30% of frames or more.

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
        _cache.file_key(p, what="visual", mode=mode, grid=GRID, motion_width=MOTION_WIDTH, detect_side=DETECT_SIDE,
                        max_faces=MAX_FACES)
        if cache
        else ""
    )
    hit = _cached_visual(key) if cache else None
    if hit is not None:
        return hit
    chosen, extra = _probe_mode(p, info.duration) if mode == "auto" else (mode, {})
    if chosen == "speech" and mode != "auto":
        extra = _probe(p, info.duration, full=False)
    several = chosen == "speech" and extra.get("probe_several_faces", 0) >= SEVERAL_FACES
    fps = _nominal_fps(info)
    tracks = _decode_tracks(p, chosen, info.n_frames or None, fps, progress, MAX_FACES if several else 1)
    t_src, idx = _monotonic_clock(np.asarray(tracks.times, np.float64))
    n = int(np.floor(t_src[-1] * fps + 0.5)) + 1
    grid = _to_grid(t_src, np.stack(tracks.grid)[idx], fps, n)
    person = _person_features(chosen, tracks, idx, t_src, fps, n)
    envelope = person.envelope if person.envelope is not None else motion_envelope(grid)
    out = VisualFeatures(
        mode=chosen,
        kind=person.kind,
        envelope=Signal(envelope, fps, 0.0),
        grid=Signal(grid, fps, 0.0),
        keypoints=person.keypoints,
        mouth=person.mouth,
        detection_rate=tracks.detection_rate if chosen in ("dance", "speech") else 0.0,
        fps=fps,
        frame_times=t_src,
        note=f"auto mode chose '{chosen}'; {person.note}" if mode == "auto" else person.note,
        extra={**extra, "main_face": person.main_face} if person.faces else extra,
        faces=person.faces,
    )
    if cache:
        _cache.save_npz(key, _visual_to_npz(out))
    return out


def _cached_visual(key: str) -> VisualFeatures | None:
    hit = _cache.load_npz(key)
    if hit is not None:
        try:
            return _visual_from_npz(hit)
        except (KeyError, ValueError, TypeError):
            log.debug("ignoring malformed cache entry %s", key)
    return None


@dataclass
class _Tracks:
    """What one decode pass gathered, one entry per decoded frame (in decode order)."""

    times: list[float] = field(default_factory=list)  # presentation time, s from the first frame
    grid: list[np.ndarray] = field(default_factory=list)  # (GRID*GRID,) motion energy
    found: list[bool] = field(default_factory=list)  # the detector found the person / face
    pose: list[np.ndarray] = field(default_factory=list)  # (N_POSE, 3) x, y, visibility or NaN
    lips: list[np.ndarray] = field(default_factory=list)  # (N_LIPS, 2) or NaN
    mouth: list[tuple[float, float]] = field(default_factory=list)  # (opening, face size) or NaN
    # several faces tracked: per frame, (track index, lips (N_LIPS, 2), opening, face size) of each face
    multi: list[list[tuple[int, np.ndarray, float, float]]] | None = None
    # ... and after the pass, per track: lips (N, N_LIPS, 2), mouth (N, 2), found (N,)
    tracks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)

    @property
    def detection_rate(self) -> float:
        return float(np.mean(self.found)) if self.found else 0.0


def _decode_tracks(p: str, chosen: str, n_est: int | None, fps: float, progress: Progress | None,
                   max_faces: int = 1) -> _Tracks:
    """Decode the video once: the motion grid of every frame, and pose ('dance') or face mesh
    ('speech', up to ``max_faces`` faces tracked) on the same frames."""
    from avsync import media

    want_pose, want_face = chosen == "dance", chosen == "speech"
    need_rgb = want_pose or want_face
    tr = _Tracks(multi=[] if want_face and max_faces > 1 else None)
    tracker = FaceTracks(max_faces, fps) if tr.multi is not None else None
    mgrid = MotionGrid(GRID)
    det = LandmarkDetector(pose=want_pose, face=want_face and tracker is None, static=False) if need_rgb else None
    reader = media.iter_frames(p, max_side=DETECT_SIDE if need_rgb else MOTION_WIDTH, gray=not need_rgb, upright=True)
    try:
        if progress is not None:
            progress("features", 0, n_est)
        for i, t, img in reader:
            gap = (t - tr.times[-1]) * fps if tr.times and t > tr.times[-1] else 1.0
            tr.times.append(t)
            tr.grid.append(mgrid.update(_gray_small(img), gap))
            if det is not None:
                _detect(det, img, want_pose, tr, tracker)
            if progress is not None and (i + 1) % 10 == 0:
                progress("features", i + 1, n_est)
    finally:
        reader.close()
        if det is not None:
            det.close()
        if tracker is not None:
            tracker.close()
    if not tr.times:
        raise InputError(f"cannot read '{p}': no video frame could be decoded")
    if tr.multi is not None:
        _face_tracks(tr)
    if progress is not None:
        progress("features", len(tr.times), len(tr.times))
    return tr


_NAN_POSE = np.full((N_POSE, 3), np.nan, np.float32)
_NAN_LIPS = np.full((N_LIPS, 2), np.nan, np.float32)


def _detect(det: LandmarkDetector, img: np.ndarray, pose: bool, tr: _Tracks,
            tracker: FaceTracks | None = None) -> None:
    """Run the pose (or face) detector on one frame and append what it found to ``tr``."""
    if pose:
        r = det.pose(img)
        tr.found.append(r is not None)
        tr.pose.append(_NAN_POSE if r is None else r)
    elif tracker is not None and tr.multi is not None:
        tr.multi.append([(k, f.lips, f.opening, f.face_size) for k, f in tracker.process(img)])
    else:
        f = det.face(img)
        tr.found.append(f is not None)
        tr.lips.append(_NAN_LIPS if f is None else f.lips)
        tr.mouth.append((np.nan, np.nan) if f is None else (f.opening, f.face_size))


def _monotonic_clock(t_src: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frame times made strictly increasing (decode-order glitches sorted out, repeats dropped),
    and the index of each kept frame into the decode order."""
    if np.any(np.diff(t_src) <= 0):
        order = np.argsort(t_src, kind="stable")
        t_src = t_src[order]
        keep = np.concatenate([[True], np.diff(t_src) > 0])
        return t_src[keep], order[keep]
    return t_src, np.arange(len(t_src))


class _Person(NamedTuple):
    kind: str  # 'pose', 'lips' or 'motion'
    envelope: np.ndarray | None  # (n,) activity; None = the motion envelope of the grid
    keypoints: Signal | None
    mouth: Signal | None
    note: str
    faces: tuple[Face, ...] = ()  # several faces, left to right
    main_face: int = 0  # which of them fills envelope / keypoints / mouth


def _face_tracks(tr: _Tracks) -> None:
    """Several faces tracked: per-track arrays, and ``found`` / ``lips`` / ``mouth`` filled from the
    track found most often (so the one-face path reads it as before). Sets ``tr.tracks``."""
    multi = tr.multi or []
    n = len(multi)
    k_max = 1 + max((k for fr in multi for k, *_ in fr), default=-1)
    lips = np.full((k_max, n, N_LIPS, 2), np.nan, np.float32)
    mouth = np.full((k_max, n, 2), np.nan, np.float64)
    for t, fr in enumerate(multi):
        for k, lp, opening, size in fr:
            lips[k, t], mouth[k, t] = lp, (opening, size)
    found = np.isfinite(mouth[:, :, 0])
    tr.tracks = [(lips[k], mouth[k], found[k]) for k in range(k_max)]
    main = int(np.argmax(found.sum(axis=1))) if k_max else -1
    tr.found = list(found[main]) if k_max else [False] * n
    tr.lips = list(lips[main]) if k_max else [_NAN_LIPS] * n
    tr.mouth = [tuple(m) for m in mouth[main]] if k_max else [(np.nan, np.nan)] * n


def _person_features(chosen: str, tr: _Tracks, idx: np.ndarray, t_src: np.ndarray, fps: float, n: int) -> _Person:
    """Pose or lip features on the grid when the detector found the person often enough."""
    rate = tr.detection_rate
    if chosen not in ("dance", "speech"):
        return _Person("motion", None, None, None, "motion features (frame differences)")
    who = "person" if chosen == "dance" else "face"
    if rate < MIN_DETECTION:
        note = f"no {who} found in {round(100 * (1 - rate))}% of frames: using motion features"
        return _Person("motion", None, None, None, note)
    ok = np.asarray(tr.found)[idx]
    if chosen == "dance":
        envelope, keypoints = pose_features(np.stack(tr.pose)[idx], ok, t_src, fps, n)
        return _Person("pose", envelope, keypoints, None, f"pose found in {round(100 * rate)}% of frames")
    faces = _several_faces(tr, idx, t_src, fps, n)
    if len(faces) >= 2:
        main = max(range(len(faces)), key=lambda i: faces[i].detection_rate)
        f = faces[main]
        rates = [f"{round(100 * x.detection_rate)}%" for x in faces]
        return _Person("lips", f.envelope.values[:, 0], f.keypoints, f.mouth,
                       f"{len(faces)} faces found in {', '.join(rates[:-1])} and {rates[-1]} of frames", faces, main)
    envelope, keypoints, mouth = lip_features(np.stack(tr.lips)[idx], np.asarray(tr.mouth, np.float64)[idx],
                                              ok, t_src, fps, n)
    return _Person("lips", envelope, keypoints, mouth, f"face found in {round(100 * rate)}% of frames")


def _several_faces(tr: _Tracks, idx: np.ndarray, t_src: np.ndarray, fps: float, n: int) -> tuple[Face, ...]:
    """Lip features of every tracked face found in at least MIN_DETECTION of the frames, left to right."""
    out = []
    for lips, mouth, found in tr.tracks:
        ok = found[idx]
        if ok.mean() < MIN_DETECTION:
            continue
        env, kp, mo = lip_features(lips[idx], mouth[idx], ok, t_src, fps, n)
        centre = np.nanmedian(lips[found].mean(axis=1), axis=0)
        out.append(Face(Signal(env, fps, 0.0), kp, mo, float(ok.mean()), (float(centre[0]), float(centre[1])),
                        float(np.median(mouth[found, 1]))))
    return tuple(sorted(out, key=lambda f: f.position[0]))


def pose_features(pose: np.ndarray, ok: np.ndarray, t_src: np.ndarray, fps: float,
                  n: int) -> tuple[np.ndarray, Signal]:
    """Pose envelope and keypoints on the uniform grid from per-frame detections.

    Parameters
    ----------
    pose : ndarray, (N, N_POSE, 3)
        x, y, visibility per frame (NaN where no person was found).
    ok : ndarray of bool, (N,)
        Frames with a detection.
    t_src : ndarray, (N,)
        Frame times, s, strictly increasing.
    fps : float
        Rate of the grid ``k / fps``, k = 0 .. n-1.
    n : int

    Returns
    -------
    envelope : ndarray, (n,)
        Joint speed / acceleration novelty (see :func:`avsync.features.motion.pose_envelope`).
    keypoints : Signal, (n, N_POSE*2)
        Cleaned x, y minus the mid-hip point.
    """
    xy = clean_track(pose[:, :, :2], ok)
    kp = _to_grid(t_src, xy, fps, n).reshape(n, N_POSE, 2)
    hip = (kp[:, L_HIP] + kp[:, R_HIP]) / 2
    return pose_envelope(kp, fps), Signal((kp - hip[:, None]).reshape(n, -1), fps, 0.0)


def lip_features(lips: np.ndarray, mouth: np.ndarray, ok: np.ndarray, t_src: np.ndarray, fps: float,
                 n: int) -> tuple[np.ndarray, Signal, Signal]:
    """Mouth envelope, lip keypoints and mouth opening on the uniform grid from per-frame detections.

    Parameters
    ----------
    lips : ndarray, (N, N_LIPS, 2)
        Lip points per frame (NaN where no face was found).
    mouth : ndarray, (N, 2)
        Mouth opening and face size (inter-ocular distance) per frame.
    ok, t_src, fps, n
        As in :func:`pose_features`.

    Returns
    -------
    envelope : ndarray, (n,)
        Mouth-opening activity (see :func:`avsync.features.motion.mouth_envelope`).
    keypoints : Signal, (n, N_LIPS*2)
        Lip points minus their centroid, divided by the inter-ocular distance.
    mouth : Signal, (n, 1)
        Mouth opening.
    """
    lips_c = clean_track(lips, ok)
    mo = clean_track(mouth[:, None, :], ok)[:, 0]
    lips_g = _to_grid(t_src, lips_c, fps, n).reshape(n, N_LIPS, 2)
    mo_g = _to_grid(t_src, mo, fps, n)
    iod = np.maximum(mo_g[:, 1], 1e-6)
    rel = (lips_g - lips_g.mean(axis=1, keepdims=True)) / iod[:, None, None]
    return mouth_envelope(mo_g[:, 0], fps), Signal(rel.reshape(n, -1), fps, 0.0), Signal(mo_g[:, :1], fps, 0.0)


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
