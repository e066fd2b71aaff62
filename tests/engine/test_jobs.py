"""Background runs: a real tiny run started, stopped, resumed and killed; status of dead, reused and
hung processes; stop escalation; the GPU lock; the jobs CLI."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest
from filelock import FileLock

from engine import jobs
from engine.config import ConfigError
from engine.train.curves import read_metrics
from engine.utils import atomic_write_json, runs_root
from tests.waiting import wait_for

TINY = dict(res=16, batch=4, z_dim=32, w_dim=32, n_mlp=2, channel_base=64, channel_max=16,
            grid_per_class=2, workers=0, device="cpu", log_kimg=0.004, sample_kimg=0.04, snap_kimg=0.04,
            kimg=100.0)


def kill_group(pid):
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, TypeError):
        pass


def fake_status(run_id, **st):
    d = runs_root() / run_id
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_json(d / "status.json", {"step": 5, "kimg": 0.02, "started_at": time.time(),
                                          "heartbeat_at": time.time(), "message": "", **st})
    return d


def test_real_run_start_stop_resume_kill(data_dir, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the child inherits it: a 2-core CI box stays usable
    rid = jobs.start(dict(TINY, data=str(data_dir)), run_id="r1")
    d = runs_root() / rid
    pids = []
    try:
        s = jobs.status(rid)
        assert s.state in ("queued", "running") and s.alive
        pids.append(s.raw["pid"])
        s = wait_for(lambda: (x := jobs.status(rid)).step >= 2 and x, what="a running step")
        assert s.state == "running" and s.alive and not s.stale
        assert s.heartbeat_age_s is not None and s.heartbeat_age_s < 30
        assert s.raw["create_time"] == pytest.approx(psutil.Process(s.raw["pid"]).create_time(), abs=1)
        assert [r.run_id for r in jobs.list_runs()] == [rid]

        s = jobs.stop(rid)
        assert s.state == "stopped" and not s.alive, s
        stopped_at = s.step
        latest = json.loads((d / "checkpoints" / "latest.json").read_text())
        assert latest["step"] == stopped_at > 0

        jobs.resume(rid)
        s = wait_for(lambda: (x := jobs.status(rid)).state == "running" and x.step > stopped_at and x,
                     what="the resumed run to step on")
        assert s.alive
        with pytest.raises(RuntimeError, match="still running"):
            jobs.resume(rid)
        pids.append(s.raw["pid"])
        assert "resumed from" in (d / "log.txt").read_text()
        df, _ = read_metrics(d / "metrics_gan.csv")
        assert df["step"].is_monotonic_increasing and df["step"].is_unique  # curves continue, no repeats

        os.kill(s.raw["pid"], signal.SIGKILL)
        s = wait_for(lambda: (x := jobs.status(rid)).state != "running" and x, timeout=10, what="death")
        assert s.state == "failed" and not s.alive
        assert "ended without a final status" in s.message
        assert "step" in s.log_tail  # the log's last lines come with it
        assert jobs.status(rid).state == "failed"  # recorded on disk
    finally:
        for pid in pids:
            kill_group(pid)


def test_dead_or_reused_pid_is_failed_with_log_tail():
    p = subprocess.Popen([sys.executable, "-c", "print('boom: out of memory')"])
    p.wait()
    d = fake_status("dead", state="running", pid=p.pid, create_time=time.time() - 5)
    (d / "log.txt").write_text("step 4\nboom: out of memory\n")
    s = jobs.status("dead")
    assert s.state == "failed" and not s.alive
    assert "boom: out of memory" in s.message and "boom" in s.log_tail
    assert json.loads((d / "status.json").read_text())["state"] == "failed"
    # our own (alive) pid but another create time: the pid was reused by an unrelated process
    fake_status("reused", state="running", pid=os.getpid(), create_time=1000.0)
    assert jobs.status("reused").state == "failed"
    # a run that died right after its launch says so instead of quoting an older session's log
    d = fake_status("silent", state="queued", pid=p.pid, launcher=True)
    (d / "log.txt").write_text("stopped at step 3\n" + jobs.LAUNCH_MARK + " now: train --resume x\n")
    assert jobs.status("silent").message.endswith("(no output)")


def test_alive_process_with_stale_heartbeat_is_not_failed():
    me = psutil.Process()
    fake_status("hung", state="running", pid=me.pid, create_time=me.create_time(),
                heartbeat_at=time.time() - 10 * jobs.HEARTBEAT_STALE_S)
    s = jobs.status("hung")
    assert s.state == "running" and s.alive and s.stale
    # a queued run without a pid yet (start() before its spawn) counts as alive only briefly
    fake_status("young", state="queued", pid=None)
    assert jobs.status("young").alive
    fake_status("old", state="queued", pid=None, started_at=time.time() - 600)
    assert jobs.status("old").state == "failed"


@pytest.mark.parametrize("ignore_term", [False, True])
def test_stop_escalates_to_sigterm_then_sigkill(ignore_term):
    # A process that never looks at the stop file: SIGTERM after grace/4 ends it, or SIGKILL after grace.
    code = ("import signal, time\n" + ("signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if ignore_term else "")
            + "print('ready', flush=True)\ntime.sleep(60)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert p.stdout.readline().strip() == b"ready"
        fake_status("deaf", state="running", pid=p.pid, create_time=psutil.Process(p.pid).create_time(),
                    pgid=p.pid)
        t0 = time.time()
        s = jobs.stop("deaf", grace_s=2.0, wait=False)
        assert s.alive and s.stop_requested and (runs_root() / "deaf" / "stop").exists()
        threading.Thread(target=p.wait, daemon=True).start()  # reap the child like Streamlit's _POPENS
        s = jobs.stop("deaf", grace_s=2.0)
        took = time.time() - t0
        assert s.state == "stopped" and not s.alive
        assert p.wait(5) == -(signal.SIGKILL if ignore_term else signal.SIGTERM)
        assert (took >= 2.0) if ignore_term else (0.5 <= took < 2.0)
    finally:
        p.kill()
        p.wait()


class _Status:
    def __init__(self):
        self.calls = []

    def set(self, state=None, *, message=None, **kw):
        self.calls.append((state, message))


class _Stop:
    flag = False

    def requested(self):
        return self.flag


def test_gpu_lock_queues_second_run():
    root = runs_root()
    root.mkdir(parents=True)
    holder = FileLock(str(root / ".gpu.lock"))
    holder.acquire()
    atomic_write_json(root / ".gpu.owner.json", {"run_id": "first", "pid": 1})
    status, stop, out = _Status(), _Stop(), []
    t = threading.Thread(target=lambda: out.append(jobs.acquire_gpu(root / "second", status, stop, poll_s=0.1)))
    t.start()
    wait_for(lambda: len(status.calls) >= 2, timeout=10, what="queued")
    assert status.calls[0] == ("queued", "waiting for the GPU (in use by first)")
    stop.flag = True  # a stop while queued gives up waiting
    t.join(5)
    assert out == [False] and not jobs._GPU_LOCKS
    holder.release()
    try:
        quiet = _Status()
        assert jobs.acquire_gpu(root / "second", quiet, _Stop(), poll_s=0.1)
        assert quiet.calls == []  # a free GPU: no queued state at all
        assert json.loads((root / ".gpu.owner.json").read_text())["run_id"] == "second"
        with pytest.raises(TimeoutError):  # now the second run holds it
            FileLock(str(root / ".gpu.lock")).acquire(timeout=0.2)
        # a third run waits for the second, then runs
        third, out = _Status(), []
        t = threading.Thread(target=lambda: out.append(jobs.acquire_gpu(root / "third", third, _Stop(), poll_s=0.1)))
        t.start()
        wait_for(lambda: third.calls, timeout=10, what="queued")
        assert third.calls[0] == ("queued", "waiting for the GPU (in use by second)")
        jobs._GPU_LOCKS.pop(0).release()
        t.join(5)
        assert out == [True] and third.calls[-1] == ("running", "starting")
    finally:
        while jobs._GPU_LOCKS:
            jobs._GPU_LOCKS.pop().release()


def test_start_validates_before_writing(data_dir):
    with pytest.raises(ConfigError, match="'res'"):
        jobs.start(dict(TINY, data=str(data_dir), res=20))
    with pytest.raises(ConfigError, match="'data'"):
        jobs.start(dict(TINY, data=str(data_dir) + "-missing"))
    with pytest.raises(ConfigError, match="unknown config field"):
        jobs.start(dict(TINY, learning_rate=1))
    with pytest.raises(ConfigError, match="'batch'"):  # the CLI validates the same way
        jobs.main(["start", "--data", str(data_dir), "--batch", "1"])
    assert jobs.list_runs() == []
    fake_status("never-started", state="failed")  # died before it wrote config.json
    with pytest.raises(FileNotFoundError, match="never started"):
        jobs.resume("never-started")
    with pytest.raises(ValueError, match="invalid run id"):
        jobs.status("../etc")


def test_cli_list_and_status(capsys):
    fake_status("a", state="finished", message="done", started_at=1.0)
    fake_status("b", state="stopped", message="stopped at step 5", started_at=2.0)
    assert jobs.main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[:2] for ln in lines] == [["b", "stopped"], ["a", "finished"]]
    assert jobs.main(["status", "a"]) == 0
    assert capsys.readouterr().out.startswith("a: finished (step 5")
