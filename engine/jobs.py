"""Background training runs: start, stop, resume, list, status, and the GPU lock.

    python -m engine jobs start --res 64 --kimg 5      # prints the new run id
    python -m engine jobs list
    python -m engine jobs stop RUN_ID
    python -m engine jobs resume RUN_ID [--kimg 10]
    python -m engine jobs rename RUN_ID "baseline, lr 2e-4"   # display name; the id stays
    python -m engine jobs delete RUN_ID --yes                 # refused while the run is alive
    python -m engine jobs estimate --res 64 --batch 16 --kimg 5   # rough time from this machine's runs

The truth lives on disk (runs/<id>/status.json, written by the trainer), so a page reload, a second tab or
a restarted Streamlit server sees the same runs. A run's process is alive when its pid exists and the
process create time matches the one recorded (pids are reused); a run in an active state whose process is
gone died without saying so and is recorded `failed` with the last lines of its log. A stale heartbeat with
a live process is reported (`stale`), not treated as death: a live trainer must never be resumed twice.
"""
from __future__ import annotations

import argparse
import csv
import io
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from engine import background as bg
from engine.background import LAUNCH_MARK, log_tail  # noqa: F401  (part of this module's API)
from engine.train import schedule
from engine.utils import atomic_write_json, atomic_write_text, read_json, runs_root

ACTIVE = ("queued", "running", "stopping")
HEARTBEAT_STALE_S = 120.0   # the trainer beats every second; two minutes of silence is worth a warning
STOP_GRACE_S = 30.0         # stop file at 0 s, SIGTERM after a quarter of this, SIGKILL after all of it
_GPU_LOCKS: list[FileLock] = []  # held for the life of the training process (released at exit)


@dataclass
class RunStatus:
    run_id: str
    run_dir: Path
    state: str
    step: int = 0
    kimg: float = 0.0
    message: str = ""
    alive: bool = False              # the run's process exists (pid + create time match)
    heartbeat_age_s: float | None = None
    stale: bool = False              # alive, but no heartbeat for HEARTBEAT_STALE_S
    stop_requested: bool = False     # alive and a stop file is waiting to be honoured
    log_tail: str = ""
    raw: dict | None = None
    name: str = ""                   # display name (name.txt, see `rename`); "" = none given

    @property
    def title(self) -> str:
        """How a run is shown: its name with its id, or the id alone."""
        return f"{self.name} ({self.run_id})" if self.name else self.run_id


def run_dir(run_id: str, root: str | Path | None = None) -> Path:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", run_id or ""):
        raise ValueError(f"invalid run id {run_id!r}: use letters, digits, '.', '_' and '-'")
    return (Path(root) if root else runs_root()) / run_id


def new_run_id(family: str = "stylegan2", res: int | None = None, root: str | Path | None = None) -> str:
    base = time.strftime("%Y%m%d-%H%M%S") + f"-{family}" + (f"-{res}px" if res else "")
    rid, k = base, 1
    while run_dir(rid, root).exists():
        k += 1
        rid = f"{base}-{k}"
    return rid


# ----------------------------------------------------------------------------------------------
# Start, resume, stop

def _spawn(run_id: str, args: list[str], root: Path) -> subprocess.Popen:
    d = run_dir(run_id, root)
    d.mkdir(parents=True, exist_ok=True)
    return bg.spawn(f"train/{run_id}", "train", args, d / "log.txt", env={"HISTOGEN_RUNS": str(root)})


def _launched(d: Path, p: subprocess.Popen, message: str) -> None:
    """Record the child until the trainer writes status.json itself (it imports torch first: seconds).
    `launcher` marks a process that may not have installed its SIGTERM handler yet."""
    st = read_json(d / "status.json", {}) or {}
    if st.get("pid") is None:  # the trainer has not written yet (if it has, its own record wins)
        st.update(state="queued", message=message, pid=p.pid, create_time=bg.create_time(p.pid),
                  launcher=True)
        atomic_write_json(d / "status.json", st)


