"""The one job layer under every kind of background job (train, prepare, classifier, eval ...).

A job is `python -m engine <command> ...` started in its own session, so it outlives Streamlit reruns and
reloads and a stop can signal its whole process tree (pool workers included); its stdout and stderr go to
a log file. Its truth lives in small JSON records replaced atomically. It is alive while its pid exists
with the create time recorded (pids are reused); a job in an active state whose process is gone died
without saying so, and `settle` records that in its kind's words (KINDS).

Who writes a job's status record (DESIGN "Run directory"): the launcher writes `queued` (+ the pid it
spawned, `launch`), the job's own process every later state (`StatusWriter`); a reader that finds the
process gone without a final state records it through `record_end` here, never by writing the file itself.

The stop protocol, the same for every kind: a stop file at once, SIGTERM to the process group after
`term_after` of the grace (0 for jobs that act on SIGTERM; the trainer first gets time to notice the
file and checkpoint), SIGKILL once the grace is over.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import psutil

from engine import runs
from engine.utils import REPO_ROOT, atomic_write_json, read_json

LAUNCH_MARK = "=== launched"
STATES = ("queued", "running", "stopping", "stopped", "finished", "failed")
ACTIVE = ("queued", "running", "stopping")
FINAL = ("finished", "failed", "stopped")
HEARTBEAT_STALE_S = 120.0   # the trainer beats every second; two minutes of silence is worth a warning
STOP_GRACE_S = 30.0         # a training run's grace: stop file at 0 s, SIGTERM at a quarter, SIGKILL at the end


# ----------------------------------------------------------------------------------------------
# Kinds: what differs between jobs is data, not code (a later kind adds a row)

@dataclass(frozen=True)
class Kind:
    name: str                      # the record's "kind"
    command: str                   # python -m engine <command>
    home: str                      # where its records live (the kind's module builds the Paths)
    what: str                      # a death reads "<what> ended without a final status (<last line>)"
    stopped: str                   # the message of a job stopped before it wrote its own final state
    term_after: float = 0.0        # SIGTERM after this fraction of the grace
    grace_s: float = 10.0          # SIGKILL after this long
    stale_s: float | None = None   # a live job silent this long is flagged stale (jobs that beat only)


KINDS: dict[str, Kind] = {
    "train": Kind("train", "train", "runs/<run id>/ status.json, log.txt, stop", "the training process",
                  "stopped before the trainer wrote its final status; resume continues from the last checkpoint",
                  term_after=0.25, grace_s=STOP_GRACE_S, stale_s=HEARTBEAT_STALE_S),
    "prepare": Kind("prepare", "prepare", "<data root>/.jobs/<job>/ status.json, progress.json, log.txt, stop",
                    "the preparation", "stopped; no data set was written"),
    "classifier": Kind("classifier", "train-classifier",
                       "<data root>/.jobs/<job>/ status.json, progress.json, log.txt, stop",
                       "the classifier training", "stopped; no classifier was written"),
    "eval": Kind("eval", "evaluate", "runs/<run id>/eval/jobs/ <job>.json, <job>.log, <job>.stop",
                 "the evaluation", "stopped"),
}


@dataclass(frozen=True)
class Paths:
    """A job's files. `status` is the launcher's record (and where a reader records a death); `progress`
    the job's own record when it is a second file (prepare, classifier), else the same one."""
    status: Path
    log: Path
    stop: Path
    progress: Path | None = None

    @property
    def own(self) -> Path:
        return self.progress or self.status

    @property
    def key(self) -> str:  # names the job among this process's children
        return str(self.status)


@dataclass
class JobStatus:
    """A job's state as `settle` found it; every kind's status (RunStatus, PrepareStatus are this)."""
    kind: str
    job_id: str
    state: str                       # queued | running | stopping | stopped | finished | failed | unknown
    message: str = ""
    alive: bool = False              # its process exists (pid + create time match)
    started_at: float = 0.0
    heartbeat_age_s: float | None = None
    stale: bool = False              # alive, but silent for longer than its kind's stale_s
    stop_requested: bool = False     # alive and a stop file is waiting to be honoured
    log_tail: str = ""               # the log's last lines, for a failed job
    raw: dict | None = None          # the record(s) as on disk (launcher's, then the job's own over it)
    dir: Path | None = None          # the directory of its records (a run's: the run directory)
    step: int = 0                    # train: where it is
    kimg: float = 0.0
    done: int = 0                    # prepare / classifier: items processed of `total`
    total: int = 0
    out: str = ""                    # prepare / classifier: the data set directory it writes
    source: str = ""
    name: str = ""                   # train: display name (name.txt); "" = none given

    @property
    def run_id(self) -> str:
        return self.job_id

    @property
    def run_dir(self) -> Path | None:
        return self.dir

    @property
    def title(self) -> str:
        """How a run is shown: its name with its id, or the id alone."""
        return f"{self.name} ({self.job_id})" if self.name else self.job_id

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 0.0


