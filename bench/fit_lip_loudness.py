"""Fit the lip-shape → speech-loudness filter (avsync/features/lip_loudness.py) on the fit part
of a real-footage folder and write avsync/checkpoints/lip-loudness.npz.

    python bench/fit_lip_loudness.py [MEDIA_DIR] [-o PATH]

Uses the speech clips of the fit part of ``avsync.evaluation.real.split_table`` (split by
source or speaker), at their own alignment. Deterministic: the same folder gives the same file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from avsync.evaluation.real import DEFAULT_MEDIA, split_table  # noqa: E402
from avsync.features import lip_loudness  # noqa: E402
from avsync.features.extract import extract_audio, extract_visual  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("media", nargs="?", default=str(DEFAULT_MEDIA))
    ap.add_argument("-o", "--output", default=str(lip_loudness.default_path()))
    args = ap.parse_args()
    rows = [r for r in split_table(args.media) if r["category"] == "speech" and r["part"] == "fit"]
    pairs = []
    for r in rows:
        path = Path(args.media) / r["file"]
        if not path.is_file():
            continue
        pairs.append((extract_audio(path), extract_visual(path, mode="speech")))
        print(f"{len(pairs):3d}/{len(rows)} {r['file']}", flush=True)
    n_frames = sum(len(v.envelope) for _, v in pairs if lip_loudness.applies(v))
    model = lip_loudness.fit(pairs, trained_on=(
        f"{sum(lip_loudness.applies(v) for _, v in pairs)} speech clips ({n_frames} frames) of the fit part "
        "of the real-footage split (avsync.evaluation.real.split_table)"))
    model.save(args.output)
    print(f"wrote {args.output}: {model.trained_on}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
