"""Data preparation as a background job: a real tiny job runs to the end; a bad source ends failed with
its one-sentence error; a stopped job and a killed one leave no data set behind (the killed one's temp
directory is cleared by the next preparation of the same directory)."""
import json
import os
import signal

import pytest

from engine.config import ConfigError, PrepareConfig
from engine.jobs import prepare as J
from engine.data.dataset import load_prepared
from engine.utils import data_root
from tests.waiting import wait_for


def ended(job_id, timeout=60.0):
    return wait_for(lambda: (s := J.prepare_status(job_id)).state not in J.ACTIVE and s, timeout=timeout,
                    what=f"the end of job {job_id}")


def busy(job_id):
    """Wait until the job has processed some items (its temp directory exists by then)."""
    return wait_for(lambda: (s := J.prepare_status(job_id)).done > 0 and s, timeout=60, what="progress")


def test_background_prepare_runs_to_the_end():
    jid = J.start_prepare(PrepareConfig(source="histosynth", size=32, per_class=4, seed=1))
    s = J.prepare_status(jid)
    assert s.state in ("queued", "running", "finished") and s.out == str(data_root() / "histosynth-32")
    s = ended(jid)
    assert s.state == "finished", (s, (J.job_dir(jid) / "log.txt").read_text())
    progress = json.loads((J.job_dir(jid) / "progress.json").read_text())
    assert progress["state"] == "finished" and progress["done"] == progress["total"] == 9 * 4
    assert s.done == s.total == 36 and s.out in s.message and not s.alive
    data = load_prepared(s.out)
    assert len(data.labels) == 36 and data.info["seed"] == 1
    assert [j.job_id for j in J.list_prepare_jobs()] == [jid]


def test_bad_config_fails_in_the_caller_and_a_bad_source_in_the_job():
    with pytest.raises(ConfigError, match="'size'"):
        J.start_prepare(PrepareConfig(size=8))
    assert J.list_prepare_jobs() == []  # validated before any process starts
    jid = J.start_prepare(PrepareConfig(source="folder:/missing"))
    s = ended(jid)
    assert s.state == "failed" and s.message == "config field 'source': folder /missing does not exist"
    assert "does not exist" in s.log_tail
    assert not (data_root() / "missing-64").exists()


def test_stop_leaves_no_data_set():
    cfg = PrepareConfig(source="histosynth", size=64, per_class=1000)  # minutes of work: it cannot end first
    jid = J.start_prepare(cfg)
    busy(jid)
    with pytest.raises(ConfigError, match="already being prepared"):
        J.start_prepare(cfg)  # one writer per directory
    # a generous grace: on a loaded 2-core machine the job's unwinding (pool, temp dir) can take seconds,
    # and a SIGKILL before it ends would leave the temp directory for the next prepare to clear
    s = J.stop_prepare(jid, grace_s=30)
    assert s.state == "stopped" and not s.alive and 0 < s.done < s.total
    out = data_root() / "histosynth-64"
    assert not out.exists() and not list(data_root().glob(".histosynth-64.tmp-*"))  # it cleaned up itself
    assert J.prepare_status(jid).state == "stopped"


def test_killed_job_is_failed_and_its_debris_cleared_by_the_next_prepare():
    jid = J.start_prepare(PrepareConfig(source="histosynth", size=64, per_class=1000, workers=1))
    busy(jid)
    os.killpg(json.loads((J.job_dir(jid) / "status.json").read_text())["pid"], signal.SIGKILL)  # no goodbye
    s = ended(jid, timeout=10)
    assert s.state == "failed" and "ended without a final status" in s.message
    assert list(data_root().glob(".histosynth-64.tmp-*")) and not (data_root() / "histosynth-64").exists()
    s = ended(J.start_prepare(PrepareConfig(source="histosynth", size=64, per_class=2)))
    assert s.state == "finished" and len(load_prepared(s.out).labels) == 18
    assert not list(data_root().glob(".histosynth-64.tmp-*"))  # the killed job's temp dir is gone
