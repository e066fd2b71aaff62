"""AppTest: the Evaluate page with no runs, with a tiny run's real report, starting a job, a running job."""
from pathlib import Path
from unittest import mock

import pytest
from streamlit.testing.v1 import AppTest

from engine.utils import read_json
from tests.pages.apptest import open_app



def _app(monkeypatch) -> AppTest:
    return open_app(monkeypatch, "pages/evaluate.py", run_first=True)


@pytest.fixture
def evaluated(monkeypatch, tmp_path):
    """A tiny run with one real report (every metric but IS; no LPIPS weights on this machine)."""
    from engine.config import EvalConfig
    from engine.metrics.evaluate import evaluate
    from tests.engine.test_metrics_evaluate import tiny_eval_setup

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    run_dir, data_dir = tiny_eval_setup()
    _train_on(run_dir, data_dir)
    report, _ = evaluate(EvalConfig(run_dir=str(run_dir), data=str(data_dir), by_class=True, n=18, kid_subsets=3,
                                    metrics="fid,kid,pr,lpips,downstream,memorisation,stain,cas", lpips_pairs=3,
                                    downstream_arch="test_resnet", downstream_epochs=1, batch=16, device="cpu"))
    return run_dir, report


def _train_on(run_dir, data_dir) -> None:
    """Record `data_dir` as the data set the run trained on (what the page checks and compares against)."""
    from engine.utils import atomic_write_json, read_json

    atomic_write_json(run_dir / "config.json", {**read_json(run_dir / "config.json"), "data": str(data_dir)})


def test_evaluate_page_without_runs(monkeypatch):
    at = _app(monkeypatch)
    at.run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Evaluate"
    assert any("No run with a checkpoint" in i.value for i in at.info)


def test_evaluate_page_renders_a_report(monkeypatch, evaluated):
    run_dir, report = evaluated
    at = _app(monkeypatch)
    at.run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert list(table.index) == report["class_names"] and "kid" in table and "recall_synthetic" in table
    subheaders = [s.value for s in at.subheader]
    for s in ("Per class", "Downstream classifier", "Memorisation audit", "Colour check",
              "Classification accuracy score (CAS)"):
        assert s in subheaders
    # KID, FID, diversity, recall, CAS bars; 3 confusion heatmaps; colour histograms; history
    assert len(at.get("plotly_chart")) == 10
    assert len([e for e in at.main if type(e).__name__ == "Image"]) == 2 * 8  # memorisation pairs
    assert any("alexnet-owt-7be5be79.pth" in w.value for w in at.warning)  # LPIPS missing, said how to fix
    assert [m.label for m in at.metric][:2] == ["FID", "KID"]
    assert any(f"step {report['checkpoint']['step']}" in c.value for c in at.caption)


def test_start_button_launches_a_background_job(monkeypatch, evaluated):
    run_dir, _ = evaluated
    at = _app(monkeypatch)
    with mock.patch("engine.jobs.eval.start_eval", return_value="20990101-000000") as start:
        at.run()
        next(b for b in at.button if b.label == "Start evaluation").click()
        at.run()
    assert not at.exception, at.exception
    start.assert_called_once()
    rid, opts = start.call_args.args
    assert rid == run_dir.name
    assert opts["metrics"] == "fid,kid,pr" and opts["features"] == "domain" and opts["n"] == 2000
    assert opts["by_class"] is True and "step" not in opts  # "latest" checkpoint by default
    assert opts["real_split"] == "eval"  # the held-out split by default
    # a phrase a researcher reads, with the one name of the field (config key, CLI flag, report key) beside it
    assert "generated patches · n" in [w.label for w in at.number_input]
    assert "per-class metrics too · by_class" in [w.label for w in at.checkbox]


def test_running_job_shows_progress(monkeypatch, evaluated):
    from engine.jobs.core import StatusWriter

    run_dir, _ = evaluated
    StatusWriter(run_dir / "eval" / "jobs" / "20990101-000000.json").set("running", force=True, progress=0.4,
                                                                      message="kid (2/3)")
    at = _app(monkeypatch)
    at.run()
    assert not at.exception, at.exception
    bars = at.get("progress")
    assert len(bars) == 1 and "kid (2/3)" in bars[0].proto.text


