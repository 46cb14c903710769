"""`avsync detect-offset CLIP`: offset between a clip's own audio and picture, drift, --fix.

Choices and defaults come from :class:`avsync.offset.OffsetOptions`, which also validates
them; the fix policy is :func:`avsync.offset.fix_plan`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from avsync.cli._app import app, fail, print_json, rich_progress, run
from avsync.cli._options import build, choice
from avsync.device import DEVICE_CHOICES
from avsync.features import MODES
from avsync.offset import OffsetOptions

_D = OffsetOptions  # field defaults: OffsetOptions.max_shift, ...


@app.command("detect-offset")
def detect_offset_cmd(
    clip: Annotated[Path, typer.Argument(help="Clip with a video and an audio stream.")],
    backend: Annotated[str, typer.Option(help="Offset backend.")] = _D.backend,
    mode: Annotated[str, typer.Option(help="Visual features.", **choice(MODES, "--mode"))] = _D.mode,
    max_shift: Annotated[float, typer.Option("--max-shift", help="Search range, ± seconds.")] = _D.max_shift,
    window: Annotated[float, typer.Option("--window", help="Drift window length, seconds (50 % overlap).")] = _D.window,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
    plot_path: Annotated[Path | None, typer.Option("--plot", help="Plot the offset over time (PNG).")] = None,
    check: Annotated[bool, typer.Option("--check", help="Exit 3 when out of sync (or cannot tell).")] = False,
    fix: Annotated[Path | None, typer.Option("--fix", help="Write a copy with the audio re-timed.")] = None,
    shift_ms: Annotated[float | None, typer.Option(
        "--shift-ms", help="With --fix: cancel this offset (ms, + = audio leads) instead of the measured one.",
    )] = None,
    fix_drift: Annotated[bool, typer.Option("--fix-drift", help="With --fix: also cancel the measured drift.")] = False,
    export_path: Annotated[Path | None, typer.Option(
        "--export", help="Write an editorial timeline with the audio slipped as --fix would: .otio, .xml, .fcpxml.")]
    = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")] = False,
    device: Annotated[str, typer.Option(help=" | ".join(DEVICE_CHOICES) + " (learned backends).")] = _D.device,
    checkpoint: Annotated[str | None, typer.Option(help="Checkpoint name or path (learned backends).")] = None,
) -> None:
    """Measure how far CLIP's sound is from its picture (+ = audio leads), its drift, and fix it.

    Exit codes: 0 measured (whatever the result), 1 bad input, 2 cannot measure,
    3 with --check when out of sync or when the measurement is not confident.
    """
    opts = build(OffsetOptions, backend=backend, mode=mode, max_shift=max_shift, window=window, device=device,
                 checkpoint=checkpoint)
    _check_paths(clip, fix, plot_path, shift_ms, fix_drift, overwrite, export_path)
    result = None
    if shift_ms is None or plot_path is not None or export_path is not None or fix is None:
        result = _measure(clip, opts, progress=not json_out)  # (a given shift alone needs no measurement)
    if plot_path is not None:
        from avsync.offset import plot_offset

        run(lambda: plot_offset(result, plot_path, overwrite=overwrite))
    fixed = _write_fix(clip, fix, result, shift_ms, fix_drift, overwrite) if fix is not None else None
    exported = _export(export_path, result, shift_ms, fix_drift, overwrite) if export_path is not None else None
    if json_out:
        _print_json(clip, result, fixed, plot_path, exported)
    else:
        _print_table(result, fixed, plot_path, exported)
    if check and result is not None and not result.in_sync:
        raise typer.Exit(3)


def _check_paths(clip: Path, fix: Path | None, plot_path: Path | None, shift_ms: float | None,
                 fix_drift: bool, overwrite: bool, export_path: Path | None = None) -> None:
    """Refuse flag combinations and outputs before any work is done."""
    if (shift_ms is not None or fix_drift) and fix is None and export_path is None:
        fail("--shift-ms and --fix-drift need --fix OUT or --export TIMELINE")
    if not clip.is_file():
        fail(f"no such file: '{clip}'")
    from avsync.outputs import check_distinct, check_output

    run(lambda: check_distinct({"the input clip": clip}, {"--fix": fix, "--plot": plot_path, "--export": export_path}))
    if export_path is not None:
        from avsync.export import export_format

        run(lambda: export_format(export_path))
        if export_path.suffix.lower() == ".edl":
            fail("an EDL carries one picture track and no audio slip: export .otio, .xml or .fcpxml")
    if shift_ms is not None and fix_drift:
        fail("--shift-ms and --fix-drift cannot be combined (drift is measured, the shift is given)")
    for out in (fix, plot_path, export_path):
        if out is not None:
            run(lambda out=out: check_output(out, overwrite))


def _measure(clip: Path, opts: OffsetOptions, progress: bool) -> Any:
    from avsync.offset import detect_offset

    with rich_progress(progress) as bar:
        return run(lambda: detect_offset(clip, opts, bar))


def _write_fix(clip: Path, fix: Path, result: Any, shift_ms: float | None, fix_drift: bool,
               overwrite: bool) -> dict[str, Any]:
    from avsync.errors import CannotMeasure
    from avsync.offset import fix_json, fix_plan
    from avsync.remux import write_shifted

    try:
        plan = fix_plan(result, shift_ms=shift_ms, fix_drift=fix_drift)
    except CannotMeasure as e:  # "cannot tell": say how to force a shift (JSON: with the measurement)
        fail(f"{e}; give --shift-ms to force a shift", e.exit_code, **(result.to_json() if result else {}))
    fixed = run(lambda: write_shifted(clip, fix, plan.shift_s, drift_ms_per_min=plan.drift_ms_per_min,
                                      overwrite=overwrite))
    return fix_json(fixed, fix)


def _export(path: Path, result: Any, shift_ms: float | None, fix_drift: bool, overwrite: bool) -> dict[str, Any]:
    """The timeline of the clip with its audio slipped by what --fix would shift it."""
    from avsync.errors import CannotMeasure
    from avsync.export import export_offset
    from avsync.offset import fix_plan

    try:
        plan = fix_plan(result, shift_ms=shift_ms, fix_drift=fix_drift)
    except CannotMeasure as e:
        fail(f"{e}; give --shift-ms to force a shift", e.exit_code, **(result.to_json() if result else {}))
    return run(lambda: export_offset(result, path, plan.shift_s, plan.drift_ms_per_min, result.duration,
                                     overwrite=overwrite))


def _print_json(clip: Path, result: Any, fixed: dict[str, Any] | None, plot_path: Path | None,
                exported: dict[str, Any] | None = None) -> None:
    obj = {"ok": True, **(result.to_json() if result is not None else {"file": str(clip)})}
    if fixed is not None:
        obj["fix"] = fixed
    if exported is not None:
        obj["export"] = exported
    if plot_path is not None:
        obj["plot"] = str(plot_path)
    print_json(obj)


def _print_table(r, fixed, plot_path, exported=None) -> None:  # type: ignore[no-untyped-def]
    from rich.console import Console
    from rich.table import Table

    from avsync.types import describe_offset

    c = Console()
    t = Table(show_header=False, box=None, pad_edge=False)
    if r is not None:
        t.add_row("file", r.file)
        t.add_row("offset", f"[bold]{r.offset_s * 1000:+.1f} ms[/bold]  ({r.offset_frames:+.2f} frames at "
                            f"{r.fps:.3f} fps)")
        t.add_row("in words", describe_offset(r.offset_s) + ("  (at the start)" if r.verdict == "drifting" else ""))
        colour = {"in sync": "green", "constant offset": "yellow", "drifting": "red", "cannot tell": "magenta"}
        itu = "inside" if r.in_sync else "outside"
        t.add_row("verdict", f"[{colour[r.verdict]}]{r.verdict}[/]  ({itu} the ITU window −125 ms .. +45 ms)")
        t.add_row("confidence", f"{r.confidence:.2f}")
        t.add_row("drift", f"{r.drift_ms_per_min:+.1f} ms/min over {r.duration:.1f} s "
                           f"({len(r.windows)} window{'s' if len(r.windows) != 1 else ''})")
        t.add_row("backend", f"{r.backend} ({r.mode}, {r.extra.get('visual_kind', '?')}); method: {r.method}")
        if r.extra.get("faces"):
            t.add_row("faces", _faces_line(r.extra))
        if r.note:
            t.add_row("note", r.note)
        t.add_row("convention", "positive = audio leads picture")
    if fixed is not None:
        drift = f", drift {fixed['drift_ms_per_min']:+.1f} ms/min cancelled" if fixed["drift_ms_per_min"] else ""
        t.add_row("fixed", f"{fixed['output']}  ({fixed['words']}{drift}; audio {fixed['audio']}, video copied)")
    if plot_path is not None:
        t.add_row("plot", str(plot_path))
    if exported is not None:
        t.add_row("timeline", f"{exported['path']} ({exported['format']}: {exported['words']})")
    c.print(t)


def _faces_line(extra: dict) -> str:
    """One line on the faces of a picture with several: where each is, its reading, which was measured."""
    faces, speaking, measured = extra["faces"], extra.get("speaking_face"), extra.get("measured_face")

    def one(f: dict) -> str:
        mark = "  [bold]speaks[/bold]" if f["face"] == speaking else ("  measured" if f["face"] == measured else "")
        lip = f.get("syncnet_margin")
        return (f"{f['face']} at x {f['position'][0]:.2f}: {f['offset_ms']:+.0f} ms, confidence "
                f"{f['confidence']:.2f}" + ("" if lip is None else f", lip SyncNet margin {lip:.2f}") + mark)

    return "; ".join(one(f) for f in faces)
