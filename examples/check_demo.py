#!/usr/bin/env python
"""Score the demo outputs against the known distortion plans.

For every output frame k we know which original frame it should show (frame k); the warp map
says which distorted frame it shows, and the plan which original frame that is.
Usage: python examples/check_demo.py MAP.json PLAN.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def main(map_path: str, plan_path: str) -> None:
    m = json.loads(Path(map_path).read_text())
    p = json.loads(Path(plan_path).read_text())
    plan, fps = np.asarray(p["plan"]), float(p["fps"])
    shown = np.array([f["src_frame"] for f in m["frames"]])
    n = min(len(shown), int(plan.max()) + 1)
    k = np.arange(n)
    err = plan[np.minimum(shown[:n], len(plan) - 1)] - k
    base = plan[np.minimum(k, len(plan) - 1)] - k
    for name, e in (("aligned", err), ("left as it was", base)):
        itu = np.mean((e / fps >= -0.045) & (e / fps <= 0.125))
        print(f"  {name:15s} frames within ±1 of the original: {np.mean(np.abs(e) <= 1):6.1%}   "
              f"inside the ITU window: {itu:6.1%}   mean error {np.abs(e).mean():5.2f} frames")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
