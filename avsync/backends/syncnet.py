"""SyncNet (Chung & Zisserman, "Out of time: automated lip sync in the wild", ACCV-W 2016)
and its dynamic-temporal-alignment use (Halperin, Ephrat & Peleg, "Dynamic temporal
alignment of speech to lips", ICASSP 2019).

Two streams map a short picture window and the matching 0.2 s of sound to embeddings that
are close when the two are in step and far apart otherwise (contrastive loss on matching
and shifted pairs).

Inputs (both per video frame, on the video clock)
    picture: 5 frames of the 8×8 motion grid (``input_kind='motion'``, any footage) or of
    lip keypoint vertical velocities (``'lips'``); audio: 4 sub-frame rows of a 32-band
    log-mel per video frame (128 mel bins averaged in groups of 4), so a 5-frame window
    carries 20 rows ≈ 0.2 s at 24–25 fps, like SyncNet's 20 MFCC steps.

``syncnet``
    ``offset``: for every shift s in [−max_shift, +max_shift] (frame steps) the mean distance
    between the picture embedding of frame i + s and the audio embedding of frame i; the
    offset is the argmin (parabolic sub-frame refinement). LSE-D = that minimum mean
    distance, LSE-C = median − minimum (the figures of Prajwal et al.); confidence =
    LSE-C / (LSE-C + c50) with ``c50`` stored in the checkpoint (the LSE-C at which we are
    50 % sure). Per-frame confidence = median − distance at the chosen shift per frame,
    smoothed. ``affinity``: minus the distance, per (audio frame, lag), averaged over a few
    rows along each lag.

``syncnet-dtw``
    The same embeddings; dynamic time warping (:func:`avsync.path.banded_dtw`, open begin
    and end) through the banded distance matrix gives one picture frame per audio frame;
    the Affinity is a Gaussian ridge along that path, weighted by the per-row distance
    margin, so ``align`` follows the DTW path under its speed limits.

The network is :mod:`avsync.nn.syncnet`, its training :mod:`avsync.train.syncnet`; the input
helpers shared with avmatch and wlos are in :mod:`avsync.backends._inputs`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from avsync.backends import BackendInfo, register
from avsync.backends._inputs import (
    KindNets,
    band_lag_table,
    dtw_lag_path,
    dtw_ridge_affinity,
    frame_embeddings,
    nanmean_cols,
    parabolic,
    row_margin,
    smooth_rows,
    window_best_lags,
)
from avsync.errors import CannotMeasure
from avsync.features import AudioFeatures, VisualFeatures
from avsync.types import Affinity, Offset, Signal

DEFAULT_CHECKPOINT = {"motion": "syncnet-motion", "lips": "syncnet-lips"}


class SyncNetBackend(KindNets):
    """SyncNet as an offset and alignment backend.

    Parameters
    ----------
    device, checkpoint
        As for every learned backend (:mod:`avsync.backends`); default checkpoint: ``syncnet-lips``
        for picture features with a tracked face (speech mode), else ``syncnet-motion``
        (:data:`DEFAULT_CHECKPOINT`, chosen per input).
    smooth_frames : int
        Rows averaged along each lag in :meth:`affinity` (the per-frame distances are noisy).
    use_dtw : bool
        ``syncnet-dtw``: the Affinity is a ridge along the DTW path (Halperin et al.).
    """

    NET = "syncnet"
    DEFAULT_CHECKPOINT = DEFAULT_CHECKPOINT

    def __init__(self, device: str = "auto", checkpoint: str | None = None, smooth_frames: int = 5,
                 use_dtw: bool = False, **_: Any) -> None:
        self.device_request = device
        self.smooth = int(smooth_frames)
        self.use_dtw = bool(use_dtw)
        self.name = "syncnet-dtw" if use_dtw else "syncnet"
        self.start_nets(checkpoint)

    @staticmethod
    def net_types() -> tuple[type, Any, Any]:
        from avsync.nn.syncnet import TINY_SYNCNET, SyncNetDims, SyncNetModel

        return SyncNetDims, SyncNetModel, TINY_SYNCNET

    def embeddings(self, audio: AudioFeatures, visual: VisualFeatures) -> tuple[np.ndarray, np.ndarray, float]:
        """Per-frame embeddings.

        Returns
        -------
        audio_emb : ndarray, shape (Na, E)
            Audio frame i = the 0.2 s around time i / fps.
        visual_emb : ndarray, shape (Nv, E)
            Picture frame k = the 5 frames around k.
        fps : float
        """
        self.choose(visual)
        return frame_embeddings(self.model, audio, visual, self.kind, self.dims.frames, self.device, self.name)

    def distances(
        self, audio: AudioFeatures, visual: VisualFeatures, max_shift: float
    ) -> tuple[np.ndarray, int, float]:
        """Banded distance table ``D[i, j] = ‖a_i − v_{i+j−n}‖`` (NaN outside the video).

        Returns
        -------
        (D of shape (Na, 2n + 1), n, fps)
        """
        ea, ev, fps = self.embeddings(audio, visual)
        d, n = band_lag_table(ea, ev, max_shift, fps, lambda x, y: np.linalg.norm(x - y, axis=1))
        return d, n, fps

    def affinity(self, audio: AudioFeatures, visual: VisualFeatures, max_shift: float) -> Affinity:
        """Affinity on the video clock: minus the (row-smoothed) embedding distance, or for
        ``syncnet-dtw`` a ridge along the DTW path weighted by the per-row margin."""
        d, n, fps = self.distances(audio, visual, max_shift)
        ds = smooth_rows(d, self.smooth)
        if self.use_dtw:
            return dtw_ridge_affinity(ds, n, fps)
        return Affinity(scores=-ds, lags=np.arange(-n, n + 1) / fps, rate=fps, start=0.0)

    def offset(self, audio: AudioFeatures, visual: VisualFeatures, max_shift: float) -> Offset:
        """SyncNet offset search: argmin over lags of the mean distance (``syncnet-dtw``: the
        weighted median lag of the DTW path).

        Returns
        -------
        Offset
            ``seconds`` (positive = audio leads), ``confidence`` = LSE-C / (LSE-C + c50),
            ``drift`` = per-2 s-window best lag (s), ``extra``: ``lse_c``, ``lse_d``,
            ``frame_confidence`` (Signal (Na, 1) at fps: median − distance at the offset,
            smoothed over 9 frames), ``mean_distance`` (list per lag), ``method``.
        """
        d, n, fps = self.distances(audio, visual, max_shift)
        lags = np.arange(-n, n + 1) / fps
        if self.use_dtw:
            return self._dtw_offset(d, lags, fps)
        return self._search_offset(d, lags, fps)

    def _dtw_offset(self, d: np.ndarray, lags: np.ndarray, fps: float) -> Offset:
        """Offset of ``syncnet-dtw``: margin-weighted median lag along the DTW path."""
        lag = dtw_lag_path(smooth_rows(d, self.smooth))
        conf = row_margin(d, lag)
        lag_s = lags[0] + lag / fps
        w = conf + 1e-6
        order = np.argsort(lag_s)
        cw = np.cumsum(w[order])
        sec = float(lag_s[order][np.searchsorted(cw, 0.5 * cw[-1])])
        mdist = nanmean_cols(d, max(5, len(d) // 4))
        lse_d = float(np.nanmin(mdist)) if np.isfinite(mdist).any() else float("nan")
        lse_c = float(np.nanmedian(mdist) - lse_d)
        return Offset(seconds=sec, confidence=float(np.clip(np.mean(conf), 0, 1)),
                      drift=Signal(lag_s[:, None], fps, 0.0),
                      extra={"lse_c": lse_c, "lse_d": lse_d, "method": "syncnet-dtw: weighted median of DTW path",
                             "frame_confidence": Signal(conf[:, None], fps, 0.0)})

    def _search_offset(self, d: np.ndarray, lags: np.ndarray, fps: float) -> Offset:
        """Offset of ``syncnet``: :func:`search_offset` with the checkpoint's ``conf_c50``."""
        return search_offset(d, lags, fps, float(self.dims.conf_c50))


