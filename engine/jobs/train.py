"""Training runs as jobs: start, resume, stop, status, list, progress, estimate, rename, delete.

The truth lives on disk (runs/<id>/status.json; engine.runs owns the directory), so a page reload, a
second tab or a restarted Streamlit server sees the same runs. Liveness, the stop protocol and the
record of a death are engine.jobs.core's, as for every kind; a stale heartbeat with a live process is
reported (`stale`), not treated as death: a live trainer must never be resumed twice.
"""
from __future__ import annotations

import csv
import io
import math
import os
import shutil
import socket
import statistics
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine import runs
from engine.jobs import core
from engine.jobs import eval as eval_jobs
from engine.jobs.core import ACTIVE, STOP_GRACE_S, JobStatus, duration_text
from engine.runs import read_config
from engine.train import schedule
from engine.utils import atomic_write_text, runs_root

KIND = "train"
RunStatus = JobStatus  # the name the pages use
run_dir = runs.run_dir  # the name callers use
NAME_MAX = runs.NAME_MAX

__all__ = ["ACTIVE", "RunStatus", "run_dir", "start", "resume", "stop", "status", "list_runs", "progress",
           "Progress", "recent_img_per_s", "estimate", "estimate_text", "Estimate", "NO_ESTIMATE", "rename",
           "delete", "duration_text", "NAME_MAX"]


def paths(run_id: str, root: str | Path | None = None) -> core.Paths:
    d = runs.run_dir(run_id, root)
    return core.Paths(status=d / runs.STATUS, log=d / runs.LOG, stop=d / runs.STOP)


# ----------------------------------------------------------------------------------------------
# Start, resume, stop

def _launch(run_id: str, args: list[str], root: Path, **record: Any) -> subprocess.Popen:
    return core.launch(paths(run_id, root), core.KINDS[KIND].command, args, env={"HISTOGEN_RUNS": str(root)},
                       record=dict(kind=KIND, **record))


def start(config: Any, run_id: str | None = None, root: str | Path | None = None) -> str:
    """Launch `python -m engine train` for `config` (a TrainConfig or a dict of its fields) in the background.

    The config is validated here first, so a bad value fails in the caller with a ConfigError naming the
    field. Returns the run id; the run directory is `<root>/<run id>` (root = the runs root).
    """
    from engine import config as C

    # validated once, into a copy (a TrainConfig passed in is left as it was); the trainer writes this
    # config as config.json, filling in only what launch.json leaves to run time (engine.train.loop)
    cfg = C.from_dict(C.TrainConfig, config) if isinstance(config, dict) else C.validate(C.replaced(config))
    if cfg.data and not (Path(cfg.data) / "dataset.json").is_file():
        raise C.ConfigError(f"config field 'data': {cfg.data} is not a prepared data set (no dataset.json); "
                            "prepare one on the Data page or leave it empty for the histosynth demo")
    root = Path(root) if root else runs_root()
    if run_id:
        runs.run_dir(run_id, root).mkdir(parents=True, exist_ok=False)
        rid = run_id
    else:
        rid = core.new_id(root, f"{cfg.family}-{cfg.res}px" if cfg.res else cfg.family)
    d = runs.run_dir(rid, root)
    cfg = C.replaced(cfg, run_dir=str(d))
    C.save(cfg, d / runs.LAUNCH)
    _launch(rid, ["--config", str(d / runs.LAUNCH)], root, step=0, kimg=0.0)
    return rid


def resume(run_id: str, root: str | Path | None = None, kimg: float | None = None) -> None:
    """Continue a stopped, failed or killed run from its latest checkpoint (`kimg` may extend it)."""
    root = Path(root) if root else runs_root()
    d = runs.run_dir(run_id, root)
    s = status(run_id, root)
    if s.alive:
        raise RuntimeError(f"run {run_id} is still {s.state}; stop it before resuming")
    if not (d / runs.CONFIG).is_file():
        raise FileNotFoundError(f"run {run_id} has no config.json in {d}: it never started; start a new run")
    (d / runs.STOP).unlink(missing_ok=True)
    args = ["--resume", str(d)] + (["--kimg", repr(float(kimg))] if kimg is not None else [])
    _launch(run_id, args, root, step=s.step, kimg=s.kimg, message="resuming")


def stop(run_id: str, root: str | Path | None = None, grace_s: float = STOP_GRACE_S,
         wait: bool = True) -> RunStatus:
    """Ask a run to stop: a `stop` file (the trainer checks it every step, saves a checkpoint and
    writes `stopped`), SIGTERM to its process group after grace_s/4, SIGKILL after grace_s.

    With wait=False it returns at once; later `status()` calls carry out the escalation.
    """
    s = core.request_stop(KIND, run_id, paths(run_id, root), grace_s, wait)
    s.name = runs.read_name(s.dir)
    return s


