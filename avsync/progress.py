"""Progress reporting without UI objects in the library.

Library functions take ``progress: Progress | None``; the CLI passes one that draws Rich
bars, tests pass nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Protocol, TypeVar

T = TypeVar("T")


class Progress(Protocol):
    def __call__(self, stage: str, done: float, total: float | None) -> None:
        """Report ``done`` of ``total`` units of work for ``stage`` (total None = unknown)."""


def track(
    items: Iterable[T], stage: str, total: float | None, progress: Progress | None, every: int = 1
) -> Iterator[T]:
    """Yield ``items`` and report progress to ``progress`` every ``every`` items."""
    if progress is None:
        yield from items
        return
    i = 0
    progress(stage, 0, total)
    for i, item in enumerate(items, 1):
        yield item
        if i % every == 0:
            progress(stage, i, total)
    progress(stage, total if total is not None else i, total if total is not None else i)


@contextmanager
def timed(seconds: dict[str, float], stage: str, add: bool = False) -> Iterator[None]:
    """Record the wall time of the ``with`` block as ``seconds[stage]`` (added to what is
    there with ``add``): the flows' per-stage timings."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        seconds[stage] = (seconds.get(stage, 0.0) if add else 0.0) + time.perf_counter() - t0
