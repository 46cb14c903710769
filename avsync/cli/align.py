"""`avsync align VIDEO --audio AUDIO -o OUT.mp4`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from avsync.align import X264_PRESETS
from avsync.cli._app import app, fail, print_json, rich_progress, run


def check_common(mode: str | None = None, device: str | None = None, crf: int | None = None,
                 preset: str | None = None, max_shift: float | None = None) -> None:
    """Validate options shared by several commands; one error line on failure."""
    if mode is not None and mode not in ("auto", "dance", "speech", "general"):
        fail(f"--mode must be auto, dance, speech or general (got '{mode}')")
    if device is not None and not (device in ("auto", "cpu", "cuda") or device.startswith("cuda:")):
        fail(f"--device must be auto, cpu or cuda (got '{device}')")
    if crf is not None and not 0 <= crf <= 51:
        fail(f"--crf must be within 0..51 (got {crf})")
    if preset is not None and preset not in X264_PRESETS:
        fail(f"--preset must be one of {', '.join(X264_PRESETS)} (got '{preset}')")
    if max_shift is not None and not max_shift > 0:
        fail(f"--max-shift must be positive (got {max_shift})")


@app.command()
def align(
    video: Annotated[Path, typer.Argument(help="Video to re-time (any container PyAV reads).")],
    audio: Annotated[Path, typer.Option("--audio", "-a", help="Reference audio (any container).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Re-timed video to write (.mp4, .mkv, .mov).")],
    backend: Annotated[str, typer.Option(help="Alignment backend.")] = "classical",
    mode: Annotated[str, typer.Option(help="auto | dance | speech | general.")] = "auto",
    max_shift: Annotated[float, typer.Option("--max-shift", help="Largest lag searched, seconds.")] = 2.0,
    max_speed: Annotated[float, typer.Option("--max-speed", help="Fastest source speed-up allowed.")] = 2.0,
    map_path: Annotated[Path | None, typer.Option("--map", help="Write the warp map (JSON).")] = None,
    plot_path: Annotated[Path | None, typer.Option("--plot", help="Write a plot of the warp (PNG).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout.")] = False,
    crf: Annotated[int, typer.Option(help="libx264 quality (lower = better).")] = 18,
    preset: Annotated[str, typer.Option(help="libx264 preset.")] = "veryfast",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda (learned backends).")] = "auto",
    checkpoint: Annotated[str | None, typer.Option(help="Checkpoint name or path (learned backends).")] = None,
    path: Annotated[str, typer.Option(
        "--path", help="viterbi (monotonic lag DP) | dtw (banded DTW) | none (backend answer as is).")] = "viterbi",
    sync_by: Annotated[str, typer.Option(
        "--sync-by", help="auto | picture | soundtrack: follow the picture, or the video's own audio track "
                          "matched to the reference (auto: the soundtrack when it clearly matches).")] = "auto",
    force_warp: Annotated[bool, typer.Option(
        "--force-warp", help="Warp even when the picture shows too little evidence of following the audio.")] = False,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not read or write the feature cache.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")] = False,
) -> None:
    """Re-time VIDEO so that it plays in step with the reference AUDIO; write the result."""
    check_common(mode=mode, device=device, crf=crf, preset=preset, max_shift=max_shift)
    if path not in ("viterbi", "dtw", "none"):
        fail(f"--path must be viterbi, dtw or none (got '{path}')")
    if sync_by not in ("auto", "picture", "soundtrack"):
        fail(f"--sync-by must be auto, picture or soundtrack (got '{sync_by}')")
    if max_speed < 1.0:
        fail(f"--max-speed must be at least 1 (got {max_speed})")
    from avsync.align import AlignOptions
    from avsync.align import align as do_align

    opts = AlignOptions(
        backend=backend, mode=mode, max_shift=max_shift, max_speed=max_speed, crf=crf, preset=preset,
        device=device, checkpoint=checkpoint, path=path, overwrite=overwrite, cache=not no_cache,
        min_evidence=None if force_warp else AlignOptions.min_evidence, sync_by=sync_by,
    )
    with rich_progress(not json_out) as progress:
        result = run(lambda: do_align(video, audio, output, opts, map_path=map_path, plot_path=plot_path,
                                      progress=progress))
    if json_out:
        print_json(result.to_json())
        return
    _print_summary(result)


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
        t.add_row("evidence", f"soundtrack match {ev['score']:.2f} (unrelated audio: {ev['null_max']:.2f}) — {verdict}")
    elif ev.get("checked"):
        verdict = "warped" if ev["passed"] else "[yellow]kept the source timing[/]"
        t.add_row("confidence", f"{ev['confidence']:.2f} (unrelated audio: {ev['null_max']:.2f}) — {verdict}")
    else:
        t.add_row("confidence", f"{r.confidence_mean:.2f} (mean; evidence check off)")
    if r.map_path:
        t.add_row("map", r.map_path)
    if r.plot_path:
        t.add_row("plot", r.plot_path)
    c.print(t)
