"""The one job layer: every kind's dead job is recorded through core.record_end (failed, or stopped when
a stop was asked for), ids from one maker are distinct within a second without sleeping, and the one
status writer merges over the launcher's record and throttles only `running` updates."""
import json
import os
import time

import psutil
import pytest

from engine.jobs import classifier as CJ
from engine.jobs import core
from engine.jobs import eval as eval_jobs
from engine.jobs import prepare as prepare_jobs
from engine.jobs import train as train_jobs
from engine.utils import atomic_write_json, data_root, runs_root

DEAD = {"pid": 2**22 + 7, "create_time": 1.0}  # above Linux's largest pid: a process that cannot exist


def _train(job_id):
    d = runs_root() / job_id
    d.mkdir(parents=True)
    atomic_write_json(d / "status.json", {"state": "running", "step": 3, "started_at": time.time(), **DEAD})
    (d / "log.txt").write_text("step 3\nKilled\n")
    return d / "stop", lambda: train_jobs.status(job_id), d / "status.json"


def _data_job(kind):
    def make(job_id):
        d = prepare_jobs.jobs_root() / job_id
        d.mkdir(parents=True)
        atomic_write_json(d / "status.json", {"state": "queued", "kind": kind, "out": str(data_root() / "x"),
                                              "started_at": time.time(), **DEAD})
        atomic_write_json(d / "progress.json", {"state": "running", "done": 2, "total": 9, "message": "busy"})
        (d / "log.txt").write_text("Killed\n")
        return d / "stop", lambda: prepare_jobs.prepare_status(job_id), d / "status.json"
    return make


def _eval(job_id):
    jd = runs_root() / "r1" / "eval" / "jobs"
    jd.mkdir(parents=True)
    atomic_write_json(jd / f"{job_id}.json", {"state": "running", "progress": 0.3, "message": "fid",
                                              "started_at": time.time(), **DEAD})
    (jd / f"{job_id}.log").write_text("Killed\n")
    return jd / f"{job_id}.stop", lambda: eval_jobs.eval_status("r1", job_id), jd / f"{job_id}.json"


KIND_CASES = {"train": _train, "prepare": _data_job("prepare"), "classifier": _data_job("classifier"),
              "eval": _eval}


@pytest.mark.parametrize("kind", sorted(KIND_CASES))
@pytest.mark.parametrize("stopped", [False, True])
def test_every_kind_records_a_dead_job_through_the_job_layer(kind, stopped, monkeypatch):
    assert set(KIND_CASES) <= set(core.KINDS)
    ends = []
    real = core.record_end
    monkeypatch.setattr(core, "record_end", lambda *a: ends.append(a) or real(*a))
    stop_file, read, record = KIND_CASES[kind]("20990101-000000-job")
    if stopped:
        stop_file.touch()
    s = read()
    state = s["state"] if isinstance(s, dict) else s.state
    message = s["message"] if isinstance(s, dict) else s.message
    alive = s["alive"] if isinstance(s, dict) else s.alive
    k = core.KINDS[kind]
    assert not alive and state == ("stopped" if stopped else "failed")
    assert message == (k.stopped if stopped else f"{k.what} ended without a final status (Killed)")
    assert [(str(p), st) for p, st, _ in ends] == [(str(record), state)]  # one record, by the job layer
    on_disk = json.loads(record.read_text())
    assert on_disk["state"] == state and on_disk["message"] == message
    read()  # a second look finds the final state on disk and writes nothing
    assert len(ends) == 1


def test_classifier_status_of_a_dead_job_is_its_recorded_failure():
    data = data_root() / "x"
    KIND_CASES["classifier"]("20990101-000000-x-classifier")
    s = CJ.classifier_status(data)
    assert s.state == "failed" and s.message.startswith("the classifier training ended without a final status")


def test_ids_are_distinct_within_one_second_without_sleeping(monkeypatch, tmp_path):
    monkeypatch.setattr(time, "sleep", lambda s: pytest.fail("the id maker slept"))
    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "20990101-000000")  # every start in the same second
    assert [core.new_id(tmp_path, "stylegan2-64px") for _ in range(3)] == [
        "20990101-000000-stylegan2-64px", "20990101-000000-stylegan2-64px-2", "20990101-000000-stylegan2-64px-3"]
    assert all((tmp_path / f"20990101-000000-stylegan2-64px{s}").is_dir() for s in ("", "-2", "-3"))
    # files (evaluation jobs), with ids a report already uses ruled out
    assert core.new_id(tmp_path / "jobs", ext=".json") == "20990101-000000"
    assert core.new_id(tmp_path / "jobs", ext=".json", taken=lambda j: j.endswith("-2")) == "20990101-000000-3"
    # two training runs started in the same second get two run directories
    a = core.new_id(runs_root(), "dcgan-32px")
    b = core.new_id(runs_root(), "dcgan-32px")
    assert a != b and (runs_root() / a).is_dir() and (runs_root() / b).is_dir()


def test_status_writer_merges_over_the_launcher_and_throttles_running_only(tmp_path):
    path = tmp_path / "status.json"
    atomic_write_json(path, {"state": "queued", "pid": 12345, "launcher": True, "args": ["--x"],
                             "started_at": 5.0})
    w = core.StatusWriter(path, every_s=3600)
    assert w.set("running", message="a", progress=0.1)
    d = json.loads(path.read_text())
    me = psutil.Process()
    assert d["pid"] == os.getpid() and abs(d["create_time"] - me.create_time()) < 1 and "launcher" not in d
    assert d["args"] == ["--x"] and d["started_at"] == 5.0 and d["heartbeat_at"] > 5.0
    assert not w.set("running", progress=0.2)  # throttled, kept for the next write
    assert json.loads(path.read_text())["progress"] == 0.1
    assert w.set("failed", message="boom")  # any other state goes through at once
    d = json.loads(path.read_text())
    assert (d["state"], d["progress"], d["message"]) == ("failed", 0.2, "boom")
    s = core.settle("eval", "status", core.Paths(status=path, log=tmp_path / "log", stop=tmp_path / "stop"))
    assert s.state == "failed" and s.message == "boom" and not s.alive
