"""The training loop shared by every learned backend (see :mod:`avsync.train`)."""

from __future__ import annotations

import copy
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from avsync.errors import InputError, OutputError
from avsync.progress import Progress
from avsync.train import TrainOptions, get_trainable
from avsync.train.data import SampleStream, fixed_samples, list_videos, load_features, split_by_video

STATE_SUFFIX = ".state"


@dataclass
class TrainResult:
    """What :func:`train` did."""

    checkpoint: str
    card: str
    backend: str
    steps: int  # steps done in total (including resumed ones)
    best_step: int  # step of the kept weights
    seconds: float  # wall time of all sessions
    stopped: str  # why training ended
    before: dict[str, float]  # validation metrics of the initial weights
    after: dict[str, float]  # validation metrics of the kept weights
    n_train: int  # training videos
    n_val: int  # validation videos
    history: list[dict[str, float]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def state_path(checkpoint: str | os.PathLike[str]) -> Path:
    """The resumable side state of ``checkpoint``: ``<checkpoint>.state``."""
    return Path(str(checkpoint) + STATE_SUFFIX)


def card_path(checkpoint: str | os.PathLike[str]) -> Path:
    """The model card written beside ``checkpoint``: same stem, ``.md``."""
    return Path(checkpoint).with_suffix(".md")


def train(
    backend: str,
    data_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    opts: TrainOptions = TrainOptions(),
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: Progress | None = None,
    log: Any = None,
) -> TrainResult:
    """Self-supervised training of ``backend`` on the synced videos in ``data_dir``.

    Parameters
    ----------
    backend : str
        A backend that registered a :class:`~avsync.train.Trainable`.
    data_dir : path
        Folder of synced videos (with their own audio), searched recursively.
    out : path
        Checkpoint to write (the best weights by validation error); ``<out>.state`` holds
        the optimiser state for ``resume``; ``<out stem>.md`` is the model card.
    opts : TrainOptions
    resume : bool
        Continue from ``<out>.state`` (same backend and dimensions) up to ``opts.steps``.
    overwrite : bool
        Replace an existing checkpoint when not resuming.
    progress : Progress, optional
        Stages ``features`` and ``train``.
    log : callable, optional
        ``log(str)`` receives one line per validation.

    Returns
    -------
    TrainResult
    """
    import torch

    from avsync.device import resolve_device
    from avsync.hub import save_checkpoint

    out = Path(out)
    sp = state_path(out)
    if resume and not sp.is_file():
        raise InputError(f"nothing to resume: '{sp}' does not exist")
    if not resume and out.exists() and not overwrite:
        raise OutputError(f"'{out}' exists (use --overwrite, or --resume to continue training)")
    if not out.parent.exists():
        raise OutputError(f"directory '{out.parent}' does not exist")
    if opts.steps < 1 or opts.batch < 1:
        raise InputError("steps and batch must be at least 1")

    torch.set_num_threads(max(1, int(opts.threads)))
    device = resolve_device(opts.device)
    tr = get_trainable(backend, mode=opts.mode, **(opts.model or {}))

    paths = list_videos(data_dir)
    if not paths:
        raise InputError(f"no videos in '{data_dir}'")
    train_p, val_p = split_by_video(paths, opts.val_fraction, opts.seed)
    feats = load_features(paths, opts.mode, cache=opts.cache, progress=progress)
    clips = {name: c for name, a, v in feats if (c := tr.prepare(a, v, name)) is not None}
    train_clips = [clips[p.name] for p in train_p if p.name in clips]
    val_clips = [clips[p.name] for p in val_p if p.name in clips]
    val_note = f"{len(val_clips)} held-out videos"
    if not train_clips:
        raise InputError(f"no usable training videos in '{data_dir}' (each needs an audio stream)")
    if not val_clips:
        val_clips = train_clips
        val_note = "no held-out video (fewer than 2 videos): validated on training videos"
    fps = float(np.median([c.fps for c in train_clips]))
    window = max(8, int(round(opts.clip_seconds * fps)))

    dims = tr.dims(train_clips, opts)
    torch.manual_seed(opts.seed)
    model = tr.make_model(dims).to(device)
    optim = torch.optim.Adam(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)

    val_batch = tr.make_batch(fixed_samples(val_clips, window, opts.val_samples, seed=opts.seed + 1000), None, None,
                              device)
    augment = {"flip": opts.augment_flip, "spec": opts.spec_augment}

    def evaluate(m: Any) -> dict[str, float]:
        m.eval()
        with torch.no_grad():
            r = tr.val_metrics(m, val_batch)
        m.train()
        return {k: float(v) for k, v in r.items()}

    step, best_step, bad, seconds_before = 0, 0, 0, 0.0
    history: list[dict[str, float]] = []
    best = math.inf
    best_state: dict[str, Any] | None = None
    before: dict[str, float] | None = None
    if resume:
        st = torch.load(sp, map_location=device, weights_only=True)
        if st.get("backend") != backend or st.get("dims") != _plain(dims):
            raise InputError(f"'{sp}' is for another backend or model size; cannot resume")
        model.load_state_dict(st["model"])
        optim.load_state_dict(st["optimizer"])
        step, best_step, bad = int(st["step"]), int(st["best_step"]), int(st["bad"])
        seconds_before, best = float(st["seconds"]), float(st["best"])
        best_state, before, history = st["best_state"], dict(st["before"]), list(st["history"])
    if before is None:
        before = evaluate(model)
        best, best_state = before["error"], copy.deepcopy(model.state_dict())
        history.append({"step": 0, **before})
        if log:
            log(f"step 0: validation error {before['error']:.4f} ({val_note})")

    stream = SampleStream(train_clips, window, seed=opts.seed * 7919 + step)
    rng = np.random.default_rng(opts.seed * 104729 + step + 1)
    t0 = time.perf_counter()
    stopped = "step budget reached"
    running: list[float] = []

    def save_state() -> None:
        torch.save({
            "backend": backend, "dims": _plain(dims), "model": model.state_dict(), "optimizer": optim.state_dict(),
            "step": step, "best_step": best_step, "bad": bad, "best": best, "best_state": best_state,
            "before": before, "history": history, "seconds": seconds_before + time.perf_counter() - t0,
        }, str(sp) + ".tmp")
        os.replace(str(sp) + ".tmp", sp)

    def save_best(after: dict[str, float] | None) -> None:
        model_cfg = {**_plain(opts), "window_frames": window, "fps": fps, "data_dir": str(data_dir),
                     "n_train": len(train_clips), "n_val": len(val_p)}
        metrics = {"before": before, "after": after or {}, "best_step": best_step, "steps": step,
                   "seconds": round(seconds_before + time.perf_counter() - t0, 1)}
        save_checkpoint(out, backend, dims, model_cfg, best_state or model.state_dict(), metrics)

    model.train()
    if progress is not None:
        progress("train", step, opts.steps)
    while step < opts.steps:
        samples = stream.batch(opts.batch)
        batch = tr.make_batch(samples, rng, augment, device)
        loss, _ = tr.loss(model, batch)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        if opts.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), opts.grad_clip)
        optim.step()
        step += 1
        running.append(float(loss.detach()))
        if progress is not None:
            progress("train", step, opts.steps)
        over_time = opts.max_minutes is not None and (time.perf_counter() - t0) > opts.max_minutes * 60
        if step % opts.val_every == 0 or step == opts.steps or over_time:
            m = evaluate(model)
            history.append({"step": step, "train_loss": float(np.mean(running)), **m})
            running = []
            if m["error"] < best - 1e-6:
                best, best_step, bad = m["error"], step, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                bad += 1
            if log:
                log(f"step {step}: train loss {history[-1]['train_loss']:.4f}, validation error {m['error']:.4f}"
                    f" (best {best:.4f} at step {best_step})")
            save_state()
            save_best(None)
            if opts.patience and bad >= opts.patience:
                stopped = f"early stopping (no improvement in {opts.patience} validations)"
                break
        if over_time:
            stopped = f"time budget of {opts.max_minutes} min reached"
            break

    model.load_state_dict(best_state)
    after = evaluate(model)
    save_state()
    save_best(after)
    seconds = seconds_before + time.perf_counter() - t0
    result = TrainResult(
        checkpoint=str(out), card=str(card_path(out)), backend=backend, steps=step, best_step=best_step,
        seconds=round(seconds, 1), stopped=stopped, before=before, after=after, n_train=len(train_clips),
        n_val=len(val_p), history=history,
    )
    write_card(result, opts, tr.describe(_plain(dims)), [p.name for p in train_p], [p.name for p in val_p],
               window, fps, val_note, data_dir)
    return result