def _copy_report(run_dir, report, rid, step, **changes):
    from engine.utils import atomic_write_json

    new = {**report, "id": rid, "checkpoint": {**report["checkpoint"], "step": step}, **changes}
    atomic_write_json(run_dir / "eval" / f"{rid}.json", new)
    return new


def _chart(at, title):
    import json

    for c in at.get("plotly_chart"):
        spec = json.loads(c.proto.spec)
        if (spec["layout"].get("title") or {}).get("text") == title:
            return spec
    raise AssertionError(f"no chart titled {title!r}")


def test_form_blocked_without_classifier_offers_training(monkeypatch, evaluated):
    run_dir, _ = evaluated
    data_dir = Path(read_json(run_dir / "config.json")["data"])
    (data_dir / "classifier.pt").unlink()
    at = _app(monkeypatch)
    at.run()
    assert not at.exception, at.exception
    assert any("Cannot start an evaluation yet" in w.value and "classifier" in w.value for w in at.warning)
    assert next(b for b in at.button if b.label == "Start evaluation").disabled
    with mock.patch("engine.jobs.classifier.start_classifier", return_value="j1") as start:
        at.button(key="eval_train_classifier").click()
        at.run()
    assert not at.exception, at.exception
    start.assert_called_once_with(str(data_dir))
    # another feature space does not need the classifier: the form opens
    at.selectbox(key="eval_features").set_value("inception")
    at.run()
    assert not next(b for b in at.button if b.label == "Start evaluation").disabled


def test_form_shows_classifier_training_progress(monkeypatch, evaluated):
    import os
    import time

    from engine.jobs import prepare as data_jobs
    from engine.utils import atomic_write_json

    run_dir, _ = evaluated
    data_dir = Path(read_json(run_dir / "config.json")["data"])
    (data_dir / "classifier.pt").unlink()
    jd = data_jobs.jobs_root() / "20990101-000000-x-classifier"
    jd.mkdir(parents=True)
    atomic_write_json(jd / "status.json", {"state": "queued", "kind": "classifier", "out": str(data_dir.resolve()),
                                           "pid": os.getpid(), "started_at": time.time() - 10})
    atomic_write_json(jd / "progress.json", {"state": "running", "done": 10, "total": 20, "message": "epoch 5/10",
                                             "train_started_at": time.time() - 10})
    at = _app(monkeypatch)
    at.run()
    assert not at.exception, at.exception
    text = [b.proto.text for b in at.get("progress")]
    assert any(t.startswith("Domain classifier: training · step 10 / 20 · 50 % · ETA") for t in text), text
    assert next(b for b in at.button if b.label == "Start evaluation").disabled
    assert not [b for b in at.button if b.key == "eval_train_classifier"]


def test_form_blocked_without_data_set(monkeypatch):
    from engine.utils import runs_root
    from tests.fixtures_runs import make_tiny_run

    make_tiny_run(runs_root())  # trained on the 16 px demo set, which is not prepared here
    at = _app(monkeypatch)
    at.run()
    assert not at.exception, at.exception
    assert any("is not prepared" in w.value for w in at.warning)
    assert next(b for b in at.button if b.label == "Start evaluation").disabled
    assert any("Data page" in link.proto.label for link in at.get("page_link"))


def test_no_checkpoint_links_to_train(monkeypatch):
    from engine.utils import runs_root

    (runs_root() / "r0").mkdir(parents=True)
    at = _app(monkeypatch)
    at.run()
    assert not at.exception, at.exception
    assert any("No run with a checkpoint" in i.value for i in at.info)
    assert any(link.proto.label == "Train a run" for link in at.get("page_link"))


def test_failed_report_is_shown_failed_and_not_plotted(monkeypatch, evaluated):
    run_dir, report = evaluated
    err = {"error": "classifier file not found: x. Train it with `python -m engine train-classifier ...`"}
    _copy_report(run_dir, report, "20990101-000000", 99, metrics={"fid": err, "kid": err, "pr": err},
                 state="failed", n_generated=0)
    at = _app(monkeypatch)
    at.run()
    assert not at.exception, at.exception
    assert at.selectbox(key=f"eval_report_{run_dir.name}").value == "20990101-000000"  # the newest
    [e] = [e for e in at.error if "every metric failed" in e.value]
    assert e.value.count("train-classifier") == 1  # the error once, naming fid, kid, pr
    assert not at.metric  # no headline of "—"s
    hist = at.dataframe[-1].value
    assert list(hist["step"]) == [report["checkpoint"]["step"]]  # the failed report is not a history point
    spec = _chart(at, "Over training")
    assert all(99 not in [round(x) for x in t["x"]] for t in spec["data"])


