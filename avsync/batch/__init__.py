"""Batch runs: many files, one JSON line each, resumable, failure-tolerant.

A batch is a list of :class:`BatchItem` (one command on its inputs, writing one output) read
from a manifest (:func:`read_manifest`) or built by pairing files by name
(:func:`pair_by_name`). :func:`run_batch` runs them on a pool of worker processes, each of
which imports the heavy libraries (torch, mediapipe) once and keeps whatever models the
library caches loaded for every later item. Every finished item yields one record (a dict,
one JSON line) that is appended and flushed to the results file at once, so an interrupted
run keeps what it finished and ``resume=True`` skips it next time.

Modules: ``manifest`` (rows to items), ``options`` (manifest values to option dataclasses),
``pairing`` (items by file name), ``commands`` (the registry, the adapters, one task to one
record), ``resume`` (the results file and what it says is done), ``run`` (:func:`run_batch`),
``pool`` and ``worker`` (the local executor), ``ray_executor`` (Ray).

Manifest format
---------------
CSV (header row) or JSONL (one object a line); ``#`` starts a comment line. Fields:

``command``
    ``align``, ``detect-offset`` or ``retarget``.
``inputs``
    A JSON list, or in CSV a ``;``-separated cell; or one field per input named as the
    command names them: ``video``, ``audio`` (align), ``clip`` (detect-offset), ``dance``,
    ``music`` (retarget).
``output``
    The file to write (required for align and retarget; for detect-offset, a corrected copy).
``id``
    Optional; default ``"<command>:<output or first input>"``. Resume keys on it.
``options``
    Optional JSON object of command options. Any other field is an option too (an empty CSV
    cell means "not set"). ``map``, ``plot`` (align, retarget) and ``check`` (detect-offset)
    are accepted besides the fields of the command's options dataclass.

Relative paths are taken relative to the manifest's directory.

Results
-------
One record per item: ``id``, ``command``, ``inputs``, ``output``, ``status`` (``ok`` or
``error``), ``error`` (one line, or None), ``error_type``, ``result`` (the command's JSON
summary, long arrays left out), ``seconds``, ``manifest`` (manifest file and line). The keys are
those of :mod:`avsync.vocabulary`.
"""

from avsync.batch.commands import (
    CheckFailed,
    CommandSpec,
    commands,
    execute,
    register_command,
    run_align,
    run_detect_offset,
    run_retarget,
)
from avsync.batch.manifest import BatchItem, dedupe, item_from_row, read_manifest
from avsync.batch.options import build_options, coerce
from avsync.batch.pairing import VIDEO_EXTS, pair_by_name
from avsync.batch.pool import remove_partials, run_pool
from avsync.batch.ray_executor import run_ray
from avsync.batch.resume import ResultsFile, load_results, plan_resume
from avsync.batch.run import BatchSummary, make_task, run_batch

__all__ = [
    "VIDEO_EXTS",
    "BatchItem",
    "BatchSummary",
    "CheckFailed",
    "CommandSpec",
    "ResultsFile",
    "build_options",
    "coerce",
    "commands",
    "dedupe",
    "execute",
    "item_from_row",
    "load_results",
    "make_task",
    "pair_by_name",
    "plan_resume",
    "read_manifest",
    "register_command",
    "remove_partials",
    "run_align",
    "run_batch",
    "run_detect_offset",
    "run_pool",
    "run_ray",
    "run_retarget",
]