def start(config: Any, run_id: str | None = None, root: str | Path | None = None) -> str:
    """Launch `python -m engine train` for `config` (a TrainConfig or a dict of its fields) in the background.

    The config is validated here first, so a bad value fails in the caller with a ConfigError naming the
    field. Returns the run id; the run directory is `<root>/<run id>` (root = the runs root).
    """
    from engine import config as C

    cfg = C.from_dict(C.TrainConfig, config) if isinstance(config, dict) else C.validate(config)
    if cfg.data and not (Path(cfg.data) / "dataset.json").is_file():
        raise C.ConfigError(f"config field 'data': {cfg.data} is not a prepared data set (no dataset.json); "
                            "prepare one on the Data page or leave it empty for the histosynth demo")
    root = Path(root) if root else runs_root()
    rid = run_id or new_run_id(cfg.family, cfg.res, root)
    d = run_dir(rid, root)
    d.mkdir(parents=True, exist_ok=False)
    cfg.run_dir = str(d)
    C.save(cfg, d / "launch.json")
    atomic_write_json(d / "status.json", {"state": "queued", "pid": None, "step": 0, "kimg": 0.0,
                                          "started_at": time.time(), "heartbeat_at": None,
                                          "message": "starting"})
    _launched(d, _spawn(rid, ["--config", str(d / "launch.json")], root), "starting")
    return rid


def resume(run_id: str, root: str | Path | None = None, kimg: float | None = None) -> None:
    """Continue a stopped, failed or killed run from its latest checkpoint (`kimg` may extend it)."""
    root = Path(root) if root else runs_root()
    d = run_dir(run_id, root)
    s = status(run_id, root)
    if s.alive:
        raise RuntimeError(f"run {run_id} is still {s.state}; stop it before resuming")
    if not (d / "config.json").is_file():
        raise FileNotFoundError(f"run {run_id} has no config.json in {d}: it never started; start a new run")
    (d / "stop").unlink(missing_ok=True)
    atomic_write_json(d / "status.json", {"state": "queued", "pid": None, "step": s.step, "kimg": s.kimg,
                                          "started_at": time.time(), "heartbeat_at": None,
                                          "message": "resuming"})
    args = ["--resume", str(d)] + (["--kimg", repr(float(kimg))] if kimg is not None else [])
    _launched(d, _spawn(run_id, args, root), "resuming")


def stop(run_id: str, root: str | Path | None = None, grace_s: float = STOP_GRACE_S,
         wait: bool = True) -> RunStatus:
    """Ask a run to stop: a `stop` file (the trainer checks it every step, saves a checkpoint and
    writes `stopped`), SIGTERM to its process group after grace_s/4, SIGKILL after grace_s.

    With wait=False it returns at once; later `status()` calls carry out the escalation.
    """
    root = Path(root) if root else runs_root()
    d = run_dir(run_id, root)
    s = status(run_id, root)
    if not s.alive:
        return s
    if not (d / "stop").exists():
        (d / "stop").touch()
    if not wait:
        return status(run_id, root, grace_s=grace_s)
    deadline = time.time() + grace_s + 5
    while time.time() < deadline:
        s = status(run_id, root, grace_s=grace_s)
        if not s.alive:
            break
        time.sleep(0.2)
    return s


def _escalate(d: Path, st: dict, grace_s: float) -> None:
    """Signals for a stop request that has not been honoured yet (age = the stop file's age)."""
    try:
        age = time.time() - (d / "stop").stat().st_mtime
    except FileNotFoundError:
        return
    if age >= grace_s:
        bg.signal_group(st, signal.SIGKILL)
        bg.wait_gone(st, 2.5, f"train/{d.name}")  # SIGKILL is not instant; let the kernel finish first
    elif age >= grace_s / 4:
        bg.signal_group(st, signal.SIGTERM)  # the trainer's handler only sets its stop flag


# ----------------------------------------------------------------------------------------------
# Reading state

def list_runs(root: str | Path | None = None) -> list[RunStatus]:
    """Every run under the runs root, newest first."""
    root = Path(root) if root else runs_root()
    if not root.is_dir():
        return []
    out = [status(p.name, root) for p in root.iterdir()
           if p.is_dir() and _is_run_id(p.name)
           and ((p / "status.json").is_file() or (p / "config.json").is_file())]
    return sorted(out, key=lambda s: ((s.raw or {}).get("started_at") or 0, s.run_id), reverse=True)


def _is_run_id(name: str) -> bool:
    # a run being deleted is renamed to `.deleting-...` first; it is no run any more
    return re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) is not None


