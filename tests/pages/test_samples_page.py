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
    # no data set for this run: no real tiles, and the page says why
    assert any("No real tiles" in c.value for c in at.caption)
    ck = at.selectbox(key="samples_ckpt_tiny")
    # each step once (step 8 has a checkpoint and an export: the same G_ema), and "export" explained
    assert ck.value == "latest · step 8 · export"
    assert ck.options == ["latest · step 8 · export", "step 4 · checkpoint"]
    assert "exports/generator.safetensors" in ck.help and "full training snapshot" in ck.help
    # fewer classes, explicit seeds, another checkpoint
    at.multiselect[0].set_value(["ADI", "TUM"])
    at.text_input[0].set_value("3,5")
    ck.set_value("step 4 · checkpoint")
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert len(at.get("image")) == 2
    result = at.session_state["samples_result"]
    zf = zipfile.ZipFile(io.BytesIO(result["zip"]))
    rows = list(csv.DictReader(io.StringIO(zf.read("manifest.csv").decode())))
    assert [(r["class"], r["seed"], r["checkpoint_step"]) for r in rows] == \
        [(c, s, "4") for c in ("ADI", "TUM") for s in ("3", "5")]


def test_samples_page_seeds_decide_the_columns(monkeypatch):
    """`0-5` gives 6 columns, not padded to the per_class default of 8 (seeds the user did not ask for)."""
    make_tiny_run(runs_root())
    at = _page(monkeypatch).run()
    at.text_input[0].set_value("0-5")
    at.button[0].click().run()
    assert not at.exception, at.exception
    result = at.session_state["samples_result"]
    assert result["images"].shape[0] == 9 * 6
    assert [r["seed"] for r in csv.DictReader(io.StringIO(zipfile.ZipFile(io.BytesIO(result["zip"]))
                                                          .read("manifest.csv").decode()))][:7] == \
        ["0", "1", "2", "3", "4", "5", "0"]
    at.text_input[0].set_value("0-64")
    at.button[0].click().run()
    assert any("more than 64 seeds" in e.value for e in at.error)


def test_samples_page_real_tiles_beside_generated(monkeypatch, tmp_path):
    """A gallery of real tiles per class from the eval split of the run's data set."""
    from engine.config import PrepareConfig
    from engine.data.prepare import prepare
    from engine.utils import atomic_write_json, read_json

    run = make_tiny_run(runs_root())
    data = prepare(PrepareConfig(source="histosynth", size=32, per_class=20, eval_frac=0.15,
                                 out=str(tmp_path / "data")))
    atomic_write_json(run / "config.json", dict(read_json(run / "config.json"), data=str(data)))
    at = _page(monkeypatch).run()
    assert not at.exception, at.exception
    assert len(at.get("image")) == 18  # per class: generated | real
    assert any("eval" in c.value and str(data) in c.value for c in at.caption)
    captions = [i.proto.imgs[0].caption for i in at.get("image")]
    # 15% of 20 patches per class: 3 in eval (held out), fewer than the default 4: the caption says so
    assert captions[:2] == ["ADI · generated", "ADI · real (eval split, all 3 it holds)"]
    at.number_input[0].set_value(2)
    at.button[0].click().run()
    assert [i.proto.imgs[0].caption for i in at.get("image")][1] == "ADI · real (eval split)"
    at.number_input[0].set_value(0)  # real_per_class 0: generated only
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert len(at.get("image")) == 9


def test_samples_page_bad_seeds(monkeypatch):
    make_tiny_run(runs_root())
    at = _page(monkeypatch).run()
    at.text_input[0].set_value("5-2")
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert any("ends before it starts" in e.value for e in at.error)


def test_run_picker_shows_the_display_name(monkeypatch):
    """A run renamed on the Train page (name.txt) is shown by its name here too, its id beside it."""
    from engine import jobs

    make_tiny_run(runs_root())
    jobs.rename("tiny", "first demo")
    at = _page(monkeypatch).run()
    assert not at.exception, at.exception
    run = at.selectbox(key="samples_run")
    assert run.value == "tiny" and run.options[0].startswith("first demo (tiny)")


def test_samples_page_offers_the_best_model(monkeypatch):
    """exports/best (the trainer's best G_ema by its held-out FID) is a choice beside latest and the steps."""
    from engine import sampling
    from engine.train.checkpoint import export_best

    run = make_tiny_run(runs_root())
    G, meta = sampling.load_generator(run, step=4)
    export_best(run, G, dict(meta, step=4), {"step": 4, "kimg": 0.016, "metric": "fid_domain", "score": 12.5, "n": 9})
    at = _page(monkeypatch).run()
    assert not at.exception, at.exception
    ck = at.selectbox(key="samples_ckpt_tiny")
    assert ck.options == ["latest · step 8 · export", "best (step 4, FID 12.5)", "step 4 · checkpoint"]
    ck.set_value("best (step 4, FID 12.5)")
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert any("best model, fid_domain 12.5" in c.value and "step 4" in c.value for c in at.caption)