# ----------------------------------------------------------------------------------------------
# Reading state

def status(run_id: str, root: str | Path | None = None, grace_s: float = STOP_GRACE_S) -> RunStatus:
    """State of a run from disk. A run whose process is gone without a final state is recorded
    `stopped` if a stop was requested, else `failed` with the log's last line in the message."""
    s = core.settle(KIND, run_id, paths(run_id, root), grace_s)
    s.name = runs.read_name(s.dir)
    return s


def list_runs(root: str | Path | None = None) -> list[RunStatus]:
    """Every run under the runs root, newest first."""
    root = Path(root) if root else runs_root()
    if not root.is_dir():
        return []
    out = [status(p.name, root) for p in root.iterdir()
           if p.is_dir() and runs.is_run_id(p.name)
           and ((p / runs.STATUS).is_file() or (p / runs.CONFIG).is_file())]
    return sorted(out, key=lambda s: ((s.raw or {}).get("started_at") or 0, s.run_id), reverse=True)


# ----------------------------------------------------------------------------------------------
# Progress against the target (one function for the page's status line, its runs table and the CLI)

@dataclass
class Progress:
    step: int
    total_steps: int | None          # None: the run's config is not known yet
    kimg: float
    target_kimg: float | None
    img_per_s: float | None = None   # recent speed (median of the last metrics rows)
    eta_s: float | None = None       # only while the run is alive and its speed is measured

    @property
    def fraction(self) -> float | None:
        return None if not self.total_steps else min(1.0, self.step / self.total_steps)

    def text(self) -> str:
        """`step 34 / 313 · 0.54 / 5 kimg · ETA 4 min`."""
        if self.total_steps is None or self.target_kimg is None:
            return f"step {self.step} · {self.kimg:.3f} kimg"
        digits = 2 if self.target_kimg >= 1 else 3
        out = f"step {self.step} / {self.total_steps} · {self.kimg:.{digits}f} / {self.target_kimg:g} kimg"
        return out + (f" · ETA {duration_text(self.eta_s)}" if self.eta_s is not None else "")


def recent_img_per_s(d: Path, rows: int = 5, max_bytes: int = 16_384) -> float | None:
    """Median img_per_s of the last `rows` rows of the run's metrics CSV (metrics_gan.csv, or
    metrics_diffusion.csv for diffusion runs: engine.runs.metrics_path), reading only its tail (this
    runs every few seconds per run while the page is open). The median ignores the first interval's
    start-up cost."""
    path = runs.metrics_path(d)
    try:
        with open(path, "rb") as f:
            header = f.readline().decode("utf-8", "replace").strip().split(",")
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            chunk = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return None
    if "img_per_s" not in header:
        return None
    lines = chunk.split("\n")
    lines = lines[1:-1] if size > max_bytes else lines[:-1]  # a cut first line; the last may be partial
    col = header.index("img_per_s")
    values = []
    for rec in csv.reader(io.StringIO("\n".join(lines))):
        try:
            v = float(rec[col])
        except (IndexError, ValueError):
            continue  # the header itself, or a row without a speed
        if math.isfinite(v) and v > 0:
            values.append(v)
    return statistics.median(values[-rows:]) if values else None


def progress(s: RunStatus) -> Progress:
    """Where a run stands against its target; the ETA from its own recent speed while it is alive."""
    cfg = runs.read_config(s.run_dir)
    if not cfg.get("kimg") or not cfg.get("batch"):
        return Progress(s.step, None, s.kimg, None)
    target, batch = float(cfg["kimg"]), int(cfg["batch"])
    total = schedule.total_steps(target, batch)
    p = Progress(s.step, total, s.kimg, target)
    if s.alive and s.state == "running":
        p.img_per_s = recent_img_per_s(s.run_dir)
        if p.img_per_s:
            p.eta_s = max(0, total - s.step) * batch / p.img_per_s
    return p


# ----------------------------------------------------------------------------------------------
# A rough time for a run not started yet, from what this machine measured

@dataclass
class Estimate:
    seconds: float
    img_per_s: float
    run_id: str      # the run whose speed was used
    res: int
    batch: int

    def text(self) -> str:
        return (f"about {duration_text(self.seconds)} ({self.img_per_s:.0f} img/s measured here by run "
                f"{self.run_id} at {self.res} px, batch {self.batch}; data preparation not included)")


NO_ESTIMATE = ("no measurement yet: no earlier run on this machine at this size and a similar batch "
               "(the first run's img/s is used from then on)")


