"""`avsync batch MANIFEST` or `avsync batch --command align --video-dir V --audio A -o OUTDIR`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from avsync.cli._app import app, fail, print_json, rich_progress, run
from avsync.cli._options import choice

EXECUTORS = ("local", "ray")


@app.command()
def batch(
    manifest: Annotated[Path | None, typer.Argument(
        help="CSV or JSONL manifest: command, inputs, output, options per row (see `avsync.batch`).")] = None,
    command: Annotated[str | None, typer.Option(
        "--command", "-c", help="Pair files by name instead of a manifest: align | detect-offset | retarget.")] = None,
    video_dir: Annotated[Path | None, typer.Option(
        "--video-dir", help="With --command: every video in this folder is one item.")] = None,
    audio: Annotated[Path | None, typer.Option(
        "--audio", "-a", help="With --command: one reference audio (or music) for every video.")] = None,
    audio_dir: Annotated[Path | None, typer.Option(
        "--audio-dir", help="With --command: video take3.mp4 pairs with take3.* in this folder.")] = None,
    out_dir: Annotated[Path | None, typer.Option(
        "--output-dir", "-o", help="With --command: outputs go here as <video name>.mp4 (created if missing; "
        "for detect-offset: corrected copies).")] = None,
    option: Annotated[list[str] | None, typer.Option(
        "--option", "-O", help="With --command: KEY=VALUE command option for every item (repeatable), "
        "e.g. -O backend=classical -O check=true.")] = None,
    jobs: Annotated[int, typer.Option(
        "--jobs", "-j", help="Worker processes (each loads models once); 0 = run in this process.")] = 1,
    results: Annotated[Path | None, typer.Option(
        "--results", help="Append one JSON line per item here (flushed per item) instead of stdout.")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Skip items recorded ok in --results whose output exists.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")] = False,
    timeout: Annotated[float | None, typer.Option(
        "--timeout", help="Seconds one item may take before its worker is killed and the item fails.")] = None,
    executor: Annotated[str, typer.Option(
        "--executor", help="local (worker processes) or ray (Ray's scheduler; pip install 'avsync[ray]').",
        **choice(EXECUTORS, "--executor"))] = "local",
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print the items (one JSON line each) without running them.")] = False,
) -> None:
    """Run align, detect-offset or retarget over many files; one JSON line per item.

    A failing item is recorded (status "error" and a one-line message) and the run goes on.
    Exit codes: 0 every item ok, 1 some failed (or bad arguments), 130 interrupted (finished
    items are recorded; rerun with --resume).
    """
    _check_arguments(manifest, command, video_dir, bool(audio or audio_dir or out_dir or option), jobs, timeout,
                     resume, results)
    opts = _key_values(option)

    from avsync import batch as b

    if manifest is not None:
        items = run(lambda: b.read_manifest(manifest))
    else:
        assert command is not None and video_dir is not None
        items = run(lambda: b.pair_by_name(command, video_dir, audio=audio, audio_dir=audio_dir, out_dir=out_dir,
                                           options=opts))
    if dry_run:
        for it in items:
            print_json({"id": it.id, "command": it.command, "inputs": it.inputs, "output": it.output,
                        "options": it.options, "status": "error" if it.error else "planned", "error": it.error})
        return
    emit = None if results is not None else print_json
    with rich_progress() as progress:
        summary = run(lambda: b.run_batch(items, jobs=jobs, results=results, emit=emit, resume=resume,
                                          overwrite=overwrite, timeout=timeout, executor=executor,
                                          progress=progress, manifest=manifest))
    where = f"; results in {results}" if results is not None else ""
    counts = f"{summary.ok} ok, {summary.failed} failed, {summary.skipped} skipped of {summary.total}"
    if summary.interrupted:
        sys.stderr.write(f"avsync: interrupted after {summary.seconds:.1f} s ({counts}){where}\n")
        raise typer.Exit(130)
    if summary.failed:
        fail(f"{summary.failed} of {summary.total} items failed ({counts}; {summary.seconds:.1f} s){where}")
    sys.stderr.write(f"avsync: batch done: {counts} in {summary.seconds:.1f} s{where}\n")


def _check_arguments(manifest: Path | None, command: str | None, video_dir: Path | None, pairing_flags: bool,
                     jobs: int, timeout: float | None, resume: bool, results: Path | None) -> None:
    """Refuse argument combinations before anything is read."""
    if (manifest is None) == (command is None):
        fail("give a MANIFEST, or --command with --video-dir (pairing by name), not both")
    if manifest is None and video_dir is None:
        fail("--command needs --video-dir")
    if manifest is not None and (video_dir or pairing_flags):
        fail("--video-dir, --audio, --audio-dir, -o and -O go with --command, not with a MANIFEST")
    if jobs < 0:
        fail(f"--jobs must be 0 or more (got {jobs})")
    if timeout is not None and not timeout > 0:
        fail(f"--timeout must be positive (got {timeout})")
    if resume and results is None:
        fail("--resume needs --results FILE (the record of what is done)")


def _key_values(option: list[str] | None) -> dict[str, str]:
    """``-O KEY=VALUE`` pairs."""
    opts: dict[str, str] = {}
    for kv in option or []:
        key, eq, value = kv.partition("=")
        if not eq or not key.strip():
            fail(f"--option must be KEY=VALUE (got '{kv}')")
        opts[key.strip()] = value.strip()
    return opts
