"""The README's Library example runs as written, and the front door stays light."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _library_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Library\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, "the README's Library section has no python example"
    return blocks[0]


def test_readme_library_example_runs(tmp_path, monkeypatch, capsys):
    (tmp_path / "examples").mkdir()
    for name in ("flashes.mp4", "flashes_distorted.mp4"):
        shutil.copy(ROOT / "examples" / name, tmp_path / "examples" / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AVSYNC_CACHE", str(tmp_path / "cache"))
    ns: dict = {}
    exec(compile(_library_example(), "README.md:Library", "exec"), ns)
    printed = capsys.readouterr().out

    result, offset, frames = ns["result"], ns["offset"], ns["frames"]
    # align really ran: the corrected video and its map are there and agree with the result
    assert (tmp_path / "flashes_aligned.mp4").stat().st_size > 1000
    m = json.loads((tmp_path / "flashes_aligned.map.json").read_text())
    assert m["kind"] == "align" and len(frames) == result.n_out == m["n_out"] > 100
    assert result.sync_by == "picture" and result.evidence["passed"]
    # the flashes example is warped (slowed, frozen, sped up, shifted): the map is no identity
    assert max(abs(f["src_time"] - f["time"]) for f in frames) > 0.1
    assert result.stats["duplicated"] + result.stats["dropped"] > 0
    # detect_offset really ran on the synced original: in step within a frame, confidently
    assert abs(offset.offset_s) < 0.04 and offset.confidence > 0.3
    assert "frames;" in printed and " ms, confidence " in printed


def test_import_avsync_is_light():
    code = ("import sys, avsync; heavy = [m for m in ('numpy', 'torch', 'mediapipe', 'av', 'scipy') "
            "if m in sys.modules]; print(heavy, avsync.__version__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.startswith("[] ")


def test_front_door_names():
    import avsync
    import avsync.align as align_module
    from avsync import AlignOptions, OffsetOptions, RetargetOptions, align, detect_offset, retarget
    from avsync.align import align as align_fn

    assert align is align_module and callable(align) and callable(retarget) and callable(detect_offset)
    assert align_module.AlignOptions is AlignOptions  # the module stays a module
    assert avsync.align.compute_correspondence is align_module.compute_correspondence
    assert callable(align_fn) and align_fn is not align
    assert {"align", "detect_offset", "retarget", "AlignResult", "OffsetResult", "RetargetResult"} <= set(dir(avsync))
    assert OffsetOptions().max_shift > 0 and RetargetOptions().mode == "auto"
