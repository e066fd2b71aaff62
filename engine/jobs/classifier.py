"""The domain classifier of a data set as a background job, and its state for the pages.

Training it is `python -m engine train-classifier --data DIR --progress-file ...` run as a job of kind
"classifier" beside the data set's preparations (engine.jobs.prepare: <data root>/.jobs/<job>/ with
status.json, progress.json, log.txt, stop), so the Data page follows it like a preparation and the app
stays usable.
A preparation started from the app queues one behind it (`--after-job`: the job waits for the
preparation to finish, then trains); the app's first start queues one for the demo set.

No torch here: `classifier_status` reads the JSON beside the weights (engine.metrics.classifier.meta_path),
so a page can call it on every rerun.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from engine.config import ConfigError
from engine.jobs import prepare as data_jobs
from engine.utils import read_json

KIND = "classifier"
FILE_NAME = "classifier.pt"  # = engine.metrics.classifier.FILE_NAME (not imported: that module loads torch)


@dataclass
class ClassifierStatus:
    data_dir: str
    state: str                    # missing | queued | training | ready | failed | stopped
    path: str = ""                # the classifier file (<data_dir>/classifier.pt)
    done: int = 0                 # training steps done of `total` while training
    total: int = 0
    message: str = ""             # progress, or the one-sentence error of a failed job
    val_acc: float | None = None  # held-out (val split) accuracy of a ready classifier
    val_n: int = 0                # images it was measured on
    arch: str = ""
    job_id: str = ""              # the job that is training it (or that failed / was stopped)
    started_at: float = 0.0       # when it started training (after any wait), for the ETA
    log_tail: str = ""            # a failed job's log tail

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 0.0


def classifier_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / FILE_NAME


def _jobs_of(data_dir: Path) -> list[data_jobs.PrepareStatus]:
    want = str(data_dir.resolve())
    return [j for j in data_jobs.list_prepare_jobs(KIND) if j.out == want]


def _ended_at(job: data_jobs.PrepareStatus) -> float:
    d = data_jobs.job_dir(job.job_id)
    return max([job.started_at] + [os.path.getmtime(p) for p in (d / "progress.json", d / "status.json")
                                   if p.is_file()])


def classifier_status(data_dir: str | Path) -> ClassifierStatus:
    """The state of a data set's domain classifier: a job training it (queued / training, with progress),
    else its file (ready, with the held-out accuracy), else the last attempt since the data set was
    prepared (failed / stopped, with the message), else missing."""
    data_dir = Path(data_dir)
    path = classifier_path(data_dir)
    jobs = _jobs_of(data_dir) if data_jobs.jobs_root().is_dir() else []
    active = next((j for j in jobs if j.state in data_jobs.ACTIVE), None)
    base = dict(data_dir=str(data_dir), path=str(path))
    if active:
        training = active.state == "running" and active.total > 0
        pr = active.raw or {}  # the job's own record over the launcher's
        return ClassifierStatus(**base, state="training" if training else "queued", done=active.done,
                                total=active.total, message=active.message, job_id=active.job_id,
                                started_at=float(pr.get("train_started_at") or active.started_at))
    if path.is_file():
        meta = read_json(path.with_suffix(".json"), {}) or {}  # engine.metrics.classifier.meta_path
        if not meta:  # a file from before the JSON sidecar (or written by hand): read its meta once
            meta = _meta_from_weights(path)
        acc = meta.get("val_acc")
        return ClassifierStatus(**base, state="ready", val_acc=None if acc is None else float(acc),
                                val_n=int(meta.get("val_n") or 0), arch=str(meta.get("arch") or ""),
                                message=meta.get("error", ""))
    made = os.path.getmtime(data_dir / "dataset.json") if (data_dir / "dataset.json").is_file() else 0.0
    last = next((j for j in jobs if j.state in ("failed", "stopped") and _ended_at(j) >= made), None)
    if last:
        return ClassifierStatus(**base, state=last.state, message=last.message, job_id=last.job_id,
                                started_at=last.started_at, log_tail=last.log_tail)
    return ClassifierStatus(**base, state="missing",
                            message=f"no domain classifier for {data_dir.name} yet")


_META_CACHE: dict[tuple[str, float], dict] = {}


def _meta_from_weights(path: Path) -> dict:
    key = (str(path), os.path.getmtime(path))
    if key not in _META_CACHE:
        import torch

        try:
            _META_CACHE[key] = dict(torch.load(path, map_location="cpu", weights_only=True)["meta"])
        except Exception as e:  # noqa: BLE001 -- shown as the state's message; evaluation says more
            _META_CACHE[key] = {"error": f"{path.name} is not readable ({type(e).__name__})"}
    return _META_CACHE[key]


def default_threads() -> int:
    """Half the cores (at least one): the app, a training run and this job share a small machine."""
    return max(1, (os.cpu_count() or 2) // 2)


def start_classifier(data_dir: str | Path, after_job: str | None = None, **options) -> str:
    """Queue `python -m engine train-classifier --data DIR` as a background job; returns its id.

    `after_job`: a preparation job of this data set that the training waits for. `options` are
    ClassifierConfig fields (epochs, arch, ...), validated by the job. One job per data set at a time.
    """
    from engine.config import flag

    data_dir = Path(data_dir).resolve()
    busy = next((j for j in _jobs_of(data_dir) if j.state in data_jobs.ACTIVE), None)
    if busy:
        raise ConfigError(f"config field 'data': the classifier of {data_dir} is already being trained "
                          f"(job {busy.job_id}); wait for it or stop it")
    if after_job is None and not (data_dir / "dataset.json").is_file():
        raise FileNotFoundError(f"{data_dir} is not a prepared data set (no dataset.json); prepare it first")
    opts = {"threads": default_threads(), **options}

    args = [f"--data={data_dir}", "--progress-file={progress}"]
    args += [f"{flag(k)}={v}" for k, v in opts.items() if v is not None]
    args += [f"--after-job={after_job}"] if after_job else []
    return data_jobs.start_job(KIND, args, data_dir, suffix="-classifier", source=f"classifier of {data_dir.name}")


def ensure_classifier(data_dir: str | Path, after_job: str | None = None) -> str | None:
    """Queue the classifier of a data set unless it exists, is being trained, or its last attempt on
    this data set failed or was stopped (that one waits for a click, never loops). Returns the job id
    when one was started."""
    if after_job is None and classifier_status(data_dir).state != "missing":
        return None
    try:
        return start_classifier(data_dir, after_job=after_job)
    except ConfigError:  # another caller queued it a moment ago
        return None


def stop_classifier(job_id: str, grace_s: float = 10.0) -> data_jobs.PrepareStatus:
    """Stop a classifier job (no file is written: the weights are replaced atomically at the end)."""
    return data_jobs.stop_prepare(job_id, grace_s)
