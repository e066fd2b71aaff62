"""AppTest: the Train page with an empty runs root, with a finished tiny run, and its form."""
import json

import pytest
from streamlit.testing.v1 import AppTest

from tests.pages.apptest import open_app

from engine import jobs
from engine.utils import runs_root



def _train_page(monkeypatch) -> AppTest:
    at = open_app(monkeypatch, "pages/train.py", run_first=True)
    at.run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Train"
    return at


def test_empty_runs_root(monkeypatch):
    at = _train_page(monkeypatch)
    assert any("No runs yet" in i.value for i in at.info)
    # the form: one widget per config field, labelled with the field's name and its default
    assert at.number_input(key="cfg_batch").value == 16
    assert at.number_input(key="cfg_lr_d").value == pytest.approx(7e-5)
    assert at.selectbox(key="cfg_res").value == 64
    assert at.checkbox(key="cfg_ada").value is True
    assert at.number_input(key="cfg_z_dim").label == "z_dim"  # under "advanced"
    assert at.selectbox(key="cfg_data").value == ""  # histosynth demo when nothing is prepared
    assert not at.get("plotly_chart")


def test_form_shows_config_error_and_starts_valid_config(monkeypatch):
    started = []

    def fake_start(config, run_id=None, root=None):
        from engine import config as C

        cfg = C.from_dict(C.TrainConfig, config)  # what the real start() validates first
        started.append((cfg, run_id))
        return run_id or "fake"

    monkeypatch.setattr(jobs, "start", fake_start)
    at = _train_page(monkeypatch)
    at.number_input(key="cfg_alpha_off").set_value(0.9)  # above alpha_on: a cross-field rule
    at.button[0].click()  # the form's Start button
    at.run()
    assert not at.exception, at.exception
    assert any("alpha_off" in e.value for e in at.error) and not started

    at.number_input(key="cfg_alpha_off").set_value(0.7)
    at.selectbox(key="cfg_res").set_value(16)
    at.number_input(key="cfg_kimg").set_value(0.5)
    at.text_input(key="cfg_run_id").input("mine")
    at.button[0].click()
    at.run()
    assert not at.exception, at.exception
    assert not at.error
    cfg, rid = started[-1]
    assert (cfg.res, cfg.kimg, cfg.alpha_off, rid) == (16, 0.5, 0.7, "mine")


def test_finished_run(monkeypatch):
    from tests.fixtures_runs import make_tiny_run

    d = make_tiny_run(runs_root(), run_id="tiny")
    at = _train_page(monkeypatch)
    table = at.dataframe[0].value
    assert list(table["run"]) == ["tiny"] and list(table["state"]) == ["finished"]
    charts = at.get("plotly_chart")
    assert len(charts) == 7  # losses, acc, ada_p, alpha, lr, speed, ranges
    losses = json.loads(charts[0].proto.spec)
    assert [t["name"] for t in losses["data"]] == ["d_loss", "g_loss"]
    assert len(losses["data"][0]["y"]) == 8  # every CSV row
    imgs = at.get("image")
    assert len(imgs) == 1  # the latest per-class sample grid, rows named by class
    caption = imgs[0].proto.imgs[0].caption
    assert "step 00000008" in caption and "row 9: TUM" in caption
    assert imgs[0].proto.imgs[0].url.endswith(".png")  # no JPEG artefacts on tissue
    assert any("finished: 8 steps" in c.value for c in at.code)  # the log tail
    stop, resume = at.button(key="stop"), at.button(key="resume")
    assert stop.disabled and not resume.disabled
    assert any("finished" in m.value and "step 8" in m.value for m in at.markdown)
    assert (d / "status.json").is_file()


def test_failed_run_shows_log_tail(monkeypatch):
    from tests.fixtures_runs import make_tiny_run

    d = make_tiny_run(runs_root(), run_id="broken", state="running")
    st = json.loads((d / "status.json").read_text())
    st["pid"] = 2 ** 22 + 7  # no such process: it died without writing a final state
    (d / "status.json").write_text(json.dumps(st))
    with open(d / "log.txt", "a") as f:
        f.write("RuntimeError: CUDA out of memory\n")
    at = _train_page(monkeypatch)
    assert any("CUDA out of memory" in e.value for e in at.error)
    assert jobs.status("broken").state == "failed"


def test_stop_and_resume_buttons_call_the_engine(monkeypatch):
    import psutil

    from tests.fixtures_runs import make_tiny_run

    calls = []
    monkeypatch.setattr(jobs, "resume", lambda rid, root=None, kimg=None: calls.append(("resume", rid, kimg)))
    monkeypatch.setattr(jobs, "stop", lambda rid, root=None, grace_s=0, wait=True: calls.append(("stop", rid, wait)))
    make_tiny_run(runs_root(), run_id="done")
    at = _train_page(monkeypatch)
    kimg = at.number_input(key="resume_kimg_done_0.032")
    assert kimg.value == pytest.approx(0.032)  # the run's own length by default
    kimg.set_value(1.0)
    at.button(key="resume").click()
    at.run()
    assert not at.exception, at.exception
    assert calls == [("resume", "done", 1.0)]

    # a live run (this test process stands in for the trainer): Stop is enabled, Resume is not
    d = make_tiny_run(runs_root(), run_id="live", state="running")
    st = json.loads((d / "status.json").read_text())
    st.update(pid=psutil.Process().pid, create_time=psutil.Process().create_time(), started_at=st["started_at"] + 10)
    (d / "status.json").write_text(json.dumps(st))
    at.session_state["train_run"] = "live"
    at.run()
    assert not at.exception, at.exception
    assert at.button(key="resume").disabled and not at.button(key="stop").disabled
    at.button(key="stop").click()
    at.run()
    assert calls[-1] == ("stop", "live", False)  # non-blocking: later status() calls escalate
