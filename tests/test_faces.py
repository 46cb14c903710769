"""Several faces in one picture: tracked apart, and detect-offset measures the one whose lips
move with the sound (or says it cannot tell which)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from avsync import offset as O
from avsync.backends.classical import ClassicalBackend, ClassicalOptions
from avsync.features import AudioFeatures, Face, VisualFeatures
from avsync.features.extract import _visual_from_npz, _visual_to_npz
from avsync.types import Signal

FPS = 25.0


def _level(rng: np.random.Generator, n: int) -> np.ndarray:
    """Syllable-like speech level: blocks of 5 frames."""
    return np.repeat(rng.standard_normal(n // 5 + 2), 5)[:n]


def _two_faces(seed: int, speaker: int | None, seconds: float = 10.0, lag: int = 3) -> tuple[AudioFeatures,
                                                                                            VisualFeatures]:
    """A voice and two faces; face ``speaker`` (0 = left, 1 = right; None = neither) has a noisy
    mouth that follows the voice, the sound ``lag`` frames early; the other one talks to itself."""
    rng = np.random.default_rng(seed)
    n = int(seconds * FPS)
    voice = _level(rng, n + 10)
    t100 = np.arange(int(seconds * 100)) / 100
    speech = Signal(np.interp(t100 + lag / FPS, np.arange(n + 10) / FPS, voice), 100.0)
    flat = Signal(np.zeros(len(t100)), 100.0)
    audio = AudioFeatures(onset=flat, speech=speech, logmel=Signal(np.zeros((len(t100), 128)), 100.0),
                          duration=seconds, sr=16000)
    faces = []
    for i in range(2):
        src = voice[:n] if i == speaker else _level(rng, n)
        mouth = (src + 1.5 * rng.standard_normal(n))[:, None]
        faces.append(Face(Signal(mouth[:, 0], FPS), Signal(rng.standard_normal((n, 40)) * 0.05, FPS),
                          Signal(mouth, FPS), 1.0, (0.25 + 0.5 * i, 0.3), 0.05))
    main = faces[1 - (speaker or 0)]  # the main face (found most often) is the silent one
    vis = VisualFeatures(mode="speech", kind="lips", envelope=main.envelope, grid=Signal(np.zeros((n, 4)), FPS),
                         keypoints=main.keypoints, mouth=main.mouth, detection_rate=1.0, fps=FPS,
                         frame_times=np.arange(n) / FPS, faces=tuple(faces))
    return audio, vis


@pytest.mark.parametrize("speaker", [0, 1])
def test_the_face_whose_lips_move_with_the_voice_is_measured(speaker):
    be = ClassicalBackend(ClassicalOptions(lip_filter=False))
    hits = 0
    for seed in range(6):
        audio, vis = _two_faces(seed, speaker)
        chosen, info = O.choose_face(be, audio, vis, 1.0)
        assert info is not None and len(info["faces"]) == 2 and chosen.faces == ()
        if info["speaking_face"] == speaker:
            hits += 1
            assert np.array_equal(chosen.mouth.values, vis.faces[speaker].mouth.values)
            got = be.offset(audio, chosen, 1.0)
            assert got.seconds * FPS == pytest.approx(3, abs=1)
        assert info["speaking_face"] in (speaker, None)  # never the silent face
    assert hits >= 5


def test_with_no_face_speaking_it_names_none():
    be = ClassicalBackend(ClassicalOptions(lip_filter=False))
    named = [O.choose_face(be, *_two_faces(seed, None), 1.0)[1]["speaking_face"] for seed in range(10)]
    assert sum(x is not None for x in named) <= 1


def test_one_face_passes_through_unchanged():
    audio, vis = _two_faces(0, 0)
    one = dataclasses.replace(vis, faces=())
    assert O.choose_face(ClassicalBackend(), audio, one, 1.0) == (one, None)


def test_the_note_says_which_face_or_that_it_cannot_tell():
    faces = [{"position": [0.7, 0.3]}, {"position": [0.2, 0.3]}, {"position": [0.5, 0.3]}]
    assert O.face_note(None) == ""
    assert O.face_note({"faces": faces[:2], "speaking_face": 0, "measured_face": 0}) == \
        "the right one of 2 faces speaks (face 0)"
    assert O.face_note({"faces": faces, "speaking_face": None, "measured_face": 2}).startswith(
        "cannot tell which of 3 faces speaks; measured the likeliest, the middle one")


def test_faces_survive_the_feature_cache():
    _, vis = _two_faces(0, 1)
    d = {k: np.asarray(v) for k, v in _visual_to_npz(vis).items()}
    back = _visual_from_npz(d)
    assert len(back.faces) == 2
    for a, b in zip(back.faces, vis.faces, strict=True):
        assert np.array_equal(a.mouth.values, b.mouth.values) and a.position == b.position and a.size == b.size
    assert _visual_from_npz({k: v for k, v in d.items() if not k.startswith("face_")}).faces == ()


REAL = Path(__file__).resolve().parents[1].parent / "shared" / "media" / "real"
TALKER = REAL / "Hangz-nju-cuhk_Talking-Face_PC-AVS__misc_Pose_Source_741400163.mp4"
OTHER = REAL / "Hangz-nju-cuhk_Talking-Face_PC-AVS__misc_Audio_Source_00104.mp4"


needs_real = pytest.mark.skipif(not (TALKER.is_file() and OTHER.is_file()), reason="real media absent")


@pytest.fixture(scope="module")
def two_faces(tmp_path_factory):
    """Two real talking faces side by side, the sound of the right one (made as bench/two_faces.py
    makes its composites)."""
    import importlib.util

    from avsync.evaluation.real import Clip

    spec = importlib.util.spec_from_file_location("two_faces", Path(__file__).parents[1] / "bench" / "two_faces.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    def clip(p: Path) -> Clip:
        return Clip(p.name, str(p), "speech", "check", "file:" + p.name)

    out = tmp_path_factory.mktemp("two-faces") / "two.mp4"
    x = bench.compose(clip(TALKER), clip(OTHER), out, speaker_left=False)
    assert x > 0.5
    return str(out)


def _run(args: list[str], tmp_path: Path) -> dict:
    import os

    env = {**os.environ, "AVSYNC_CACHE": str(tmp_path / "cache")}  # features computed, not read from a cache
    r = subprocess.run([sys.executable, "-m", "avsync", *args, "--json"], capture_output=True, text=True,
                       timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == ""
    return json.loads(r.stdout)


@needs_real
def test_detect_offset_measures_the_speaking_one_of_two_real_faces(two_faces, tmp_path):
    """Both faces are tracked, and the right one is measured (the left one is found as often, so
    only the sound can tell them apart); the face meshes' native start-up messages stay off stderr."""
    out = _run(["detect-offset", two_faces], tmp_path)
    faces = out["faces"]
    assert len(faces) == 2 and faces[0]["position"][0] < 0.5 < faces[1]["position"][0]
    assert out["measured_face"] == 1 and out["speaking_face"] in (1, None)
    assert "faces" in out["note"]


