"""AppTest: the Data page renders on an empty and on a prepared data directory."""

import pytest
from streamlit.testing.v1 import AppTest

from tests.pages.apptest import open_app

from engine.config import PrepareConfig, from_dict



def _app(monkeypatch) -> AppTest:
    return open_app(monkeypatch, timeout=120)


def test_data_page_empty_root(monkeypatch, tmp_path):
    at = _app(monkeypatch)
    at.run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Data"
    assert any("No prepared data set" in i.value for i in at.info)
    assert any("Runs root" in m.value for m in at.sidebar.markdown)


@pytest.fixture
def prepared(tmp_path):
    from engine.data.prepare import prepare
    from engine.utils import data_root

    cfg = from_dict(PrepareConfig, dict(source="histosynth", size=32, per_class=12, seed=0,
                                        out=str(data_root() / "histosynth-32")))
    return prepare(cfg)


def test_data_page_prepared(monkeypatch, prepared):
    at = _app(monkeypatch)
    at.run()
    assert not at.exception, at.exception
    assert len(at.dataframe) >= 2  # counts table + stain statistics
    counts = at.dataframe[0].value
    assert list(counts.index[:9]) == ["ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM"]
    assert int(counts.loc["total"].drop("eval", errors="ignore").sum()) == 9 * 12
    assert len(at.get("image")) == 1  # the per-class preview grid
    assert any("synthetic" in i.value for i in at.info)


def test_data_page_prepares_from_form(monkeypatch):
    at = _app(monkeypatch)
    at.run()
    at.number_input[0].set_value(32)
    at.number_input[1].set_value(4)  # per_class
    at.button[0].click()  # the form's Prepare button
    at.run()
    assert not at.exception, at.exception
    assert len(at.dataframe) >= 1
    from engine.utils import data_root
    assert (data_root() / "histosynth-32" / "dataset.json").is_file()