def estimate(config: Any, root: str | Path | None = None,
             runs: list[RunStatus] | None = None) -> Estimate | None:
    """Rough duration of a run of `config` (a TrainConfig or a dict of its fields) on this machine.

    Speed comes from earlier runs under the runs root that ran on this host (status.json `host`; a
    run without one is taken to be local) on the same kind of device, at the same `res` and a batch
    within a factor of two; the most similar one (same batch, same channel sizes, newest) wins. None
    when there is none: a guess from another machine would mislead more than it helps. `runs` saves a
    caller that has just listed them a second listing.
    """
    from engine import config as C

    c = config if isinstance(config, dict) else C.to_dict(config)
    d = C.to_dict(C.TrainConfig())
    d.update({k: v for k, v in c.items() if v is not None})
    res, batch, kimg = int(d["res"]), int(d["batch"]), float(d["kimg"])
    host = socket.gethostname()
    best, best_key = None, None
    for s in list_runs(root) if runs is None else runs:
        raw = s.raw or {}
        if raw.get("host") not in (None, host):
            continue
        if d.get("device") in ("cpu", "cuda") and raw.get("device") not in (None, "", d["device"]):
            continue
        rc = read_config(s.run_dir)
        try:
            r_res, r_batch = int(rc["res"]), int(rc["batch"])
        except (KeyError, TypeError, ValueError):
            continue
        if r_res != res or not (batch / 2 <= r_batch <= batch * 2):
            continue
        key = (r_batch == batch, rc.get("channel_base") == d["channel_base"],
               rc.get("channel_max") == d["channel_max"], raw.get("started_at") or 0)
        if best_key is not None and key <= best_key:
            continue
        speed = recent_img_per_s(s.run_dir, rows=20)
        if speed:
            best, best_key = (s.run_id, r_batch, speed), key
    if best is None:
        return None
    rid, r_batch, speed = best
    steps = schedule.total_steps(kimg, batch)
    return Estimate(seconds=steps * batch / speed, img_per_s=speed, run_id=rid, res=res, batch=r_batch)


def estimate_text(config: Any, root: str | Path | None = None, runs: list[RunStatus] | None = None) -> str:
    e = estimate(config, root, runs)
    return e.text() if e else NO_ESTIMATE


# ----------------------------------------------------------------------------------------------
# Run management: display names and deletion

def rename(run_id: str, name: str, root: str | Path | None = None) -> RunStatus:
    """Give a run a display name ("" removes it); the run id, its directory, stays as it is.

    Why a file and not a moved directory: the run directory's path is written into config.json, into
    every checkpoint's embedded config, the GPU owner file, evaluation reports and their jobs, and a
    live trainer (or evaluation) keeps writing under it. Moving it would break all of those, and a
    running run could not be renamed at all. name.txt is read by `status` and written by nothing
    else, so renaming works at any time, also while the run trains.
    """
    d = runs.run_dir(run_id, root)
    if not d.is_dir():
        raise FileNotFoundError(f"no run {run_id!r} in {d.parent}")
    name = " ".join(str(name).split())  # one line: it is shown in tables and pickers
    if len(name) > runs.NAME_MAX:
        raise ValueError(f"a run name has at most {runs.NAME_MAX} characters (got {len(name)})")
    if name:
        atomic_write_text(d / runs.NAME, name + "\n")
    else:
        (d / runs.NAME).unlink(missing_ok=True)
    return status(run_id, root)


def delete(run_id: str, root: str | Path | None = None) -> None:
    """Delete a run directory with everything in it (checkpoints, grids, reports).

    Refused (RuntimeError) while its process or one of its evaluation jobs is alive: stop it first (a
    live process would go on writing into a directory that is gone). The directory is first renamed
    to `.deleting-<id>-<random>` (atomic, so no reader ever lists a half-deleted run), then removed;
    leftovers of an interrupted deletion are removed by the next one.
    """
    root = Path(root) if root else runs_root()
    d = runs.run_dir(run_id, root)
    if not d.is_dir():
        raise FileNotFoundError(f"no run {run_id!r} in {root}")
    s = status(run_id, root)
    if s.alive:
        raise RuntimeError(f"run {run_id} is {s.state}: stop it before deleting it")
    ev = eval_jobs.active_eval(run_id, root)
    if ev is not None:
        raise RuntimeError(f"run {run_id} has an evaluation running (job {ev['job']}): stop it on the "
                           "Evaluate page before deleting the run")
    trash = root / f".deleting-{run_id}-{uuid.uuid4().hex[:8]}"
    os.replace(d, trash)
    for old in root.glob(".deleting-*"):
        shutil.rmtree(old, ignore_errors=True)
