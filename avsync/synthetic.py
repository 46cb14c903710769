"""Synthetic synced clips whose frames carry their own index: for the demo and the tests.

A white box flashes at random (non-periodic) event times, each with a beep in the audio at
the same instant; a 12-bit barcode strip at the bottom encodes the frame index, so a decoded
output frame tells which source frame it shows.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

BITS = 12
W, H = 160, 120


def event_times(seconds: float, rng: np.random.Generator, min_gap: float = 0.25, max_gap: float = 0.7) -> np.ndarray:
    t, out = 0.3, []
    while t < seconds - 0.3:
        out.append(t)
        t += rng.uniform(min_gap, max_gap)
    return np.array(out)


def frame_image(index: int, flash: float) -> np.ndarray:
    img = np.full((H, W, 3), 40, np.uint8)
    if flash > 0:
        img[20:90, 40:120] = int(40 + 215 * flash)
    bw = W // BITS
    for b in range(BITS):
        if (index >> b) & 1:
            img[H - 16:, b * bw:(b + 1) * bw] = 255
        else:
            img[H - 16:, b * bw:(b + 1) * bw] = 0
    return img


def read_index(img: np.ndarray) -> int:
    bw = W // BITS
    strip = img[H - 12:H - 4].astype(float).mean(axis=(0, 2)) if img.ndim == 3 else img[H - 12:H - 4].mean(axis=0)
    v = 0
    for b in range(BITS):
        if strip[b * bw + 2:(b + 1) * bw - 2].mean() > 128:
            v |= 1 << b
    return v


def write_clip(path: Path, seconds: float = 8.0, fps: int = 25, seed: int = 0, sr: int = 44100,
               plan: np.ndarray | None = None, with_audio: bool = True) -> np.ndarray:
    """Write a synced clip (or, with ``plan``, its picture distorted: frame m shows original
    frame plan[m], no audio). Returns the event times (s) of the original."""
    rng = np.random.default_rng(seed)
    ev = event_times(seconds, rng)
    n = int(round(seconds * fps))
    flash = flash_track(ev, n, fps)
    order = np.arange(n) if plan is None else np.asarray(plan)
    c = av.open(str(path), "w")
    v = c.add_stream("libx264", rate=Fraction(fps))
    v.width, v.height, v.pix_fmt = W, H, "yuv420p"
    v.options = {"crf": "12", "preset": "ultrafast", "g": "25"}
    a = None
    if with_audio and plan is None:
        a = c.add_stream("aac", rate=sr)
        a.layout = "mono"
    for m, i in enumerate(order):
        f = av.VideoFrame.from_ndarray(frame_image(int(i), flash[int(i)]), format="rgb24")
        f.pts = m
        f.time_base = Fraction(1, fps)
        _mux(c, v.encode(f))
    _mux(c, v.encode(None))
    if a is not None:
        y = beep_track(ev, seconds, sr, rng)
        for s in range(0, len(y), 1024):
            fr = av.AudioFrame.from_ndarray(y[None, s:s + 1024], format="flt", layout="mono")
            fr.sample_rate = sr
            fr.pts = s
            _mux(c, a.encode(fr))
        _mux(c, a.encode(None))
    c.close()
    return ev


def _mux(c, packets) -> None:  # type: ignore[no-untyped-def]
    for p in packets:
        c.mux(p)


def flash_track(ev: np.ndarray, n: int, fps: float) -> np.ndarray:
    """Brightness of the box per frame (n,): 1 on the frame of each event, 0.5 on the next."""
    flash = np.zeros(n)
    for t in ev:
        i = int(round(t * fps))
        if i < n:
            flash[i] = 1.0
        if i + 1 < n:
            flash[i + 1] = 0.5
    return flash


def beep_track(ev: np.ndarray, seconds: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Mono float32 audio (seconds * sr,): a 60 ms 1 kHz burst at each event, over faint noise."""
    y = np.zeros(int(seconds * sr), np.float32)
    tt = np.arange(int(0.06 * sr)) / sr
    burst = (0.6 * np.sin(2 * np.pi * 1000 * tt) * np.exp(-tt / 0.02)).astype(np.float32)
    for t in ev:
        s = int(round(t * sr))
        y[s:s + len(burst)] += burst[: len(y) - s]
    y += 0.003 * rng.standard_normal(len(y)).astype(np.float32)
    return y


def decode_indices(path: Path) -> np.ndarray:
    c = av.open(str(path))
    out = [read_index(f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]
    c.close()
    return np.array(out)
