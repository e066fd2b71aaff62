"""The domain classifier as a background job of its data set: `train-classifier --progress-file`, a job
queued behind a preparation, its state for the pages (missing / queued / training / ready / failed)."""
import json
import time

import pytest

from engine.config import PrepareConfig
from engine.jobs import prepare as data_jobs
from engine.jobs import classifier as CJ
from engine.metrics.classifier import main
from engine.utils import atomic_write_json, data_root
from tests.engine.test_classifier import make_prepared
from tests.waiting import wait_for

FAST = dict(arch="test_resnet", epochs=1, batch=16, device="cpu")


def test_cli_progress_file_and_sidecar(tmp_path):
    data = make_prepared(tmp_path / "tiny")
    prog = tmp_path / "progress.json"
    assert main([f"--data={data}", f"--progress-file={prog}", "--arch=test_resnet", "--epochs=2",
                 "--batch=16", "--device=cpu", "--threads=1"]) == 0
    p = json.loads(prog.read_text())
    assert p["state"] == "finished" and p["done"] == p["total"] == 4  # 32 train images / 16, two epochs
    assert "held-out accuracy" in p["message"] and 0 <= p["val_acc"] <= 1
    side = json.loads((data / "classifier.json").read_text())
    assert side["val_acc"] == p["val_acc"] and side["arch"] == "test_resnet"
    s = CJ.classifier_status(data)
    assert s.state == "ready" and s.val_acc == p["val_acc"] and s.val_n == 8


def test_cli_progress_file_on_failure(tmp_path):
    prog = tmp_path / "progress.json"
    assert main([f"--data={tmp_path / 'none'}", f"--progress-file={prog}", "--device=cpu"]) == 2
    p = json.loads(prog.read_text())
    assert p["state"] == "failed" and str(tmp_path / "none") in p["message"]


def test_status_missing_failed_and_no_automatic_retry(tmp_path, monkeypatch):
    data = make_prepared(data_root() / "tiny")
    assert CJ.classifier_status(data).state == "missing"
    # a job that died: recorded failed by the reader; ensure_classifier then leaves it to a click
    jd = data_jobs.jobs_root() / "20990101-000000-tiny-classifier"
    jd.mkdir(parents=True)
    atomic_write_json(jd / "status.json", {"state": "queued", "kind": "classifier", "out": str(data.resolve()),
                                           "pid": 2**22 + 7, "create_time": 1.0, "started_at": time.time()})
    atomic_write_json(jd / "progress.json", {"state": "running", "done": 3, "total": 10, "message": "epoch 1"})
    s = CJ.classifier_status(data)
    assert s.state == "failed" and "without a final status" in s.message and s.job_id == jd.name
    assert data_jobs.list_prepare_jobs() == []  # the Data page's preparation list does not show it
    started = []
    monkeypatch.setattr(CJ, "start_classifier", lambda *a, **k: started.append(a) or "x")
    assert CJ.ensure_classifier(data) is None and not started
    # once the data set is prepared again, the old failure no longer counts
    later = time.time() + 5
    import os
    os.utime(data / "dataset.json", (later, later))
    assert CJ.classifier_status(data).state == "missing"
    assert CJ.ensure_classifier(data) == "x"


def test_start_refuses_an_unprepared_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a prepared data set"):
        CJ.start_classifier(tmp_path / "nothing")


def test_queued_behind_a_preparation_then_ready():
    """The Data page's flow: a preparation job and the classifier job queued behind it; the classifier
    waits (queued), trains, and its status ends ready with the held-out accuracy."""
    pj = data_jobs.start_prepare(PrepareConfig(source="histosynth", size=32, per_class=4, seed=0, workers=1))
    out = data_root() / "histosynth-32"
    cj = CJ.start_classifier(out, after_job=pj, **FAST)
    assert CJ.classifier_status(out).state in ("queued", "training", "ready")
    with pytest.raises(Exception, match="already being trained"):
        CJ.start_classifier(out, **FAST)  # one job per data set
    wait_for(lambda: CJ.classifier_status(out).state not in ("queued", "training"), timeout=180,
             what="the classifier job")
    s = CJ.classifier_status(out)
    assert s.state == "ready", (s, (data_jobs.job_dir(cj) / "log.txt").read_text())
    assert s.val_acc is not None and s.arch == "test_resnet"
    j = data_jobs.prepare_status(cj)
    assert j.kind == "classifier" and j.state == "finished" and j.done == j.total > 0
    assert [x.job_id for x in data_jobs.list_prepare_jobs()] == [pj]


def test_queued_behind_a_failed_preparation_fails_saying_why():
    pj = data_jobs.start_prepare(PrepareConfig(source="folder:/missing"))
    out = data_jobs.prepare_status(pj).out
    cj = CJ.start_classifier(out, after_job=pj, **FAST)
    wait_for(lambda: data_jobs.prepare_status(cj).state not in data_jobs.ACTIVE, timeout=120,
             what="the classifier job")
    j = data_jobs.prepare_status(cj)
    assert j.state == "failed" and "ended failed" in j.message and "no classifier was trained" in j.message


def test_stopped_job_says_stopped():
    import os

    data = make_prepared(data_root() / "tiny", per_class=12)
    jid = CJ.start_classifier(data, arch="resnet10t", epochs=1000, batch=16, device="cpu")
    wait_for(lambda: CJ.classifier_status(data).state == "training", timeout=120, what="training")
    s = CJ.stop_classifier(jid, grace_s=10)
    assert s.state == "stopped" and s.message == "stopped; no classifier was written"
    assert json.loads((data_jobs.job_dir(jid) / "progress.json").read_text())["state"] == "stopped"
    assert CJ.classifier_status(data).state == "stopped" and not (data / "classifier.pt").exists()
    assert not os.path.exists(data / "classifier.json")