def status(run_id: str, root: str | Path | None = None, grace_s: float = STOP_GRACE_S) -> RunStatus:
    """State of a run from disk. A run whose process is gone without a final state is recorded
    `stopped` if a stop was requested, else `failed` with the log's last line in the message."""
    root = Path(root) if root else runs_root()
    d = run_dir(run_id, root)
    bg.reap(f"train/{run_id}")
    st = read_json(d / "status.json", {}) or {}
    state = st.get("state", "unknown")
    alive = state in ACTIVE and bg.pid_matches(st)
    stop_file = (d / "stop").exists()
    if alive and stop_file:
        _escalate(d, st, grace_s)
        st = read_json(d / "status.json", {}) or st
        state = st.get("state", state)
        alive = state in ACTIVE and bg.pid_matches(st)
    tail = ""
    if state in ACTIVE and not alive:  # read again: the trainer may have written its end and exited since
        st = read_json(d / "status.json", {}) or st
        state = st.get("state", state)
    if state in ACTIVE and not alive:
        tail = log_tail(d / "log.txt")
        if stop_file:
            state, msg = "stopped", ("stopped before the trainer wrote its final status; resume continues "
                                     "from the last checkpoint")
        else:
            state, msg = "failed", f"the training process ended without a final status ({bg.last_line(tail)})"
        st.update(state=state, message=msg)
        st.pop("launcher", None)
        atomic_write_json(d / "status.json", st)
    elif state == "failed":
        tail = log_tail(d / "log.txt")
    hb = st.get("heartbeat_at")
    age = (time.time() - float(hb)) if hb else None
    return RunStatus(run_id=run_id, run_dir=d, state=state, step=int(st.get("step") or 0),
                     kimg=float(st.get("kimg") or 0.0), message=st.get("message", ""), alive=alive,
                     heartbeat_age_s=age, stale=alive and age is not None and age > HEARTBEAT_STALE_S,
                     stop_requested=alive and stop_file, log_tail=tail, raw=st, name=_read_name(d))


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


duration_text = bg.duration_text  # one home (background.py, below this layer); the name callers use


def _run_config(d: Path) -> dict:
    return read_json(d / "config.json") or read_json(d / "launch.json") or {}


def recent_img_per_s(d: Path, rows: int = 5, max_bytes: int = 16_384) -> float | None:
    """Median img_per_s of the last `rows` rows of <run>/metrics_gan.csv, reading only its tail (this
    runs every few seconds per run while the page is open). The median ignores the first interval's
    start-up cost."""
    path = Path(d) / "metrics_gan.csv"
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
    cfg = _run_config(s.run_dir)
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
        rc = _run_config(s.run_dir)
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

NAME_FILE = "name.txt"
NAME_MAX = 80


def _read_name(d: Path) -> str:
    try:
        return (d / NAME_FILE).read_text(encoding="utf-8").strip()
    except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError):
        return ""


def rename(run_id: str, name: str, root: str | Path | None = None) -> RunStatus:
    """Give a run a display name ("" removes it); the run id, its directory, stays as it is.

    Why a file and not a moved directory: the run directory's path is written into config.json, into
    every checkpoint's embedded config, the GPU owner file, evaluation reports and their jobs, and a
    live trainer (or evaluation) keeps writing under it. Moving it would break all of those, and a
    running run could not be renamed at all. name.txt is read by `status` and written by nothing
    else, so renaming works at any time, also while the run trains.
    """
    d = run_dir(run_id, root)
    if not d.is_dir():
        raise FileNotFoundError(f"no run {run_id!r} in {d.parent}")
    name = " ".join(str(name).split())  # one line: it is shown in tables and pickers
    if len(name) > NAME_MAX:
        raise ValueError(f"a run name has at most {NAME_MAX} characters (got {len(name)})")
    if name:
        atomic_write_text(d / NAME_FILE, name + "\n")
    else:
        (d / NAME_FILE).unlink(missing_ok=True)
    return status(run_id, root)


def delete(run_id: str, root: str | Path | None = None) -> None:
    """Delete a run directory with everything in it (checkpoints, grids, reports).

    Refused (RuntimeError) while its process or one of its evaluation jobs is alive: stop it first (a
    live process would go on writing into a directory that is gone). The directory is first renamed
    to `.deleting-<id>-<random>` (atomic, so no reader ever lists a half-deleted run), then removed;
    leftovers of an interrupted deletion are removed by the next one.
    """
    root = Path(root) if root else runs_root()
    d = run_dir(run_id, root)
    if not d.is_dir():
        raise FileNotFoundError(f"no run {run_id!r} in {root}")
    s = status(run_id, root)
    if s.alive:
        raise RuntimeError(f"run {run_id} is {s.state}: stop it before deleting it")
    from engine.metrics import jobs as eval_jobs  # (it imports this module)

    ev = eval_jobs.active_eval(run_id, root)
    if ev is not None:
        raise RuntimeError(f"run {run_id} has an evaluation running (job {ev['job']}): stop it on the "
                           "Evaluate page before deleting the run")
    trash = root / f".deleting-{run_id}-{uuid.uuid4().hex[:8]}"
    os.replace(d, trash)
    for old in root.glob(".deleting-*"):
        shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# GPU lock: two runs never share one GPU

