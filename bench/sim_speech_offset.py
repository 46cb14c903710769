"""Feature-level simulation of the real-footage detect-offset protocol on speech clips.

For every speech clip of one part of the split (:func:`avsync.evaluation.real.split_table`),
the protocol's detect-offset cases (:func:`avsync.evaluation.real.plan_offset_cases`) are
cut from the clip's cached features instead of being encoded: the sound window
``[start + truth, start + truth + duration]`` with the picture window
``[start, start + duration]`` (originals: the whole clip). Each backend's offset is scored:
``±1 frame`` (|error| <= 1/fps, over all cases; the last column: over the shifted ones), ``grid``
Acc@1 (|error| < 0.1 s on the grid cases), originals within ±1 frame, and the AUROC of the
confidence for being within ±1 frame.

    python bench/sim_speech_offset.py classical syncnet [--part check] [--pipeline]
    python bench/sim_speech_offset.py --link-fit DIR   # symlinks to the fit-part speech clips

``NAME:CHECKPOINT`` picks a checkpoint; the name ``none`` is "do nothing" (answers 0 s, confidence 0)
on the same cases; ``--pipeline`` runs the whole detect-offset measurement
(global search, joint reading, windows, fit, second opinion, verdict) instead of the backend's
global ``offset`` alone; ``--no-joint`` leaves the joint reading out (as before 2026-12-04).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avsync import offset as O  # noqa: E402
from avsync.backends import get_backend  # noqa: E402
from avsync.evaluation import real  # noqa: E402
from avsync.types import Offset  # noqa: E402

MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media" / "real"


def speech_clips(media: Path, part: str) -> list[real.Clip]:
    return [real.Clip(r["file"], str(media / r["file"]), r["category"], r["part"], r["group"])
            for r in real.split_table(media) if r["category"] == "speech" and r["part"] == part]


def link_fit(media: Path, dst: Path) -> int:
    """Symlink every fit-part speech clip into ``dst`` (the training folder of ``avsync train``)."""
    dst.mkdir(parents=True, exist_ok=True)
    clips = speech_clips(media, "fit")
    for c in clips:
        if not (dst / c.file).exists():
            os.symlink(c.path, dst / c.file)
    return len(clips)


def measure(backend, a, v, max_shift: float, pipeline: bool) -> tuple[float, float]:  # noqa: ANN001
    if not pipeline or isinstance(backend, DoNothing):
        o = backend.offset(a, v, max_shift)
        return o.seconds, o.confidence
    vdur = len(v.envelope) / v.envelope.rate
    ms = O.search_range(max_shift, vdur)
    off, bconf = O.global_offset(backend, a, v, ms)
    off, reading = O.joint_reading(backend, a, v, ms, off) if JOINT else (off, None)
    off, period, _ = O.fold_period(off, v.envelope, ms)
    opts = O.OffsetOptions()
    w = O.measure_windows(backend, a, v, off, vdur, ms, opts)
    est, _ = O.fit_windows(w, off, float(v.fps), opts.window, bconf, period is not None)
    est, _ = O.second_opinion(est, a, v, ms, getattr(backend, "name", ""), reading)
    _, est, _ = O.judge(est, vdur)
    return est.offset, est.confidence


JOINT = True  # --no-joint: without the joint reading (offset.joint_reading), as before it


class DoNothing:
    """The "do nothing" row: every case read as in sync (0 s), confidence 0."""

    def offset(self, audio, visual, max_shift: float) -> Offset:  # noqa: ANN001
        return Offset(0.0, 0.0, None)


def make_backend(name: str):  # noqa: ANN201
    """``NAME`` or ``NAME:CHECKPOINT`` (``none``: :class:`DoNothing`)."""
    if name == "none":
        return DoNothing()
    return get_backend(name.partition(":")[0], device="cpu", checkpoint=name.partition(":")[2] or None)


def case_features(c: real.OffsetCase, audio, vis):  # noqa: ANN001, ANN201
    """The case's sound window and picture window cut from the clip's features (an original:
    the whole clip)."""
    if c.kind == "original":
        return audio, vis
    return (O.crop_audio(audio, c.start + c.truth, c.start + c.truth + c.duration),
            O.crop_visual(vis, c.start, c.start + c.duration))


def run(names: list[str], media: Path, part: str, pipeline: bool) -> dict[str, list[dict]]:
    from avsync.errors import CannotMeasure
    from avsync.features.extract import extract_audio, extract_visual

    backends = {n: make_backend(n) for n in names}
    rows: dict[str, list[dict]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        for clip in speech_clips(media, part):
            audio, vis = extract_audio(clip.path), extract_visual(clip.path, mode="speech")
            cases, _ = real.plan_offset_cases(clip, real.clip_info(clip), tmp)
            for c in cases:
                a, v = case_features(c, audio, vis)
                for n, be in backends.items():
                    try:
                        got, conf = measure(be, a, v, c.max_shift, pipeline)
                    except CannotMeasure:
                        got, conf = float("nan"), 0.0
                    rows[n].append({"clip": clip.file, "kind": c.kind, "err": got - c.truth, "conf": conf,
                                    "fps": c.fps})
    return rows


def summary(rows: list[dict]) -> dict[str, float | str]:
    ok = np.array([abs(r["err"]) <= 1.0 / r["fps"] + 1e-9 for r in rows])
    shifted = [bool(k) for k, r in zip(ok, rows, strict=True) if r["kind"] != "original"]
    grid = [abs(r["err"]) < 0.1 for r in rows if r["kind"] == "grid"]
    orig = [bool(abs(r["err"]) <= 1.0 / r["fps"] + 1e-9) for r in rows if r["kind"] == "original"]
    conf = np.array([r["conf"] for r in rows])
    auroc = real.auroc(conf, ok) if 0 < ok.sum() < len(ok) else float("nan")
    return {"n": len(rows), "within1": float(ok.mean()), "grid": float(np.mean(grid)) if grid else float("nan"),
            "originals": f"{sum(orig)}/{len(orig)}", "auroc": float(auroc),
            "shifted": float(np.mean(shifted)) if shifted else float("nan")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("backends", nargs="*", default=["classical"])
    ap.add_argument("--part", default="check", choices=("fit", "check"))
    ap.add_argument("--pipeline", action="store_true", help="the whole detect-offset measurement")
    ap.add_argument("--no-joint", action="store_true", help="--pipeline without the joint reading")
    ap.add_argument("--media", type=Path, default=MEDIA)
    ap.add_argument("--link-fit", type=Path, help="only make a folder of symlinks to the fit-part speech clips")
    args = ap.parse_args()
    global JOINT
    JOINT = not args.no_joint
    if args.link_fit:
        print(f"{link_fit(args.media, args.link_fit)} fit-part speech clips linked in {args.link_fit}")
        return
    t0 = time.perf_counter()
    for name, rows in run(args.backends, args.media, args.part, args.pipeline).items():
        s = summary(rows)
        print(f"| {name} | {args.part} | {s['n']} | {s['within1']:.2f} | {s['grid']:.2f} | {s['originals']} | "
              f"{s['auroc']:.2f} | {s['shifted']:.2f} |")
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
