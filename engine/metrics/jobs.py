"""Evaluation as a background job, like training (engine.jobs): Popen of `python -m engine evaluate`
in its own session, progress and truth on disk.

    runs/<id>/eval/jobs/<job>.json   {"state", "pid", "create_time", "progress", "message", "started_at",
                                      "heartbeat_at", "report", "args"}; replaced atomically
    runs/<id>/eval/jobs/<job>.log    the process's stdout/stderr
    runs/<id>/eval/<job>.json        the report, when it finishes

A job is alive while its pid exists with the recorded create time (pids are reused); a job recorded as
running whose process is gone is reported failed (or stopped, when a stop was asked for).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from engine.jobs import _create_time, _pid_matches, log_tail, run_dir
from engine.utils import REPO_ROOT, atomic_write_json, read_json, runs_root

ACTIVE = ("queued", "running")
_POPENS: dict[str, subprocess.Popen] = {}  # our children, polled so they never linger as zombies


class JobStatus:
    """The status file of one evaluation job, written by the evaluating process (throttled to 1/s)."""

    def __init__(self, path: str | os.PathLike, every_s: float = 1.0):
        self.path, self.every_s, self._last = Path(path), every_s, 0.0

    def set(self, state: str, force: bool = False, **fields: Any) -> None:
        now = time.time()
        if not force and state == "running" and now - self._last < self.every_s and "pid" not in fields:
            return
        st = read_json(self.path, {}) or {}
        if state == "running" and st.get("pid") != os.getpid():
            fields.update(pid=os.getpid(), create_time=_create_time(os.getpid()))
        st.update(fields, state=state, heartbeat_at=now)
        atomic_write_json(self.path, st)
        self._last = now


def jobs_dir(run_id: str, root: str | Path | None = None) -> Path:
    return run_dir(run_id, root) / "eval" / "jobs"


def start_eval(run_id: str, options: dict[str, Any] | None = None, root: str | Path | None = None) -> str:
    """Launch `python -m engine evaluate` for a run in the background; returns the job (= report) id.

    `options` are EvalConfig fields (metrics, features, n, per_class, step ...); they are validated here
    first, so a bad value fails in the caller with a ConfigError naming the field.
    """
    from engine.config import flag, from_dict
    from engine.metrics.evaluate import EvalConfig, new_report_id

    root = Path(root) if root else runs_root()
    d = run_dir(run_id, root)
    if not d.is_dir():
        raise FileNotFoundError(f"run {run_id} does not exist in {root}")
    job = new_report_id(d / "eval")
    while (jobs_dir(run_id, root) / f"{job}.json").exists():
        time.sleep(1.0)  # two starts in one second: the id is a timestamp
        job = new_report_id(d / "eval")
    opts = {k: v for k, v in (options or {}).items() if v is not None}
    from_dict(EvalConfig, {**opts, "run_dir": str(d), "job": job})  # validate now, not in the child
    args = ["--run-dir", str(d), "--job", job]
    for k, v in opts.items():
        args += [flag(k), str(v).lower() if isinstance(v, bool) else str(v)]
    jd = jobs_dir(run_id, root)
    jd.mkdir(parents=True, exist_ok=True)
    status = jd / f"{job}.json"
    atomic_write_json(status, {"state": "queued", "pid": None, "progress": 0.0, "message": "starting",
                               "started_at": time.time(), "heartbeat_at": None, "report": None, "args": args})
    env = dict(os.environ, PYTHONUNBUFFERED="1", HISTOGEN_RUNS=str(root))
    with open(jd / f"{job}.log", "ab") as log:
        p = subprocess.Popen([sys.executable, "-m", "engine", "evaluate", *args], stdin=subprocess.DEVNULL,
                             stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO_ROOT), env=env,
                             start_new_session=True)
    _POPENS[f"{run_id}/{job}"] = p
    st = read_json(status, {}) or {}
    if st.get("pid") is None:  # the child has not written yet: record whom to watch
        st.update(pid=p.pid, create_time=_create_time(p.pid))
        atomic_write_json(status, st)
    return job


def eval_status(run_id: str, job: str, root: str | Path | None = None) -> dict:
    """A job's status dict plus "job", "alive" and (after a failure) "log_tail"."""
    p = _POPENS.get(f"{run_id}/{job}")
    if p is not None and p.poll() is not None:
        _POPENS.pop(f"{run_id}/{job}", None)
    path = jobs_dir(run_id, root) / f"{job}.json"
    st = read_json(path, {}) or {}
    alive = st.get("state") in ACTIVE and st.get("pid") is not None and _pid_matches(st)
    if st.get("state") in ACTIVE and not alive and st.get("pid") is not None:
        stopped = (path.parent / f"{job}.stop").exists()
        tail = log_tail(path.with_suffix(".log"), lines=5).strip().splitlines()
        st.update(state="stopped" if stopped else "failed",
                  message="stopped" if stopped else f"the evaluation ended without a final status "
                                                    f"({tail[-1] if tail else 'no output'})")
        atomic_write_json(path, st)
    if st.get("state") == "failed":
        st["log_tail"] = log_tail(path.with_suffix(".log"))
    return {**st, "job": job, "alive": alive}


def list_eval_jobs(run_id: str, root: str | Path | None = None) -> list[dict]:
    """Status of every evaluation job of a run, newest first."""
    jd = jobs_dir(run_id, root)
    if not jd.is_dir():
        return []
    jobs = sorted((p.stem for p in jd.glob("*.json")), reverse=True)
    return [eval_status(run_id, j, root) for j in jobs]


def active_eval(run_id: str, root: str | Path | None = None) -> dict | None:
    """The running (or queued) evaluation job of a run, if any."""
    return next((j for j in list_eval_jobs(run_id, root) if j["state"] in ACTIVE), None)


def stop_eval(run_id: str, job: str, root: str | Path | None = None, grace_s: float = 10.0) -> dict:
    """Terminate a job's process group (SIGTERM, then SIGKILL after `grace_s`); no partial report is kept."""
    jd = jobs_dir(run_id, root)
    (jd / f"{job}.stop").touch()
    st = read_json(jd / f"{job}.json", {}) or {}
    if st.get("state") in ACTIVE and st.get("pid") and _pid_matches(st):
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 2.0)):
            try:
                os.killpg(os.getpgid(int(st["pid"])), sig)
            except (ProcessLookupError, PermissionError):
                break
            deadline = time.time() + wait
            while time.time() < deadline and _pid_matches(st):
                p = _POPENS.get(f"{run_id}/{job}")
                if p is not None:
                    p.poll()
                time.sleep(0.1)
            if not _pid_matches(st):
                break
    return eval_status(run_id, job, root)
