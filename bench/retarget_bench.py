"""Beat Align Score of ``avsync retarget`` on the development split.

Dances: segments of Big Buck Bunny inside the dev split (0–400 s), downscaled; there is no
real dance footage here, so the visual beats come from motion (cartoon action stopping or
turning). Music: song1.ogg / song2.ogg. For every (segment, song) pair the output is
rendered, and the score is reported three ways:

- ``before``: the dance unchanged with the music laid under it;
- ``after (map)``: the dance's visual beats moved through the time map;
- ``after (rendered)``: visual beats re-detected from the rendered output file.

Usage: ``.venv/bin/python bench/retarget_bench.py [--out out/retarget_bench] [--seconds 20]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

MEDIA = Path(os.environ.get("AVSYNC_MEDIA", "/root/.cache/avsync-media"))
SEGMENTS = (40.0, 150.0, 260.0, 330.0)  # starts (s) inside the dev split 0–400 s
SONGS = ("song1.ogg", "song2.ogg")
MUSIC_START = 20.0  # skip intros


def cut(src: Path, out: Path, start: float, seconds: float, width: int = 320) -> None:
    """Re-encode [start, start + seconds) of ``src`` (video only) at ``width`` px."""
    import av

    from tests.mediagen import write_frames_video

    def frames():
        with av.open(str(src)) as c:
            st = c.streams.video[0]
            c.seek(int((start - 2) / st.time_base), stream=st, backward=True)
            for fr in c.decode(st):
                t = float(fr.pts * st.time_base)
                if t < start - 1e-6:
                    continue
                if t >= start + seconds - 1e-6:
                    break
                h = int(round(fr.height * width / fr.width / 2) * 2)
                yield fr.to_ndarray(format="rgb24", width=width, height=h)

    write_frames_video(str(out), frames(), 24)


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="out/retarget_bench")
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args()
    from avsync.features.beats import beat_align_score, music_beats, visual_beats
    from avsync.features.extract import extract_visual
    from avsync.media import load_audio
    from avsync.retarget import RetargetOptions, retarget

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seg in SEGMENTS:
        dance = out / f"bbb_{int(seg)}.mp4"
        if not dance.exists():
            cut(MEDIA / "bbb.mp4", dance, seg, args.seconds)
        for song in SONGS:
            tag = f"bbb{int(seg)}_{Path(song).stem}"
            t0 = time.perf_counter()
            opts = RetargetOptions(start=MUSIC_START, mode="general", overwrite=True, preset="ultrafast")
            r = retarget(dance, MEDIA / song, out / f"{tag}.mp4", opts, plot_path=out / f"{tag}.png",
                         map_path=out / f"{tag}.json")
            # Re-detect visual beats in the rendered file and score them against the music.
            vf = extract_visual(out / f"{tag}.mp4", "general", cache=False)
            vb = visual_beats(vf)
            mb = music_beats(load_audio(MEDIA / song, 22050), 22050)
            mt = mb.times - MUSIC_START
            mt = mt[(mt >= 0) & (mt < r.output_duration)]
            rendered = beat_align_score(mt, vb.times, r.fps)
            row = {
                "case": tag, "before": round(r.bas_before, 3), "after_map": round(r.bas_after, 3),
                "after_rendered": round(rendered, 3), "speed": [round(r.speed_min, 2), round(r.speed_max, 2)],
                "out_s": round(r.output_duration, 2), "visual_beats": r.n_visual_beats,
                "music_tempo": round(r.music_tempo, 1), "matches": r.n_matches,
                "seconds": round(time.perf_counter() - t0, 1),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    b = np.mean([x["before"] for x in rows])
    a = np.mean([x["after_map"] for x in rows])
    ar = np.mean([x["after_rendered"] for x in rows])
    print(f"mean BAS: before {b:.3f}  after (map) {a:.3f}  after (rendered) {ar:.3f}  over {len(rows)} cases")
    (out / "results.json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