@needs_real
def test_align_through_the_picture_follows_the_speaking_face(two_faces, tmp_path):
    out = _run(["align", two_faces, "--audio", two_faces, "-o", str(tmp_path / "out.mp4"), "--sync-by", "picture"],
               tmp_path)
    assert out["visual_kind"] == "lips" and "of 2 faces" in out["note"] and "(face 1)" in out["note"]


def test_the_table_lists_each_face_and_marks_the_speaker():
    from avsync.cli.offset import _faces_line

    extra = {"faces": [{"face": 0, "position": [0.2, 0.3], "offset_ms": 700.0, "confidence": 0.1},
                       {"face": 1, "position": [0.7, 0.3], "offset_ms": -77.0, "confidence": 0.7}],
             "speaking_face": 1, "measured_face": 1}
    line = _faces_line(extra)
    assert line.startswith("0 at x 0.20: +700 ms, confidence 0.10; 1 at x 0.70: -77 ms")
    assert line.endswith("speaks[/bold]")
    assert _faces_line({**extra, "speaking_face": None}).endswith("0.70  measured")


def test_when_no_face_is_clear_the_lip_syncnet_margin_picks_the_likeliest(monkeypatch):
    from avsync.errors import ModelError

    audio, vis = _two_faces(3, None)
    right_mouth = vis.faces[1].mouth.values

    def reading(afeat, vfeat, max_shift, checkpoint="syncnet-lips"):  # noqa: ANN001, ANN202
        return 0.0, 0.2 if np.array_equal(vfeat.mouth.values, right_mouth) else 0.05

    monkeypatch.setattr(O, "lip_syncnet_reading", reading)
    be = ClassicalBackend(ClassicalOptions(lip_filter=False))
    chosen, info = O.choose_face(be, audio, vis, 1.0)
    assert info["speaking_face"] is None and info["measured_face"] == 1
    assert [f["syncnet_margin"] for f in info["faces"]] == [0.05, 0.2]
    assert np.array_equal(chosen.mouth.values, right_mouth)

    def unreadable(*a, **k):  # noqa: ANN002, ANN003, ANN202
        raise ModelError("no checkpoint")

    monkeypatch.setattr(O, "lip_syncnet_reading", unreadable)
    _, info = O.choose_face(be, audio, vis, 1.0)
    readings = [be.offset(audio, vis.with_face(i), 1.0) for i in range(2)]
    classical = max(range(2), key=lambda i: (readings[i].confidence, readings[i].extra["peak_score"]))
    assert info["measured_face"] == classical and info["faces"][0]["syncnet_margin"] is None
