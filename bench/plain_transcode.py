#!/usr/bin/env python
"""Reference for the speed benchmark: a plain PyAV decode + libx264 encode (veryfast, crf 18)."""

import sys
from fractions import Fraction

import av


def main(src: str, dst: str) -> None:
    cin = av.open(src)
    vs = cin.streams.video[0]
    vs.thread_type = "AUTO"
    cout = av.open(dst, "w")
    o = cout.add_stream("libx264", rate=vs.average_rate)
    o.width, o.height, o.pix_fmt = vs.codec_context.width, vs.codec_context.height, "yuv420p"
    o.options = {"crf": "18", "preset": "veryfast"}
    tb = Fraction(1) / Fraction(vs.average_rate)
    for i, f in enumerate(cin.decode(vs)):
        f.pts, f.time_base = i, tb
        for p in o.encode(f):
            cout.mux(p)
    for p in o.encode(None):
        cout.mux(p)
    cout.close()
    cin.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
