"""Options validate themselves once; the CLI takes its defaults and choices from them."""

from __future__ import annotations

import dataclasses
import inspect
import math

import pytest

from avsync.align import PATHS, SYNC_BY, AlignOptions
from avsync.backends.classical import ClassicalOptions
from avsync.errors import InputError
from avsync.evaluation.protocol import PROTOCOLS, BenchOptions
from avsync.features import MODES
from avsync.options import X264_PRESETS, OptionError
from avsync.path import PathOptions
from avsync.retarget import RetargetOptions

BAD_NUMBERS = (math.inf, -math.inf, math.nan, -1.0)

CASES = [
    (AlignOptions, ("max_shift", "max_speed", "lag_penalty", "crf", "min_evidence")),
    (RetargetOptions, ("max_speed", "start", "crf", "tempo_penalty", "speed_prior", "skip_music_cost",
                       "skip_visual_cost", "smooth_frames")),
    (PathOptions, ("lag_change_penalty", "lag_prior", "max_speed", "min_speed", "smooth_seconds", "smooth_order",
                   "temperature", "confidence_bins", "confidence_smooth_seconds")),
    (BenchOptions, ("seed", "random_shifts", "max_shift", "offset_max_shift", "max_clips")),
    (ClassicalOptions, ("detrend_seconds", "smooth_frames", "var_floor", "min_overlap")),
]


@pytest.mark.parametrize("cls,fields", CASES, ids=[c[0].__name__ for c in CASES])
def test_defaults_are_valid_and_bad_numbers_are_refused(cls, fields):
    cls()  # the defaults pass their own checks
    for name in fields:
        for bad in BAD_NUMBERS:
            with pytest.raises(OptionError) as ei:
                cls(**{name: bad})
            msg = str(ei.value)
            assert msg.startswith(f"{name} must be ") and "--" not in msg, msg
            assert ei.value.field == name
            assert isinstance(ei.value, InputError) and isinstance(ei.value, ValueError)


def test_the_issue_example_message():
    with pytest.raises(InputError, match=r"^max_shift must be a positive number of seconds \(got inf\)$"):
        AlignOptions(max_shift=float("inf"))


@pytest.mark.parametrize("cls", [AlignOptions, RetargetOptions])
def test_every_command_accepts_the_same_modes(cls):
    for mode in MODES:
        assert cls(mode=mode).mode == mode
    with pytest.raises(OptionError, match="mode must be one of auto, dance, speech, general"):
        cls(mode="karaoke")


def test_choices_and_other_checks():
    for p in PATHS:
        AlignOptions(path=p)
    for s in SYNC_BY:
        AlignOptions(sync_by=s)
    for p in X264_PRESETS:
        AlignOptions(preset=p)
        RetargetOptions(preset=p)
    AlignOptions(device="cuda:1")
    AlignOptions(crf=20.0)  # whole numbers as floats are fine (manifests, JSON)
    for kw in ({"path": "astar"}, {"sync_by": "both"}, {"preset": "warp9"}, {"device": "tpu"}, {"crf": 52},
               {"crf": 18.5}):
        with pytest.raises(OptionError):
            AlignOptions(**kw)
    with pytest.raises(OptionError, match="backend 'alignnet' cannot retarget"):
        RetargetOptions(backend="alignnet")
    with pytest.raises(OptionError, match="window_seconds"):
        ClassicalOptions(window_seconds=(0.25, 0.0))
    with pytest.raises(OptionError, match="window_seconds"):
        ClassicalOptions(window_seconds=())
    assert BenchOptions.protocols("offset") == {"nonuniform": False, "offset": True}
    assert [BenchOptions.protocols(p) for p in PROTOCOLS][0] == {"nonuniform": True, "offset": True}
    with pytest.raises(OptionError, match="protocol must be one of"):
        BenchOptions.protocols("both")


def _cli_defaults(fn) -> dict:
    return {k: p.default for k, p in inspect.signature(fn).parameters.items() if p.default is not p.empty}


@pytest.mark.parametrize("module,cls,skip", [
    ("avsync.cli.align", AlignOptions, {"checkpoint"}),
    ("avsync.cli.retarget", RetargetOptions, set()),
    ("avsync.cli.bench", BenchOptions, {"max_clips"}),
])
def test_cli_defaults_are_the_library_defaults(module, cls, skip):
    import importlib

    mod = importlib.import_module(module)
    fn = getattr(mod, module.rsplit(".", 1)[1])
    cli = _cli_defaults(fn)
    shared = [f for f in dataclasses.fields(cls) if f.name in cli and f.name not in skip]
    assert len(shared) >= 3
    for f in shared:
        assert cli[f.name] == f.default, f.name


def _cli(args):
    from typer.testing import CliRunner

    from avsync.cli._app import _load_commands, app

    _load_commands()
    return CliRunner().invoke(app, args)


@pytest.mark.parametrize("args,line", [
    (["align", "v.mp4", "--audio", "a.wav", "-o", "o.mp4", "--max-shift", "inf"],
     "avsync: error: --max-shift must be a positive number of seconds (got inf)"),
    (["align", "v.mp4", "--audio", "a.wav", "-o", "o.mp4", "--crf", "99"],
     "avsync: error: --crf must be a whole number within 0..51 (got 99)"),
    (["align", "v.mp4", "--audio", "a.wav", "-o", "o.mp4", "--path", "astar"],
     "avsync: error: --path must be one of viterbi, dtw, none (got 'astar')"),
    (["retarget", "d.mp4", "m.wav", "-o", "o.mp4", "--start", "nan"],
     "avsync: error: --start must be a finite number of seconds >= 0 (got nan)"),
    (["retarget", "d.mp4", "m.wav", "-o", "o.mp4", "--mode", "karaoke"],
     "avsync: error: --mode must be one of auto, dance, speech, general (got 'karaoke')"),
    (["bench", ".", "--protocol", "both"],
     "avsync: error: --protocol must be one of all, nonuniform, offset, real (got 'both')"),
    (["bench", ".", "--max-clips", "0"],
     "avsync: error: --max-clips must be a whole number >= 1 (got 0)"),
])
def test_cli_refuses_bad_options_in_one_line_naming_the_flag(args, line):
    r = _cli(args)
    assert r.exit_code == 1
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert lines == [line]
