"""Background training runs: start, stop, resume, list, status, and the GPU lock.

    python -m engine jobs start --res 64 --kimg 5      # prints the new run id
    python -m engine jobs list
    python -m engine jobs stop RUN_ID
    python -m engine jobs resume RUN_ID [--kimg 10]

The truth lives on disk (runs/<id>/status.json, written by the trainer), so a page reload, a second tab or
a restarted Streamlit server sees the same runs. A run's process is alive when its pid exists and the
process create time matches the one recorded (pids are reused); a run in an active state whose process is
gone died without saying so and is recorded `failed` with the last lines of its log. A stale heartbeat with
a live process is reported (`stale`), not treated as death: a live trainer must never be resumed twice.
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from engine import background as bg
from engine.background import LAUNCH_MARK, log_tail  # noqa: F401  (part of this module's API)
from engine.utils import atomic_write_json, read_json, runs_root

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
           if p.is_dir() and ((p / "status.json").is_file() or (p / "config.json").is_file())]
    return sorted(out, key=lambda s: ((s.raw or {}).get("started_at") or 0, s.run_id), reverse=True)


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
                     stop_requested=alive and stop_file, log_tail=tail, raw=st)


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
        base = C.to_dict(C.load(C.TrainConfig, a.config)) if a.config else {}
        print(start(C.from_args(C.TrainConfig, a, base), run_id=a.run_id))
    elif a.cmd == "list":
        for s in list_runs():
            print(f"{s.run_id:<40} {s.state:<9} step {s.step:>8d} kimg {s.kimg:9.3f}  {s.message}")
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
        print(f"{s.run_id}: {s.state} (step {s.step}, kimg {s.kimg:.3f}) {s.message}".rstrip())
        if s.log_tail:
            print(s.log_tail)
    return 0
