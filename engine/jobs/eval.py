"""Evaluations as jobs: `python -m engine evaluate --job ID` in its own session, progress and truth on disk.

    runs/<id>/eval/jobs/<job>.json   {"state", "pid", "create_time", "progress", "message", "started_at",
                                      "heartbeat_at", "report", "args"}; replaced atomically
    runs/<id>/eval/jobs/<job>.log    the process's stdout/stderr
    runs/<id>/eval/jobs/<job>.stop   a stop was asked for
    runs/<id>/eval/<job>.json        the report, when it finishes

Liveness, the stop protocol and the record of a death are engine.jobs.core's. The status stays a dict
(the record plus "job", "alive" and, after a failure, "log_tail"): the Evaluate page reads its keys.
engine.metrics.evaluate is imported only inside start_eval (it imports torch; it writes its record
with core.StatusWriter and never imports this module).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine import runs
from engine.jobs import core
from engine.utils import default_demo_dir, runs_root

KIND = "eval"
ACTIVE = ("queued", "running")


def jobs_dir(run_id: str, root: str | Path | None = None) -> Path:
    return runs.eval_jobs_dir(runs.run_dir(run_id, root))


def paths(run_id: str, job: str, root: str | Path | None = None) -> core.Paths:
    jd = jobs_dir(run_id, root)
    job = core.check_id(job, "evaluation job")
    return core.Paths(status=jd / f"{job}.json", log=jd / f"{job}.log", stop=jd / f"{job}.stop")


def start_eval(run_id: str, options: dict[str, Any] | None = None, root: str | Path | None = None) -> str:
    """Launch `python -m engine evaluate` for a run in the background; returns the job (= report) id.

    `options` are EvalConfig fields (metrics, features, n, per_class, step ...); they are validated here
    first, so a bad value fails in the caller with a ConfigError naming the field.
    """
    from engine.config import flag, from_dict
    from engine.metrics.evaluate import EvalConfig

    root = Path(root) if root else runs_root()
    d = runs.run_dir(run_id, root)
    if not d.is_dir():
        raise FileNotFoundError(f"run {run_id} does not exist in {root}")
    opts = {k: v for k, v in (options or {}).items() if v is not None}
    from_dict(EvalConfig, {**opts, "run_dir": str(d)})  # validate now, not in the child
    # the job id is the report id: free among the jobs (claimed, no sleep) and the reports
    job = core.new_id(jobs_dir(run_id, root), ext=".json",
                      taken=lambda j: (runs.eval_dir(d) / f"{j}.json").exists())
    args = ["--run-dir", str(d), "--job", job]
    for k, v in opts.items():
        args += [flag(k), str(v).lower() if isinstance(v, bool) else str(v)]
    core.launch(paths(run_id, job, root), core.KINDS[KIND].command, args, env={"HISTOGEN_RUNS": str(root)},
                record=dict(kind=KIND, progress=0.0, report=None, args=args))
    return job


def _as_dict(s: core.JobStatus) -> dict:
    out = {**(s.raw or {}), "state": s.state, "message": s.message, "job": s.job_id, "alive": s.alive}
    if s.state == "failed":
        out["log_tail"] = s.log_tail
    return out


def eval_status(run_id: str, job: str, root: str | Path | None = None) -> dict:
    """A job's status dict plus "job", "alive" and (after a failure) "log_tail"."""
    return _as_dict(core.settle(KIND, job, paths(run_id, job, root)))


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
    """Stop a job (stop file, SIGTERM to its process group, SIGKILL after `grace_s`); no partial report
    is kept."""
    return _as_dict(core.request_stop(KIND, job, paths(run_id, job, root), grace_s))


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
    from engine.jobs import classifier as classifier_jobs

    d = runs.run_dir(run_id, root)
    cfg = runs.read_config(d)
    data_dir = Path(data or cfg.get("data") or default_demo_dir(int(cfg.get("res") or 64)))
    clf = Path(classifier) if classifier else classifier_jobs.classifier_path(data_dir)
    return EvalNeeds(run_dir=str(d), checkpoint=runs.has_entry(d), data_dir=str(data_dir),
                     data_ready=(data_dir / "dataset.json").is_file(), features=features,
                     classifier=classifier_jobs.classifier_status(data_dir) if features == "domain" else None,
                     classifier_file=str(clf))
