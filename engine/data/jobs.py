"""Data preparation as a background job: `python -m engine prepare ... --progress-file` in its own session
(engine.background), so 100k TIFFs neither block the Data page for half an hour nor run on one core.

    <data root>/.jobs/<job>/status.json    the launcher's record: pid, create_time, started_at, source, out;
                                           the final state only of a job that died without writing one
    <data root>/.jobs/<job>/progress.json  the job's own record: state, done, total, message (+ out)
    <data root>/.jobs/<job>/log.txt        its stdout and stderr
    <data root>/.jobs/<job>/stop           a stop was asked for

A job writes into a temp directory beside its output and renames it into place at the end
(engine.data.prepare), so a stopped or killed job never leaves a half-written data set; a stopped job
removes its temp directory itself, and the next preparation of the same directory clears a killed one's.

The same records serve the other per-data-set job, the domain classifier (`kind` "classifier": `python -m
engine train-classifier --progress-file`, engine.metrics.classifier_jobs), so there is one job layer for
data sets, not one per command.
"""
from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from engine import background as bg
from engine import config as C
from engine.config import ConfigError, PrepareConfig
from engine.utils import atomic_write_json, data_root, read_json

ACTIVE = ("queued", "running")
FINAL = ("finished", "failed", "stopped")
KEEP_JOBS = 20  # ended jobs kept on disk (the newest); older ones are removed by start_prepare


@dataclass
class PrepareStatus:
    job_id: str
    state: str                 # queued | running | finished | failed | stopped
    done: int = 0              # items processed of `total` (0 of 0 while the source is being listed)
    total: int = 0
    message: str = ""          # progress, the output on success, the one-sentence error on failure
    out: str = ""              # the data set directory it writes
    source: str = ""
    alive: bool = False        # its process exists (pid + create time match)
    started_at: float = 0.0
    log_tail: str = ""         # the log's last lines, for a failed job
    kind: str = "prepare"      # prepare | classifier (what the job makes for its data set `out`)


def jobs_root() -> Path:
    return data_root() / ".jobs"


def job_dir(job_id: str) -> Path:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", job_id or ""):
        raise ValueError(f"invalid prepare job id {job_id!r}: use letters, digits, '.', '_' and '-'")
    return jobs_root() / job_id


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
    return start_job("prepare", "prepare", lambda d: _args(cfg) + ["--progress-file", str(d / "progress.json")],
                     out, source=cfg.source)


def start_job(kind: str, command: str, args, out: Path, suffix: str = "", **record) -> str:
    """Launch `python -m engine <command> *args(job_dir)` as a job of `kind` for the data set `out`;
    returns the job id. `record` joins the launcher's status.json (e.g. source)."""
    _prune()
    base, k = time.strftime("%Y%m%d-%H%M%S-") + re.sub(r"[^A-Za-z0-9._-]", "_", out.name) + suffix, 1
    while True:  # mkdir without exist_ok: two starts in one second get two directories
        jid = base if k == 1 else f"{base}-{k}"
        try:
            job_dir(jid).mkdir(parents=True)
            break
        except FileExistsError:
            k += 1
    d = job_dir(jid)
    args = args(d)
    atomic_write_json(d / "status.json", {"state": "queued", "pid": None, "started_at": time.time(),
                                          "kind": kind, "out": str(out), "message": "starting",
                                          "args": args, **record})
    p = bg.spawn(f"{kind}/{jid}", command, args, d / "log.txt", env={"HISTOGEN_DATA": str(data_root())})
    bg.update_json(d / "status.json", pid=p.pid, create_time=bg.create_time(p.pid))
    return jid


def prepare_status(job_id: str) -> PrepareStatus:
    """State of a job from disk. A job whose process is gone without a final state is recorded `stopped`
    if a stop was asked for, else `failed` with the log's last line in the message."""
    d = job_dir(job_id)
    st = read_json(d / "status.json", {}) or {}
    pr = read_json(d / "progress.json", {}) or {}
    kind = st.get("kind", "prepare")
    bg.reap(f"{kind}/{job_id}")

    def state() -> str:
        return next((s.get("state") for s in (pr, st) if s.get("state") in FINAL),
                    pr.get("state") or st.get("state", "unknown"))

    alive = state() in ACTIVE and bg.pid_matches(st)
    if state() in ACTIVE and not alive:
        pr = read_json(d / "progress.json", {}) or pr  # again: it may have written its end and exited since
    if state() in ACTIVE and not alive:
        tail = bg.log_tail(d / "log.txt")
        stopped = (d / "stop").exists()
        what = "classifier training" if kind == "classifier" else "preparation"
        msg = f"stopped; no {'classifier' if kind == 'classifier' else 'data set'} was written" if stopped else \
            f"the {what} ended without a final status ({bg.last_line(tail)})"
        st = bg.update_json(d / "status.json", state="stopped" if stopped else "failed", message=msg)
    s = state()
    rec = pr if pr.get("state") == s else st  # whose record holds the final word
    return PrepareStatus(job_id=job_id, state=s, done=int(pr.get("done") or 0), total=int(pr.get("total") or 0),
                         message=rec.get("message") or st.get("message", ""),
                         out=pr.get("out") or st.get("out", ""), source=st.get("source", ""), alive=alive,
                         started_at=float(st.get("started_at") or 0),
                         log_tail=bg.log_tail(d / "log.txt") if s == "failed" else "", kind=kind)


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
    d = job_dir(job_id)
    s = prepare_status(job_id)
    if s.state in ACTIVE:
        (d / "stop").touch()
        bg.terminate(read_json(d / "status.json", {}) or {}, grace_s, f"{s.kind}/{job_id}")
    return prepare_status(job_id)


def _prune() -> None:
    ended = [j for j in list_prepare_jobs(None) if j.state in FINAL]
    for j in ended[KEEP_JOBS:]:
        shutil.rmtree(job_dir(j.job_id), ignore_errors=True)

