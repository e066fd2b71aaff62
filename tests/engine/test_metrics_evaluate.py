"""`python -m engine evaluate` end to end on a tiny run, the registry, config errors, background jobs."""
import io
import json
import time

import pytest
import torch

from engine.config import ConfigError, PrepareConfig
from engine.jobs import eval as J
from engine.jobs.core import StatusWriter
from engine.metrics import registry
from engine.config import EvalConfig
from engine.metrics.evaluate import evaluate, main
from engine.metrics.report import history_table, list_reports, load_arrays, per_class_table


def tiny_eval_setup(per_class: int = 6):
    """A tiny finished run (tests/fixtures_runs.py), a 32 px histosynth set and an untrained `test_resnet`
    classifier file in it: the `domain` space without training. Returns (run_dir, data_dir)."""
    from engine.data.prepare import prepare
    from engine.metrics.classifier import build_classifier
    from engine.utils import atomic_write_bytes, data_root, runs_root
    from tests.fixtures_runs import CLASS_NAMES, make_tiny_run

    # eval_frac 0.3: 2 held-out `eval` patches per class at 6 per class (the metrics' real side by default)
    data_dir = prepare(PrepareConfig(source="histosynth", size=32, per_class=per_class, seed=0, workers=1,
                                     eval_frac=0.3, out=str(data_root() / "histosynth-32")))
    torch.manual_seed(0)
    net = build_classifier("test_resnet", len(CLASS_NAMES))
    meta = {"arch": "test_resnet", "num_classes": len(CLASS_NAMES), "class_names": CLASS_NAMES, "size": 32,
            "mean": [0.0, 0.0, 0.0], "std": [0.5, 0.5, 0.5]}
    buf = io.BytesIO()
    torch.save({"state_dict": net.state_dict(), "meta": meta}, buf)
    atomic_write_bytes(data_dir / "classifier.pt", buf.getvalue())
    return make_tiny_run(runs_root()), data_dir


def test_registry_knows_every_metric_and_rejects_others():
    assert {"fid", "kid", "pr", "is", "lpips", "downstream", "memorisation", "stain"} <= set(registry.list_metrics())
    with pytest.raises(ConfigError, match="config field 'metrics'.*choose from"):
        EvalConfig(run_dir="x", metrics="fid,fidd").check()
    with pytest.raises(ConfigError, match="config field 'features'"):
        EvalConfig(run_dir="x", features="clip").check()


