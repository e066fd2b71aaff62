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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine import background as bg
from engine.jobs import run_dir
from engine.utils import atomic_write_json, read_json, runs_root

ACTIVE = ("queued", "running")


class JobStatus(bg.StatusFile):
    """The status file of one evaluation job, written by the evaluating process (throttled to 1/s);
    every write carries a heartbeat, and the first `running` one the writer's pid and create time."""

    def _extra(self, state: str, st: dict) -> dict:
        extra: dict[str, Any] = {"heartbeat_at": time.time()}
        if state == "running" and st.get("pid") != os.getpid():
            extra.update(pid=os.getpid(), create_time=bg.create_time(os.getpid()))
        return extra


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
    p = bg.spawn(f"eval/{run_id}/{job}", "evaluate", args, jd / f"{job}.log", env={"HISTOGEN_RUNS": str(root)})
    st = read_json(status, {}) or {}
    if st.get("pid") is None:  # the child has not written yet: record whom to watch
        st.update(pid=p.pid, create_time=bg.create_time(p.pid))
        atomic_write_json(status, st)
    return job


def eval_status(run_id: str, job: str, root: str | Path | None = None) -> dict:
    """A job's status dict plus "job", "alive" and (after a failure) "log_tail"."""
    bg.reap(f"eval/{run_id}/{job}")
    path = jobs_dir(run_id, root) / f"{job}.json"
    st = read_json(path, {}) or {}
    alive = st.get("state") in ACTIVE and st.get("pid") is not None and bg.pid_matches(st)
    if st.get("state") in ACTIVE and not alive and st.get("pid") is not None:
        st = read_json(path, {}) or st  # read again: the job may have written its end and exited since
    if st.get("state") in ACTIVE and not alive and st.get("pid") is not None:
        stopped = (path.parent / f"{job}.stop").exists()
        last = bg.last_line(bg.log_tail(path.with_suffix(".log"), lines=5))
        st.update(state="stopped" if stopped else "failed",
                  message="stopped" if stopped else f"the evaluation ended without a final status ({last})")
        atomic_write_json(path, st)
    if st.get("state") == "failed":
        st["log_tail"] = bg.log_tail(path.with_suffix(".log"))
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
    if st.get("state") in ACTIVE and st.get("pid"):
        bg.terminate(st, grace_s, f"eval/{run_id}/{job}")
    return eval_status(run_id, job, root)


# ----------------------------------------------------------------------------------------------
# What an evaluation needs, before it is started

@dataclass
class EvalNeeds:
    """Whether an evaluation of a run can start from the page, and what is missing if not."""
    run_dir: str
    checkpoint: bool                  # the run has a checkpoint or an export to generate from
    data_dir: str                     # the data set it compares against (the one the run trained on)
    data_ready: bool                  # ... is prepared
    features: str
    classifier: Any = None            # ClassifierStatus of data_dir for `domain` (None for other spaces)
    classifier_file: str = ""         # the file `domain` reads

    @property
    def missing(self) -> list[str]:
        """One sentence per missing thing, in the order they must be fixed."""
        out = []
        if not self.checkpoint:
            out.append(f"run {Path(self.run_dir).name} has no checkpoint yet: train it (or wait for its first "
                       "checkpoint)")
        if not self.data_ready:
            out.append(f"the data set {self.data_dir} is not prepared: prepare it on the Data page")
        elif self.features == "domain" and not Path(self.classifier_file).is_file():
            c = self.classifier
            state = {"queued": "is queued", "training": "is being trained"}.get(getattr(c, "state", ""), "is missing")
            out.append(f"the `domain` feature space needs the data set's classifier, which {state} "
                       f"({self.classifier_file})")
        return out

    @property
    def ready(self) -> bool:
        return not self.missing


def eval_needs(run_id: str, features: str = "domain", data: str = "", classifier: str = "",
               root: str | Path | None = None) -> EvalNeeds:
    """What `start_eval(run_id, {features, data, classifier})` needs and whether it is there: a checkpoint,
    the prepared data set (`data`, else the run's, else the demo set at its resolution, as `evaluate`
    resolves it) and, for `domain`, its classifier file (`classifier`, else <data>/classifier.pt)."""
    from engine.data.dataset import default_demo_dir
    from engine.metrics import classifier_jobs
    from engine.sampling import list_checkpoints

    d = run_dir(run_id, root)
    cfg = read_json(d / "config.json") or read_json(d / "launch.json") or {}
    data_dir = Path(data or cfg.get("data") or default_demo_dir(int(cfg.get("res") or 64)))
    clf = Path(classifier) if classifier else classifier_jobs.classifier_path(data_dir)
    return EvalNeeds(run_dir=str(d), checkpoint=bool(list_checkpoints(d)), data_dir=str(data_dir),
                     data_ready=(data_dir / "dataset.json").is_file(), features=features,
                     classifier=classifier_jobs.classifier_status(data_dir) if features == "domain" else None,
                     classifier_file=str(clf))
