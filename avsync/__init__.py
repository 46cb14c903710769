"""avsync: re-time video to audio.

The front door, for scripts::

    import avsync

    result = avsync.align("take.mp4", "song.wav", "take_synced.mp4", avsync.AlignOptions(mode="dance"))
    offset = avsync.detect_offset("clip.mp4", avsync.OffsetOptions(max_shift=2.0))
    dance = avsync.retarget("dance.mp4", "new_song.mp3", "dance_on_new_song.mp4", avsync.RetargetOptions(loop=True))

Every name below is imported on first use, so ``import avsync`` stays light (no numpy,
torch or mediapipe until a call needs them). ``avsync.align`` and ``avsync.retarget`` are also
the modules of those flows (``avsync.align.compute_correspondence``, ...); calling them calls
the flow, :func:`avsync.align.align` and :func:`avsync.retarget.retarget`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> module that defines it (for "align" and "retarget": the module itself, callable)
_EXPORTS = {
    "align": "avsync.align",
    "AlignOptions": "avsync.align",
    "AlignResult": "avsync.align",
    "detect_offset": "avsync.offset",
    "OffsetOptions": "avsync.offset",
    "OffsetResult": "avsync.offset",
    "retarget": "avsync.retarget",
    "RetargetOptions": "avsync.retarget",
    "RetargetResult": "avsync.retarget",
    "AvsyncError": "avsync.errors",
    "InputError": "avsync.errors",
    "OutputError": "avsync.errors",
    "CannotMeasure": "avsync.errors",
    "ModelError": "avsync.errors",
}
_MODULES = {"align", "retarget"}

__all__ = [
    "__version__",
    "align", "AlignOptions", "AlignResult",
    "detect_offset", "OffsetOptions", "OffsetResult",
    "retarget", "RetargetOptions", "RetargetResult",
    "AvsyncError", "InputError", "OutputError", "CannotMeasure", "ModelError",
]

if TYPE_CHECKING:  # what static checkers and editors see
    from avsync.align import AlignOptions, AlignResult, align
    from avsync.errors import AvsyncError, CannotMeasure, InputError, ModelError, OutputError
    from avsync.offset import OffsetOptions, OffsetResult, detect_offset
    from avsync.retarget import RetargetOptions, RetargetResult, retarget


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'avsync' has no attribute '{name}'")
    mod = importlib.import_module(module)
    value = mod if name in _MODULES else getattr(mod, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
