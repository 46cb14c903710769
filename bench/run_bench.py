#!/usr/bin/env python
"""`make bench`: the accuracy protocols on the project's splits and the speed/memory benchmark.

1. Fetches the development media when missing (../shared/media/fetch.sh).
2. Cuts Big Buck Bunny into 11 s clips: dev = 0–396 s (tuning/training), held-out = 401–489 s
   (reporting; the end credits from ~490 s are left out: no picture-sound link there).
3. Runs `avsync bench` protocols for `classical` and every learned backend whose checkpoint is
   available, on both splits, and writes bench/RESULTS.md (what follows the KEEP line of the
   old file, the sections written by hand with their commands, is carried over unchanged).
4. Speed: a 60 s 720p clip aligned end to end vs. a plain PyAV decode+encode of the same file;
   peak memory (RSS) for 60 s and ~600 s inputs.
5. Batch throughput (bench/batch_throughput.py): `avsync batch` over 16 copies of a small clip,
   local pool at 1 and 2 jobs and Ray, as items per minute and as a ratio to the single run.

Usage: python bench/run_bench.py [--quick] [--backends a,b] [--no-speed] [--no-batch] [--max-clips N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def media_dir() -> Path:
    d = Path(os.environ.get("AVSYNC_MEDIA", Path.home() / ".cache" / "avsync-media"))
    if not (d / "bbb.mp4").exists():
        fetch = ROOT.parent / "shared" / "media" / "fetch.sh"
        if not fetch.exists():
            sys.exit(f"bench: {d}/bbb.mp4 missing and {fetch} not found")
        subprocess.run(["bash", str(fetch), str(d)], check=True)
    return d


def available_backends() -> list[str]:
    """classical plus every learned backend whose default checkpoint loads (offline)."""
    from avsync.backends import get_backend, list_backends
    from avsync.errors import AvsyncError

    names = []
    for b in list_backends():
        try:
            get_backend(b.name, device="cpu")
        except AvsyncError as e:
            print(f"bench: skipping {b.name}: {e}", flush=True)
            continue
        names.append(b.name)
    return names


def measure(cmd: list[str]) -> dict[str, float]:
    """Wall time and peak RSS (MiB) of one command, run in its own wrapper process."""
    code = (
        "import resource,subprocess,sys,time,json;t=time.perf_counter();"
        "r=subprocess.run(sys.argv[1:],stdout=subprocess.DEVNULL);"
        "print(json.dumps({'rc':r.returncode,'wall':time.perf_counter()-t,"
        "'rss_mib':resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss/1024}))"
    )
    out = subprocess.run([sys.executable, "-c", code, *cmd], capture_output=True, text=True, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    if res["rc"] != 0:
        sys.exit(f"bench: {' '.join(cmd[:4])} ... failed with exit code {res['rc']}")
    return res


def speed(media: Path, work: Path, full: bool) -> list[str]:
    import numpy as np

    from avsync.evaluation.data import cut_clips
    from avsync.media import probe
    from avsync.render import render
    from avsync.warps import random_warp

    lines = []
    clip = cut_clips(media / "bbb.mp4", work / "speed", start=401.0, end=461.0, clip_seconds=60.0,
                     max_side=1280, prefix="bbb720")[0]
    info = probe(clip)
    dist = work / "speed" / "bbb720_distorted.mp4"
    if not dist.exists():
        plan = random_warp(info.n_frames, info.fps, np.random.default_rng(0))
        render(clip, plan, info.fps, dist, audio_path=None, crf=18, preset="veryfast", overwrite=True)
    avsync = [sys.executable, "-m", "avsync"]
    env_cache = work / "speed" / "cache"
    os.environ["AVSYNC_CACHE"] = str(env_cache)  # fresh feature cache: measure the real work
    import shutil

    shutil.rmtree(env_cache, ignore_errors=True)
    out = work / "speed" / "aligned.mp4"
    a = measure([*avsync, "align", str(dist), "--audio", str(clip), "-o", str(out), "--overwrite", "--no-cache"])
    plain = measure([sys.executable, str(ROOT / "bench" / "plain_transcode.py"), str(dist),
                     str(work / "speed" / "plain.mp4")])
    dur = info.duration
    lines.append(f"| 60 s 720p, align end to end (classical) | {a['wall']:.1f} s | {a['wall'] / dur:.2f}x real time "
                 f"| {a['rss_mib']:.0f} MiB |")
    lines.append(f"| 60 s 720p, plain PyAV decode+encode (veryfast, crf 18) | {plain['wall']:.1f} s | "
                 f"{plain['wall'] / dur:.2f}x real time | {plain['rss_mib']:.0f} MiB |")
    lines.append(f"| ratio align / plain transcode | {a['wall'] / plain['wall']:.2f} | | |")
    if full:
        long = media / "bbb.mp4"
        linfo = probe(long)
        b = measure([*avsync, "align", str(long), "--audio", str(long), "-o", str(work / "speed" / "long.mp4"),
                     "--overwrite", "--no-cache"])
        lines.append(f"| {linfo.duration:.0f} s 720p, align end to end | {b['wall']:.1f} s | "
                     f"{b['wall'] / linfo.duration:.2f}x real time | {b['rss_mib']:.0f} MiB |")
    return lines


def real_footage(backends: list[str], part: str) -> list[str]:
    """The real-footage protocol (avsync.evaluation.real) on the shared real clips, when present."""
    from avsync.evaluation import real

    if not (real.DEFAULT_MEDIA / "MANIFEST.tsv").is_file():
        print(f"bench: no real footage at {real.DEFAULT_MEDIA}: real-footage section skipped", flush=True)
        return []
    estimators = {b: real.BackendOffset(b) for b in backends}
    aligners: dict[str, object] = {"avsync": None}
    import peer_synctoolbox

    if peer_synctoolbox.peer_python() is not None:
        aligners["synctoolbox"] = f"{Path(peer_synctoolbox.__file__).resolve()}:align"
    else:
        print("bench: no peer environment (make peer-venv): the synctoolbox row is skipped", flush=True)
    res = real.run_real(real.DEFAULT_MEDIA, part=part, estimators=estimators, aligners=aligners, jobs=2,  # type: ignore[arg-type]
                        log=lambda line: print(line, flush=True))
    md = res.markdown()
    print(f"\n## real footage ({part})\n{md}", flush=True)
    return ["## Real footage", "",
            f"Protocol: avsync.evaluation.real (issue 13) on the {res.n_clips} clips of the **{part}** part of "
            f"../shared/media/real (split by source or speaker; tuning and training only on the fit part). "
            "detect-offset: picture window [m, m+D], sound window [m+off, m+off+D] (positive = audio leads); clips "
            ">= 9 s: 5 offsets of the 21-class grid (-2..+2 s) and 3 uniform in ±1 s; 4-9 s: 4 uniform in ±0.6 s; "
            "shorter: ±0.4 s; search range = the offset range; plus every untouched original (truth 0). align: "
            "each clip's picture warped (0.6-1.6x, freezes, skips, <= 1 s) and aligned to its sound through the "
            "picture (row picture), and with its own sound warped along and heard by a camera microphone "
            "(band 250-3800 Hz, 23 ms echo, 10 dB SNR) aligned by that soundtrack (row camera); ITU and AFE "
            f"on moving frames. {res.seconds:.0f} s.", "", md, ""]


# bench/RESULTS.md: everything from this line on is written by hand (runs with their commands)
# and carried over by make bench, which rewrites only what comes before it.
KEEP = "<!-- make bench keeps everything from this line on: sections written by hand -->"


def kept_sections(path: Path) -> list[str]:
    """The lines of ``path`` from the KEEP line on (none when the file or the line is missing)."""
    if not path.is_file():
        return []
    text = path.read_text()
    i = text.find(KEEP)
    return [] if i < 0 else text[i:].rstrip("\n").split("\n")


def main() -> None:
    import warnings

    warnings.filterwarnings("ignore", message=r"SymbolDatabase\.GetPrototype\(\) is deprecated")
    os.environ.setdefault("GLOG_minloglevel", "2")
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="skip the 600 s memory run")
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--backends", default=None)
    ap.add_argument("--max-clips", type=int, default=None, help="clips per split (default: all held-out, 12 dev)")
    ap.add_argument("--no-real", action="store_true", help="skip the real-footage protocol")
    ap.add_argument("--real-part", default="check", choices=("check", "fit", "all"))
    ap.add_argument("--no-batch", action="store_true", help="skip the batch throughput runs")
    args = ap.parse_args()
    from avsync.cache import cache_dir
    from avsync.evaluation.data import bbb_splits
    from avsync.evaluation.protocol import BenchOptions, markdown_table, run_bench

    media = media_dir()
    work = cache_dir() / "bench-data"
    t0 = time.time()
    splits = bbb_splits(media, work)
    backends = args.backends.split(",") if args.backends else available_backends()
    print(f"bench: backends {', '.join(backends)}; dev {len(splits['dev'])} clips, "
          f"held-out {len(splits['heldout'])} clips", flush=True)
    md = ["# avsync bench results", "",
          "Produced by `make bench` (bench/run_bench.py) on the 2-core CPU machine. Data: Big Buck Bunny "
          "(CC-BY 3.0), cut into 11 s clips at 640 px; **dev** = 0–396 s (the only part used for tuning and "
          "training), **held-out** = 401–489 s (never used for tuning or training; the end credits after "
          "~490 s are left out).", ""]
    for split in ("heldout", "dev"):
        n_clips = args.max_clips if args.max_clips else (None if split == "heldout" else 12)
        res = run_bench(work / split, backends, BenchOptions(max_clips=n_clips))
        print(f"\n## {split}\n{markdown_table(res)}\nfeatures: {res.features_s_per_min:.1f} s/min", flush=True)
        md += [f"## {split} ({res.n_clips} clips)", "", f"Protocol: {res.protocol}", "", markdown_table(res), "",
               f"Feature extraction (shared by all backends): {res.features_s_per_min:.1f} s per minute of video, "
               "with the on-disk feature cache as it stood (near 0 when cached); the speed section below "
               "measures everything uncached. s/min align = backend + DP (incl. the evidence check) per "
               "minute; s/min offset = one offset estimate per minute.", ""]
        for r in res.rows:
            for e in r.errors[:3]:
                md.append(f"- {r.backend} error: {e}")
        md.append("")
    if not args.no_real:
        md += real_footage(backends, args.real_part)
    if not args.no_speed:
        md += ["## Speed and memory", "", "| run | wall | vs real time | peak RSS |", "|---|---|---|---|"]
        md += speed(media, work, full=not args.quick)
        md.append("")
    if not args.no_batch:
        from bench.batch_throughput import throughput

        md += ["## Batch throughput", "", *throughput()[1], ""]
    md.append(f"_Total bench time {time.time() - t0:.0f} s._")
    results = ROOT / "bench" / "RESULTS.md"
    kept = kept_sections(results)
    if kept:
        md += ["", *kept]
    results.write_text("\n".join(md) + "\n")
    print("\n".join(md))
    print("bench: wrote bench/RESULTS.md")


if __name__ == "__main__":
    main()