def acquire_gpu(run_dir: str | Path, status: Any = None, stop: Any = None, poll_s: float = 1.0) -> bool:
    """Block until this process holds the GPU lock (<runs root>/.gpu.lock, the run dir's parent).

    Called by a single-process training run before it touches the GPU (torchrun jobs get their GPUs
    from the cluster's scheduler). While another run holds the
    lock it writes `queued` through `status.set(state, message=...)` (a StatusWriter) every `poll_s`;
    it returns False if `stop.requested()` turns true while waiting, True once the lock is held. The
    lock is an OS file lock: it is released when the process exits, however it exits.
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


# ----------------------------------------------------------------------------------------------
# CLI: python -m engine jobs ...

def main(argv: list[str]) -> int:
    from engine import config as C

    p = argparse.ArgumentParser(prog="python -m engine jobs", description="Background training runs.")
    sub = p.add_subparsers(dest="cmd", required=True)
    ps = sub.add_parser("start", help="start a training run in the background; prints its run id")
    ps.add_argument("--config", metavar="FILE.json", help="start from the fields of this JSON file")
    ps.add_argument("--run-id", help="name of the run directory (default: <date>-<time>-<family>-<res>px)")
    C.add_arguments(ps, C.TrainConfig, skip=("run_dir",))
    sub.add_parser("list", help="every run under the runs root, newest first")
    pe = sub.add_parser("estimate", help="rough duration of a run on this machine, from earlier runs' img/s")
    C.add_arguments(pe, C.TrainConfig, skip=("run_dir",))
    pr = sub.add_parser("rename", help="set a run's display name (the run id stays; '' removes the name)")
    pr.add_argument("run_id")
    pr.add_argument("name")
    pd_ = sub.add_parser("delete", help="delete a run directory and everything in it (not while it runs)")
    pd_.add_argument("run_id")
    pd_.add_argument("--yes", action="store_true", help="confirm: without it nothing is deleted")
    for name, help_ in (("status", "state of one run"), ("stop", "stop a run (checkpoint first)"),
                        ("resume", "continue a run from its latest checkpoint"),
                        ("tail", "last lines of a run's log")):
        q = sub.add_parser(name, help=help_)
        q.add_argument("run_id")
        if name == "stop":
            q.add_argument("--grace", type=float, default=STOP_GRACE_S, help="seconds before SIGKILL")
        if name == "resume":
            q.add_argument("--kimg", type=float, help="new training length (extends a finished run)")
    a = p.parse_args(argv)
    if a.cmd == "start":
        base = C.load_fields(C.TrainConfig, a.config) if a.config else {}  # over the preset
        print(start(C.from_args(C.TrainConfig, a, base), run_id=a.run_id))
    elif a.cmd == "list":
        for s in list_runs():
            print(f"{s.run_id:<40} {s.state:<9} {progress(s).text()}  {s.name or s.message}".rstrip())
    elif a.cmd == "estimate":
        print(estimate_text(C.from_args(C.TrainConfig, a)))
    elif a.cmd == "rename":
        s = rename(a.run_id, a.name)
        print(f"{s.run_id}: name {s.name!r}" if s.name else f"{s.run_id}: no name")
    elif a.cmd == "delete":
        s = status(a.run_id)
        if not a.yes:
            print(f"would delete run {s.title} ({s.state}, {progress(s).text()}) and everything in "
                  f"{s.run_dir}; add --yes to delete it", file=sys.stderr)
            return 1
        try:
            delete(a.run_id)
        except (RuntimeError, FileNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"deleted {a.run_id}")
    elif a.cmd == "tail":
        print(log_tail(run_dir(a.run_id) / "log.txt"))
    else:
        if a.cmd == "stop":
            s = stop(a.run_id, grace_s=a.grace)
        elif a.cmd == "resume":
            resume(a.run_id, kimg=a.kimg)
            s = status(a.run_id)
        else:
            s = status(a.run_id)
        print(f"{s.run_id}: {s.state} ({progress(s).text()}) {s.message}".rstrip())
        if s.log_tail:
            print(s.log_tail)
    return 0
