"""AppTest: the Compare page with three tiny hand-made runs of different families (stylegan2, dcgan,
ddpm): the table shows the three, an incomparable report is not mixed into a column (the page says
so), the missing run is evaluated with the chosen settings, runs on two data sets are refused."""
import json
from unittest import mock

import pytest
from streamlit.testing.v1 import AppTest

from engine.utils import atomic_write_json, runs_root
from tests.engine.test_compare import CLASSES, make_data, make_run, three_runs
from tests.pages.apptest import open_app


def _app(monkeypatch) -> AppTest:
    return open_app(monkeypatch, "pages/compare.py", run_first=True)


@pytest.fixture
def three(tmp_path):
    return three_runs(runs_root(), make_data(tmp_path))


def _titles(at) -> list[str]:
    return [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]


def test_compare_page_without_runs(monkeypatch):
    at = _app(monkeypatch)
    at.run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Compare"
    assert any("No run under" in i.value for i in at.info)


def test_compare_page_three_families(monkeypatch, three):
    at = _app(monkeypatch)
    at.run()
    assert not at.exception, at.exception
    assert sorted(at.multiselect(key="compare_runs").value) == ["dc", "dd", "sg2"]  # preselected: one data set
    table = at.dataframe[0].value.set_index("run")
    assert sorted(table.index) == ["dc", "dd", "sg2"]
    assert set(table["family"]) == {"stylegan2", "dcgan", "ddpm"}
    assert table.loc["sg2", "fid"] == 10.0 and table.loc["dc", "fid"] == 20.0
    # ddpm's only report used `inception` features: never in the `domain` column, and the page says why
    assert table["fid"].isna().loc["dd"]
    assert any(i.value.startswith("Reports made with other settings") and "- dd:" in i.value
               and "domain vs inception" in i.value for i in at.info)
    assert any("No report with these settings for dd" in w.value for w in at.warning)
    radio = at.radio[0]
    assert radio.label == "comparable reports" and len(radio.options) == 3
    titles = _titles(at)
    assert "KID (± std over subsets)" in titles and "training speed (img/s, median)" in titles
    kid = next(json.loads(c.proto.spec) for c in at.get("plotly_chart")
               if json.loads(c.proto.spec)["layout"]["title"]["text"] == "KID (± std over subsets)")
    assert kid["data"][0]["x"] == ["sg2", "dc"] and kid["data"][0]["error_y"]["array"] == [0.01, 0.01]
    assert "fid per class" in titles and "img_per_s over training" in titles  # the signal all three CSVs hold
    imgs = [e for e in at.main if type(e).__name__ == "Image"]
    assert len(imgs) == 3  # one strip of the chosen class per run


def test_other_group_fills_the_other_column(monkeypatch, three):
    at = _app(monkeypatch)
    at.run()
    at.radio[0].set_value(1).run()  # the `inception` group: dd alone
    assert not at.exception, at.exception
    table = at.dataframe[0].value.set_index("run")
    assert table.loc["dd", "fid"] == 3.0 and table["fid"].isna().loc["sg2"] and table["fid"].isna().loc["dc"]
    assert any("No report with these settings for sg2, dc" in w.value for w in at.warning)


def test_missing_runs_button_starts_eval_jobs(monkeypatch, three):
    at = _app(monkeypatch)
    with mock.patch("engine.jobs.eval.start_eval", return_value="20990101-000000") as start:
        at.run()
        at.button(key="compare_eval_missing").click().run()
    assert not at.exception, at.exception
    start.assert_called_once()
    rid, opts = start.call_args.args
    assert rid == "dd"
    assert opts["features"] == "domain" and opts["n"] == 18 and opts["real_split"] == "eval"
    assert opts["by_class"] is True and opts["metrics"] == "fid,kid,pr,cas,lpips,downstream"
    assert any("Evaluation started for dd" in s.value for s in at.success)


def test_runs_on_two_data_sets_are_refused(monkeypatch, tmp_path):
    data = make_data(tmp_path)
    other = tmp_path / "other"
    atomic_write_json(other / "dataset.json", {"class_names": CLASSES})
    make_run(runs_root(), "a", "stylegan2", data)
    make_run(runs_root(), "b", "dcgan", str(other))
    at = _app(monkeypatch)
    at.run()
    at.multiselect(key="compare_runs").set_value(["a", "b"]).run()
    assert not at.exception, at.exception
    assert any("different data sets" in e.value for e in at.error)
    assert not at.dataframe


def test_running_evaluation_is_not_started_twice(monkeypatch, three):
    from engine import runs
    from engine.jobs.core import StatusWriter

    StatusWriter(runs.eval_jobs_dir(three[2]) / "20990101-000000.json").set("running", force=True,
                                                                         message="kid (2/3)")
    at = _app(monkeypatch)
    at.run()
    assert not at.exception, at.exception
    assert at.button(key="compare_eval_missing").disabled  # dd, the only missing run, is being evaluated
    assert any("dd: evaluation 20990101-000000 is running (kid (2/3))" in c.value for c in at.caption)
