"""Background training runs: start, stop, resume, list, status.

The truth lives on disk (runs/<id>/status.json, written by the trainer), so a page reload, a second tab or
a restarted Streamlit server sees the same runs. A run is alive only when its pid exists, the process
create time matches the one recorded (pids are reused) and its heartbeat is fresh.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from engine.utils import REPO_ROOT, atomic_write_json, read_json, runs_root

ACTIVE = ("queued", "running", "stopping")
HEARTBEAT_STALE_S = 120.0
_POPENS: dict[str, subprocess.Popen] = {}  # handles of children we started: poll() reaps zombies


@dataclass
class RunStatus:
    run_id: str
    run_dir: Path
    state: str
    step: int = 0
    kimg: float = 0.0
    message: str = ""
    alive: bool = False
    heartbeat_age_s: float | None = None
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


def log_tail(path: str | Path, max_bytes: int = 20_000, lines: int = 40) -> str:
    """Last lines of a log without reading the whole file."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except FileNotFoundError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


def _spawn(run_id: str, args: list[str], root: Path) -> subprocess.Popen:
    d = run_dir(run_id, root)
    d.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1", HISTOGEN_RUNS=str(root))
    log = open(d / "log.txt", "ab")
    try:
        # Own session/process group: the run survives Streamlit reruns and reloads, and stop() can
        # signal the whole tree (DataLoader workers included) at once.
        p = subprocess.Popen([sys.executable, "-m", "engine", "train", *args], stdin=subprocess.DEVNULL,
                             stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO_ROOT), env=env,
                             start_new_session=True)
    finally:
        log.close()
    _POPENS[run_id] = p
    return p


def start(config: Any, run_id: str | None = None, root: str | Path | None = None) -> str:
    """Launch `python -m engine train` for `config` (a TrainConfig or a dict of its fields) in the background.

    The config is validated here first, so a bad value fails in the caller with a ConfigError naming the field.
    """
    from engine import config as C

    cfg = config if not isinstance(config, dict) else C.from_dict(C.TrainConfig, config)
    C.validate(cfg)
    root = Path(root) if root else runs_root()
    rid = run_id or new_run_id(cfg.family, cfg.res, root)
    d = run_dir(rid, root)
    d.mkdir(parents=True, exist_ok=False)
    cfg.run_dir = str(d)
    C.save(cfg, d / "launch.json")
    atomic_write_json(d / "status.json", {"state": "queued", "pid": None, "step": 0, "kimg": 0.0,
                                          "started_at": time.time(), "heartbeat_at": None,
                                          "message": "starting"})
    p = _spawn(rid, ["--config", str(d / "launch.json"), "--run-dir", str(d)], root)
    st = read_json(d / "status.json", {}) or {}
    if st.get("pid") is None:  # trainer has not written yet: record who to watch
        st.update(pid=p.pid, create_time=_create_time(p.pid), launcher=True)
        atomic_write_json(d / "status.json", st)
    return rid


def resume(run_id: str, root: str | Path | None = None) -> None:
    """Continue a stopped, failed or killed run from its latest checkpoint."""
    root = Path(root) if root else runs_root()
    d = run_dir(run_id, root)
    s = status(run_id, root)
    if s.alive:
        raise RuntimeError(f"run {run_id} is still {s.state}; stop it before resuming")
    if not (d / "config.json").is_file():
        raise FileNotFoundError(f"run {run_id} has no config.json in {d}: it never started, start a new run")
    (d / "stop").unlink(missing_ok=True)
    st = read_json(d / "status.json", {}) or {}
    st.update(state="queued", message="resuming", pid=None)
    atomic_write_json(d / "status.json", st)
    p = _spawn(run_id, ["--resume", str(d)], root)
    st.update(pid=p.pid, create_time=_create_time(p.pid), launcher=True)
    atomic_write_json(d / "status.json", st)


def stop(run_id: str, root: str | Path | None = None, grace_s: float = 60.0, wait: bool = True) -> RunStatus:
    """Ask for a graceful stop (stop file, then SIGTERM); kill the process group after `grace_s`."""
    root = Path(root) if root else runs_root()
    d = run_dir(run_id, root)
    (d / "stop").touch()
    s = status(run_id, root)
    pid = (s.raw or {}).get("pid")
    if not s.alive or not pid:
        return s
    _signal_group(pid, signal.SIGTERM)
    if not wait:
        return status(run_id, root)
    deadline = time.time() + grace_s
    while time.time() < deadline:
        _reap(run_id)
        if not _pid_matches(s.raw or {}):
            break
        time.sleep(0.2)
    else:
        _signal_group(pid, signal.SIGKILL)
        time.sleep(0.2)
        _reap(run_id)
        st = read_json(d / "status.json", {}) or {}
        st.update(state="stopped", message=f"killed after a {grace_s:.0f} s grace period; resume continues "
                                           "from the last checkpoint")
        atomic_write_json(d / "status.json", st)
    return status(run_id, root)


def list_runs(root: str | Path | None = None) -> list[RunStatus]:
    """Every run under the runs root, newest first."""
    root = Path(root) if root else runs_root()
    if not root.is_dir():
        return []
    ids = [p.name for p in root.iterdir() if p.is_dir() and ((p / "status.json").is_file()
                                                            or (p / "config.json").is_file())]
    out = [status(i, root) for i in ids]
    return sorted(out, key=lambda s: (s.raw or {}).get("started_at") or 0, reverse=True)


def status(run_id: str, root: str | Path | None = None) -> RunStatus:
    """State of a run from disk; a run whose process died without saying so is reported (and recorded) failed."""
    root = Path(root) if root else runs_root()
    d = run_dir(run_id, root)
    _reap(run_id)
    st = read_json(d / "status.json", {}) or {}
    state = st.get("state", "unknown")
    hb = st.get("heartbeat_at")
    age = (time.time() - float(hb)) if hb else None
    alive = state in ACTIVE and _pid_matches(st)
    tail = ""
    if state in ACTIVE and not alive:
        tail = log_tail(d / "log.txt")
        last = tail.strip().splitlines()[-1] if tail.strip() else "no output"
        st.update(state="failed", message=f"the training process ended without a final status ({last})")
        atomic_write_json(d / "status.json", st)
        state = "failed"
    elif state == "failed":
        tail = log_tail(d / "log.txt")
    return RunStatus(run_id=run_id, run_dir=d, state=state, step=int(st.get("step") or 0),
                     kimg=float(st.get("kimg") or 0.0), message=st.get("message", ""), alive=alive,
                     heartbeat_age_s=age, log_tail=tail, raw=st)


# ----------------------------------------------------------------------------------------------

def _create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _pid_matches(st: dict) -> bool:
    pid = st.get("pid")
    if not pid:
        return st.get("state") == "queued" and st.get("launcher") is None and _young(st)
    try:
        p = psutil.Process(int(pid))
        if p.status() == psutil.STATUS_ZOMBIE:
            return False
        ct = st.get("create_time")
        return ct is None or abs(p.create_time() - float(ct)) < 1.0
    except psutil.Error:
        return False


def _young(st: dict, seconds: float = 30.0) -> bool:
    t = st.get("started_at")
    return bool(t) and time.time() - float(t) < seconds


def _reap(run_id: str) -> None:
    p = _POPENS.get(run_id)
    if p is not None and p.poll() is not None:
        _POPENS.pop(run_id, None)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(os.getpgid(int(pid)), sig)
    except (ProcessLookupError, PermissionError):
        pass
