"""The lip-shape → speech-loudness filter (avsync.features.lip_loudness) and its use by the
classical backend: fitting, saving, the shipped weights, and a real talking face."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from avsync.backends.classical import ClassicalBackend, ClassicalOptions
from avsync.features import AudioFeatures, VisualFeatures
from avsync.features import lip_loudness as ll
from avsync.types import Signal

FPS = 25.0
REAL = Path(__file__).resolve().parents[1].parent / "shared" / "media" / "real"


def _pair(seed: int, seconds: float = 30.0, lag: int = 2) -> tuple[AudioFeatures, VisualFeatures]:
    """Lips whose *width* (not opening) carries the loudness, heard ``lag`` frames later."""
    rng = np.random.default_rng(seed)
    n = int(seconds * FPS)
    level = np.repeat(rng.standard_normal(n // 5 + 1), 5)[:n]
    kp = rng.standard_normal((n, 40)) * 0.05
    kp[:, 0] += level  # one lip corner's x follows the loudness
    opening = rng.standard_normal((n, 1)) * 0.05  # the opening says nothing
    heard = np.r_[np.full(lag, level.mean()), level[:-lag]]
    t100 = np.arange(int(seconds * 100)) / 100
    speech = Signal(np.interp(t100, np.arange(n) / FPS, heard), 100.0)
    flat = Signal(np.zeros(len(t100)), 100.0)
    audio = AudioFeatures(onset=flat, speech=speech, logmel=Signal(np.zeros((len(t100), 2)), 100.0),
                          duration=seconds, sr=16000)
    vis = VisualFeatures(mode="speech", kind="lips", envelope=Signal(opening[:, 0], FPS),
                         grid=Signal(np.zeros((n, 4)), FPS), keypoints=Signal(kp, FPS), mouth=Signal(opening, FPS),
                         detection_rate=1.0, fps=FPS, frame_times=np.arange(n) / FPS)
    return audio, vis


def test_fit_learns_which_lip_coordinate_carries_the_loudness_and_its_lag(tmp_path):
    model = ll.fit([_pair(s) for s in range(3)])
    audio, vis = _pair(10)
    pred = model.predict(vis)
    n = len(pred)
    target = ll.loudness_target(np.interp(np.arange(n) / FPS, audio.speech.times, audio.speech.values[:, 0]))
    assert np.corrcoef(pred, target)[0, 1] > 0.8
    model.save(tmp_path / "w.npz")
    back = ll.load(str(tmp_path / "w.npz"))
    assert back is not None and back.context == model.context
    assert np.allclose(back.predict(vis), pred, atol=1e-4)
    assert ll.load(str(tmp_path / "missing.npz")) is None


def test_fit_refuses_clips_without_lips():
    audio, vis = _pair(0)
    with pytest.raises(ValueError, match="no clip with face-mesh lips"):
        ll.fit([(audio, dataclasses.replace(vis, kind="motion"))])
    assert not ll.applies(dataclasses.replace(vis, keypoints=None))


def test_classical_with_the_filter_finds_a_shift_the_opening_cannot(tmp_path, monkeypatch):
    model = ll.fit([_pair(s) for s in range(3)])
    monkeypatch.setattr(ll, "load", lambda path=None: model)
    monkeypatch.setattr("avsync.backends.classical.load", lambda path=None: model)
    audio, vis = _pair(20, lag=2)
    # shift the picture 8 frames later: truth = lag/fps + 8/fps of "audio leads"
    n = len(vis.envelope)
    sh = 8
    kp = np.r_[np.zeros((sh, 40)), vis.keypoints.values[:-sh]]
    mo = np.r_[np.zeros((sh, 1)), vis.mouth.values[:-sh]]
    vis2 = dataclasses.replace(vis, keypoints=Signal(kp, FPS), mouth=Signal(mo, FPS), envelope=Signal(mo[:, 0], FPS))
    with_filter = ClassicalBackend().offset(audio, vis2, 1.0)
    assert with_filter.seconds == pytest.approx(sh / FPS, abs=1.0 / FPS)  # the lag is learned away
    without = ClassicalBackend(ClassicalOptions(lip_filter=False)).offset(audio, vis2, 1.0)
    assert abs(without.seconds - sh / FPS) > 1.0 / FPS or without.confidence < 0.2
    assert n == len(kp)


def test_the_shipped_filter_loads_and_has_the_documented_shape():
    model = ll.load()
    assert model is not None, "avsync/checkpoints/lip-loudness.npz is missing"
    assert model.weights.shape == (2 * ll.N_COLUMNS * (2 * model.context + 1),)
    assert np.all(np.isfinite(model.weights)) and np.abs(model.weights).max() > 0
    assert "fit part" in model.trained_on


CLEAN = "VisualVoice__noisy_restaurant.mp4"  # check part of the split: never fitted on


@pytest.mark.skipif(not (REAL / CLEAN).is_file(), reason="real footage not available")
def test_a_real_talking_face_in_a_noisy_restaurant_reads_within_a_frame_at_every_protocol_shift(tmp_path):
    from avsync import offset as O
    from avsync.evaluation import real
    from avsync.features.extract import extract_audio, extract_visual

    row = next(r for r in real.split_table(REAL) if r["file"] == CLEAN)
    assert row["part"] == "check"
    clip = real.Clip(CLEAN, str(REAL / CLEAN), row["category"], row["part"], row["group"])
    cases, _ = real.plan_offset_cases(clip, real.clip_info(clip), tmp_path)
    audio, vis = extract_audio(clip.path), extract_visual(clip.path, mode="speech")
    assert vis.kind == "lips" and len(cases) >= 4
    errors = []
    for c in cases:
        a = O.crop_audio(audio, c.start + c.truth, c.start + c.truth + c.duration) if c.kind != "original" else audio
        v = O.crop_visual(vis, c.start, c.start + c.duration) if c.kind != "original" else vis
        errors.append(ClassicalBackend().offset(a, v, c.max_shift).seconds - c.truth)
    assert np.all(np.abs(errors) <= 1.0 / c.fps), np.round(np.array(errors) * c.fps, 2)