def _plain(x: Any) -> Any:
    """Dataclasses / tuples / numpy scalars → plain JSON-like values (as stored in checkpoints)."""
    import dataclasses

    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return _plain(dataclasses.asdict(x))
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    return x


def _fmt_metrics(m: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in m.items())


def write_card(
    res: TrainResult, opts: TrainOptions, model_md: str, train_names: list[str], val_names: list[str],
    window: int, fps: float, val_note: str, data_dir: str | os.PathLike[str],
) -> Path:
    """Write the model card (markdown) beside the checkpoint."""
    import torch

    from avsync.hub import sha256_file

    p = Path(res.card)
    rows = "\n".join(
        f"| {h['step']} | {h.get('train_loss', float('nan')):.4f} | "
        + " | ".join(f"{h.get(k, float('nan')):.4f}" for k in res.after) + " |"
        for h in res.history
    )
    header = "| step | train loss | " + " | ".join(res.after) + " |\n|---|---|" + "---|" * len(res.after)

    def names(xs: list[str]) -> str:
        return ", ".join(xs) if len(xs) <= 12 else f"{', '.join(xs[:6])}, … , {', '.join(xs[-3:])}"

    text = f"""# {Path(res.checkpoint).stem} — `{res.backend}` checkpoint

Written by `avsync train` ({time.strftime('%Y-%m-%d %H:%M')}). sha256 `{sha256_file(res.checkpoint)}`.

## Data
- Folder: `{data_dir}` — {res.n_train} training videos, {res.n_val} validation videos
  (split by video, seed {opts.seed}).
- Training: {names(train_names)}
- Validation: {names(val_names) or '—'} ({val_note})
- Visual features: mode `{opts.mode}`; windows of {window} frames ({window / fps:.1f} s at {fps:g} fps).
- Self-supervision: each window's visual sequence is distorted by a random monotonic warp (AlignNet-style
  speed changes 0.6×–1.6×, temporal-autoencoder-style drops/duplicates, or none), the audio is kept;
  the target is the audio frame of every distorted video frame.
- Augmentation: horizontal flip {'on' if opts.augment_flip else 'off'}, SpecAugment {'on' if opts.spec_augment
                                                                                      else 'off'}.

## Training
- Steps: {res.steps} (kept weights from step {res.best_step}); batch {opts.batch}; Adam lr {opts.lr};
  stopped by: {res.stopped}.
- Wall time: {res.seconds / 60:.1f} min on {platform.machine()} CPU, {opts.threads} torch threads
  (torch {torch.__version__}), machine shared with other jobs.

## Validation ({opts.val_samples} fixed distorted windows of the validation videos)
- Before training: {_fmt_metrics(res.before)}
- After training:  {_fmt_metrics(res.after)}

`error` is the mean absolute error of the predicted audio position of each video frame, in frames;
`within1` is the share of frames within ±1 frame; `itu` the share inside the ITU-R BT.1359 window.

{header}
{rows}

## Model
{model_md}
"""
    tmp = p.with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, p)
    return p
