"""AppTest: the Home page (the app's default) on an empty and on a prepared root, its next-step link,
and the next-step hint the other pages end with."""
import pytest
from streamlit.testing.v1 import AppTest

from engine.config import PrepareConfig, from_dict
from tests.fixtures_runs import make_tiny_run
from tests.pages.apptest import open_app


def _text(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


def _next_link(at: AppTest):
    # the last page link of the page: its next step
    return at.get("page_link")[-1].proto


def test_home_is_the_default_page_on_an_empty_root(monkeypatch):
    at = open_app(monkeypatch)
    at.run()
    assert not at.exception, at.exception
    assert at.title[0].value == "HistoGen Lab"
    text = _text(at)
    assert "not prepared" in text and "histosynth-32" in text  # the demo data's state (at the demo preset's res)
    assert "needs a prepared data set first" in text              # its classifier's
    assert "no runs yet" in text
    steps = [link.proto.page for link in at.get("page_link")[:-1]]
    assert [p.rsplit("/", 1)[-1] for p in steps] == ["data", "train", "samples", "style_mixing", "evaluate"]
    link = _next_link(at)
    assert link.page.endswith("data") and "prepare a data set" in link.label


@pytest.fixture
def prepared(monkeypatch):
    """The demo set as the app would make it (32 px, 4 per class: seconds) and one finished tiny run."""
    from engine.data.prepare import prepare
    from engine.utils import data_root, runs_root

    monkeypatch.setenv("HISTOGEN_DEMO_SIZE", "32")
    prepare(from_dict(PrepareConfig, dict(source="histosynth", size=32, per_class=4, seed=0,
                                          out=str(data_root() / "histosynth-32"), quality_filter=False)))
    make_tiny_run(runs_root(), "tiny")


def test_home_on_a_prepared_root(monkeypatch, prepared):
    at = open_app(monkeypatch)
    at.run()
    assert not at.exception, at.exception
    text = _text(at)
    assert "prepared: histosynth-32" in text and "9 classes: ADI, BACK" in text and "32 px" in text
    assert "of `histosynth-32`: not trained yet" in text
    assert "1 run(s) · 0 running · 0 evaluated" in text and "latest: `tiny`" in text and "finished" in text
    link = _next_link(at)
    assert link.page.endswith("samples") and "run tiny" in link.label


def test_home_shows_a_ready_classifier(monkeypatch, prepared):
    from engine.metrics.classifier import train_classifier
    from engine.utils import data_root

    train_classifier(data_root() / "histosynth-32", epochs=1, batch=16, device="cpu")
    at = open_app(monkeypatch)
    at.run()
    assert not at.exception, at.exception
    assert "of `histosynth-32`: ready" in _text(at)


@pytest.mark.parametrize("page, target", [("pages/data.py", "train"), ("pages/samples.py", "style_mixing"),
                                          ("pages/style_mixing.py", "evaluate"),
                                          ("pages/train.py", "samples")])
def test_pages_end_with_a_next_step(monkeypatch, prepared, page, target):
    at = open_app(monkeypatch, page)
    at.run()
    assert not at.exception, at.exception
    link = _next_link(at)
    assert link.page.endswith(target) and link.label.startswith("Next · ")


def test_first_start_prepares_the_demo_set_at_the_demo_settings(monkeypatch):
    """HISTOGEN_AUTO_DEMO on: the first run makes the demo set at HISTOGEN_DEMO_SIZE / _PER_CLASS (the
    browser test's small one) and queues its classifier (recorded here, not trained)."""
    from engine.jobs import classifier as classifier_jobs
    from engine.utils import data_root, read_json

    queued = []
    monkeypatch.setattr(classifier_jobs, "ensure_classifier", lambda d, **kw: queued.append(str(d)))
    monkeypatch.setenv("HISTOGEN_DEMO_SIZE", "32")
    monkeypatch.setenv("HISTOGEN_DEMO_PER_CLASS", "3")
    at = open_app(monkeypatch)
    monkeypatch.setenv("HISTOGEN_AUTO_DEMO", "1")  # open_app turns it off
    at.run()
    assert not at.exception, at.exception
    assert not at.warning, [w.value for w in at.warning]
    demo = data_root() / "histosynth-32"
    cfg = (read_json(demo / "dataset.json") or {}).get("config", {})
    assert (cfg.get("size"), cfg.get("per_class")) == (32, 3)
    assert queued == [str(demo)]
    assert "prepared: histosynth-32" in _text(at)


def test_demo_settings_ignore_a_bad_value(monkeypatch):
    from ui import frame

    monkeypatch.setenv("HISTOGEN_DEMO_SIZE", "big")
    monkeypatch.delenv("HISTOGEN_DEMO_PER_CLASS", raising=False)
    assert frame.demo_settings() == frame.DemoSettings(size=32, per_class=200, seed=0)  # the demo preset's res
