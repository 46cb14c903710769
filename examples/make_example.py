#!/usr/bin/env python
"""Rebuild examples/bbb_distorted.mp4 from examples/bbb_excerpt.mp4 with avsync's distortion function.

Writes the distortion plan beside it (bbb_distorted.plan.json: distorted frame m shows
original frame plan[m]) so the demo's result can be checked against the truth.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from avsync.media import probe
from avsync.render import render
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


if __name__ == "__main__":
    main()
