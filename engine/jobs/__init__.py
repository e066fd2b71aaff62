"""One background-job layer for every kind: training runs, data preparation, the domain classifier,
evaluations (DESIGN "jobs/").

    core.py        spawn / reap / liveness (`settle`), the status record (`JobStatus`) and its writer
                   (`StatusWriter`), ids (`new_id`), the stop protocol, KINDS (one row per kind)
    train.py       training runs: start, resume, stop, status, list_runs, progress, estimate, rename, delete
    prepare.py     jobs of a data set: start_prepare, prepare_status, list_prepare_jobs, stop_prepare, start_job
    classifier.py  the domain classifier of a data set: classifier_status, start/ensure/stop_classifier
    eval.py        evaluations: start_eval, eval_status, list_eval_jobs, active_eval, stop_eval, eval_needs
    gpu.py         acquire_gpu: one training run per GPU
    cli.py         `python -m engine jobs ...`

`from engine import jobs; jobs.start(...)` is the training-run API (engine.jobs.train) plus `main`. The
names are looked up on first use (PEP 562), so `import engine.jobs.core` (the trainer's writer) or
`engine.jobs.gpu` does not load the launcher.
"""
from __future__ import annotations

import importlib
from typing import Any

_FROM = {
    "engine.jobs.train": ("ACTIVE", "RunStatus", "run_dir", "start", "resume", "stop", "status", "list_runs",
                          "progress", "Progress", "recent_img_per_s", "estimate", "estimate_text", "Estimate",
                          "NO_ESTIMATE", "rename", "delete", "NAME_MAX"),
    "engine.jobs.core": ("LAUNCH_MARK", "HEARTBEAT_STALE_S", "STOP_GRACE_S", "JobStatus", "StatusWriter", "KINDS",
                         "log_tail", "last_line", "duration_text", "progress_text"),
    "engine.jobs.gpu": ("acquire_gpu", "_GPU_LOCKS"),
    "engine.jobs.cli": ("main",),
}
_WHERE = {name: module for module, names in _FROM.items() for name in names}
__all__ = sorted(n for n in _WHERE if not n.startswith("_"))


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'engine.jobs' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value  # once: later lookups (and monkeypatches) see a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
