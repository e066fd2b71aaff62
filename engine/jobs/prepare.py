"""Jobs of a data set: its preparation (`python -m engine prepare ... --progress-file`) and, through
`start_job`, its domain classifier (engine.jobs.classifier), so 100k TIFFs neither block the Data page
for half an hour nor run on one core.

    <data root>/.jobs/<job>/status.json    the launcher's record: queued, pid, create_time, started_at,
                                           kind, source, out; the final state only of a job that died
                                           without writing one (core.record_end)
    <data root>/.jobs/<job>/progress.json  the job's own record: state, done, total, message (+ out)
    <data root>/.jobs/<job>/log.txt        its stdout and stderr
    <data root>/.jobs/<job>/stop           a stop was asked for

A job writes into a temp directory beside its output and renames it into place at the end
(engine.data.prepare), so a stopped or killed job never leaves a half-written data set; a stopped job
removes its temp directory itself, and the next preparation of the same directory clears a killed one's.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

from engine import config as C
from engine.config import ConfigError, PrepareConfig
from engine.jobs import core
from engine.jobs.core import ACTIVE, FINAL, JobStatus
from engine.utils import data_root, read_json

KEEP_JOBS = 20  # ended jobs kept on disk (the newest); older ones are removed by start_job
PrepareStatus = JobStatus  # kind "prepare" or "classifier"; done / total / out / source are set

__all__ = ["ACTIVE", "FINAL", "PrepareStatus", "jobs_root", "job_dir", "start_prepare", "start_job",
           "prepare_status", "list_prepare_jobs", "stop_prepare"]


def jobs_root() -> Path:
    return data_root() / ".jobs"


def job_dir(job_id: str) -> Path:
    return jobs_root() / core.check_id(job_id, "prepare job")


def paths(job_id: str) -> core.Paths:
    d = job_dir(job_id)
    return core.Paths(status=d / "status.json", log=d / "log.txt", stop=d / "stop", progress=d / "progress.json")


def _args(cfg: PrepareConfig) -> list[str]:
    # Only what differs from the defaults, as --flag=value (a value may be empty or start with '-').
    base = C.to_dict(PrepareConfig())
    return [f"{C.flag(k)}={str(v).lower() if isinstance(v, bool) else v}"
            for k, v in C.to_dict(cfg).items() if v != base[k] or k == "out"]


def start_prepare(cfg: PrepareConfig) -> str:
    """Launch `python -m engine prepare` for `cfg` in the background; returns the job id.

    The config is validated here first, so a bad value fails in the caller with a ConfigError naming the
    field (a missing or empty source folder is found by the job, which then ends `failed`). The output
    directory defaults as in `prepare` (<data root>/<source>-<size>); one job at a time writes it.
    """
    from engine.data.prepare import default_out

    cfg = C.from_dict(PrepareConfig, C.to_dict(cfg))  # a validated copy: the caller's object is left alone
    out = (Path(cfg.out).expanduser() if cfg.out else default_out(cfg)).resolve()
    busy = next((j for j in list_prepare_jobs() if j.state in ACTIVE and j.out == str(out)), None)
    if busy:
        raise ConfigError(f"config field 'out': {out} is already being prepared (job {busy.job_id}); "
                          "wait for it or stop it")
    cfg.out = str(out)
    return start_job("prepare", _args(cfg) + ["--progress-file={progress}"], out, source=cfg.source)


def start_job(kind: str, args: list[str], out: Path, suffix: str = "", **record) -> str:
    """Launch a job of `kind` (core.KINDS: its command) for the data set `out`; returns the job id.
    "{progress}" in `args` becomes the job's progress file; `record` joins the launcher's status.json
    (e.g. source)."""
    _prune()
    jid = core.new_id(jobs_root(), re.sub(r"[^A-Za-z0-9._-]", "_", out.name) + suffix)
    p = paths(jid)
    args = [a.replace("{progress}", str(p.progress)) for a in args]
    core.launch(p, core.KINDS[kind].command, args, env={"HISTOGEN_DATA": str(data_root())},
                record=dict(kind=kind, out=str(out), args=args, **record))
    return jid


def prepare_status(job_id: str) -> PrepareStatus:
    """State of a job from disk. A job whose process is gone without a final state is recorded `stopped`
    if a stop was asked for, else `failed` with the log's last line in the message."""
    p = paths(job_id)
    kind = (read_json(p.status, {}) or {}).get("kind", "prepare")
    return core.settle(kind if kind in core.KINDS else "prepare", job_id, p)


def list_prepare_jobs(kind: str | None = "prepare") -> list[PrepareStatus]:
    """Every job of `kind` (None = every kind) under the data root, newest first."""
    root = jobs_root()
    if not root.is_dir():
        return []
    jobs = [prepare_status(p.name) for p in root.iterdir() if (p / "status.json").is_file()
            and (kind is None or (read_json(p / "status.json", {}) or {}).get("kind", "prepare") == kind)]
    return sorted(jobs, key=lambda j: (j.started_at, j.job_id), reverse=True)


def stop_prepare(job_id: str, grace_s: float = 10.0) -> PrepareStatus:
    """Stop a job: SIGTERM to its process group (it removes its temp directory and writes `stopped`),
    SIGKILL after `grace_s`. Returns its status once it has ended (or the grace has run out)."""
    s = prepare_status(job_id)
    return core.request_stop(s.kind, job_id, paths(job_id), grace_s)


def _prune() -> None:
    ended = [j for j in list_prepare_jobs(None) if j.state in FINAL]
    for j in ended[KEEP_JOBS:]:
        shutil.rmtree(job_dir(j.job_id), ignore_errors=True)
