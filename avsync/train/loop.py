"""The training loop shared by every learned backend (see :mod:`avsync.train`)."""

from __future__ import annotations

import copy
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field, replace
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


@dataclass
class TrainData:
    """The clips of a training run, split by video (see :func:`load_data`)."""

    train_names: list[str]  # training video file names
    val_names: list[str]  # held-out video file names
    train_clips: list[Any]  # ClipArrays of the training videos the trainable could use
    val_clips: list[Any]  # ClipArrays validated on (the training clips when none is held out)
    val_note: str  # human words on the validation set
    fps: float  # median frame rate of the training clips
    window: int  # training window, frames


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

    out = Path(out)
    check_request(out, opts, resume, overwrite, data_dir)
    torch.set_num_threads(max(1, int(opts.threads)))
    device = resolve_device(opts.device)
    opts = resolve_mode(opts, data_dir)
    tr = get_trainable(backend, mode=opts.mode, **(opts.model or {}))
    data = load_data(tr, data_dir, opts, progress)
    run = _Session(backend, tr, data, opts, device, out, data_dir, log)
    if resume:
        run.restore()
    run.begin()
    stopped = run.optimise(progress)
    result = run.result(stopped, run.finish())
    write_card(result, opts, tr.describe(_plain(run.dims)), data.train_names, data.val_names, data.window, data.fps,
               data.val_note, data_dir)
    return result


def resolve_mode(opts: TrainOptions, data_dir: str | os.PathLike[str]) -> TrainOptions:
    """``mode='auto'``: the mode ``auto`` picks for most of the videos (one model needs one kind
    of visual input), ties going to the more general one."""
    if opts.mode != "auto":
        return opts
    from collections import Counter

    from avsync.features.extract import probe_mode

    votes = Counter(probe_mode(p) for p in list_videos(data_dir))
    order = ("general", "dance", "speech")
    mode = max(order, key=lambda m: (votes[m], -order.index(m))) if votes else "general"
    return replace(opts, mode=mode)


def check_request(out: Path, opts: TrainOptions, resume: bool, overwrite: bool,
                  data_dir: str | os.PathLike[str] | None = None) -> None:
    """Refuse a run that cannot start: nothing to resume, an existing checkpoint, a missing
    output directory, no steps, or outputs (checkpoint, state, card) that name each other or
    a video of ``data_dir`` (:func:`avsync.outputs.check_distinct`)."""
    from avsync.outputs import check_distinct

    sp = state_path(out)
    check_distinct({"the data folder": data_dir},
                   {"the checkpoint": out, "its state file": sp, "its model card": card_path(out)})
    if resume and not sp.is_file():
        raise InputError(f"nothing to resume: '{sp}' does not exist")
    if not resume and out.exists() and not overwrite:
        raise OutputError(f"'{out}' exists (use --overwrite, or --resume to continue training)")
    if not out.parent.exists():
        raise OutputError(f"directory '{out.parent}' does not exist")
    if opts.steps < 1 or opts.batch < 1:
        raise InputError("steps and batch must be at least 1")


def load_data(tr: Any, data_dir: str | os.PathLike[str], opts: TrainOptions, progress: Progress | None) -> TrainData:
    """Features of every video in ``data_dir`` (cached), reduced by the trainable, split by video."""
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
    return TrainData([p.name for p in train_p], [p.name for p in val_p], train_clips, val_clips, val_note, fps,
                     window)


