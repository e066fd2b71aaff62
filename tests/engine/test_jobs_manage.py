"""Run progress against the target, the time estimate from this machine's runs, rename and delete."""
import json
import socket
import time

import psutil
import pytest

from engine import config as C
from engine import jobs
from engine.train.logging import MetricsCSV
from engine.utils import atomic_write_json, runs_root


def fake_run(run_id, *, state="finished", step=34, res=64, batch=16, kimg=5.0, speeds=(), alive=False,
             host=None, device="cpu", started_at=None, **cfg):
    d = runs_root() / run_id
    d.mkdir(parents=True, exist_ok=True)
    C.save(C.from_dict(C.TrainConfig, dict(res=res, batch=batch, kimg=kimg, run_dir=str(d), **cfg)),
           d / "config.json")
    st = {"state": state, "pid": None, "step": step, "kimg": step * batch / 1000,
          "started_at": started_at or time.time(), "heartbeat_at": time.time(), "message": "",
          "host": host or socket.gethostname(), "device": device}
    if alive:  # this test process stands in for the trainer
        me = psutil.Process()
        st.update(pid=me.pid, create_time=me.create_time())
    atomic_write_json(d / "status.json", st)
    if speeds:
        m = MetricsCSV(d / "metrics_gan.csv")
        for i, v in enumerate(speeds, 1):
            m.write({"epoch": 0.1 * i, "step": i, "kimg": i * batch / 1000, "img_per_s": v, "time_s": 1.0 * i})
    return d


def test_progress_line_against_the_target():
    fake_run("live", state="running", alive=True, speeds=(5.0, 20.0, 20.0, 21.0, 19.0))
    p = jobs.progress(jobs.status("live"))
    assert (p.step, p.total_steps, p.target_kimg) == (34, 313, 5.0)
    assert p.img_per_s == 20.0  # the median ignores the slow first interval
    assert p.eta_s == pytest.approx((313 - 34) * 16 / 20.0)
    assert p.text() == "step 34 / 313 · 0.54 / 5 kimg · ETA 4 min"
    fake_run("done", step=313, speeds=(20.0,))
    assert jobs.progress(jobs.status("done")).text() == "step 313 / 313 · 5.01 / 5 kimg"  # no ETA when over
    short = fake_run("short", step=3, batch=4, kimg=0.032)
    assert jobs.progress(jobs.status("short")).text() == "step 3 / 8 · 0.012 / 0.032 kimg"
    (short / "config.json").unlink()  # a run whose config is not written yet
    assert jobs.progress(jobs.status("short")).text() == "step 3 · 0.012 kimg"
    assert [jobs.duration_text(s) for s in (0.2, 40, 250, 9000)] == ["1 s", "40 s", "4 min", "2.5 h"]


def test_recent_speed_reads_only_whole_rows_of_the_tail(tmp_path):
    d = fake_run("long", speeds=[10.0] * 2000 + [30.0] * 5)
    assert jobs.recent_img_per_s(d) == 30.0  # 2000 rows: only the tail is read, its cut first line skipped
    with open(d / "metrics_gan.csv", "a") as f:
        f.write("0.1,9999,1.0")  # the trainer is mid-append
    assert jobs.recent_img_per_s(d) == 30.0
    assert jobs.recent_img_per_s(tmp_path) is None


def test_estimate_from_similar_runs_on_this_machine():
    assert jobs.estimate(C.TrainConfig()) is None
    assert jobs.estimate_text(C.TrainConfig()) == jobs.NO_ESTIMATE
    fake_run("other-size", res=32, speeds=(100.0,))
    fake_run("other-host", host="elsewhere", speeds=(100.0,))
    fake_run("big-batch", batch=64, speeds=(100.0,))  # more than twice the batch
    assert jobs.estimate(dict(res=64, batch=16, kimg=5)) is None
    fake_run("near", batch=32, speeds=(40.0,), started_at=time.time() - 100)
    e = jobs.estimate(dict(res=64, batch=16, kimg=5))
    assert (e.run_id, e.img_per_s, e.batch) == ("near", 40.0, 32)
    fake_run("same", batch=16, speeds=(20.0, 20.0), started_at=time.time() - 200)  # older, but same batch
    e = jobs.estimate(C.TrainConfig(res=64, batch=16, kimg=5))
    assert e.run_id == "same" and e.seconds == pytest.approx(313 * 16 / 20.0)
    assert e.text().startswith("about 4 min (20 img/s measured here by run same at 64 px, batch 16")
    # a run asked for on the GPU is not estimated from CPU runs
    assert jobs.estimate(dict(res=64, batch=16, kimg=5, device="cuda")) is None