def test_new_report_is_selected_when_it_appears(monkeypatch, evaluated):
    run_dir, report = evaluated
    _copy_report(run_dir, report, "20000101-000000", 4)  # an older report
    at = _app(monkeypatch)
    at.run()
    key = f"eval_report_{run_dir.name}"
    assert at.selectbox(key=key).value == report["id"]
    at.selectbox(key=key).set_value("20000101-000000")  # the user looks at the old one
    at.run()
    assert at.selectbox(key=key).value == "20000101-000000"
    _copy_report(run_dir, report, "20990101-000000", 8)  # a job finished: its report is the one shown
    at.run()
    assert not at.exception, at.exception
    assert at.selectbox(key=key).value == "20990101-000000"
    at.selectbox(key=key).set_value("20000101-000000")  # and the user can still pick another
    at.run()
    assert at.selectbox(key=key).value == "20000101-000000"


def test_running_first_job_progress_percent_eta_and_no_empty_text(monkeypatch):
    import time

    from engine.jobs.core import StatusWriter
    from engine.utils import runs_root
    from tests.fixtures_runs import make_tiny_run

    run_dir = make_tiny_run(runs_root())
    st = StatusWriter(run_dir / "eval" / "jobs" / "20990101-000000.json")
    st.set("running", force=True, progress=0.25, message="fid (1/3)", started_at=time.time() - 60)
    at = _app(monkeypatch)
    at.run()
    assert not at.exception, at.exception
    [bar] = [b.proto.text for b in at.get("progress") if b.proto.text.startswith("Evaluation")]
    assert bar == "Evaluation 20990101-000000: 25 % · ETA 3 min · fid (1/3)"
    assert not [i for i in at.info if "No evaluation of this run yet" in i.value]


def test_history_chart_is_readable(monkeypatch, evaluated):
    run_dir, report = evaluated
    _copy_report(run_dir, report, "20000101-000000", 4)
    _copy_report(run_dir, report, "20000101-000001", 4)  # two reports of one step
    at = _app(monkeypatch)
    at.run()
    assert not at.exception, at.exception
    spec = _chart(at, "Over training")
    lay = spec["layout"]
    axes = sorted(k for k in lay if k.startswith("yaxis"))
    titles = [a["text"] for a in lay["annotations"]]
    assert titles[:3] == ["FID", "KID (± std over subsets)", "precision / recall"] and len(axes) == len(titles)
    assert {t["yaxis"] for t in spec["data"]} == {("y" + k[5:]) for k in axes}  # a y axis per panel
    assert lay["xaxis"]["tickvals"] == [4, 8] and all(isinstance(v, int) for v in lay["xaxis"]["tickvals"])
    assert lay["legend"]["x"] > 1  # outside the plot area
    symbols = [t["marker"]["symbol"] for t in spec["data"]]
    assert len(set(symbols)) == min(len(symbols), 6)
    pr = [t for t in spec["data"] if t["name"] in ("precision", "recall")]
    assert len(pr) == 2 and pr[0]["x"] != pr[1]["x"]  # side by side, not on top of each other
    fid = next(t for t in spec["data"] if t["name"] == "FID")
    assert len(set(fid["x"])) == 3 and [round(x) for x in fid["x"]] == [4, 4, 8] and fid["x"][2] == 8  # apart



def test_start_form_can_pick_the_best_model(monkeypatch, evaluated):
    from engine import sampling
    from engine.train.checkpoint import export_best

    run_dir, _ = evaluated
    G, meta = sampling.load_generator(run_dir, step=4)
    export_best(run_dir, G, dict(meta, step=4), {"step": 4, "metric": "fid_domain", "score": 7.0, "n": 18})
    at = _app(monkeypatch)
    with mock.patch("engine.jobs.eval.start_eval", return_value="20990101-000000") as start:
        at.run()
        ck = next(s for s in at.selectbox if s.label == "checkpoint step · step")
        assert "best (step 4, FID 7)" in ck.options
        ck.set_value("best (step 4, FID 7)")
        next(b for b in at.button if b.label == "Start evaluation").click()
        at.run()
    assert not at.exception, at.exception
    assert start.call_args.args[1]["step"] == "best"
