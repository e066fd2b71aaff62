"""AppTest: the Data page renders on an empty and on a prepared data directory."""

import pytest
from streamlit.testing.v1 import AppTest

from tests.pages.apptest import open_app
from tests.waiting import wait_for

from engine.config import PrepareConfig, from_dict


def _app(monkeypatch) -> AppTest:
    return open_app(monkeypatch, "pages/data.py", timeout=120)  # Home is the default page


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
    # eval is held out: train + val + test + eval hold every patch once
    assert int(counts.loc["total"].sum()) == 9 * 12 and int(counts.loc["total", "eval"]) == 9
    assert any("held out for the metrics" in c.value for c in at.caption)
    assert len(at.get("image")) == 1  # the per-class preview grid
    assert any("synthetic" in i.value for i in at.info)


def test_data_page_prepares_from_form(monkeypatch):
    from engine.jobs import prepare as data_jobs
    from engine.utils import data_root

    at = _app(monkeypatch)
    at.run()
    assert [w.label for w in at.number_input][:2] == ["patch size (px) · size", "patches per class · per_class"]
    at.number_input[0].set_value(32)
    at.number_input[1].set_value(4)  # per_class
    at.button[0].click()  # the form's Prepare button: starts a background job
    at.run()
    assert not at.exception, at.exception
    assert any("in the background" in t.value for t in at.toast)
    [job] = data_jobs.list_prepare_jobs()
    assert job.out == str(data_root() / "histosynth-32")
    if job.state in data_jobs.ACTIVE:  # the fragment shows it with a Stop button
        assert at.button(key=f"stop_{job.job_id}")
    wait_for(lambda: data_jobs.prepare_status(job.job_id).state not in data_jobs.ACTIVE, timeout=60,
             what="the preparation job")
    assert data_jobs.prepare_status(job.job_id).state == "finished"
    at.run()  # the fragment sees the end and selects the new data set
    assert not at.exception, at.exception
    assert at.session_state["data_dir"] == job.out
    assert next(s for s in at.selectbox if s.label == "data set").value == job.out
    assert len(at.dataframe) >= 1
    assert int(at.dataframe[0].value.loc["total"].sum()) == 9 * 4
    # its domain classifier was queued behind the preparation (a background job of the data set)
    from engine.jobs import classifier as classifier_jobs

    s = classifier_jobs.classifier_status(job.out)
    assert s.state in ("queued", "training", "ready") and s.job_id
    classifier_jobs.stop_classifier(s.job_id, grace_s=2)  # not needed here: the CPU is shared


def test_data_page_shows_a_failed_job(monkeypatch):
    from engine.jobs import prepare as data_jobs

    at = _app(monkeypatch)
    at.run()
    at.radio[0].set_value("folder")
    at.text_input[0].input("/missing")
    at.button[0].click()
    at.run()
    assert not at.exception, at.exception
    [job] = data_jobs.list_prepare_jobs()
    wait_for(lambda: data_jobs.prepare_status(job.job_id).state == "failed", timeout=60, what="the failure")
    at.run()
    assert any("folder /missing does not exist" in e.value for e in at.error)


def test_data_page_classifier_missing_offers_training(monkeypatch, prepared):
    from unittest import mock

    at = _app(monkeypatch)
    at.run()
    assert not at.exception, at.exception
    assert any(i.value.startswith("Domain classifier: missing") for i in at.info)
    with mock.patch("engine.jobs.classifier.start_classifier", return_value="j1") as start:
        at.button(key="clf_train").click()
        at.run()
    assert not at.exception, at.exception
    start.assert_called_once_with(str(prepared))


def test_data_page_classifier_training_and_ready(monkeypatch, prepared):
    import os
    import time

    from engine.jobs import prepare as data_jobs
    from engine.utils import atomic_write_json

    jd = data_jobs.jobs_root() / "20990101-000000-histosynth-32-classifier"
    jd.mkdir(parents=True)
    now = time.time()
    atomic_write_json(jd / "status.json", {"state": "queued", "kind": "classifier", "out": str(prepared.resolve()),
                                           "pid": os.getpid(), "create_time": None, "started_at": now - 60})
    atomic_write_json(jd / "progress.json", {"state": "running", "done": 50, "total": 200,
                                             "message": "epoch 3/10 loss 0.2", "train_started_at": now - 30})
    at = _app(monkeypatch)
    at.run()
    assert not at.exception, at.exception
    text = next(b.proto.text for b in at.get("progress") if "Domain classifier" in b.proto.text)
    assert "training · step 50 / 200 · 25 % · ETA 2 min · epoch 3/10" in text  # 30 s for 25 %
    assert at.button(key="clf_stop") and not [b for b in at.button if b.key == "clf_train"]

    atomic_write_json(jd / "progress.json", {"state": "finished", "done": 200, "total": 200, "message": "done"})
    atomic_write_json(prepared / "classifier.json", {"val_acc": 0.975, "val_n": 40, "arch": "resnet10t"})
    (prepared / "classifier.pt").write_bytes(b"weights")
    at.run()
    assert not at.exception, at.exception
    assert any("ready · held-out accuracy 97.5% on 40 `val` patches" in s.value for s in at.success)
    assert at.button(key="clf_train")


def test_data_page_classifier_failed_shows_message(monkeypatch, prepared):
    import time

    from engine.jobs import prepare as data_jobs
    from engine.utils import atomic_write_json

    jd = data_jobs.jobs_root() / "20990101-000000-histosynth-32-classifier"
    jd.mkdir(parents=True)
    atomic_write_json(jd / "status.json", {"state": "queued", "kind": "classifier", "out": str(prepared.resolve()),
                                           "pid": 2**22 + 7, "create_time": 1.0, "started_at": time.time()})
    atomic_write_json(jd / "progress.json", {"state": "failed", "message": "out of memory"})
    at = _app(monkeypatch)
    at.run()
    assert not at.exception, at.exception
    assert any(e.value == "Domain classifier: failed · out of memory" for e in at.error)
    assert at.button(key="clf_train")


def test_data_page_old_set_says_eval_is_inside_train(monkeypatch, prepared):
    import json

    info = json.loads((prepared / "dataset.json").read_text())
    info.pop("eval_disjoint")
    info["eval_subset_of"] = "train"
    (prepared / "dataset.json").write_text(json.dumps(info))
    at = _app(monkeypatch)
    at.run()
    assert not at.exception, at.exception
    assert any("eval` is a subset of train" in w.value for w in at.warning)


def test_data_page_form_passes_test_source(monkeypatch):
    from engine.jobs import prepare as data_jobs
    from engine.jobs import classifier as classifier_jobs

    got = []
    monkeypatch.setattr(data_jobs, "start_prepare", lambda cfg: got.append(cfg) or "job1")
    monkeypatch.setattr(classifier_jobs, "ensure_classifier", lambda *a, **k: None)
    at = _app(monkeypatch)
    at.run()
    box = next(t for t in at.text_input if t.label == "test split from folder · test_source")
    box.set_value("/data/CRC-VAL-HE-7K")
    at.button[0].click()
    at.run()
    assert not at.exception, at.exception
    assert [c.test_source for c in got] == ["folder:/data/CRC-VAL-HE-7K"]
