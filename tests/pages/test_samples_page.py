"""AppTest: the Samples page with an empty runs root and with a tiny finished run."""
import csv
import io
import zipfile

from streamlit.testing.v1 import AppTest

from tests.pages.apptest import open_app

from engine.utils import runs_root
from tests.fixtures_runs import make_tiny_run



def _page(monkeypatch) -> AppTest:
    return open_app(monkeypatch, "pages/samples.py")


def test_samples_page_empty_root(monkeypatch):
    at = _page(monkeypatch).run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Samples"
    assert any("No run with a checkpoint" in i.value and "Train" in i.value for i in at.info)
    assert not at.get("image") and not at.get("download_button")


def test_samples_page_tiny_run(monkeypatch):
    make_tiny_run(runs_root())
    at = _page(monkeypatch).run()
    assert not at.exception, at.exception
    assert len(at.get("image")) == 9  # one row per class, all classes by default
    assert len(at.get("download_button")) == 2
    assert at.selectbox(key="samples_ckpt_tiny").value.startswith("latest: step 8 (export)")
    # fewer classes, explicit seeds, another checkpoint
    at.multiselect[0].set_value(["ADI", "TUM"])
    at.text_input[0].set_value("3,5")
    at.number_input[0].set_value(3)
    at.selectbox(key="samples_ckpt_tiny").set_value("step 4 (checkpoint)")
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert len(at.get("image")) == 2
    result = at.session_state["samples_result"]
    zf = zipfile.ZipFile(io.BytesIO(result["zip"]))
    rows = list(csv.DictReader(io.StringIO(zf.read("manifest.csv").decode())))
    assert [(r["class"], r["seed"], r["checkpoint_step"]) for r in rows] == \
        [(c, s, "4") for c in ("ADI", "TUM") for s in ("3", "5", "6")]


def test_samples_page_bad_seeds(monkeypatch):
    make_tiny_run(runs_root())
    at = _page(monkeypatch).run()
    at.text_input[0].set_value("5-2")
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert any("ends before it starts" in e.value for e in at.error)
