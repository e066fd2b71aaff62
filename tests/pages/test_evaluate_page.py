"""AppTest: the Evaluate page with no runs, with a tiny run's real report, starting a job, a running job."""
from unittest import mock

import pytest
from streamlit.testing.v1 import AppTest

from tests.pages.apptest import open_app



def _app(monkeypatch) -> AppTest:
    return open_app(monkeypatch, "pages/evaluate.py", run_first=True)


@pytest.fixture
def evaluated(monkeypatch, tmp_path):
    """A tiny run with one real report (every metric but IS; no LPIPS weights on this machine)."""
    from engine.metrics.evaluate import EvalConfig, evaluate
    from tests.engine.test_metrics_evaluate import tiny_eval_setup

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    run_dir, data_dir = tiny_eval_setup()
    report, _ = evaluate(EvalConfig(run_dir=str(run_dir), data=str(data_dir), per_class=True, n=18, kid_subsets=3,
                                    metrics="fid,kid,pr,lpips,downstream,memorisation,stain", lpips_pairs=3,
                                    downstream_arch="test_resnet", downstream_epochs=1, batch=16, device="cpu"))
    return run_dir, report


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
    for s in ("Per class", "Downstream classifier", "Memorisation audit", "Colour check"):
        assert s in subheaders
    # KID, FID, diversity, recall bars; 3 confusion heatmaps; colour histograms; history
    assert len(at.get("plotly_chart")) == 9
    assert len([e for e in at.main if type(e).__name__ == "Image"]) == 2 * 8  # memorisation pairs
    assert any("alexnet-owt-7be5be79.pth" in w.value for w in at.warning)  # LPIPS missing, said how to fix
    assert [m.label for m in at.metric][:2] == ["FID", "KID"]
    assert any(f"step {report['checkpoint']['step']}" in c.value for c in at.caption)


def test_start_button_launches_a_background_job(monkeypatch, evaluated):
    run_dir, _ = evaluated
    at = _app(monkeypatch)
    with mock.patch("engine.metrics.jobs.start_eval", return_value="20990101-000000") as start:
        at.run()
        next(b for b in at.button if b.label == "Start evaluation").click()
        at.run()
    assert not at.exception, at.exception
    start.assert_called_once()
    rid, opts = start.call_args.args
    assert rid == run_dir.name
    assert opts["metrics"] == "fid,kid,pr" and opts["features"] == "domain" and opts["n"] == 2000
    assert opts["per_class"] is True and "step" not in opts  # "latest" checkpoint by default


def test_running_job_shows_progress(monkeypatch, evaluated):
    from engine.metrics.jobs import JobStatus

    run_dir, _ = evaluated
    JobStatus(run_dir / "eval" / "jobs" / "20990101-000000.json").set("running", force=True, progress=0.4,
                                                                      message="kid (2/3)")
    at = _app(monkeypatch)
    at.run()
    assert not at.exception, at.exception
    bars = at.get("progress")
    assert len(bars) == 1 and "kid (2/3)" in bars[0].proto.text
