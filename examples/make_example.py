#!/usr/bin/env python
"""Rebuild the bundled examples.

- bbb_distorted.mp4 from bbb_excerpt.mp4 with avsync's distortion function, and its plan
  (bbb_distorted.plan.json: distorted frame m shows original frame plan[m]).
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

    fps, seconds, n = 25, 10.0, 250
    write_clip(HERE / "flashes.mp4", seconds=seconds, fps=fps, seed=3)
    speeds = [1.0] * 25 + [0.75] * 75 + [0.0] * 5 + [1.35] * 75 + [1.0] * 200
    src = -6.0 + np.concatenate([[0.0], np.cumsum(speeds)[:-1]])
    fplan = np.clip(np.floor(src).astype(int), 0, n - 1)
    fplan = fplan[: int(np.searchsorted(fplan, n - 1)) + 1]
    write_clip(HERE / "flashes_distorted.mp4", seconds=seconds, fps=fps, seed=3, plan=fplan)
    (HERE / "flashes_distorted.plan.json").write_text(json.dumps({"fps": fps, "plan": [int(x) for x in fplan]}) + "\n")
    print(f"wrote {HERE / 'flashes.mp4'} and {HERE / 'flashes_distorted.mp4'} ({len(fplan)} frames)")


if __name__ == "__main__":
    main()
