"""Plumbing shared by the background jobs (training runs, evaluations, data preparation).

A job is `python -m engine <command> ...` started in its own session, so it outlives Streamlit reruns and
reloads and a stop can signal its whole process tree (pool workers included); its stdout and stderr go
to a log file. Its truth lives in small JSON files replaced atomically. It is alive while its pid exists
with the create time recorded at launch (pids are reused); a job in an active state whose process is
gone died without saying so, which each job kind records in its own words.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from engine.utils import REPO_ROOT, atomic_write_json, read_json

LAUNCH_MARK = "=== launched"
_POPENS: dict[str, subprocess.Popen] = {}  # handles of children we started: poll() reaps zombies


def spawn(key: str, command: str, args: list[str], log: str | Path, env: dict[str, str] | None = None
          ) -> subprocess.Popen:
    """Start `python -m engine <command> *args` in its own session, appending its output to `log`.

    `key` names the job among this process's children (reap() polls it); `env` is added to ours.
    """
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as f:
        # A marker per launch: the tail of a job that dies before printing anything says so.
        f.write(f"{LAUNCH_MARK} {time.strftime('%Y-%m-%d %H:%M:%S')}: {command} {' '.join(args)}\n".encode())
        f.flush()
        p = subprocess.Popen([sys.executable, "-m", "engine", command, *args], stdin=subprocess.DEVNULL,
                             stdout=f, stderr=subprocess.STDOUT, cwd=str(REPO_ROOT),
                             env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})), start_new_session=True)
    _POPENS[key] = p
    return p


def reap(key: str) -> None:
    """Collect the exit status of our child `key` once it has ended, so it never lingers as a zombie."""
    p = _POPENS.get(key)
    if p is not None and p.poll() is not None:
        _POPENS.pop(key, None)


def create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def pid_matches(st: dict, young_s: float = 30.0) -> bool:
    """Whether the process recorded in a status dict ("pid", "create_time") still runs.

    A record without a pid yet (written just before the spawn) counts as alive while it is `queued` and
    younger than `young_s` ("started_at").
    """
    pid = st.get("pid")
    if not pid:
        t = st.get("started_at")
        return st.get("state") == "queued" and bool(t) and time.time() - float(t) < young_s
    try:
        p = psutil.Process(int(pid))
        if p.status() == psutil.STATUS_ZOMBIE:
            return False
        ct = st.get("create_time")
        return ct is None or abs(p.create_time() - float(ct)) < 1.0
    except psutil.Error:
        return False


def signal_group(st: dict, sig: int) -> None:
    """Signal the job's process group (it started its own session), only if the process is still ours."""
    if not st.get("pid") or not pid_matches(st):
        return
    pid = int(st["pid"])
    try:
        pgid = os.getpgid(pid)
        if pgid == pid or pgid == st.get("pgid"):
            os.killpg(pgid, sig)
        else:  # not a group leader (launched by hand without its own session): only the process
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def wait_gone(st: dict, timeout: float, key: str | None = None) -> bool:
    """Wait up to `timeout` s for the recorded process to end; True once it has."""
    deadline = time.time() + timeout
    while True:
        if key:
            reap(key)
        if not pid_matches(st):
            return True
        if time.time() >= deadline:
            return False
        time.sleep(0.05)


def terminate(st: dict, grace_s: float = 10.0, key: str | None = None) -> bool:
    """SIGTERM to the job's process group, SIGKILL after `grace_s`; True once the process is gone."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 2.0)):
        signal_group(st, sig)
        if wait_gone(st, wait, key):
            return True
    return False


def update_json(path: str | Path, **fields: Any) -> dict:
    """Merge `fields` into a JSON status file and replace it atomically; returns the new content."""
    st = read_json(path, {}) or {}
    st.update(fields)
    atomic_write_json(path, st)
    return st


class StatusFile:
    """A status file as the job's own process writes it: fields merged into what is there, replaced
    atomically; `running` updates are throttled to one per `every_s` (other states always go through)."""

    def __init__(self, path: str | os.PathLike, every_s: float = 1.0):
        self.path, self.every_s, self._last = Path(path), every_s, 0.0

    def _extra(self, state: str, st: dict) -> dict:
        return {}  # fields a subclass adds to every write

    def set(self, state: str, force: bool = False, **fields: Any) -> bool:
        """Write `state` and `fields`; returns False when a `running` update was throttled away."""
        now = time.time()
        if not force and state == "running" and now - self._last < self.every_s:
            return False
        st = read_json(self.path, {}) or {}
        st.update(self._extra(state, st), **fields, state=state)
        atomic_write_json(self.path, st)
        self._last = now
        return True


# ----------------------------------------------------------------------------------------------
# Logs

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


def last_line(tail: str) -> str:
    """The last line a job printed, or "no output" when it printed nothing since its launch."""
    last = tail.strip().splitlines()[-1] if tail.strip() else ""
    return "no output" if not last or last.startswith(LAUNCH_MARK) else last


# ----------------------------------------------------------------------------------------------
# Progress for people

def duration_text(seconds: float) -> str:
    """A rough duration a person reads: `40 s`, `4 min`, `2.5 h`."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{max(1, round(seconds / 60))} min"
    return f"{seconds / 3600:.1f} h"


def eta_s(fraction: float, started_at: float | None, now: float | None = None) -> float | None:
    """Seconds left by linear extrapolation of the elapsed time; None until it means something (2 %
    done and 3 s elapsed: the first moments are start-up, not progress)."""
    if not started_at or fraction is None:
        return None
    elapsed = (now or time.time()) - float(started_at)
    if fraction < 0.02 or elapsed < 3 or fraction >= 1:
        return None
    return elapsed * (1 - fraction) / fraction


def progress_text(fraction: float, started_at: float | None, message: str = "", now: float | None = None) -> str:
    """`40 % · ETA 2 min · message`: how the pages label a job's progress bar."""
    eta = eta_s(fraction, started_at, now)
    parts = [f"{100 * max(0.0, min(1.0, fraction or 0.0)):.0f} %"]
    parts += [f"ETA {duration_text(eta)}"] if eta is not None else []
    return " · ".join(parts + ([message] if message else []))
