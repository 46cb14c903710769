"""The shared self-supervised training loop of the learned backends.

A learned backend plugs in by registering a :class:`Trainable` from its module in this
package (``avsync/train/mynet.py``, imported when a trainable is first asked for)::

    from avsync.train import register_trainable
    register_trainable("mynet", MyNetTrainable)

and ``avsync train mynet DATA_DIR -o ckpt.pt`` then works: the loop (:func:`avsync.train.loop.train`)
extracts and caches features of every synced video in ``DATA_DIR``, splits them by video,
draws randomly warped windows online (:mod:`avsync.train.data`), optimises with Adam,
validates every ``val_every`` steps, stops early, and writes the checkpoint (model
dimensions + training config, :func:`avsync.hub.save_checkpoint`), a resumable side state
file ``<ckpt>.state`` and a model card ``<ckpt stem>.md``.

This module imports neither torch nor the feature extractors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from avsync.errors import InputError


@dataclass(frozen=True)
class TrainOptions:
    """Options of :func:`avsync.train.loop.train`."""

    steps: int = 2000  # optimisation steps (total, counting those of a resumed run)
    batch: int = 16  # windows per step
    lr: float = 1e-3  # Adam learning rate
    weight_decay: float = 0.0  # Adam weight decay
    clip_seconds: float = 10.0  # training window length, seconds of video
    val_fraction: float = 0.15  # share of the videos (not windows) held out for validation
    val_samples: int = 48  # fixed, seeded validation windows
    val_every: int = 50  # validate (and checkpoint) every this many steps
    patience: int = 8  # stop after this many validations without improvement (0 = never)
    seed: int = 0  # seeds the split, the samples and the initial weights
    device: str = "auto"  # auto | cpu | cuda
    mode: str = "general"  # visual features: general (motion grid) | dance (pose) | speech (lips) | auto (the data's)
    augment_flip: bool = True  # horizontal flip of the picture (keypoints / motion grid)
    spec_augment: bool = True  # SpecAugment time and frequency masks on the log-mel
    max_minutes: float | None = None  # wall-clock budget; the best checkpoint so far is kept
    threads: int = 2  # torch CPU threads
    grad_clip: float = 5.0  # gradient norm clipping
    cache: bool = True  # cache extracted features on disk
    model: dict | None = None  # backend-specific model options (e.g. ablation switches)

    def __post_init__(self) -> None:
        from avsync import options as check
        from avsync.features import MODES

        for name in ("steps", "batch", "val_every", "val_samples", "threads"):
            check.whole_within(name, getattr(self, name), 1)
        check.whole_within("patience", self.patience, 0)
        check.whole_within("seed", self.seed, 0)
        check.positive("lr", self.lr, "")
        check.at_least("weight_decay", self.weight_decay, 0.0)
        check.positive("clip_seconds", self.clip_seconds)
        check.at_least("val_fraction", self.val_fraction, 0.0)
        if not self.val_fraction < 1:
            raise check.OptionError("val_fraction", f"must be below 1 (got {self.val_fraction})")
        check.positive("grad_clip", self.grad_clip, "")
        check.device("device", self.device)
        check.one_of("mode", self.mode, MODES)
        if self.max_minutes is not None:
            check.positive("max_minutes", self.max_minutes, "minutes")


@dataclass
class Batch:
    """What a :class:`Trainable` makes of a list of samples: tensors by name."""

    tensors: dict[str, Any]
    size: int


class Trainable(Protocol):
    """What a learned backend provides to the shared loop."""

    name: str  # backend name (checkpoints record it)
    mode: str  # visual feature mode it was built for

    def prepare(self, audio: Any, visual: Any, name: str) -> Any:
        """Reduce one clip's AudioFeatures / VisualFeatures to :class:`avsync.train.data.ClipArrays`
        (None: the clip lacks what this backend needs, e.g. no keypoints)."""
        ...

    def dims(self, clips: list[Any], opts: TrainOptions) -> dict[str, Any]:
        """Model dimensions (plain values) for these clips."""
        ...

    def make_model(self, dims: dict[str, Any]) -> Any:
        """A fresh ``torch.nn.Module`` for ``dims``."""
        ...

    def make_batch(self, samples: list[Any], rng: Any, augment: dict[str, bool] | None, device: str) -> Batch:
        """Tensors for the model. ``augment``: None (validation) or ``{"flip": bool, "spec": bool}``."""
        ...

    def loss(self, model: Any, batch: Batch) -> tuple[Any, dict[str, float]]:
        """Scalar training loss and named parts."""
        ...

    def val_metrics(self, model: Any, batch: Batch) -> dict[str, float]:
        """Validation numbers; must include ``error`` (lower is better: early stopping)."""
        ...

    def describe(self, dims: dict[str, Any]) -> str:
        """Markdown for the model card: inputs, structure, and what differs from the paper."""
        ...


# visual feature kind of each training mode (alignnet, tae, avst)
MODE_KIND = {"general": "motion", "dance": "pose", "speech": "lips", "auto": "motion"}

_TRAINABLES: dict[str, Callable[..., Trainable]] = {}


def register_trainable(name: str, factory: Callable[..., Trainable]) -> None:
    """Register ``factory(mode=..., **model_options) -> Trainable`` under backend ``name``."""
    _TRAINABLES[name] = factory


def _load_builtin() -> None:
    # Import this package's modules: each trainable module registers itself at import.
    import importlib
    import pkgutil

    import avsync.train as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"avsync.train.{mod.name}")


def get_trainable(name: str, mode: str = "general", **model_options: Any) -> Trainable:
    """Build the Trainable of backend ``name`` (trainable modules register at import)."""
    _load_builtin()
    if name not in _TRAINABLES:
        known = ", ".join(sorted(_TRAINABLES)) or "none"
        raise InputError(f"backend '{name}' is not trainable (trainable: {known})")
    return _TRAINABLES[name](mode=mode, **model_options)


def trainable_names() -> list[str]:
    _load_builtin()
    return sorted(_TRAINABLES)


__all__ = ["TrainOptions", "Batch", "Trainable", "MODE_KIND", "register_trainable", "get_trainable",
           "trainable_names"]
