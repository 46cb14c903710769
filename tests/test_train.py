"""The shared training loop: samples, warps, augmentations, and `avsync train` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from avsync.train import TrainOptions, get_trainable, trainable_names
from avsync.train.augment import hflip_grid, hflip_keypoints, spec_augment
from avsync.train.data import ClipArrays, SampleStream, list_videos, random_plan, split_by_video, warp_visual

torch.set_num_threads(1)


def test_warp_visual_state_and_difference_features() -> None:
    x = np.arange(10, dtype=np.float32)[:, None] * np.array([[1.0, 10.0]], np.float32)
    plan = np.array([0, 1, 1, 3, 4, 4, 4, 7])
    np.testing.assert_array_equal(warp_visual(x, plan, is_diff=False), x[plan])
    d = np.ones((10, 1), np.float32)  # one unit of frame difference per frame
    w = warp_visual(d, plan, is_diff=True)[:, 0]
    # duplicate → no difference; skipping k frames accumulates k differences
    np.testing.assert_array_equal(w, [1, 1, 0, 2, 1, 0, 0, 3])


def test_split_by_video_is_seeded_and_disjoint() -> None:
    paths = [Path(f"v{i}.mp4") for i in range(20)]
    tr, va = split_by_video(paths, 0.15, seed=3)
    assert len(va) == 3 and not set(tr) & set(va) and len(tr) + len(va) == 20
    assert split_by_video(paths, 0.15, seed=3) == (tr, va)
    assert split_by_video(paths[:1], 0.5, 0) == (paths[:1], [])


def test_sample_stream_targets_are_the_plan() -> None:
    rng = np.random.default_rng(0)
    n = 300
    grid = rng.random((n, 4)).astype(np.float32)
    audio = rng.random((n, 3)).astype(np.float32)
    clip = ClipArrays("c", audio, grid, 24.0, visual_is_diff=False)
    stream = SampleStream([clip], window=120, seed=1)
    batch = stream.batch(6)
    distorted = 0
    for s in batch:
        assert s.visual.shape == (120, 4) and s.audio.shape == (120, 3) and s.target.shape == (120,)
        assert np.all(np.diff(s.plan) >= 0) and s.plan.min() >= 0 and s.plan.max() < 120
        np.testing.assert_array_equal(s.target, s.plan)
        # the audio window is where the visual rows came from
        start = int(np.where((audio == s.audio[0]).all(1))[0][0])
        np.testing.assert_array_equal(s.visual, grid[start + s.plan])
        distorted += int(not np.array_equal(s.plan, np.arange(120)))
    assert distorted >= 3


def test_short_windows_always_get_a_full_monotonic_plan() -> None:
    # a speed warp's global shift can leave nothing of a window under a second long
    rng = np.random.default_rng(0)
    for n in (8, 12, 22):
        for _ in range(200):
            plan = random_plan(n, 25.0, rng)
            assert len(plan) == n and np.all(np.diff(plan) >= 0) and plan.min() >= 0 and plan.max() < n


def test_training_folders_may_hold_mpeg_program_streams(tmp_path: Path) -> None:
    for name in ("a.mpg", "b.MPEG", "c.mp4", "notes.txt", ".hidden.mpg"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_videos(tmp_path)] == ["a.mpg", "b.MPEG", "c.mp4"]


def test_augmentations() -> None:
    rng = np.random.default_rng(0)
    g = rng.random((5, 64)).astype(np.float32)
    f = hflip_grid(g)
    assert f[0, 0] == g[0, 7] and f[0, 8] == g[0, 15]
    np.testing.assert_array_equal(hflip_grid(f), g)
    kp = np.array([[0.2, 0.5, 0.9, 0.4]], np.float32)  # left point, right point
    np.testing.assert_allclose(hflip_keypoints(kp, [(0, 1)]), [[0.1, 0.4, 0.8, 0.5]], atol=1e-6)
    lm = rng.random((200, 128)).astype(np.float32) + 5
    m = spec_augment(lm, np.random.default_rng(1), n_time=2, max_time=0.1, n_freq=2, max_freq=20, fill=0.0)
    assert m.shape == lm.shape and (m == 0).any() and (m != 0).any()
    masked_rows = (m == 0).all(1).sum()
    masked_cols = (m == 0).all(0).sum()
    assert masked_rows + masked_cols > 0 and masked_rows <= 40 and masked_cols <= 40


def test_alignnet_is_registered_trainable() -> None:
    assert "alignnet" in trainable_names()
    tr = get_trainable("alignnet", mode="general")
    assert tr.name == "alignnet" and tr.kind == "motion"


@pytest.mark.parametrize("backend", ["syncnet", "avmatch", "wlos"])
def test_lipshape_networks_are_as_wide_as_their_input(backend: str) -> None:
    # 20 lip points (40 raw coordinates) become 80 values a frame (shape + velocity); the
    # network must be built for 80 (avmatch and wlos were built for the 40 raw ones)
    from types import SimpleNamespace

    from avsync.backends._inputs import visual_input

    tr = get_trainable(backend, mode="speech", input_kind="lipshape")
    raw = np.random.default_rng(0).standard_normal((40, 40)).astype(np.float32)
    dims = tr.dims([SimpleNamespace(visual=raw)], None)
    assert dims["input_kind"] == "lipshape" and dims["visual_in"] == visual_input(raw, "lipshape").shape[1] == 80
    model = tr.make_model(dims)
    if hasattr(model, "embed_visual"):
        v = torch.from_numpy(np.ascontiguousarray(visual_input(raw, "lipshape")[None, : dims["frames"]]))
        assert model.embed_visual(v).shape == (1, dims["embed"])


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from avsync.synthetic import write_clip

    d = tmp_path_factory.mktemp("train-data")
    for i in range(3):
        write_clip(d / f"clip{i}.mp4", seconds=4.0, fps=24, seed=i)
    return d


def test_train_cli_writes_checkpoint_card_and_resumes(data_dir: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from avsync.cli._app import _load_commands, app
    from avsync.hub import load_checkpoint

    monkeypatch.setenv("AVSYNC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("AVSYNC_NO_PROGRESS", "1")
    _load_commands()
    runner = CliRunner()
    ck = tmp_path / "net.pt"
    common = ["train", "alignnet", str(data_dir), "-o", str(ck), "--batch", "2", "--clip-seconds", "3",
              "--val-every", "2", "--threads", "1", "--device", "cpu", "--json"]
    r = runner.invoke(app, [*common, "--steps", "3"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["steps"] == 3 and res["n_val"] == 1 and res["n_train"] == 2
    assert ck.is_file() and Path(str(ck) + ".state").is_file()
    card = ck.with_suffix(".md").read_text()
    assert "Before training" in card and "After training" in card and "clip" in card
    c = load_checkpoint(ck, backend="alignnet")
    assert c["dims"]["input_kind"] == "motion" and c["config"]["steps"] == 3 and c["metrics"]["steps"] == 3

    # an existing checkpoint is not overwritten silently
    r = runner.invoke(app, [*common, "--steps", "3"])
    assert r.exit_code != 0 and "exists" in r.output

    r = runner.invoke(app, [*common, "--steps", "5", "--resume"])
    assert r.exit_code == 0, r.output
    res2 = json.loads(r.stdout.strip().splitlines()[-1])
    assert res2["steps"] == 5
    assert res2["before"] == res["before"]  # the untrained baseline is carried over
    assert [h["step"] for h in res2["history"]] == [0, 2, 3, 4, 5]
    assert load_checkpoint(ck)["metrics"]["steps"] == 5

    # the trained checkpoint drives the backend
    from avsync.backends import get_backend

    assert get_backend("alignnet", device="cpu", checkpoint=str(ck)).window == 72


def test_train_errors_are_one_line(tmp_path: Path) -> None:
    from avsync.cli._app import _load_commands, app

    _load_commands()
    runner = CliRunner()
    (tmp_path / "empty").mkdir()
    r = runner.invoke(app, ["train", "alignnet", str(tmp_path / "empty"), "-o", str(tmp_path / "x.pt")])
    assert r.exit_code != 0 and "no videos" in r.output
    r = runner.invoke(app, ["train", "classical-nope", str(tmp_path / "empty"), "-o", str(tmp_path / "x.pt")])
    assert r.exit_code != 0
    r = runner.invoke(app, ["train", "alignnet", str(tmp_path / "empty"), "-o", str(tmp_path / "x.pt"), "--resume"])
    assert r.exit_code != 0 and "nothing to resume" in r.output


def test_options_are_frozen() -> None:
    o = TrainOptions()
    with pytest.raises(AttributeError):
        o.steps = 3  # type: ignore[misc]
