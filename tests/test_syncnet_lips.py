"""The shipped SyncNet lip checkpoint (``syncnet-lips``, trained on the fit part of the real
talking faces): registered and verified through the hub, picked by ``--backend syncnet`` for
speech features, and ``detect-offset`` end to end; a real check-part face when the media is there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from avsync import hub
from avsync.backends import get_backend
from avsync.backends.syncnet import DEFAULT_CHECKPOINT
from tests.mediagen import make_avsynctest, random_features

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "media" / "real"
CHECK_FACE = "VisualVoice__noisy_restaurant.mp4"  # a check-part speaker (never trained on)


def test_the_lip_checkpoint_is_registered_bundled_and_verified_through_the_hub():
    entry = hub.get_entry("syncnet-lips")
    assert entry["backend"] == "syncnet" and entry["bundled"] == "syncnet-lips.pt"
    path = hub.model_path("syncnet-lips")
    assert path.is_file() and hub.sha256_file(path) == entry["sha256"] and path.stat().st_size == entry["size"]
    card = Path(__file__).resolve().parents[1] / entry["card"]
    assert card.is_file() and entry["sha256"] in card.read_text(encoding="utf-8")
    ck = hub.load_checkpoint("syncnet-lips", backend="syncnet")
    assert ck["dims"]["input_kind"] == "lipshape" and ck["dims"]["visual_in"] == 80
    assert DEFAULT_CHECKPOINT["lips"] == "syncnet-lips"


def test_syncnet_without_a_checkpoint_picks_the_lip_network_for_a_tracked_face_and_motion_otherwise():
    be = get_backend("syncnet", device="cpu")
    a, v = random_features(lips=True)
    o = be.offset(a, v, 0.6)
    assert be.kind == "lipshape" and be.dims.visual_in == 80 and np.isfinite(o.seconds)
    a, v = random_features(lips=False)
    be.offset(a, v, 0.6)
    assert be.kind == "motion" and be.dims.visual_in == 64
    # an explicit checkpoint is used whatever the input
    tiny = get_backend("syncnet", device="cpu", checkpoint="tiny-test")
    tiny.offset(*random_features(lips=True), 0.6)
    assert tiny.kind == "motion"


def _detect(clip: Path, *extra: str) -> dict:
    r = subprocess.run(
        [sys.executable, "-m", "avsync", "detect-offset", str(clip), "--backend", "syncnet", "--mode", "speech",
         "--device", "cpu", "--json", *extra],
        capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_detect_offset_end_to_end_with_the_default_syncnet_in_speech_mode(tmp_path):
    # no face in a generated test pattern: the backend falls back to the motion network and says so
    clip = Path(make_avsynctest(str(tmp_path / "beeps.mp4"), seconds=4, audio_shift=0.2))
    res = _detect(clip)
    assert res["backend"] == "syncnet" and res["mode"] == "speech" and res["visual_kind"] == "motion"
    assert abs(res["offset_ms"] - 200.0) <= 40.0, res


@pytest.mark.skipif(not (REAL / CHECK_FACE).is_file(), reason="real footage not available")
def test_a_real_check_part_face_shifted_by_a_third_of_a_second_is_read_within_a_frame(tmp_path):
    from avsync.evaluation import real

    row = next(r for r in real.split_table(REAL) if r["file"] == CHECK_FACE)
    assert row["part"] == "check" and row["category"] == "speech"
    clip = real.Clip(CHECK_FACE, str(REAL / CHECK_FACE), row["category"], row["part"], row["group"])
    info = real.clip_info(clip)
    out, off = tmp_path / "shifted.mp4", 0.32
    n = int(6.0 * info.fps)
    real.write_window(clip.path, out, fps=info.fps, sr=info.sr, start=1.0, n_frames=n, audio_start=1.0 + off)
    res = _detect(out, "--max-shift", "1")
    assert res["visual_kind"] == "lips"
    assert abs(res["offset_ms"] / 1000 - off) <= 1.0 / info.fps, res


def test_lipshape_input_is_the_centred_mouth_shape_then_its_velocity():
    from avsync.backends._inputs import visual_frames, visual_input

    _, vis = random_features()
    raw = visual_frames(vis, "lipshape")
    assert raw.shape == (len(vis.frame_times), 40)
    x = visual_input(raw, "lipshape")
    assert x.shape == (len(raw), 80)
    np.testing.assert_allclose(x[:, :40].mean(axis=0), 0.0, atol=1e-5)
    assert abs(float(x[:, :40].std()) - 1.0) < 1e-3
    v = np.diff(raw, axis=0, prepend=raw[:1])
    scale = np.median(np.abs(v)) * 1.4826  # the velocity half: frame differences over their robust scale
    np.testing.assert_allclose(x[:, 40:], np.clip(v / scale, -10, 10), rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(x[0, 40:], 0.0)  # no velocity at the first frame
    assert visual_frames(random_features(lips=False)[1], "lipshape") is None
