"""Which statistic of the speech correlation predicts a right detect-offset answer?

Reproduces the numbers behind :func:`avsync.backends.classical.speech_confidence`. On the
speech clips of one part of the real-footage split (default: fit) it cuts the simulator's
detect-offset cases (``bench/sim_speech_offset.py``), correlates them with the classical
backend, and scores candidate confidence statistics by the AUROC of "within ±1 frame" (overall
and per group fold: folds by a hash of the source / speaker group, so a speaker never sits on
both sides), and by how well they tell the real pairing from the same picture with another
clip's sound (two such mismatched pairings per case). It also prints the percentiles of the
normalised peak score on the mismatched pairings (where the constants come from).

    python bench/speech_confidence.py [--part fit] [--media DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from sim_speech_offset import MEDIA, case_features, speech_clips  # noqa: E402

from avsync import offset as O  # noqa: E402
from avsync.backends import classical as C  # noqa: E402
from avsync.errors import CannotMeasure  # noqa: E402
from avsync.evaluation import real  # noqa: E402

N_FOLDS = 4


def fold_of(group: str) -> int:
    return int(hashlib.sha1(group.encode()).hexdigest(), 16) % N_FOLDS


def _peak_of(a: np.ndarray, v: np.ndarray, max_lag: int, i0: int = 0, i1: int | None = None) -> tuple[int, np.ndarray]:
    r, n = C.global_xcorr(a, v, max_lag, i0, i1, counts=True)
    f = C.fisher_score(r, n)
    return int(np.argmax(f)), f


def statistics(a: np.ndarray, v: np.ndarray, max_lag: int, rate: float) -> dict[str, float]:
    """Candidate confidences of the correlation of prepared envelopes ``a`` and ``v``."""
    p, f = _peak_of(a, v, max_lag)
    conf, z, q = C.peak_confidence(f, p)
    far = np.abs(np.arange(f.size) - p) > 2
    second = float(f[far].max()) if far.any() else 0.0
    rolls = [_peak_of(np.roll(a, s), v, max_lag)[1].max()
             for s in np.linspace(rate, a.size - rate, 12).astype(int)] if a.size > 2 * rate + 4 else []
    parts = [_peak_of(a, v, max_lag, k * a.size // 3, (k + 1) * a.size // 3)[0] for k in range(3)]
    return {
        "z x prominence (old rule)": conf,
        "robust z over lags": z,
        "Fisher peak": float(f[p]),
        "peak / null scatter (chosen)": float(f[p]) / np.sqrt(C.null_inflation(a, v, round(C.NULL_LAG_SECONDS * rate))),
        "gap to 2nd peak outside ±2": float(f[p]) - second,
        "ratio to 2nd peak outside ±2": float(f[p]) / max(second, 1e-9),
        "z vs rolled audio": float((f[p] - np.mean(rolls)) / (np.std(rolls) + 1e-9)) if len(rolls) > 2 else 0.0,
        "gap to reversed audio": float(f[p]) - float(_peak_of(a[::-1].copy(), v, max_lag)[1].max()),
        "3 sub-windows agree": float(np.mean(np.abs(np.array(parts) - p) <= 1)),
    }


def collect(media: Path, part: str) -> tuple[list[dict], list[dict]]:
    """Per case: statistics, whether within ±1 frame, the fold; and the mismatched pairings."""
    from avsync.features.extract import extract_audio, extract_visual

    be = C.ClassicalBackend()
    rng = np.random.default_rng(0)
    clips = [(c, extract_audio(c.path), extract_visual(c.path, mode="speech")) for c in speech_clips(media, part)]
    paired, unpaired = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for clip, audio, vis in clips:
            others = [(c, a) for c, a, _ in clips if c.group != clip.group]
            for case in real.plan_offset_cases(clip, real.clip_info(clip), tmp)[0]:
                a, v = case_features(case, audio, vis)
                try:
                    av, vv, rate = be.envelopes(a, v)
                    lag = max(1, round(case.max_shift * rate))
                    got = be.offset(a, v, case.max_shift).seconds
                except CannotMeasure:
                    continue
                ok = abs(got - case.truth) <= 1.0 / case.fps + 1e-9
                paired.append({"ok": ok, "fold": fold_of(clip.group), **statistics(av, vv, lag, rate)})
                for _ in range(2):
                    _, oa = others[rng.integers(len(others))]
                    if oa.duration < case.duration + 0.1:
                        continue
                    s0 = float(rng.uniform(0, oa.duration - case.duration))
                    try:
                        ua, uv, _ = be.envelopes(O.crop_audio(oa, s0, s0 + case.duration), v)
                    except CannotMeasure:
                        continue
                    unpaired.append(statistics(ua, uv, lag, rate))
    return paired, unpaired


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", default="fit", choices=("fit", "check"))
    ap.add_argument("--media", type=Path, default=MEDIA)
    args = ap.parse_args()
    paired, unpaired = collect(args.media, args.part)
    ok = np.array([r["ok"] for r in paired])
    folds = np.array([r["fold"] for r in paired])
    print(f"{args.part}: {len(paired)} cases, {ok.mean():.2f} within ±1 frame; {len(unpaired)} mismatched pairings")
    print("| statistic | AUROC ±1 frame | per fold | real vs mismatched |")
    for key in paired[0]:
        if key in ("ok", "fold"):
            continue
        x = np.array([r[key] for r in paired])
        xn = np.array([r[key] for r in unpaired])
        per = [real.auroc(x[folds == k], ok[folds == k]) if 0 < ok[folds == k].sum() < (folds == k).sum()
               else float("nan") for k in range(N_FOLDS)]
        lab = np.r_[np.ones(x.size, bool), np.zeros(xn.size, bool)]
        print(f"| {key} | {real.auroc(x, ok):.3f} | {' '.join(f'{a:.2f}' for a in per)} | "
              f"{real.auroc(np.r_[x, xn], lab):.3f} |")
    sc = np.array([r["peak / null scatter (chosen)"] for r in unpaired])
    print("mismatched pairings, peak / null scatter: percentiles 50/90/95/99 =",
          " ".join(f"{v:.2f}" for v in np.percentile(sc, [50, 90, 95, 99])))


if __name__ == "__main__":
    main()
