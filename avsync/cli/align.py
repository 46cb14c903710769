"""`avsync align VIDEO --audio AUDIO -o OUT.mp4`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from avsync.align import PATHS, SYNC_BY, AlignOptions
from avsync.cli._app import add_output_rows, app, report, rich_progress, run
from avsync.cli._options import build, choice
from avsync.features import MODES
from avsync.options import X264_PRESETS

D = AlignOptions  # defaults come from the library's options


@app.command()
def align(
    video: Annotated[Path, typer.Argument(help="Video to re-time (any container PyAV reads).")],
    audio: Annotated[Path, typer.Option("--audio", "-a", help="Reference audio (any container).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Re-timed video to write (.mp4, .mkv, .mov).")],
    backend: Annotated[str, typer.Option(help="Alignment backend.")] = D.backend,
    mode: Annotated[str, typer.Option(help="Visual features: body pose, lips, keypoint-free motion, or decide.",
                                      **choice(MODES, "--mode"))] = D.mode,
    max_shift: Annotated[float, typer.Option("--max-shift", help="Largest lag searched, seconds.")] = D.max_shift,
    max_speed: Annotated[float, typer.Option("--max-speed", help="Fastest source speed-up allowed.")] = D.max_speed,
    map_path: Annotated[Path | None, typer.Option("--map", help="Write the warp map (JSON).")] = None,
    plot_path: Annotated[Path | None, typer.Option("--plot", help="Write a plot of the warp (PNG).")] = None,
    export_path: Annotated[Path | None, typer.Option(
        "--export", help="Write an editorial timeline of the warp: .otio, .edl (CMX 3600), .xml (FCP 7), .fcpxml.")]
    = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout.")] = False,
    crf: Annotated[int, typer.Option(help="libx264 quality (lower = better).")] = D.crf,
    preset: Annotated[str, typer.Option(help="libx264 preset.", **choice(X264_PRESETS, "--preset"))] = D.preset,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda (learned backends).")] = D.device,
    checkpoint: Annotated[str | None, typer.Option(help="Checkpoint name or path (learned backends).")] = None,
    path: Annotated[str, typer.Option(
        "--path", help="viterbi (monotonic lag DP) | dtw (banded DTW) | none (backend answer as is).",
        **choice(PATHS, "--path"))] = D.path,
    sync_by: Annotated[str, typer.Option(
        "--sync-by", help="Follow the picture, or the video's own audio track matched to the reference "
                          "(auto: the soundtrack when it clearly matches).",
        **choice(SYNC_BY, "--sync-by"))] = D.sync_by,
    force_warp: Annotated[bool, typer.Option(
        "--force-warp", help="Warp even when the picture shows too little evidence of following the audio.")] = False,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not read or write the feature cache.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")] = False,
) -> None:
    """Re-time VIDEO so that it plays in step with the reference AUDIO; write the result."""
    from avsync.align import align as do_align

    opts = build(
        AlignOptions, backend=backend, mode=mode, max_shift=max_shift, max_speed=max_speed, crf=crf, preset=preset,
        device=device, checkpoint=checkpoint, path=path, overwrite=overwrite, cache=not no_cache,
        min_evidence=None if force_warp else D.min_evidence, sync_by=sync_by,
    )
    with rich_progress(not json_out) as progress:
        result = run(lambda: do_align(video, audio, output, opts, map_path=map_path, plot_path=plot_path,
                                      export_path=export_path,
                                      progress=progress))
    report(result, json_out, _print_summary)


def _print_summary(r) -> None:  # type: ignore[no-untyped-def]
    from rich.console import Console
    from rich.table import Table

    from avsync.types import describe_offset

    c = Console()
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_row("output", f"{r.output}  ({r.n_out} frames at {r.output_fps:.3f} fps, {r.audio_duration:.2f} s)")
    if r.sync_by != "soundtrack":  # else the note says what was followed
        t.add_row("backend", f"{r.backend}; visual features: {r.visual_kind} ({r.mode})")
    if r.note:
        t.add_row("note", r.note)
    lag = r.lag_ms
    t.add_row("lag", f"mean {lag['mean']:+.0f} ms ({describe_offset(lag['mean'] / 1000)}), "
                     f"range {lag['min']:+.0f} .. {lag['max']:+.0f} ms")
    s = r.stats
    t.add_row("frames", f"{s['duplicated']} duplicated, {s['dropped']} dropped, "
                        f"{s['consecutive']} consecutive, {s['unique']} unique of {r.n_src} source frames")
    ev = r.evidence
    if ev.get("checked") and ev.get("source") == "soundtrack":
        verdict = "warped" if ev["passed"] else "[yellow]kept the source timing[/]"
        t.add_row("evidence", f"soundtrack match {ev['score']:.2f} (unrelated audio: {ev['null_mean']:.2f} on average, "
                              f"needs {ev['margin']:.2f} more) — {verdict}")
    elif ev.get("checked"):
        verdict = "warped" if ev["passed"] else "[yellow]kept the source timing[/]"
        t.add_row("evidence", f"picture path score {ev['score']:.2f} (unrelated audio: {ev['null_max']:.2f} at best, "
                              f"z {ev['z']:.1f}, needs {ev['margin']:.1f}) — {verdict}")
    else:
        t.add_row("confidence", f"{r.confidence_mean:.2f} (mean; evidence check off)")
    add_output_rows(t, r)
    c.print(t)
