"""`avsync bench DATA_DIR --backend a,b,c`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from avsync.cli._app import app, fail, print_json, rich_progress, run
from avsync.cli._options import build, choice
from avsync.evaluation.protocol import PROTOCOLS, BenchOptions

D = BenchOptions  # defaults come from the library's options


@app.command()
def bench(
    data_dir: Annotated[Path, typer.Argument(help="Folder of synced clips (video with its own audio).")],
    backend: Annotated[str, typer.Option(
        help="Comma-separated backends to compare; NAME:CHECKPOINT benches a checkpoint of your own.")] = "classical",
    seed: Annotated[int, typer.Option(help="Seed of the random distortions and shifts.")] = D.seed,
    max_clips: Annotated[int | None, typer.Option(
        "--max-clips", help="Use only the first N clips (--protocol real: per category).")] = D.max_clips,
    protocol: Annotated[str, typer.Option(
        help="The papers' protocols on clips cut from DATA_DIR (all, nonuniform, offset), or 'real': the "
             "real-footage protocol (per category, with 'do nothing' beside) on DATA_DIR's clips.",
        **choice((*PROTOCOLS, "real"), "--protocol"))] = PROTOCOLS[0],
    part: Annotated[str, typer.Option(
        help="With --protocol real: the check part of DATA_DIR's split by source (MANIFEST.tsv), the fit part, "
             "or all.", **choice(("check", "fit", "all"), "--part"))] = "check",
    task: Annotated[str, typer.Option(
        help="With --protocol real: detect-offset cases, align cases (picture and camera microphone), or both.",
        **choice(("offset", "align", "both"), "--task"))] = "both",
    category: Annotated[str | None, typer.Option(
        help="With --protocol real: comma-separated categories to keep (speech, dance, music, event, "
             "control); default all.")] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="With --protocol real: worker processes.")] = 1,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = D.device,
    soundtrack: Annotated[bool, typer.Option(
        "--soundtrack/--no-soundtrack",
        help="Add the row 'soundtrack': the distorted copy carries its own soundtrack, warped with its picture, "
             "and align follows it (--sync-by soundtrack).")] = D.soundtrack,
    json_out: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    markdown: Annotated[Path | None, typer.Option("--markdown", help="Also write a Markdown table.")] = None,
) -> None:
    """Run the papers' protocols on DATA_DIR; print every backend side by side."""
    if not data_dir.is_dir():
        fail(f"'{data_dir}' is not a directory")
    if markdown is not None:
        from avsync.outputs import check_distinct

        run(lambda: check_distinct({"DATA_DIR": data_dir}, {"--markdown": markdown}))
    names = [b.strip() for b in backend.split(",") if b.strip()]
    if not names:
        fail("--backend names no backend")
    if protocol == "real":
        cats = [c.strip() for c in (category or "").split(",") if c.strip()] or None
        _real(data_dir, names, part, task, jobs, max_clips, json_out, markdown, cats)
        return
    from avsync.evaluation.protocol import markdown_table, run_bench

    opts = build(BenchOptions, seed=seed, max_clips=max_clips, device=device, soundtrack=soundtrack,
                 **BenchOptions.protocols(protocol))
    with rich_progress(not json_out) as progress:
        res = run(lambda: run_bench(data_dir, names, opts, progress))
    if markdown:
        from avsync.outputs import write_atomic

        def _w(tmp: str) -> None:
            Path(tmp).write_text(f"{res.protocol}\n\n{markdown_table(res)}\n")

        write_atomic(markdown, _w)
    if json_out:
        print_json(res.to_json())
        return
    _print_table(res, data_dir)


def _print_table(res: Any, data_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"avsync bench — {res.n_clips} clips in {data_dir}", caption=res.protocol)
    for col in ("backend", "AFE↓", "ITU↑", "±1f↑", "dup", "del", "cons", "uniq", "off ±1f↑", "grid@1↑",
                "s/min align", "s/min offset"):
        t.add_column(col, justify="right")

    def f(x: float, p: str = ".3f") -> str:
        return "—" if x != x else format(x, p)

    for r in res.rows:
        has = r.afe == r.afe
        t.add_row(r.backend, f(r.afe, ".2f"), f(r.itu), f(r.acc1),
                  *(str(v) if has else "—" for v in (r.duplicated, r.dropped, r.consecutive, r.unique)),
                  f(r.offset_acc1f), f(r.grid_acc1), f(r.s_per_min, ".2f"), f(r.s_per_min_offset, ".2f"))
    c = Console()
    c.print(t)
    c.print(f"features: {res.features_s_per_min:.1f} s per minute of video (shared by all backends)")
    for r in res.rows:
        for e in r.errors[:5]:
            c.print(f"[yellow]{r.backend}: {e}")


def _real(data_dir: Path, names: list[str], part: str, task: str, jobs: int, max_clips: int | None,
          json_out: bool, markdown: Path | None, categories: list[str] | None = None) -> None:
    """``--protocol real``: every backend's detect-offset (``detect-offset --backend B``) and align
    (``align --backend B``) on the real-footage cases, one row set per backend."""
    import sys

    from avsync.evaluation import real
    from avsync.evaluation.protocol import split_backend

    if jobs < 1:
        fail(f"--jobs must be at least 1 (got {jobs})")
    bad = sorted(set(categories or ()) - set(real.CATEGORIES))
    if bad:
        fail(f"--category: unknown {', '.join(bad)} (choose from {', '.join(real.CATEGORIES[:-1])})")
    specs = [split_backend(n) for n in names]
    estimators = {n: real.BackendOffset(b, c) for n, (b, c) in zip(names, specs, strict=True)}
    aligners: dict[str, object] = {}
    if task in ("align", "both"):
        aligners = {n: real.BackendAligner(b, c) for n, (b, c) in zip(names, specs, strict=True)}
    if task == "align":
        estimators = {}

    def log(line: str) -> None:
        if not json_out:
            sys.stderr.write(line + "\n")

    res = run(lambda: real.run_real(data_dir, part=part, estimators=estimators, aligners=aligners,  # type: ignore[arg-type]
                                    categories=categories, limit=max_clips, jobs=jobs, log=log))
    md = res.markdown()
    if markdown:
        from avsync.outputs import write_atomic

        write_atomic(markdown, lambda tmp: Path(tmp).write_text(md + "\n"))
    if json_out:
        print_json(res.to_json())
    else:
        typer.echo(f"real-footage protocol, part {part}: {res.n_clips} clips, {res.seconds:.0f} s\n\n{md}")
