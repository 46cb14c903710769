"""Items by file name: every video in a folder, paired with one audio file or with the audio
file of the same name in another folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from avsync.batch.commands import CommandSpec, commands
from avsync.batch.manifest import BatchItem, dedupe
from avsync.errors import InputError
from avsync.outputs import VIDEO_SUFFIXES

VIDEO_EXTS = VIDEO_SUFFIXES


def pair_by_name(
    command: str,
    video_dir: str | Path,
    *,
    audio: str | Path | None = None,
    audio_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    options: dict[str, Any] | None = None,
    out_ext: str | None = ".mp4",
) -> list[BatchItem]:
    """Items for every video in ``video_dir``, paired with audio by file name.

    ``take3.mp4`` pairs with ``audio_dir/take3.*`` (any extension), or with the single
    ``audio`` file for every video. Outputs go to ``out_dir/take3<out_ext>`` (``out_ext``
    None keeps the video's extension). For ``detect-offset`` no audio is needed and
    ``out_dir`` (optional) receives corrected copies.

    Returns
    -------
    list of BatchItem
        Sorted by video name; a video without (or with several) matching audio files is an
        item carrying an ``error``.

    Raises
    ------
    InputError
        A directory is missing, or the audio options do not fit the command.
    """
    spec = _spec(command)
    vdir = Path(video_dir)
    _check_arguments(spec, vdir, audio, audio_dir, out_dir)
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    by_stem = _audio_by_stem(audio_dir)
    items = []
    for v in _videos(vdir):
        out = None if out_dir is None else str(Path(out_dir) / (v.stem + (out_ext if out_ext else v.suffix)))
        inputs, err = [str(v)], None
        if len(spec.inputs) == 2:
            inputs, err = _with_audio(v, audio, audio_dir, by_stem)
        items.append(BatchItem(f"{command}:{v.name}", command, inputs, out, dict(options or {}), str(v), err))
    return dedupe(items)


def _spec(command: str) -> CommandSpec:
    table = commands()
    spec = table.get(command)
    if spec is None:
        raise InputError(f"unknown command {command!r} (one of: {', '.join(sorted(table))})")
    return spec


def _check_arguments(spec: CommandSpec, vdir: Path, audio: str | Path | None, audio_dir: str | Path | None,
                     out_dir: str | Path | None) -> None:
    command = spec.name
    if not vdir.is_dir():
        raise InputError(f"video directory {vdir} does not exist")
    need_audio = len(spec.inputs) == 2
    if need_audio and (audio is None) == (audio_dir is None):
        raise InputError(f"{command} by name needs exactly one of --audio FILE or --audio-dir DIR")
    if not need_audio and (audio is not None or audio_dir is not None):
        raise InputError(f"{command} takes no audio")
    if spec.output == "required" and out_dir is None:
        raise InputError(f"{command} needs an output directory (-o DIR)")
    if audio_dir is not None and not Path(audio_dir).is_dir():
        raise InputError(f"audio directory {audio_dir} does not exist")


def _audio_by_stem(audio_dir: str | Path | None) -> dict[str, list[Path]]:
    by_stem: dict[str, list[Path]] = {}
    if audio_dir is not None:
        for a in sorted(Path(audio_dir).iterdir()):
            if a.is_file() and not a.name.startswith("."):
                by_stem.setdefault(a.stem, []).append(a)
    return by_stem


def _videos(vdir: Path) -> list[Path]:
    return sorted(v for v in vdir.iterdir()
                  if v.is_file() and not v.name.startswith(".") and v.suffix.lower() in VIDEO_EXTS)


def _with_audio(v: Path, audio: str | Path | None, audio_dir: str | Path | None,
                by_stem: dict[str, list[Path]]) -> tuple[list[str], str | None]:
    """The inputs of video ``v`` (video, audio), or (video only, why no audio was found)."""
    if audio is not None:
        return [str(v), str(audio)], None
    cands = [a for a in by_stem.get(v.stem, []) if a.resolve() != v.resolve()]
    if not cands:
        return [str(v)], f"{v.name}: no audio named {v.stem}.* in {audio_dir}"
    if len(cands) > 1:
        return [str(v)], f"{v.name}: several audio files named {v.stem}.*: " + ", ".join(c.name for c in cands)
    return [str(v), str(cands[0])], None