def test_tiny_end_to_end_report(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no LPIPS weights here: reported, not fatal
    run_dir, data_dir = tiny_eval_setup()
    cfg = EvalConfig(run_dir=str(run_dir), data=str(data_dir), metrics="fid,kid,pr,is,lpips,memorisation,stain",
                     by_class=True, n=18, kid_subsets=3, lpips_pairs=3, batch=16, device="cpu")
    report, path = evaluate(cfg)
    assert path.parent == run_dir / "eval" and path.is_file()
    on_disk = json.loads(path.read_text())
    assert on_disk["id"] == report["id"] and on_disk["checkpoint"]["step"] == 8
    assert on_disk["n_generated"] == 18 and on_disk["n_real"]["eval"] == 18  # the held-out split by default
    assert on_disk["real_split"] == "eval" and not any("subset of train" in n for n in on_disk["notes"])
    assert on_disk["features"]["space"] == "domain" and len(on_disk["features"]["weights_sha256"]) == 16
    assert on_disk["resize"]["real"] == "32 -> 16 px, bilinear with antialias" and on_disk["preferred"] == "kid"
    assert any("prefer KID" in n for n in on_disk["notes"])
    m = on_disk["metrics"]
    assert not [k for k, v in m.items() if "error" in v], m
    assert m["fid"]["value"] >= 0 and set(m["fid"]["per_class"]) == set(report["class_names"])
    assert m["kid"]["subset_size"] == 9 and m["kid"]["std"] > 0 and len(m["kid"]["per_class"]) == 9
    assert 0 <= m["pr"]["precision"] <= 1
    assert "not LPIPS" in m["lpips"]["feature_diversity"]["label"]
    assert "alexnet-owt-7be5be79.pth" in m["lpips"]["lpips"]["error"]
    assert len(m["memorisation"]["pairs"]) == 8 and m["memorisation"]["n_train_searched"] > 0
    arrays = load_arrays(run_dir, on_disk)
    assert arrays["memorisation_generated"].shape == (8, 16, 16, 3) == arrays["memorisation_real"].shape
    table = per_class_table(on_disk)
    assert list(table.index) == report["class_names"] and {"fid", "kid", "kid_std", "precision"} <= set(table)
    assert len(history_table(list_reports(run_dir))) == 1
    # same run and data again: the real features come from the cache and give the same numbers
    cache = list((data_dir / "eval_cache").glob("*.npz"))
    assert cache
    again, _ = evaluate(EvalConfig(run_dir=str(run_dir), data=str(data_dir), metrics="fid", n=18, device="cpu"))
    assert again["metrics"]["fid"]["value"] == pytest.approx(m["fid"]["value"])
    assert sorted((data_dir / "eval_cache").glob("*.npz")) == sorted(cache)


def test_cli_missing_classifier_names_the_command(tmp_path, capsys):
    run_dir, data_dir = tiny_eval_setup(per_class=4)
    (data_dir / "classifier.pt").unlink()
    rc = main(["--run-dir", str(run_dir), "--data", str(data_dir), "--metrics", "fid,stain", "--per-class",
               "--n", "9", "--device", "cpu", "--no-auto-classifier"])
    out = capsys.readouterr()
    assert rc == 0  # stain still ran; fid is reported unavailable with the command that fixes it
    assert not (data_dir / "classifier.pt").exists()  # --no-auto-classifier: not trained
    report = list_reports(run_dir)[-1]
    assert report["state"] == "finished" and len(history_table(list_reports(run_dir))) == 1
    assert "python -m engine train-classifier" in report["metrics"]["fid"]["error"]
    assert "H" in report["metrics"]["stain"] and "unavailable" in out.out
    assert report["config"]["by_class"] is True and len(report["metrics"]["stain"]["per_class"]) == 9
    assert main(["--run-dir", str(tmp_path / "none"), "--n", "9"]) == 2


def test_job_status_of_a_dead_process_is_failed(tmp_path):
    from engine.utils import runs_root

    run = runs_root() / "r1"
    (run / "eval" / "jobs").mkdir(parents=True)
    with pytest.raises(ConfigError, match="config field 'metrics'"):
        J.start_eval("r1", {"metrics": "nope"})  # validated before any process starts
    assert not list((run / "eval" / "jobs").iterdir())
    st = StatusWriter(run / "eval" / "jobs" / "20250101-000000.json")
    st.set("running", force=True, progress=0.5, message="fid")
    assert J.eval_status("r1", "20250101-000000")["alive"] is True  # the writer is this (live) process
    assert J.active_eval("r1")["job"] == "20250101-000000"
    data = json.loads(st.path.read_text())
    data.update(pid=2**22 + 7, create_time=1.0)  # a process that does not exist
    st.path.write_text(json.dumps(data))
    s = J.eval_status("r1", "20250101-000000")
    assert s["state"] == "failed" and not s["alive"] and J.active_eval("r1") is None


@pytest.mark.slow
def test_background_job_writes_a_report():
    run_dir, data_dir = tiny_eval_setup(per_class=4)
    job = J.start_eval(run_dir.name, {"metrics": "fid,kid", "n": 9, "data": str(data_dir), "kid_subsets": 2,
                                      "device": "cpu", "per_class": True})
    deadline = time.time() + 300
    while time.time() < deadline and J.eval_status(run_dir.name, job)["state"] in J.ACTIVE:
        time.sleep(0.5)
    s = J.eval_status(run_dir.name, job)
    assert s["state"] == "finished", (s, (run_dir / "eval" / "jobs" / f"{job}.log").read_text())
    assert s["progress"] == 1.0 and (run_dir / "eval" / s["report"]).is_file()
    assert list_reports(run_dir)[-1]["id"] == job


@pytest.mark.slow
def test_background_job_can_be_stopped():
    run_dir, data_dir = tiny_eval_setup(per_class=4)
    job = J.start_eval(run_dir.name, {"metrics": "fid", "n": 2_000_000, "data": str(data_dir), "device": "cpu"})
    deadline = time.time() + 120
    while time.time() < deadline and not (J.eval_status(run_dir.name, job).get("message") or "").startswith("gen"):
        time.sleep(0.3)  # wait until it is busy generating
    s = J.stop_eval(run_dir.name, job, grace_s=5)
    assert s["state"] == "stopped" and not s["alive"]
    assert J.active_eval(run_dir.name) is None and not list_reports(run_dir)


def test_cli_missing_classifier_trains_it_first(capsys):
    """Default: a missing `domain` classifier is trained before the metrics (one line says so, tqdm shows
    progress), so the report has numbers rather than every feature metric unavailable."""
    run_dir, data_dir = tiny_eval_setup(per_class=4)
    (data_dir / "classifier.pt").unlink()
    rc = main(["--run-dir", str(run_dir), "--data", str(data_dir), "--metrics", "fid,kid", "--n", "9",
               "--kid-subsets", "2", "--device", "cpu"])
    out = capsys.readouterr()
    assert rc == 0, out
    assert [line for line in out.out.splitlines() if "training it first" in line][0].startswith("No domain classifier")
    assert "train-classifier" in out.err and "step" in out.err  # the tqdm bar
    assert (data_dir / "classifier.pt").is_file() and (data_dir / "classifier.json").is_file()
    report = list_reports(run_dir)[-1]
    assert report["state"] == "finished" and report["metrics"]["fid"]["value"] >= 0
    assert report["features"]["space"] == "domain" and "error" not in report["metrics"]["kid"]


def test_every_metric_failed_report_and_job_are_failed(capsys):
    """A report with no result in it is marked failed, left out of the history, and its job ends failed
    with the error once (an empty report called `finished` would be plotted as a result)."""
    from engine.metrics.report import failed_reason, report_state

    run_dir, data_dir = tiny_eval_setup(per_class=4)
    (data_dir / "classifier.pt").unlink()
    job = "20990101-000000"
    rc = main(["--run-dir", str(run_dir), "--data", str(data_dir), "--metrics", "fid,kid,pr", "--n", "9",
               "--device", "cpu", "--no-auto-classifier", "--job", job])
    assert rc == 1
    [report] = list_reports(run_dir)
    assert report["state"] == "failed" == report_state(report) and report["id"] == job
    assert history_table(list_reports(run_dir)).empty
    assert failed_reason(report).count("python -m engine train-classifier") == 1  # one error, three metrics
    st = J.eval_status(run_dir.name, job)
    assert st["state"] == "failed" and st["report"] == f"{job}.json"
    assert "every metric failed (fid, kid, pr)" in st["message"] and "train-classifier" in st["message"]
    # a report from before reports had a state, with every metric failed, is failed too
    old = {k: v for k, v in report.items() if k != "state"}
    assert report_state(old) == "failed" and history_table([old]).empty


def test_evaluate_waits_for_the_classifier_job_instead_of_training_twice(monkeypatch):
    """The app may be training the data set's classifier in the background: evaluate waits for that job."""
    import os
    import threading

    from engine.jobs import prepare as data_jobs
    from engine.metrics import classifier as C
    from engine.utils import atomic_write_json

    run_dir, data_dir = tiny_eval_setup(per_class=4)
    weights = (data_dir / "classifier.pt").read_bytes()
    (data_dir / "classifier.pt").unlink()
    jd = data_jobs.jobs_root() / "20990101-000000-hs-classifier"
    jd.mkdir(parents=True)
    atomic_write_json(jd / "status.json", {"state": "queued", "kind": "classifier", "out": str(data_dir.resolve()),
                                           "pid": os.getpid(), "started_at": time.time()})
    atomic_write_json(jd / "progress.json", {"state": "running", "done": 1, "total": 4, "message": "epoch 1"})

    def job_ends():
        time.sleep(1.5)
        (data_dir / "classifier.pt").write_bytes(weights)
        atomic_write_json(jd / "progress.json", {"state": "finished", "done": 4, "total": 4, "message": "done"})

    monkeypatch.setattr(C, "train_with_bar", lambda *a, **k: pytest.fail("trained a second time"))
    threading.Thread(target=job_ends, daemon=True).start()
    seen = []
    report, _ = evaluate(EvalConfig(run_dir=str(run_dir), data=str(data_dir), metrics="fid", n=9, device="cpu"),
                         lambda f, m: seen.append((f, m)))
    assert any("waiting for the domain classifier" in m for _, m in seen)
    assert report["state"] == "finished" and "value" in report["metrics"]["fid"]
    fr = [f for f, _ in seen]
    assert fr == sorted(fr) and fr[-1] == 1.0  # the bar only moves forward