# ----------------------------------------------------------------------------------------------
# Ids

def check_id(job_id: str, what: str = "job") -> str:
    """Job ids are directory / file names: letters, digits, '.', '_' and '-' (runs.is_run_id)."""
    if not runs.is_run_id(job_id):
        raise ValueError(f"invalid {what} id {job_id!r}: use letters, digits, '.', '_' and '-'")
    return job_id


def new_id(parent: str | os.PathLike, stem: str = "", *, ext: str = "",
           taken: Callable[[str], bool] | None = None) -> str:
    """A new id `<date>-<time>[-stem]` (then -2, -3 ...) claimed under `parent`: the directory
    parent/<id> (ext "") or the empty file parent/<id><ext>, created without exist_ok, so two starts in
    the same second (or two processes) get two ids, without sleeping. `taken(id)` rules out more ids."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    base = time.strftime("%Y%m%d-%H%M%S") + (f"-{stem}" if stem else "")
    k = 1
    while True:
        jid = base if k == 1 else f"{base}-{k}"
        k += 1
        if taken is not None and taken(jid):
            continue
        try:
            if ext:
                with open(parent / f"{jid}{ext}", "x"):
                    pass
            else:
                (parent / jid).mkdir()
            return jid
        except FileExistsError:
            continue


# ----------------------------------------------------------------------------------------------
# Processes

_POPENS: dict[str, subprocess.Popen] = {}  # handles of children we started: poll() reaps zombies
_SIGTERMED: set[tuple] = set()            # (pid, create time) of jobs sent SIGTERM: once is enough


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


# ----------------------------------------------------------------------------------------------
# Writing records: the launcher's `queued`, the job's own states, a reader's record of a death

def launch(paths: Paths, command: str, argv: list[str], env: dict[str, str] | None = None,
           record: dict[str, Any] | None = None) -> subprocess.Popen:
    """The launcher's part: write the `queued` record (+ `record`), start `python -m engine <command>
    *argv`, record its pid.

    `launcher` marks a pid recorded by the launcher: the job may not have installed its SIGTERM handler
    yet. If the job has written its own record by then, that one wins."""
    atomic_write_json(paths.status, {"state": "queued", "pid": None, "started_at": time.time(),
                                     "heartbeat_at": None, "message": "starting", **(record or {})})
    p = spawn(paths.key, command, argv, paths.log, env=env)
    st = read_json(paths.status, {}) or {}
    if st.get("pid") is None:
        st.update(pid=p.pid, create_time=create_time(p.pid), launcher=True)
        atomic_write_json(paths.status, st)
    return p


class StatusWriter:
    """A job's own record (status.json of a run, progress.json of a preparation, <job>.json of an
    evaluation), as the job's process writes it: every write replaces the file atomically and carries
    a heartbeat; the first one is merged over what the launcher wrote and adds whose process this is
    (pid, pgid, create_time). `running` updates are throttled to one per `every_s` unless `force` (their
    fields are kept and go out with the next write); every other state goes through at once.

    `fields` are written with the first write (e.g. started_at, host, device); `enabled=False` (DDP
    ranks other than 0) keeps everything in memory.
    """

    def __init__(self, path: str | os.PathLike, *, every_s: float = 1.0, enabled: bool = True, **fields: Any):
        self.path, self.every_s, self.enabled = Path(path), every_s, enabled
        self.data: dict[str, Any] = dict(fields)
        self._last: float | None = None  # monotonic time of the last write; None = nothing written yet

    def set(self, state: str | None = None, *, force: bool = False, **fields: Any) -> bool:
        """Record `state` (None = unchanged) and `fields`; returns False when the write was throttled."""
        if state is not None:
            assert state in STATES, f"unknown job state {state!r}"
            self.data["state"] = state
        if fields.get("step") is not None:
            fields["step"] = int(fields["step"])
        if fields.get("kimg") is not None:
            fields["kimg"] = round(float(fields["kimg"]), 6)
        self.data.update(fields)
        now = time.monotonic()
        if (self._last is not None and not force and self.data.get("state") == "running"
                and now - self._last < self.every_s):
            return False
        if self._last is None and self.enabled:
            pid = os.getpid()
            first = read_json(self.path, {}) or {}
            first.pop("launcher", None)
            first.setdefault("started_at", time.time())
            self.data = {**first, "pid": pid, "pgid": os.getpgid(pid), "create_time": create_time(pid),
                         **self.data}
        self.data["heartbeat_at"] = time.time()
        self._last = now
        if self.enabled:
            atomic_write_json(self.path, self.data)
        return True

    def heartbeat(self, **fields: Any) -> bool:
        """A throttled update of a running job (step, kimg, progress ...)."""
        return self.set(None, **fields)


def record_end(path: str | os.PathLike, state: str, message: str) -> dict:
    """Record the final state of a job whose process is gone without writing one (a reader's finding);
    the one place a reader writes a job's record. Returns the new record."""
    assert state in FINAL, state
    st = read_json(path, {}) or {}
    st.update(state=state, message=message)
    st.pop("launcher", None)
    atomic_write_json(path, st)
    return st


# ----------------------------------------------------------------------------------------------
# Reading: the one liveness function, and the one stop protocol

def _read(paths: Paths) -> tuple[dict, dict]:
    st = read_json(paths.status, {}) or {}
    own = st if paths.progress is None else (read_json(paths.progress, {}) or {})
    return st, own


def _state(st: dict, own: dict) -> str:
    """A final state in either record wins (a reader records a death in the launcher's one), else the
    job's own state, else the launcher's."""
    return next((s.get("state") for s in (own, st) if s.get("state") in FINAL),
                own.get("state") or st.get("state", "unknown"))


def _escalate(rec: dict, paths: Paths, kind: Kind, grace_s: float) -> None:
    """The signals a stop request has earned by now (its age = the stop file's age)."""
    try:
        age = time.time() - paths.stop.stat().st_mtime
    except FileNotFoundError:
        return
    ident = (rec.get("pid"), rec.get("create_time"))
    if age >= grace_s:
        signal_group(rec, signal.SIGKILL)
        wait_gone(rec, 2.5, paths.key)  # SIGKILL is not instant; let the kernel finish first
    elif age >= kind.term_after * grace_s and ident not in _SIGTERMED:
        # once: a job that unwinds on SIGTERM (prepare) must not be interrupted in its own cleanup
        signal_group(rec, signal.SIGTERM)
        _SIGTERMED.add(ident)


def settle(kind: str, job_id: str, paths: Paths, grace_s: float | None = None) -> JobStatus:
    """A job's state from disk, for every kind. A job whose process is gone without a final state is
    recorded (record_end) `stopped` when a stop was asked for, else `failed` with the log's last line;
    a pending stop request is escalated (stop protocol) on the way."""
    k = KINDS[kind]
    grace_s = k.grace_s if grace_s is None else grace_s
    reap(paths.key)
    st, own = _read(paths)
    state = _state(st, own)
    rec = {**st, **own}
    alive = state in ACTIVE and pid_matches(rec)
    stop_file = paths.stop.exists()
    if alive and stop_file:
        _escalate(rec, paths, k, grace_s)
        st, own = _read(paths)
        state, rec = _state(st, own), {**st, **own}
        alive = state in ACTIVE and pid_matches(rec)
    if state in ACTIVE and not alive:  # read again: the job may have written its end and exited since
        st, own = _read(paths)
        state, rec = _state(st, own), {**st, **own}
    if state in ACTIVE and not alive:
        if stop_file:
            state, msg = "stopped", k.stopped
        else:
            state, msg = "failed", f"{k.what} ended without a final status ({last_line(log_tail(paths.log))})"
        st = record_end(paths.status, state, msg)
        if paths.progress is None:
            own = st
        rec = {**st, **own}
    rec["state"] = state
    src = own if own.get("state") == state else st  # whose record holds the final word
    hb = rec.get("heartbeat_at")
    age = (time.time() - float(hb)) if hb else None
    return JobStatus(kind=kind, job_id=job_id, state=state, message=src.get("message") or st.get("message", ""),
                     alive=alive, started_at=float(st.get("started_at") or rec.get("started_at") or 0),
                     heartbeat_age_s=age,
                     stale=alive and k.stale_s is not None and age is not None and age > k.stale_s,
                     stop_requested=alive and stop_file,
                     log_tail=log_tail(paths.log) if state == "failed" else "", raw=rec,
                     dir=paths.status.parent, step=int(rec.get("step") or 0), kimg=float(rec.get("kimg") or 0.0),
                     done=int(own.get("done") or 0), total=int(own.get("total") or 0),
                     out=own.get("out") or st.get("out", ""), source=st.get("source", ""))


def request_stop(kind: str, job_id: str, paths: Paths, grace_s: float | None = None,
                 wait: bool = True) -> JobStatus:
    """Ask a job to stop (the stop protocol above). With wait=False it returns at once and later
    `settle` calls carry out the escalation; else it waits until the process is gone (or the grace
    and a few seconds more are over)."""
    grace_s = KINDS[kind].grace_s if grace_s is None else grace_s
    s = settle(kind, job_id, paths, grace_s)
    if not s.alive:
        return s
    if not paths.stop.exists():
        paths.stop.touch()
    if not wait:
        return settle(kind, job_id, paths, grace_s)
    deadline = time.time() + grace_s + 5
    while time.time() < deadline:
        s = settle(kind, job_id, paths, grace_s)
        if not s.alive:
            break
        time.sleep(0.1)
    return s


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