class _Session:
    """One training run: the model, its optimiser, the best weights so far, the history and
    the counters, with the loop's stages as methods (:func:`train` calls them in order)."""

    def __init__(self, backend: str, tr: Any, data: TrainData, opts: TrainOptions, device: str, out: Path,
                 data_dir: str | os.PathLike[str], log: Any) -> None:
        import torch

        self.backend, self.tr, self.data, self.opts, self.device = backend, tr, data, opts, device
        self.out, self.sp, self.data_dir, self.log = out, state_path(out), data_dir, log
        self.dims = tr.dims(data.train_clips, opts)
        torch.manual_seed(opts.seed)
        self.model = tr.make_model(self.dims).to(device)
        self.optim = torch.optim.Adam(self.model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
        self.val_batch = tr.make_batch(
            fixed_samples(data.val_clips, data.window, opts.val_samples, seed=opts.seed + 1000), None, None, device)
        self.augment = {"flip": opts.augment_flip, "spec": opts.spec_augment}
        self.step, self.best_step, self.bad, self.seconds_before = 0, 0, 0, 0.0
        self.history: list[dict[str, float]] = []
        self.best = math.inf
        self.best_state: dict[str, Any] | None = None
        self.before: dict[str, float] | None = None
        self.running: list[float] = []
        self.t0 = time.perf_counter()

    def evaluate(self) -> dict[str, float]:
        """Validation metrics of the current weights (eval mode, no gradients)."""
        import torch

        self.model.eval()
        with torch.no_grad():
            r = self.tr.val_metrics(self.model, self.val_batch)
        self.model.train()
        return {k: float(v) for k, v in r.items()}

    def restore(self) -> None:
        """Continue from the side state ``<out>.state`` (same backend and dimensions)."""
        import torch

        st = torch.load(self.sp, map_location=self.device, weights_only=True)
        if st.get("backend") != self.backend or st.get("dims") != _plain(self.dims):
            raise InputError(f"'{self.sp}' is for another backend or model size; cannot resume")
        self.model.load_state_dict(st["model"])
        self.optim.load_state_dict(st["optimizer"])
        self.step, self.best_step, self.bad = int(st["step"]), int(st["best_step"]), int(st["bad"])
        self.seconds_before, self.best = float(st["seconds"]), float(st["best"])
        self.best_state, self.before, self.history = st["best_state"], dict(st["before"]), list(st["history"])

    def begin(self) -> None:
        """Validate the initial weights (unless resumed), then seed the sample stream."""
        if self.before is None:
            self.before = self.evaluate()
            self.best, self.best_state = self.before["error"], copy.deepcopy(self.model.state_dict())
            self.history.append({"step": 0, **self.before})
            if self.log:
                self.log(f"step 0: validation error {self.before['error']:.4f} ({self.data.val_note})")
        seed, step = self.opts.seed, self.step
        self.stream = SampleStream(self.data.train_clips, self.data.window, seed=seed * 7919 + step)
        self.rng = np.random.default_rng(seed * 104729 + step + 1)
        self.t0 = time.perf_counter()

    def optimise(self, progress: Progress | None) -> str:
        """Steps until the budget, early stopping or the time budget; why it stopped."""
        opts = self.opts
        self.model.train()
        if progress is not None:
            progress("train", self.step, opts.steps)
        while self.step < opts.steps:
            self.train_step()
            if progress is not None:
                progress("train", self.step, opts.steps)
            over_time = opts.max_minutes is not None and (time.perf_counter() - self.t0) > opts.max_minutes * 60
            if (self.step % opts.val_every == 0 or self.step == opts.steps or over_time) and self.validate():
                return f"early stopping (no improvement in {opts.patience} validations)"
            if over_time:
                return f"time budget of {opts.max_minutes} min reached"
        return "step budget reached"

    def train_step(self) -> None:
        """One optimisation step on a fresh batch of distorted windows."""
        import torch

        batch = self.tr.make_batch(self.stream.batch(self.opts.batch), self.rng, self.augment, self.device)
        loss, _ = self.tr.loss(self.model, batch)
        self.optim.zero_grad(set_to_none=True)
        loss.backward()
        if self.opts.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.opts.grad_clip)
        self.optim.step()
        self.step += 1
        self.running.append(float(loss.detach()))

    def validate(self) -> bool:
        """Validate, keep the best weights, write state and checkpoint; True = stop early."""
        m = self.evaluate()
        self.history.append({"step": self.step, "train_loss": float(np.mean(self.running)), **m})
        self.running = []
        if m["error"] < self.best - 1e-6:
            self.best, self.best_step, self.bad = m["error"], self.step, 0
            self.best_state = copy.deepcopy(self.model.state_dict())
        else:
            self.bad += 1
        if self.log:
            self.log(f"step {self.step}: train loss {self.history[-1]['train_loss']:.4f}, validation error "
                     f"{m['error']:.4f} (best {self.best:.4f} at step {self.best_step})")
        self.save_state()
        self.save_best(None)
        return bool(self.opts.patience and self.bad >= self.opts.patience)

    def finish(self) -> dict[str, float]:
        """Reload the best weights, validate them, write state and checkpoint; their metrics."""
        self.model.load_state_dict(self.best_state)
        after = self.evaluate()
        self.save_state()
        self.save_best(after)
        return after

    def seconds(self) -> float:
        """Wall time of all sessions so far."""
        return self.seconds_before + time.perf_counter() - self.t0

    def save_state(self) -> None:
        """The resumable side state ``<out>.state``, written atomically."""
        import torch

        torch.save({
            "backend": self.backend, "dims": _plain(self.dims), "model": self.model.state_dict(),
            "optimizer": self.optim.state_dict(), "step": self.step, "best_step": self.best_step, "bad": self.bad,
            "best": self.best, "best_state": self.best_state, "before": self.before, "history": self.history,
            "seconds": self.seconds(),
        }, str(self.sp) + ".tmp")
        os.replace(str(self.sp) + ".tmp", self.sp)

    def save_best(self, after: dict[str, float] | None) -> None:
        """The checkpoint: the best weights so far, dims, training config and metrics."""
        from avsync.hub import save_checkpoint

        d = self.data
        model_cfg = {**_plain(self.opts), "window_frames": d.window, "fps": d.fps, "data_dir": str(self.data_dir),
                     "n_train": len(d.train_clips), "n_val": len(d.val_names)}
        metrics = {"before": self.before, "after": after or {}, "best_step": self.best_step, "steps": self.step,
                   "seconds": round(self.seconds(), 1)}
        save_checkpoint(self.out, self.backend, self.dims, model_cfg, self.best_state or self.model.state_dict(),
                        metrics)

    def result(self, stopped: str, after: dict[str, float]) -> TrainResult:
        """What the run did."""
        assert self.before is not None
        return TrainResult(
            checkpoint=str(self.out), card=str(card_path(self.out)), backend=self.backend, steps=self.step,
            best_step=self.best_step, seconds=round(self.seconds(), 1), stopped=stopped, before=self.before,
            after=after, n_train=len(self.data.train_clips), n_val=len(self.data.val_names), history=self.history,
        )


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
