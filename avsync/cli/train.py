"""`avsync train BACKEND DATA_DIR -o CKPT.pt`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from avsync.cli._app import app, fail, print_json, rich_progress, run
from avsync.cli._options import build, choice
from avsync.features import MODES
from avsync.train import TrainOptions

D = TrainOptions  # defaults and checks come from the library's options


@app.command()
def train(
    backend: Annotated[str, typer.Argument(help="Learned backend to train, e.g. alignnet.")],
    data_dir: Annotated[Path, typer.Argument(help="Folder of synced videos (with their own audio).")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Checkpoint to write (card: same stem, .md).")],
    steps: Annotated[int, typer.Option(help="Optimisation steps in total (a resumed run counts its earlier ones).")]
    = D.steps,
    batch: Annotated[int, typer.Option(help="Windows per step.")] = D.batch,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = D.lr,
    clip_seconds: Annotated[float, typer.Option(help="Training window length, seconds.")] = D.clip_seconds,
    val_fraction: Annotated[float, typer.Option(help="Share of the videos held out for validation.")] = D.val_fraction,
    val_every: Annotated[int, typer.Option(help="Validate and checkpoint every N steps.")] = D.val_every,
    patience: Annotated[int, typer.Option(help="Stop after N validations without improvement (0 = never).")]
    = D.patience,
    seed: Annotated[int, typer.Option(help="Seed of the split, samples and initial weights.")] = D.seed,
    mode: Annotated[str, typer.Option(
        help="Visual features: general (motion grid), dance (pose), speech (lips), auto (what most videos show).",
        **choice(MODES, "--mode"))] = D.mode,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = D.device,
    threads: Annotated[int, typer.Option(help="torch CPU threads.")] = D.threads,
    max_minutes: Annotated[float | None, typer.Option(help="Wall-clock budget; the best weights are kept.")]
    = D.max_minutes,
    no_flip: Annotated[bool, typer.Option("--no-flip", help="Disable the horizontal-flip augmentation.")] = False,
    no_specaugment: Annotated[bool, typer.Option("--no-specaugment", help="Disable SpecAugment.")] = False,
    option: Annotated[list[str] | None, typer.Option(
        "--option", help="Backend model/loss option KEY=VALUE (JSON value), repeatable, e.g. ce=0.5, pyramid=false.")]
    = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from <out>.state.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing checkpoint.")] = False,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not cache features on disk.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or log lines.")] = False,
) -> None:
    """Self-supervised training on your own synced videos: random monotonic distortions of the
    picture (speed changes 0.6×–1.6×, frame drops/duplicates), the model learns to undo them.
    Writes the checkpoint, <out>.state (for --resume) and a model card."""
    if not data_dir.is_dir():
        fail(f"'{data_dir}' is not a directory")
    opts = build(TrainOptions, steps=steps, batch=batch, lr=lr, clip_seconds=clip_seconds, val_fraction=val_fraction,
                 val_every=val_every, patience=patience, seed=seed, device=device, mode=mode,
                 augment_flip=not no_flip, spec_augment=not no_specaugment, max_minutes=max_minutes,
                 threads=threads, cache=not no_cache, model=_model_options(option) or None)

    def log(line: str) -> None:
        if not quiet and not json_out:
            sys.stderr.write(line + "\n")

    def go():  # type: ignore[no-untyped-def]
        from avsync.train.loop import train as train_fn

        with rich_progress(not quiet) as progress:
            return train_fn(backend, data_dir, out, opts, resume=resume, overwrite=overwrite, progress=progress,
                            log=log)

    res = run(go)
    if json_out:
        print_json(res.to_json())
    else:
        _print_result(res)


def _model_options(option: list[str] | None) -> dict[str, object]:
    """``--option KEY=VALUE`` pairs; a value is JSON when it parses as JSON, else a string."""
    model_opts: dict[str, object] = {}
    for kv in option or []:
        if "=" not in kv:
            fail(f"--option must be KEY=VALUE (got '{kv}')")
        k, v = kv.split("=", 1)
        try:
            model_opts[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            model_opts[k.strip()] = v
    return model_opts


def _print_result(res) -> None:  # type: ignore[no-untyped-def]
    b, a = res.before, res.after
    typer.echo(f"{res.backend}: {res.steps} steps in {res.seconds / 60:.1f} min ({res.stopped}); "
               f"kept step {res.best_step}")
    typer.echo(f"validation error {b['error']:.3f} → {a['error']:.3f} frames"
               + (f", within ±1 frame {b['within1']:.1%} → {a['within1']:.1%}" if "within1" in a else ""))
    typer.echo(f"checkpoint: {res.checkpoint}\ncard:       {res.card}")