def mean_lag_distance(d: np.ndarray) -> np.ndarray:
    """The mean distance per lag over the rows of ``d`` (Na, lags) (LSE-D's curve; NaN where
    too few rows overlap). Raises CannotMeasure when no lag has enough."""
    mdist = nanmean_cols(d, max(5, len(d) // 4))
    if not np.isfinite(mdist).any():
        raise CannotMeasure("picture and sound do not overlap enough to measure an offset")
    return mdist


def least_lag(mdist: np.ndarray, lags: np.ndarray, fps: float) -> tuple[float, int]:
    """(offset s, index): the lag of least mean distance ``mdist``, sub-frame by a parabola
    through its neighbours."""
    k = int(np.nanargmin(mdist))
    return float(lags[k] + parabolic(mdist, k) / fps), k


def search_offset(d: np.ndarray, lags: np.ndarray, fps: float, c50: float) -> Offset:
    """SyncNet's offset search on a banded distance table ``d`` (Na, lags): the lag of minimum
    mean distance (LSE-D), sub-frame by a parabola; confidence LSE-C / (LSE-C + ``c50``)."""
    mdist = mean_lag_distance(d)
    sec, k = least_lag(mdist, lags, fps)
    lse_d = float(mdist[k])
    lse_c = float(np.nanmedian(mdist) - lse_d)
    conf = lse_c / (lse_c + c50) if lse_c > 0 else 0.0
    # per-frame confidence (SyncNet demo: median over shifts − distance at the offset)
    from scipy.ndimage import median_filter

    fconf = np.nanmedian(np.where(np.isfinite(d), d, np.nan), axis=1) - d[:, k]
    fconf = median_filter(np.nan_to_num(fconf, nan=0.0), size=9, mode="nearest")
    win, hop, drift = window_best_lags(d, lags, fps, sec, lower_better=True)
    return Offset(
        seconds=sec, confidence=float(np.clip(conf, 0.0, 1.0)),
        drift=Signal(np.array(drift)[:, None], fps / hop, win / (2 * fps)),
        extra={"lse_c": lse_c, "lse_d": lse_d, "frame_confidence": Signal(fconf[:, None], fps, 0.0),
               "mean_distance": [float(x) for x in mdist], "method": "syncnet: min mean distance"},
    )


def _syncnet_factory(**kw: Any) -> SyncNetBackend:
    return SyncNetBackend(**{k: v for k, v in kw.items() if k != "use_dtw"})


def _syncnet_dtw_factory(**kw: Any) -> SyncNetBackend:
    return SyncNetBackend(use_dtw=True, **{k: v for k, v in kw.items() if k != "use_dtw"})


register(BackendInfo(
    name="syncnet",
    description="SyncNet contrastive picture/sound embeddings; offset = min mean distance (LSE-C/LSE-D)",
    trainable=True,
    factory=_syncnet_factory,
    tasks=("align", "offset"),
))
register(BackendInfo(
    name="syncnet-dtw",
    description="SyncNet embeddings + dynamic time warping of the distance matrix (Halperin et al.)",
    trainable=True,
    factory=_syncnet_dtw_factory,
    tasks=("align", "offset"),
))
