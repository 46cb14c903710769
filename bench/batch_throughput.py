#!/usr/bin/env python
"""Batch throughput: `avsync batch` over N copies of a small clip, local pool vs Ray.

Each copy is one align item (a warped 160x120 flash/beep clip, picture only, aligned to its
clean sound; feature cache off, so every item does the full work). Every configuration runs the
whole CLI as a subprocess, so its wall time includes starting the workers (and, for Ray, the
local cluster on 127.0.0.1). Printed per configuration: wall time, items per minute, and the
ratio to the single-worker run (local pool, --jobs 1).

Usage: python bench/batch_throughput.py [--n 16] [--seconds 4] [--runs local:1,local:2,ray:2] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_RUNS = "local:1,local:2,ray:2"


def make_items(work: Path, n: int, seconds: float) -> Path:
    """``n`` copies of one warped clip and a manifest aligning each to the clean sound."""
    import numpy as np

    from avsync.synthetic import write_clip
    from avsync.warps import random_warp

    fps = 25
    clean = work / "clean.mp4"
    write_clip(clean, seconds=seconds, fps=fps, seed=3)
    plan = random_warp(int(round(seconds * fps)), fps, np.random.default_rng(3))
    warped = work / "warped.mp4"
    write_clip(warped, seconds=seconds, fps=fps, seed=3, plan=plan, with_audio=False)
    rows = []
    for i in range(n):
        copy = work / "in" / f"take{i:03d}.mp4"
        copy.parent.mkdir(exist_ok=True)
        shutil.copyfile(warped, copy)
        rows.append({"id": f"take{i:03d}", "command": "align", "video": str(copy), "audio": str(clean),
                     "output": f"out/take{i:03d}.mp4", "cache": False})
    m = work / "manifest.jsonl"
    m.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return m


def run_one(manifest: Path, executor: str, jobs: int) -> dict:
    """One `avsync batch` run (fresh outputs); wall time and counts."""
    work = manifest.parent
    shutil.rmtree(work / "out", ignore_errors=True)
    (work / "out").mkdir()
    results = work / f"results-{executor}-{jobs}.jsonl"
    results.unlink(missing_ok=True)
    env = dict(os.environ, AVSYNC_NO_PROGRESS="1", PYTHONPATH=str(ROOT))
    env.pop("RAY_ADDRESS", None)  # Ray: a local cluster started by the run, counted in its time
    cmd = [sys.executable, "-m", "avsync", "batch", str(manifest), "--jobs", str(jobs), "--executor", executor,
           "--results", str(results)]
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    recs = [json.loads(ln) for ln in results.read_text().splitlines() if ln.strip()] if results.exists() else []
    ok = sum(r["status"] == "ok" for r in recs)
    if p.returncode != 0 or ok != len(recs) or not recs:
        sys.exit(f"batch_throughput: {executor} --jobs {jobs} failed (exit {p.returncode}): "
                 f"{p.stderr.strip().splitlines()[-1:] or ''}")
    return {"executor": executor, "jobs": jobs, "items": ok, "wall_s": round(wall, 2),
            "items_per_min": round(ok / wall * 60, 1),
            "item_s_mean": round(sum(r["seconds"] for r in recs) / len(recs), 2), "load_before": round(load, 1)}


def markdown(rows: list[dict], n: int, seconds: float) -> list[str]:
    base = rows[0]["items_per_min"]
    lines = [f"`avsync batch` over {n} copies of a {seconds:g} s 160x120 clip (align, picture, no cache); wall "
             "time of the whole command, worker (and Ray cluster) start-up included; "
             f"ratio = items/min over the first row's; load = the machine's 1-min load average as the run "
             f"started ({os.cpu_count()} CPUs).", "",
             "| executor | jobs | wall | items/min | ratio | mean s per item (in the worker) | load |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['executor']} | {r['jobs']} | {r['wall_s']:.1f} s | {r['items_per_min']:.1f} | "
                     f"{r['items_per_min'] / base:.2f} | {r['item_s_mean']:.2f} | {r['load_before']:.1f} |")
    return lines


def throughput(n: int = 16, seconds: float = 4.0, runs: str = DEFAULT_RUNS) -> tuple[list[dict], list[str]]:
    """Run every configuration of ``runs`` (``executor:jobs``, comma-separated); rows and a table."""
    configs = [(r.split(":")[0], int(r.split(":")[1])) for r in runs.split(",")]
    if any(e == "ray" for e, _ in configs):
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            print("batch_throughput: ray is not installed (pip install 'avsync[ray]'): ray rows skipped", flush=True)
            configs = [c for c in configs if c[0] != "ray"]
    with tempfile.TemporaryDirectory(prefix="avsync-batch-bench-") as d:
        m = make_items(Path(d), n, seconds)
        rows = []
        for executor, jobs in configs:
            rows.append(run_one(m, executor, jobs))
            print(f"batch_throughput: {executor} --jobs {jobs}: {rows[-1]['items_per_min']:.1f} items/min "
                  f"({rows[-1]['wall_s']:.1f} s)", flush=True)
    return rows, markdown(rows, n, seconds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16, help="items (copies of the clip)")
    ap.add_argument("--seconds", type=float, default=4.0, help="clip length")
    ap.add_argument("--runs", default=DEFAULT_RUNS, help="executor:jobs, comma-separated; the first is the base")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args()
    rows, md = throughput(args.n, args.seconds, args.runs)
    print("\n".join(md))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