def test_rename_keeps_the_id_and_works_while_running(capsys):
    d = fake_run("r1", state="running", alive=True)
    s = jobs.rename("r1", "  baseline,\n lr 2e-4 ")
    assert s.name == "baseline, lr 2e-4" and s.title == "baseline, lr 2e-4 (r1)" and s.alive
    assert (d / "name.txt").read_text() == "baseline, lr 2e-4\n" and d.is_dir()
    assert [r.name for r in jobs.list_runs()] == ["baseline, lr 2e-4"]
    assert jobs.rename("r1", "").name == "" and not (d / "name.txt").exists()
    with pytest.raises(ValueError, match="at most 80"):
        jobs.rename("r1", "x" * 81)
    with pytest.raises(FileNotFoundError):
        jobs.rename("nope", "x")
    assert jobs.main(["rename", "r1", "second try"]) == 0
    assert capsys.readouterr().out.strip() == "r1: name 'second try'"
    assert jobs.status("r1").name == "second try"


def test_delete_refused_while_running_and_needs_confirmation_on_the_cli(capsys):
    live = fake_run("live", state="running", alive=True)
    with pytest.raises(RuntimeError, match="live is running: stop it before deleting it"):
        jobs.delete("live")
    assert jobs.main(["delete", "live", "--yes"]) == 1
    assert "stop it before deleting" in capsys.readouterr().err and live.is_dir()

    done = fake_run("done")
    (done / "checkpoints").mkdir()
    (done / "checkpoints" / "step_00000004.pt").write_bytes(b"x")
    assert jobs.main(["delete", "done"]) == 1  # no --yes: nothing happens
    assert "add --yes" in capsys.readouterr().err and done.is_dir()
    # a deletion interrupted after its rename is neither listed nor left behind by the next one
    (runs_root() / ".deleting-old-1234").mkdir()
    (runs_root() / ".deleting-old-1234" / "status.json").write_text(json.dumps({"state": "finished"}))
    assert sorted(r.run_id for r in jobs.list_runs()) == ["done", "live"]
    assert jobs.main(["delete", "done", "--yes"]) == 0
    assert capsys.readouterr().out.strip() == "deleted done"
    assert not done.exists() and sorted(p.name for p in runs_root().iterdir()) == ["live"]
    with pytest.raises(FileNotFoundError):
        jobs.delete("done")


def test_delete_refused_while_an_evaluation_of_the_run_runs():
    d = fake_run("evaluated")
    me = psutil.Process()
    atomic_write_json(d / "eval" / "jobs" / "20260101-000000.json",
                      {"state": "running", "pid": me.pid, "create_time": me.create_time(), "started_at": time.time()})
    with pytest.raises(RuntimeError, match="evaluation running"):
        jobs.delete("evaluated")
    assert d.is_dir()


def test_cli_estimate_and_list_show_progress(capsys):
    assert jobs.main(["estimate", "--res", "64"]) == 0
    assert capsys.readouterr().out.startswith("no measurement yet")
    fake_run("a", speeds=(20.0,))
    jobs.rename("a", "first")
    assert jobs.main(["estimate", "--res", "64", "--batch", "16", "--kimg", "5"]) == 0
    assert capsys.readouterr().out.startswith("about 4 min (20 img/s")
    assert jobs.main(["list"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.split()[:2] == ["a", "finished"] and "step 34 / 313 · 0.54 / 5 kimg" in line
    assert line.endswith("first")
