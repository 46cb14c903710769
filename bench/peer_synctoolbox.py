"""synctoolbox as a peer aligner of the real-footage protocol (camera-microphone cases).

synctoolbox (Müller et al., MrMsDTW on quantised chroma + DLNCO onset features) is run the way
its audio-audio example runs it: 22050 Hz mono, tuning estimated per side, features at 50 Hz,
the optimal chroma shift applied to the second side, step weights (1.5, 1.5, 2.0),
``threshold_rec`` 10**6, the path made strictly monotonic. Its dependencies (numba,
music21, pretty_midi, libfmp) pin versions that avsync's own environment does not need, so
it lives in a separate virtual environment (``make peer-venv`` → ``.venv-peer``; or set
``AVSYNC_PEER_PYTHON``). This file is both sides:

- in avsync's environment, :func:`align` is the protocol's aligner
  (``(distorted, reference, sync_by, max_shift) -> (Correspondence, info)``): it decodes
  both soundtracks with avsync, runs this file under the peer interpreter and turns the
  warping path into a correspondence on the reference's frame clock;
- under the peer interpreter (``python peer_synctoolbox.py REF.wav OWN.wav OUT.npz``) it
  computes the path and the seconds it took (feature extraction and DTW, without the
  interpreter's start-up, which is what "seconds per case" reports).

Usage: ``avsync.evaluation.real.run_align(cases, "bench/peer_synctoolbox.py:align")``; ``align.kinds``
restricts it to the protocol's camera-microphone cases. ``make bench`` adds it as a row of the
real-footage align table (``synctoolbox``) when the peer environment exists.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

SR = 22050
FEATURE_RATE = 50
ROOT = Path(__file__).resolve().parent.parent


def peer_python() -> Path | None:
    """The peer environment's interpreter, if there is one with synctoolbox."""
    env = os.environ.get("AVSYNC_PEER_PYTHON")
    p = Path(env) if env else ROOT / ".venv-peer" / "bin" / "python"
    return p if p.is_file() else None


# The protocol's case kinds this aligner runs on (avsync.evaluation.real.run_align).
KINDS = ("camera",)


def align(distorted: str, reference: str, sync_by: str, max_shift: float) -> tuple[Any, dict[str, Any]]:
    """Align the distorted file's soundtrack to the reference's with synctoolbox."""
    from scipy.io import wavfile

    from avsync.errors import CannotMeasure
    from avsync.media import frame_times, load_audio, probe
    from avsync.types import Correspondence

    if sync_by != "soundtrack":
        raise CannotMeasure("synctoolbox aligns audio to audio only")
    py = peer_python()
    if py is None:
        raise CannotMeasure("no peer environment (make peer-venv, or set AVSYNC_PEER_PYTHON)")
    fps = float(probe(distorted).fps or 25.0)
    ref_y = load_audio(reference, sr=SR)
    own_y = load_audio(distorted, sr=SR)
    with tempfile.TemporaryDirectory(prefix="peer-stb-") as tmp:
        a, b, out = Path(tmp) / "ref.wav", Path(tmp) / "own.wav", Path(tmp) / "wp.npz"
        wavfile.write(a, SR, ref_y.astype(np.float32))
        wavfile.write(b, SR, own_y.astype(np.float32))
        t0 = time.perf_counter()
        r = subprocess.run([str(py), __file__, str(a), str(b), str(out)], capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if r.returncode != 0 or not out.exists():
            raise CannotMeasure(f"synctoolbox failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
        z = np.load(out)
        wp, secs = z["wp"], float(z["seconds"])
    n_out = int(round(len(ref_y) / SR * fps))
    t_ref = wp[0] / FEATURE_RATE
    t_own = wp[1] / FEATURE_RATE
    src = np.interp(np.arange(n_out) / fps, t_ref, t_own)
    last = float(frame_times(distorted)[-1])
    corr = Correspondence(src_time=np.clip(np.maximum.accumulate(src), 0.0, last), rate=fps)
    return corr, {"sync_by": "soundtrack", "note": "synctoolbox MrMsDTW (chroma + DLNCO)",
                  "seconds": {"measure": secs, "wall": wall}}


align.kinds = KINDS  # type: ignore[attr-defined]


def _features(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quantised chroma and DLNCO of one side (synctoolbox's feature pipeline)."""
    from synctoolbox.feature.chroma import pitch_to_chroma, quantize_chroma
    from synctoolbox.feature.dlnco import pitch_onset_features_to_DLNCO
    from synctoolbox.feature.pitch import audio_to_pitch_features
    from synctoolbox.feature.pitch_onset import audio_to_pitch_onset_features
    from synctoolbox.feature.utils import estimate_tuning

    tuning = estimate_tuning(y, SR)
    f_pitch = audio_to_pitch_features(f_audio=y, Fs=SR, tuning_offset=tuning, feature_rate=FEATURE_RATE, verbose=False)
    chroma = quantize_chroma(f_chroma=pitch_to_chroma(f_pitch=f_pitch))
    onset = audio_to_pitch_onset_features(f_audio=y, Fs=SR, tuning_offset=tuning, verbose=False)
    dlnco = pitch_onset_features_to_DLNCO(f_peaks=onset, feature_rate=FEATURE_RATE,
                                          feature_sequence_length=chroma.shape[1], visualize=False)
    return chroma, dlnco


def _worker(ref_wav: str, own_wav: str, out: str) -> None:
    from scipy.io import wavfile
    from synctoolbox.dtw.mrmsdtw import sync_via_mrmsdtw
    from synctoolbox.dtw.utils import compute_optimal_chroma_shift, make_path_strictly_monotonic, shift_chroma_vectors
    from synctoolbox.feature.chroma import quantized_chroma_to_CENS

    t0 = time.perf_counter()
    y1 = wavfile.read(ref_wav)[1].astype(np.float64)
    y2 = wavfile.read(own_wav)[1].astype(np.float64)
    c1, d1 = _features(y1)
    c2, d2 = _features(y2)
    cens1 = quantized_chroma_to_CENS(c1, 201, 50, FEATURE_RATE)[0]
    cens2 = quantized_chroma_to_CENS(c2, 201, 50, FEATURE_RATE)[0]
    shift = compute_optimal_chroma_shift(cens1, cens2)
    c2, d2 = shift_chroma_vectors(c2, shift), shift_chroma_vectors(d2, shift)
    wp = sync_via_mrmsdtw(f_chroma1=c1, f_onset1=d1, f_chroma2=c2, f_onset2=d2, input_feature_rate=FEATURE_RATE,
                          step_weights=np.array([1.5, 1.5, 2.0]), threshold_rec=10**6, verbose=False)
    wp = make_path_strictly_monotonic(wp)
    np.savez(out, wp=wp, seconds=time.perf_counter() - t0)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: peer_synctoolbox.py REF.wav OWN.wav OUT.npz")
    _worker(*sys.argv[1:4])
