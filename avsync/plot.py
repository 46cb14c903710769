"""Plots that say more than numbers: the warp of ``align`` (and ``retarget``)."""

from __future__ import annotations

import os

import numpy as np

from avsync.outputs import write_atomic
from avsync.types import Correspondence


def save_figure(fig, path: str | os.PathLike[str], dpi: int = 110,  # type: ignore[no-untyped-def]
                overwrite: bool = True) -> None:
    """Write ``fig`` as a PNG atomically (temp file, then rename) and close it, whatever happens.
    ``overwrite=False``: never replace a file at ``path`` (:func:`avsync.outputs.commit`)."""
    plt = pyplot()

    def _w(tmp: str) -> None:
        fig.savefig(tmp, dpi=dpi, format="png")

    try:
        write_atomic(path, _w, overwrite=overwrite)
    finally:
        plt.close(fig)


def pyplot():  # type: ignore[no-untyped-def]
    """matplotlib.pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_warp(
    corr: Correspondence,
    path: str | os.PathLike[str],
    *,
    title: str = "",
    truth: Correspondence | None = None,
    overwrite: bool = True,
) -> None:
    """Source (picture) time against audio time, with the identity line and confidence shading.

    Top: the warp (source time vs output/audio time). Bottom: the lag (picture − audio, ms;
    positive = audio leads) with per-frame confidence as shading.
    """
    plt = pyplot()
    t = corr.times
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True, height_ratios=[3, 2])
    lo, hi = float(min(t.min(), corr.src_time.min())), float(max(t.max(), corr.src_time.max()))
    ax.plot([lo, hi], [lo, hi], color="0.6", ls="--", lw=1, label="identity (no correction)")
    if truth is not None:
        ax.plot(truth.times, truth.src_time, color="tab:green", lw=1, alpha=0.8, label="ground truth")
    ax.plot(t, corr.src_time, color="tab:blue", lw=1.5, label="source frame shown")
    ax.set_ylabel("source (picture) time [s]")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    lag_ms = corr.lag * 1000
    if truth is not None:
        ax2.plot(truth.times, truth.lag * 1000, color="tab:green", lw=1, alpha=0.8)
    ax2.plot(t, lag_ms, color="tab:blue", lw=1)
    if corr.confidence is not None:
        c = np.clip(corr.confidence, 0, 1)
        span = max(1.0, float(np.ptp(lag_ms)))
        ax2.fill_between(t, lag_ms - span * 0.15 * (1 - c), lag_ms + span * 0.15 * (1 - c),
                         color="tab:orange", alpha=0.35, lw=0, label="uncertainty (1 − confidence)")
        ax2.legend(loc="upper left", fontsize=8)
    ax2.axhline(0, color="0.6", lw=1, ls="--")
    ax2.set_ylabel("lag [ms]\n(+ = audio leads)")
    ax2.set_xlabel("output / audio time [s]")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, overwrite=overwrite)
