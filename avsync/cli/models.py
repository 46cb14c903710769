"""``avsync models list|fetch|verify|path|register``: the checkpoint registry and cache."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from avsync.cli._app import App, app, fail, print_json, rich_progress, run

models_app = App(
    name="models",
    help="Pretrained checkpoints: list the registry, download on first use, verify sha256.\n\n"
    "Cache: $AVSYNC_CACHE/models (else $XDG_CACHE_HOME/avsync/models, ~/.cache/avsync/models). "
    "Mirror: AVSYNC_MODEL_URL=<base URL or local directory>.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)
app.add_typer(models_app, name="models")


def _human_size(n: int | None) -> str:
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


@models_app.command("list")
def list_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON list on stdout.")] = False,
) -> None:
    """List registered checkpoints and whether they are cached locally."""
    from avsync import hub

    entries = run(hub.list_models)
    if as_json:
        print_json(entries)
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not entries:
        console.print(f"no checkpoints registered in {hub.registry_path()}")
        return
    table = Table(title="avsync checkpoints")
    for col in ("name", "backend", "size", "cached", "bundled", "data"):
        table.add_column(col, overflow="fold")
    for e in entries:
        table.add_row(
            e["name"],
            e["backend"],
            _human_size(e.get("size")),
            "yes" if e["cached"] else "no",
            "yes" if e.get("bundled") else "no",
            e.get("data") or "",
        )
    console.print(table)


@models_app.command("fetch")
def fetch_cmd(
    names: Annotated[list[str], typer.Argument(help="Registry names to download (and verify).")],
) -> None:
    """Download checkpoints into the cache (sha256-verified); print each path."""
    from avsync import hub

    for name in names:
        with rich_progress() as progress:
            path = run(lambda n=name, p=progress: hub.fetch(n, progress=p))
        typer.echo(str(path))


@models_app.command("verify")
def verify_cmd(
    name: Annotated[str | None, typer.Argument(help="One registry name; default: every local one.")] = None,
) -> None:
    """Check local checkpoints against their sha256; exit 1 when any fails.

    Without NAME, checks every cached or bundled checkpoint and lists the others as not cached.
    """
    from avsync import hub

    if name is not None:
        ok, message = hub.verify(name)
        if not ok:
            fail(message)
        typer.echo(message)
        return
    entries = run(hub.list_models)
    failed = 0
    for e in entries:
        if not e["cached"]:
            typer.echo(f"{e['name']}: not cached (fetched on first use)")
            continue
        ok, message = hub.verify(e["name"])
        if ok:
            typer.echo(message)
        else:
            failed += 1
            typer.echo(f"avsync: error: {message}", err=True)
    if not entries:
        typer.echo(f"no checkpoints registered in {hub.registry_path()}")
    if failed:
        raise typer.Exit(1)


@models_app.command("path")
def path_cmd(
    name: Annotated[str, typer.Argument(help="Registry name or checkpoint file.")],
) -> None:
    """Print the local path of a checkpoint, downloading it first if needed."""
    from avsync import hub

    with rich_progress() as progress:
        path = run(lambda: hub.resolve(name, progress=progress))
    typer.echo(str(path))


@models_app.command("register")
def register_cmd(
    path: Annotated[Path, typer.Argument(help="The trained checkpoint file.")],
    name: Annotated[str, typer.Option(help="Registry name (what users pass as --checkpoint).")],
    backend: Annotated[str, typer.Option(help="Backend that loads it; must match the checkpoint's.")],
    card: Annotated[str, typer.Option(help="Model card, relative to the repository root (model_cards/NAME.md).")],
    url: Annotated[str | None, typer.Option(help="Download URL (none for bundled / mirror-only files).")] = None,
    description: Annotated[str, typer.Option(help="One line: what the model is.")] = "",
    data: Annotated[str, typer.Option(help="One line: what it was trained on.")] = "",
    bundle: Annotated[bool, typer.Option("--bundle", help="Ship the file inside the package (avsync/checkpoints/).")]
    = False,
    registry: Annotated[Path | None, typer.Option(
        help="Registry file to write (default: $AVSYNC_REGISTRY or the package's).")] = None,
) -> None:
    """Add or replace a registry entry for a trained checkpoint; print the entry (JSON).

    Loads the file to check it, computes its sha256 and size, rewrites the registry atomically.
    """
    from avsync import hub

    entry = run(lambda: hub.register_checkpoint(
        path, name, backend, card, url=url, description=description, data=data, bundle=bundle,
        registry=registry,
    ))
    print_json(entry)
