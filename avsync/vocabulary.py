"""The one JSON vocabulary: every key that ``align``, ``detect-offset``, ``retarget`` print
with ``--json``, that their results' ``to_json()`` return, and that ``batch`` writes per item.

One name per thing, one thing per name, across commands; nested keys (``fix.shift_ms``,
``windows[].offset_ms``, ``evidence.score``) are named here by their own name. Units: times
are seconds unless the name ends in ``_ms`` (milliseconds); offsets, shifts and lags follow the
sign convention (positive = audio leads the picture). The README's "JSON vocabulary" table is
:func:`markdown_table` (``python -m avsync.vocabulary`` prints it; ``tests/test_vocabulary.py``
checks that the README holds it and that the commands emit no other key).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Key:
    """One JSON key: its unit (or type) and meaning, and the commands that emit it."""

    name: str
    unit: str
    meaning: str
    where: str


def _k(name: str, unit: str, meaning: str, where: str) -> tuple[str, Key]:
    return name, Key(name, unit, meaning, where)


A, D, R, B = "align", "detect-offset", "retarget", "batch"
ADR = "align, detect-offset, retarget"

VOCABULARY: dict[str, Key] = dict([
    # outcome
    _k("ok", "bool", "the command did what it was asked (false: `error` says why; stdout still gets this object)",
       ADR),
    _k("error", "text or null", "the one-line error (the same line as on stderr); null when it worked", f"{ADR}, {B}"),
    _k("convention", "text", "the sign convention in words: positive = audio leads picture", f"{A}, {D}"),
    _k("note", "text", "what was used and decided, in words", ADR),
    # files
    _k("file", "path", "the clip that was measured", D),
    _k("output", "path or null", "the video written (align, retarget, `fix`, a batch item's output)", f"{ADR}, {B}"),
    _k("map", "path or null", "the `--map` JSON written", f"{A}, {R}"),
    _k("plot", "path or null", "the `--plot` PNG written", ADR),
    _k("export", "object or null", "the `--export` timeline written: `path`, `format`, `segments`, "
                                   "`map_sha256` (align, retarget) or `shift_ms`, `drift_ms_per_min`, `words`, "
                                   "`sha256` (detect-offset)", ADR),
    _k("path", "path", "`export`: the timeline file", ADR),
    _k("format", "text", "`export`: the timeline format (otio_json, cmx_3600, fcp_xml, fcpx_xml)", ADR),
    _k("segments", "count", "`export`: clips on the timeline's picture track", f"{A}, {R}"),
    _k("map_sha256", "hex", "`export`: sha256 of the warp map the timeline was made from", f"{A}, {R}"),
    _k("sha256", "hex", "`export`: sha256 of the measurement the timeline was made from", D),
    # what was used
    _k("backend", "text", "the backend that measured (classical, alignnet, ..., soundtrack)", ADR),
    _k("mode", "text", "visual feature mode used (dance, speech, general; `-` when the picture was not read)", ADR),
    _k("visual_kind", "text", "the visual features actually read: pose, lips, motion (`-`: none)", ADR),
    _k("sync_by", "text", "what the warp follows: picture or soundtrack", A),
    _k("method", "text", "how the offset was read: correlation, or events (sub-millisecond refinement)", D),
    # clocks and lengths
    _k("fps", "frames/s", "frame rate of the input video (clip, video, dance)", ADR),
    _k("output_fps", "frames/s", "frame rate of the written video", f"{A}, {R}"),
    _k("duration", "s", "length of the input video (the clip measured, the dance)", f"{D}, {R}"),
    _k("output_duration", "s", "length of the written video (align: the reference audio's length)", f"{A}, {R}"),
    _k("music_duration", "s", "length of the music", R),
    _k("start", "s", "where a span begins: `windows[]`: in the clip; retarget: in the music", f"{D}, {R}"),
    _k("n_out", "frames", "frames in the written video", f"{A}, {R}"),
    _k("n_src", "frames", "frames in the source video", A),
    # offset
    _k("offset_ms", "ms", "audio-to-picture offset, + = audio leads (at the first frame when drifting; "
                          "`windows[]`: in that window; `faces[]`: read on that face)", D),
    _k("offset_frames", "frames", "`offset_ms` in frames of the clip", D),
    _k("words", "text", "the offset or shift in words (\"audio is 64 ms early\", \"audio delayed by 64 ms\")", D),
    _k("confidence", "0..1", "how sure the measurement is (align: mean over output frames; "
                             "`windows[]`: that window; `faces[]`: that face's global reading; "
                             "`evidence`: the real pairing's score)", f"{A}, {D}"),
    _k("backend_confidence", "0..1", "the backend's own confidence in the global offset", D),
    _k("window_agreement", "0..1", "share of windows agreeing with the global offset", D),
    _k("second_opinion", "object or null", "classical backend on a tracked face it is unsure of: the lip SyncNet's "
                                           "reading, `backend`, `offset_ms`, `frames_apart`, `classical_ms` "
                                           "(agreement raises the confidence, never above the verdict threshold)", D),
    _k("frames_apart", "frames", "`second_opinion`: how far its offset is from the classical reading", D),
    _k("classical_ms", "ms", "`second_opinion`: the classical correlation's own offset (a tracked face's "
                             "`offset_ms` is read by both together)", D),
    _k("faces", "list", "a picture with several tracked faces: each one's `face`, `position`, `size`, `detected`, "
                        "`offset_ms`, `confidence` (absent with one face)", D),
    _k("face", "index", "`faces[]`: the face's number, left to right from 0", D),
    _k("position", "[x, y]", "`faces[]`: where the mouth is, pixels / the frame's longest side", D),
    _k("size", "same units", "`faces[]`: the face's inter-ocular distance", D),
    _k("detected", "0..1", "`faces[]`: share of frames where that face was found", D),
    _k("syncnet_margin", "0..1 or null", "`faces[]`: the lip SyncNet's margin at its best lag ((median − least) / "
                                         "median distance); picks the likeliest face when no face is clear", D),
    _k("speaking_face", "index or null", "the face whose lips follow the sound (null: cannot tell which)", D),
    _k("measured_face", "index", "the face the offset was measured on (the likeliest speaker)", D),
    _k("in_sync", "bool", "inside the ITU window −125 ms ≤ offset ≤ +45 ms", D),
    _k("verdict", "text", "in sync, constant offset, drifting, or cannot tell", D),
    _k("drift_ms_per_min", "ms/min", "change of the offset per minute of picture (`fix`: the drift cancelled)", D),
    _k("drift_stderr_ms_per_min", "ms/min or null", "standard error of the drift", D),
    _k("period", "s or null", "the picture repeats with this period: offsets are ambiguous modulo it", D),
    _k("windows", "list", "the drift windows: `start`, `offset_ms`, `confidence` each", D),
    _k("fix", "object", "the `--fix` copy written: `output`, `shift_ms`, `drift_ms_per_min`, `audio`, `video`", D),
    _k("shift_ms", "ms", "how far the audio was moved: + = delayed (it led), − = moved earlier", D),
    _k("audio", "text", "`fix`: what happened to the audio stream (re-encoded (aac), copied, ...)", D),
    _k("video", "text", "`fix`: what happened to the video stream (copied)", D),
    # align
    _k("lag_ms", "object", "source time shown minus output time (the map's `src_time − time`) over the output "
                        "frames, ms: `mean`, `min`, `max`", A),
    _k("mean", "ms", "`lag_ms`: mean", A),
    _k("min", "ms", "`lag_ms`: smallest", A),
    _k("max", "ms", "`lag_ms`: largest", A),
    _k("stats", "object", "frame accounting: `duplicated`, `dropped`, `consecutive`, `unique`, `n_out`, `n_src`", A),
    _k("duplicated", "frames", "`stats`: output frames repeating the previous source frame", A),
    _k("dropped", "frames", "`stats`: source frames skipped", A),
    _k("consecutive", "frames", "`stats`: output frames showing the next source frame", A),
    _k("unique", "frames", "`stats`: distinct source frames shown", A),
    _k("evidence", "object", "the check that the picture (or soundtrack) follows this audio: `checked`, `passed`, "
                             "`score`, `confidence`, `null_mean`, `null_max`, `z`, `margin`, `in_step`, `source`", A),
    _k("checked", "bool", "`evidence`: the check ran", A),
    _k("passed", "bool", "`evidence`: the real pairing beat unrelated audio by `margin` (else the timing was kept)", A),
    _k("score", "0..1", "`evidence`: the soundtrack match, or the mean affinity along the picture path, of the "
                        "real pairing", A),
    _k("null_mean", "0..1", "`evidence` (soundtrack): mean score of unrelated audio (the reference rolled)", A),
    _k("null_max", "0..1", "`evidence`: best score of unrelated audio (the same audio rolled)", A),
    _k("z", "spreads", "`evidence` (picture): how far the real `score` lies above the unrelated pairings' mean, "
                       "in their spreads", A),
    _k("margin", "0..1 or z", "`evidence`: how much better than `null_mean` (soundtrack) or by how much `z` "
                              "(picture) the real pairing must be", A),
    _k("in_step", "bool", "`evidence`: the soundtrack already plays in step with the reference", A),
    _k("source", "text", "`evidence`: what was checked, picture or soundtrack", A),
    # retarget
    _k("loop", "bool", "the dance was repeated to cover the music", R),
    _k("music_tempo", "bpm", "tempo of the music", R),
    _k("visual_tempo", "bpm", "tempo of the visual beats", R),
    _k("n_music_beats", "count", "beats found in the music", R),
    _k("n_visual_beats", "count", "visual beats found in the dance", R),
    _k("n_matches", "count", "visual beats placed on music beats", R),
    _k("bas_before", "0..1", "Beat Align Score of the unchanged dance on the music", R),
    _k("bas_after", "0..1", "Beat Align Score of the retargeted dance", R),
    _k("speed_min", "×", "slowest local speed of the warp", R),
    _k("speed_max", "×", "fastest local speed of the warp", R),
    _k("max_speed", "×", "the speed bound asked for (speeds stay within 1/x .. x)", R),
    # time spent
    _k("stage_seconds", "object", "wall-clock time per stage, s (keys: stage names)", f"{A}, {R}"),
    _k("seconds", "s", "wall-clock time of a batch item", B),
    # batch records
    _k("id", "text", "the item's id (manifest `id`, else command:output)", B),
    _k("command", "text", "align, detect-offset or retarget", B),
    _k("inputs", "list", "the item's input paths", B),
    _k("status", "text", "ok or error (`--dry-run`: planned or error)", B),
    _k("error_type", "text or null", "the error's class (InputError, CannotMeasure, CheckFailed, ...)", B),
    _k("result", "object or null", "the command's `--json` object for this item (long arrays left out)", B),
    _k("manifest", "text", "where the item came from: manifest file and line", B),
    _k("options", "object", "`--dry-run`: the item's command options (keys: option names)", B),
    _k("traceback", "text", "internal errors only: the end of the traceback, for a bug report", B),
])

# Objects whose keys are data (stage names, option names), not vocabulary.
OPEN = frozenset({"stage_seconds", "options"})


def keys_of(obj: Any) -> set[str]:
    """Every key in ``obj`` (nested dicts and lists of dicts), not descending into :data:`OPEN` objects."""
    found: set[str] = set()
    if isinstance(obj, dict):
        for k, v in obj.items():
            found.add(str(k))
            if k not in OPEN:
                found |= keys_of(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            found |= keys_of(v)
    return found


def unknown_keys(obj: Any) -> set[str]:
    """Keys of ``obj`` that the vocabulary does not list."""
    return keys_of(obj) - set(VOCABULARY)


def markdown_table(keys: Iterable[Key] | None = None) -> str:
    """The README's table: key, unit, meaning, commands."""
    rows = [HEADER, "|---|---|---|---|"]
    for k in keys if keys is not None else VOCABULARY.values():
        rows.append(f"| `{k.name}` | {k.unit} | {k.meaning.replace('|', '/')} | {k.where} |")
    return "\n".join(rows) + "\n"


HEADER = "| key | unit | meaning | emitted by |"


def table_in(text: str) -> list[str]:
    """The key names of the vocabulary table (the one under :data:`HEADER`) in a markdown ``text``."""
    start = text.find(HEADER)
    if start < 0:
        return []
    block = text[start:].split("\n\n", 1)[0]
    return re.findall(r"^\| `(\w+)` \|", block, re.M)


if __name__ == "__main__":
    print(markdown_table(), end="")
