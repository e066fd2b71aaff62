"""GPU lock: two training runs never share one GPU (<runs root>/.gpu.lock + .gpu.owner.json).

Imported by the trainer (engine.train.loop) without the launcher: no torch, no start/stop here.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from engine.utils import atomic_write_json, read_json

_GPU_LOCKS: list[FileLock] = []  # held for the life of the training process (released at exit)


def acquire_gpu(run_dir: str | Path, status: Any = None, stop: Any = None, poll_s: float = 1.0) -> bool:
    """Block until this process holds the GPU lock (<runs root>/.gpu.lock, the run dir's parent).

    Called by a single-process training run before it touches the GPU (torchrun jobs get their GPUs
    from the cluster's scheduler). While another run holds the lock it writes `queued` through
    `status.set(state, message=...)` (an engine.jobs.core.StatusWriter) every `poll_s`; it returns False
    if `stop.requested()` turns true while waiting, True once the lock is held. The lock is an OS file
    lock: it is released when the process exits, however it exits.
    """
    d = Path(run_dir)
    root = d.parent
    root.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(root / ".gpu.lock"))
    owner = root / ".gpu.owner.json"
    waited = False
    while True:
        try:
            lock.acquire(timeout=poll_s)
            break
        except Timeout:
            if stop is not None and stop.requested():
                return False
            if status is not None:
                who = (read_json(owner, {}) or {}).get("run_id", "another run")
                status.set("queued", message=f"waiting for the GPU (in use by {who})")
                waited = True
    _GPU_LOCKS.append(lock)
    atomic_write_json(owner, {"run_id": d.name, "pid": os.getpid()})
    if waited:
        status.set("running", message="starting")
    return True
