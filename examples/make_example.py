#!/usr/bin/env python
"""Rebuild the bundled examples.

- bbb_distorted.mp4 from bbb_excerpt.mp4 with avsync's distortion function, and its plan
  (bbb_distorted.plan.json: distorted frame m shows original frame plan[m]).
- bbb_camera.mp4 from bbb_excerpt.mp4: a camera whose clock ran off (speed changes 0.6x-1.6x,
  a freeze, skips, a shift: avsync.warps.random_warp) and that recorded its own sound through a
  camera microphone (the excerpt's sound played along the same warp, band 250-3800 Hz, a 23 ms
  echo, noise at 10 dB SNR: avsync.evaluation.real.camera_mic); plan in bbb_camera.plan.json.
- flashes.mp4 (a synthetic synced clip: a box flashes at random times, each with a beep;
  every frame carries its index as a barcode) and flashes_distorted.mp4 (its picture warped:
  0.75x for 3 s, a 5-frame freeze, 1.35x for 3 s, shifted by 6 frames; no sound).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from avsync.media import probe
from avsync.render import render
from avsync.synthetic import write_clip
from avsync.warps import random_warp

HERE = Path(__file__).resolve().parent


def main() -> None:
    src = HERE / "bbb_excerpt.mp4"
    info = probe(src)
    plan = random_warp(info.n_frames, info.fps, np.random.default_rng(2024), max_displacement=0.5, max_shift=0.3)
    out = HERE / "bbb_distorted.mp4"
    render(src, plan, info.fps, out, audio_path=None, crf=26, preset="medium", overwrite=True)
    (HERE / "bbb_distorted.plan.json").write_text(json.dumps({"fps": info.fps, "plan": [int(x) for x in plan]}) + "\n")
    print(f"wrote {out} ({len(plan)} frames)")
    camera(src, info)

    fps, seconds, n = 25, 10.0, 250
    write_clip(HERE / "flashes.mp4", seconds=seconds, fps=fps, seed=3)
    speeds = [1.0] * 25 + [0.75] * 75 + [0.0] * 5 + [1.35] * 75 + [1.0] * 200
    src = -6.0 + np.concatenate([[0.0], np.cumsum(speeds)[:-1]])
    fplan = np.clip(np.floor(src).astype(int), 0, n - 1)
    fplan = fplan[: int(np.searchsorted(fplan, n - 1)) + 1]
    write_clip(HERE / "flashes_distorted.mp4", seconds=seconds, fps=fps, seed=3, plan=fplan)
    (HERE / "flashes_distorted.plan.json").write_text(json.dumps({"fps": fps, "plan": [int(x) for x in fplan]}) + "\n")
    print(f"wrote {HERE / 'flashes.mp4'} and {HERE / 'flashes_distorted.mp4'} ({len(fplan)} frames)")


def camera(src: Path, info) -> None:  # type: ignore[no-untyped-def]
    """bbb_camera.mp4: the excerpt re-timed, with its own sound warped along and heard through a camera mic."""
    import tempfile

    from scipy.io import wavfile

    from avsync.evaluation.real import camera_mic
    from avsync.media import load_audio
    from avsync.soundtrack import warp_audio

    plan = random_warp(info.n_frames, info.fps, np.random.default_rng(7), max_displacement=0.6, max_shift=0.4)
    sr = 44100
    y = load_audio(src, sr=sr)
    mic = camera_mic(warp_audio(y, sr, plan, info.fps), sr, np.random.default_rng(8))
    out = HERE / "bbb_camera.mp4"
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "mic.wav"
        wavfile.write(wav, sr, mic)
        render(src, plan, info.fps, out, audio_path=wav, crf=28, preset="medium", overwrite=True)
    (HERE / "bbb_camera.plan.json").write_text(json.dumps({"fps": info.fps, "plan": [int(x) for x in plan]}) + "\n")
    print(f"wrote {out} ({len(plan)} frames, camera-microphone sound)")


if __name__ == "__main__":
    main()
