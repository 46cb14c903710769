"""The Ray executor: tasks handed to Ray's scheduler (``RAY_ADDRESS`` or a local cluster).

``ray`` is imported only when this executor runs, so the package imports without it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from avsync.batch.commands import execute


def run_ray(tasks: list[dict[str, Any]], jobs: int, record: Callable[[dict], None],
            timeout: float | None) -> None:
    """Hand tasks to Ray: its scheduler places them; worker processes are reused, so
    modules and cached models stay loaded between tasks."""
    import ray

    if not tasks:
        return
    if not ray.is_initialized():
        kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                              "configure_logging": False}
        if not os.environ.get("RAY_ADDRESS") and jobs:
            kw["num_cpus"] = jobs
        ray.init(**kw)
    remote = ray.remote(num_cpus=1, max_retries=0)(execute)
    refs = {remote.remote(t): t for t in tasks}
    try:
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=1.0)
            for r in ready:
                t = refs.pop(r)
                try:
                    record(ray.get(r))
                except Exception as e:  # noqa: BLE001 - a lost worker is one item's failure
                    rec = execute({**t, "error": f"ray task failed: {type(e).__name__}: {e}"})
                    rec["error_type"] = "WorkerError"
                    record(rec)
    except KeyboardInterrupt:
        for r in refs:
            ray.cancel(r, force=True)
        raise
