"""`python -m engine evaluate` end to end on a tiny run, the registry, config errors, background jobs."""
import io
import json
import time

import pytest
import torch

from engine.config import ConfigError, PrepareConfig
from engine.metrics import jobs as J
from engine.metrics import registry
from engine.metrics.evaluate import EvalConfig, evaluate, main
from engine.metrics.report import history_table, list_reports, load_arrays, per_class_table


def tiny_eval_setup(per_class: int = 6):
    """A tiny finished run (tests/fixtures_runs.py), a 32 px histosynth set and an untrained `test_resnet`
    classifier file in it: the `domain` space without training. Returns (run_dir, data_dir)."""
    from engine.data.prepare import prepare
    from engine.metrics.classifier import build_classifier
    from engine.utils import atomic_write_bytes, data_root, runs_root
    from tests.fixtures_runs import CLASS_NAMES, make_tiny_run

    data_dir = prepare(PrepareConfig(source="histosynth", size=32, per_class=per_class, seed=0, workers=1,
                                     out=str(data_root() / "histosynth-32")))
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
                     per_class=True, n=18, kid_subsets=3, lpips_pairs=3, batch=16, device="cpu")
    report, path = evaluate(cfg)
    assert path.parent == run_dir / "eval" and path.is_file()
    on_disk = json.loads(path.read_text())
    assert on_disk["id"] == report["id"] and on_disk["checkpoint"]["step"] == 8
    assert on_disk["n_generated"] == 18 and on_disk["n_real"]["train"] == 18
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
               "--n", "9", "--device", "cpu"])
    out = capsys.readouterr()
    assert rc == 0  # stain still ran; fid is reported unavailable with the command that fixes it
    report = list_reports(run_dir)[-1]
    assert "python -m engine train-classifier" in report["metrics"]["fid"]["error"]
    assert "H" in report["metrics"]["stain"] and "unavailable" in out.out
    assert report["config"]["per_class"] is True and len(report["metrics"]["stain"]["per_class"]) == 9
    assert main(["--run-dir", str(tmp_path / "none"), "--n", "9"]) == 2


def test_job_status_of_a_dead_process_is_failed(tmp_path):
    from engine.utils import runs_root

    run = runs_root() / "r1"
    (run / "eval" / "jobs").mkdir(parents=True)
    with pytest.raises(ConfigError, match="config field 'metrics'"):
        J.start_eval("r1", {"metrics": "nope"})  # validated before any process starts
    assert not list((run / "eval" / "jobs").iterdir())
    st = J.JobStatus(run / "eval" / "jobs" / "20250101-000000.json")
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
