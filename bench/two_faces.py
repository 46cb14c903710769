"""detect-offset on two real talking faces side by side, the sound of one of them.

Each speech clip of one part of the split (:func:`avsync.evaluation.real.split_table`) is paired
with another clip of that part from another source or speaker; their pictures are put side by side
(each scaled to 360 pixels high, the speaker on a random side, at most 12 s) with the speaker's
sound, written through avsync's renderer. The real-footage protocol's detect-offset cases
(:func:`avsync.evaluation.real.build_cases`) are then cut from these two-face clips and measured
by ``avsync.offset.detect_offset``. Printed: within ±1 frame, grid Acc@1, originals within ±1
frame, the AUROC of the confidence, how often the measured face is the speaker, and how often
``speaking_face`` names a face and whether it is the speaker. The other face is a real talking
face too (it talks to another sound), so this is harder than a speaker beside a listener.

    python bench/two_faces.py [--part check] [--jobs 2] [--seed 7]

Composites and cases are cached under ``<avsync cache>/two-faces``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avsync.evaluation import real  # noqa: E402

MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media" / "real"
HEIGHT = 360  # pixels: each picture is scaled to this height
LONGEST = 12.0  # s: composites are cut to this length
SR = 16000


def _frames(path: str, fps: float, n: int) -> list[np.ndarray]:
    """``n`` RGB frames of ``path`` at ``k / fps`` (the latest frame shown at each time), scaled to HEIGHT."""
    import cv2

    from avsync import media

    got = [(t, img) for _, t, img in media.iter_frames(path, max_side=1280, gray=False, upright=True)]
    ts = np.array([t for t, _ in got])
    idx = np.clip(np.searchsorted(ts, np.arange(n) / fps + 1e-6) - 1, 0, len(got) - 1)
    out = []
    for k in idx:
        img = got[k][1]
        w = int(round(img.shape[1] * HEIGHT / img.shape[0] / 2)) * 2
        out.append(cv2.resize(img, (w, HEIGHT), interpolation=cv2.INTER_AREA))
    return out


def compose(speaker: real.Clip, other: real.Clip, out: Path, speaker_left: bool) -> float:
    """Write the two-face clip; returns the speaker's mouth x as a share of the width (its picture's centre)."""
    from fractions import Fraction

    import av
    from scipy.io import wavfile

    from avsync import media
    from avsync.render import frame_plan, render
    from avsync.types import Correspondence

    ia, ib = real.clip_info(speaker), real.clip_info(other)
    fps = ia.fps
    n = int(min(ia.length, ib.length, LONGEST) * fps)
    fa, fb = _frames(speaker.path, fps, n), _frames(other.path, fps, n)
    y = media.load_audio(speaker.path, sr=SR)[: int(n / fps * SR)]
    with tempfile.TemporaryDirectory(prefix="two-faces-") as tmp:
        silent = Path(tmp) / "picture.mp4"
        with av.open(str(silent), "w") as c:
            vs = c.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            vs.width, vs.height, vs.pix_fmt = fa[0].shape[1] + fb[0].shape[1], HEIGHT, "yuv420p"
            vs.options = {"crf": "18", "preset": "ultrafast"}
            for a, b in zip(fa, fb, strict=True):
                img = np.concatenate([a, b] if speaker_left else [b, a], axis=1)
                for p in vs.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                    c.mux(p)
            for p in vs.encode():
                c.mux(p)
        wav = Path(tmp) / "sound.wav"
        wavfile.write(wav, SR, y.astype(np.float32))
        plan = frame_plan(Correspondence(src_time=np.arange(n) / fps, rate=fps), media.frame_times(str(silent)))
        render(str(silent), plan, fps, out, audio_path=wav, crf=18, preset="ultrafast", overwrite=True)
    wa, wb = fa[0].shape[1], fb[0].shape[1]
    return (wa / 2) / (wa + wb) if speaker_left else (wb + wa / 2) / (wa + wb)


def estimator(path: str, max_shift: float) -> tuple[float, float, str, dict[str, Any]]:
    """detect-offset with the faces it reports."""
    from avsync.offset import OffsetOptions, detect_offset

    r = detect_offset(path, OffsetOptions(max_shift=float(max_shift)))
    return float(r.offset_s), float(r.confidence), str(r.verdict), {
        k: r.extra.get(k) for k in ("faces", "speaking_face", "measured_face", "visual_kind")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--media", default=str(MEDIA))
    ap.add_argument("--part", default="check", choices=("check", "fit", "all"))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", help="write every outcome here")
    args = ap.parse_args(argv)
    from avsync.cache import cache_dir

    clips = real.load_clips(args.media, part=args.part, categories=["speech"])
    if len(clips) < 2:
        print(f"two_faces: fewer than two speech clips in {args.media} ({args.part} part)", file=sys.stderr)
        return 2
    root = cache_dir() / "two-faces" / f"{args.part}-{args.seed}"
    (root / "media").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    truth: dict[str, float] = {}
    made = []
    for i, a in enumerate(clips):
        others = [c for c in clips if c.group != a.group]
        b = others[int(rng.integers(len(others)))]
        left = bool(rng.integers(2))
        name = f"two{i:02d}.mp4"
        out = root / "media" / name
        meta = root / "media" / (name + ".json")
        if not (out.is_file() and meta.is_file()):
            x = compose(a, b, out, left)
            meta.write_text(json.dumps({"speaker": a.file, "other": b.file, "speaker_x": x}))
        truth[name] = json.loads(meta.read_text())["speaker_x"]
        made.append(real.Clip(name, str(out), "speech", args.part, "file:" + name))
    cases = real.build_cases(made, root / "cases", offset=True, align=False, jobs=args.jobs).offset
    got = real.run_offset(cases, f"{Path(__file__).resolve()}:estimator", jobs=args.jobs)
    right = np.array([o.right for o in got])
    grid = [abs(o.error) < real.GRID_STEP / 2 for o in got if o.case.kind == "grid"]
    orig = [o.right for o in got if o.case.kind == "original"]
    measured = named = named_right = several = 0
    for o in got:
        faces = o.extra.get("faces")
        if not faces:
            continue
        several += 1
        x = truth[o.case.clip]

        def is_speaker(i: int, faces: list[dict[str, Any]] = faces, x: float = x) -> bool:
            return min(range(len(faces)), key=lambda k: abs(faces[k]["position"][0] - x)) == i

        measured += is_speaker(o.extra["measured_face"])
        if o.extra.get("speaking_face") is not None:
            named += 1
            named_right += is_speaker(o.extra["speaking_face"])
    conf = np.array([o.confidence for o in got])
    print(f"{len(made)} two-face clips, {len(got)} cases ({args.part} part, seed {args.seed})")
    print(f"within ±1 frame {right.mean():.3f}   grid Acc@1 {np.mean(grid) if grid else float('nan'):.3f}   "
          f"originals {sum(orig)}/{len(orig)}   AUROC {real.auroc(conf, right):.3f}")
    print(f"several faces tracked on {several}/{len(got)} cases; measured face = the speaker on {measured}/{several}; "
          f"speaking_face named on {named}, the speaker on {named_right}")
    if args.json:
        Path(args.json).write_text(json.dumps([o.to_json() for o in got], indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
