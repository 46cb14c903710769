"""`avsync retarget DANCE MUSIC -o OUT.mp4`: a dance warped onto new music."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from avsync.cli._app import add_output_rows, app, report, rich_progress, run
from avsync.cli._options import build, choice
from avsync.features import MODES
from avsync.options import X264_PRESETS
from avsync.retarget import RetargetOptions

D = RetargetOptions  # defaults come from the library's options


@app.command()
def retarget(
    dance: Annotated[Path, typer.Argument(help="The dance video (any container PyAV reads).")],
    music: Annotated[Path, typer.Argument(help="The new music (any container with audio).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Retargeted video to write (.mp4, .mkv, .mov).")],
    max_speed: Annotated[float, typer.Option(
        "--max-speed", help="Local speed stays within [1/x, x] of the original (x >= 1).")] = D.max_speed,
    loop: Annotated[bool, typer.Option(
        "--loop", help="Repeat the dance to cover the music (else the output ends with the dance).")] = D.loop,
    start: Annotated[float, typer.Option("--start", help="Where in the music to begin, seconds.")] = D.start,
    map_path: Annotated[Path | None, typer.Option("--map", help="Write the time map (JSON).")] = None,
    plot_path: Annotated[Path | None, typer.Option(
        "--plot", help="Write a plot of both beat trains and the warp (PNG).")] = None,
    export_path: Annotated[Path | None, typer.Option(
        "--export", help="Write an editorial timeline of the warp: .otio, .edl (CMX 3600), .xml (FCP 7), .fcpxml.")]
    = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout.")] = False,
    mode: Annotated[str, typer.Option(
        help="Visual beats from pose-joint stops (dance) or from motion stops (speech, general); "
             "auto: pose when a body is found.", **choice(MODES, "--mode"))] = D.mode,
    backend: Annotated[str, typer.Option(help="Who predicts the time map (classical: beat DP).")] = D.backend,
    crf: Annotated[int, typer.Option(help="libx264 quality (lower = better).")] = D.crf,
    preset: Annotated[str, typer.Option(help="libx264 preset.", **choice(X264_PRESETS, "--preset"))] = D.preset,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not read or write the feature cache.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")] = False,
) -> None:
    """Warp DANCE so that its visual beats land on the beats of MUSIC; the output carries MUSIC."""
    from avsync.retarget import retarget as do_retarget

    opts = build(RetargetOptions, max_speed=max_speed, loop=loop, start=start, backend=backend, mode=mode,
                 crf=crf, preset=preset, overwrite=overwrite, cache=not no_cache)
    with rich_progress(not json_out) as progress:
        result = run(lambda: do_retarget(dance, music, output, opts, map_path=map_path,
                                          plot_path=plot_path, export_path=export_path, progress=progress))
    report(result, json_out, _print_summary)


def _print_summary(r) -> None:  # type: ignore[no-untyped-def]
    from rich.console import Console
    from rich.table import Table

    c = Console()
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_row("output", f"{r.output}  ({r.n_out} frames at {r.fps:.3f} fps, {r.output_duration:.2f} s; "
                        f"music from {r.start:.2f} s)")
    t.add_row("beats", f"music {r.n_music_beats} at {r.music_tempo:.1f} bpm; visual ({r.visual_source}) "
                       f"{r.n_visual_beats}, {r.n_matches} placed on music beats")
    t.add_row("beat align", f"{r.bas_before:.3f} unchanged -> {r.bas_after:.3f} retargeted "
                            f"(Beat Align Score, sigma = 3 frames)")
    t.add_row("speed", f"{r.speed_min:.2f}x .. {r.speed_max:.2f}x (bound {1 / r.max_speed:.2f}x .. "
                       f"{r.max_speed:.2f}x)")
    if r.note:
        t.add_row("note", r.note)
    add_output_rows(t, r)
    c.print(t)
