"""AppTest: the Train page with an empty runs root, with a finished tiny run, and its form."""
import dataclasses
import json

import pytest
from streamlit.testing.v1 import AppTest

from tests.pages.apptest import open_app

from engine import config as C
from engine import jobs
from engine.utils import runs_root



def _train_page(monkeypatch, gpu: bool = False) -> AppTest:
    import torch

    # the form opens on the machine's preset (demo on a CPU): the same defaults on every test machine
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
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
    demo = C.PRESETS["demo"]  # the form opens on the demo preset's values (a CPU-only test machine)
    assert at.number_input(key="cfg_lr_d").value == pytest.approx(demo["lr_d"]) != C.TrainConfig().lr_d
    assert at.selectbox(key="cfg_res").value == 32
    assert at.selectbox(key="cfg_d_cond").value == demo["d_cond"] == "labelmap"
    assert at.checkbox(key="cfg_ada").value is True
    # a phrase a researcher reads with the field's one name beside it
    assert at.number_input(key="cfg_z_dim").label == "latent z size · z_dim"  # under "advanced"
    assert at.number_input(key="cfg_lr_g").label == "G learning rate · lr_g"
    for f in dataclasses.fields(C.TrainConfig):
        # the run id field stands for run_dir; a family section (ddpm) is its own form (test_train_ddpm_page)
        if f.name != "run_dir" and f.name not in C.FAMILY_SECTIONS:
            w = next(w for kind in ("number_input", "selectbox", "checkbox", "text_input", "multiselect")
                     for w in getattr(at, kind) if w.key == f"cfg_{f.name}")
            assert w.label == f"{f.metadata['label']} · {f.name}"
    assert at.selectbox(key="cfg_data").value == ""  # histosynth demo when nothing is prepared
    # only what the engine accepts / what runs (the picker offered 512 and 1024 px, and unimplemented families)
    assert at.selectbox(key="cfg_res").options == ["8", "16", "32", "64", "128", "256"]
    assert at.selectbox(key="cfg_family").options == list(C.IMPLEMENTED_FAMILIES)
    assert any("Estimated time: no measurement yet" in c.value for c in at.caption)
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
    at.button(key="start").click()  # the form's Start button
    at.run()
    assert not at.exception, at.exception
    assert any("alpha_off" in e.value for e in at.error) and not started

    at.number_input(key="cfg_alpha_off").set_value(0.7)
    at.selectbox(key="cfg_res").set_value(16)
    at.number_input(key="cfg_kimg").set_value(0.5)
    at.text_input(key="cfg_run_id").input("mine")
    at.button(key="start").click()
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
    specs = [json.loads(c.proto.spec) for c in charts]
    # no slot for unused curves: alpha (domain head off) and pixel ranges (not in this CSV)
    by_title = {f["layout"]["title"]["text"]: f for f in specs}
    assert sorted(by_title) == sorted(["Losses", "D accuracy on reals", "ADA p", "Learning rates", "Speed"])
    losses = by_title["Losses"]
    assert [t["name"] for t in losses["data"]] == ["d_loss", "g_loss"]
    assert len(losses["data"][0]["y"]) == 8  # every CSV row
    assert by_title["Learning rates"]["layout"]["yaxis"]["tickformat"] == ".0e"  # readable ticks
    imgs = at.get("image")
    assert len(imgs) == 1  # the latest per-class sample grid, rows named by class
    caption = imgs[0].proto.imgs[0].caption
    assert "step 00000008" in caption and "row 9: TUM" in caption
    assert imgs[0].proto.imgs[0].url.endswith(".png")  # no JPEG artefacts on tissue
    log = next(c for c in at.code if "finished: 8 steps" in c.value)  # the log tail
    assert log.proto.wrap_lines  # long lines wrap instead of being cut
    stop, resume = at.button(key="stop"), at.button(key="resume")
    assert stop.disabled and not resume.disabled
    # progress against the target, the same text in the status line and the runs table
    line = "step 8 / 8 · 0.032 / 0.032 kimg"
    assert any("finished" in m.value and line in m.value for m in at.markdown)
    assert list(table["progress"]) == [line]
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


def test_start_selects_the_new_run_above_a_folded_form(monkeypatch):
    from tests.fixtures_runs import make_tiny_run

    make_tiny_run(runs_root(), run_id="old")

    def fake_start(config, run_id=None, root=None):
        C.from_dict(C.TrainConfig, config)
        make_tiny_run(runs_root(), run_id="new")  # what the trainer leaves behind, in a blink
        return "new"

    monkeypatch.setattr(jobs, "start", fake_start)
    at = _train_page(monkeypatch)
    assert at.selectbox(key="cfg_res").value == 32  # the form exists (folded: there are runs)
    form = next(e for e in at.expander if e.label == "New run")
    assert not form.proto.expanded
    at.button(key="start").click()
    at.run()
    assert not at.exception, at.exception
    assert at.session_state["train_run"] == "new"
    run_picker = at.selectbox[0]  # the first widget on the page: the run, now the new one
    assert run_picker.label == "run" and run_picker.value == "new"
    labels = [e.label for e in at.expander]
    form = next(e for e in at.expander if e.label == "New run")
    assert not form.proto.expanded and labels.index("New run") > labels.index("Rename or delete this run")


def test_estimate_follows_the_run_fields(monkeypatch):
    from tests.fixtures_runs import make_tiny_run

    make_tiny_run(runs_root(), run_id="measured")  # 16 px, batch 4, 100 img/s in its CSV
    at = _train_page(monkeypatch)
    assert any("Estimated time: no measurement yet" in c.value for c in at.caption)  # 32 px by default
    at.selectbox(key="cfg_res").set_value(16)
    at.number_input(key="cfg_batch").set_value(4)
    at.number_input(key="cfg_kimg").set_value(6.0)
    at.run()
    assert not at.exception, at.exception
    assert any("Estimated time: about 1 min (100 img/s measured here by run measured" in c.value
               for c in at.caption)


def test_rename_and_delete_with_confirmation(monkeypatch):
    import psutil

    from tests.fixtures_runs import make_tiny_run

    d = make_tiny_run(runs_root(), run_id="done")
    at = _train_page(monkeypatch)
    at.text_input(key="rename_done").input("first try")
    at.button(key="rename").click()
    at.run()
    assert not at.exception, at.exception
    assert jobs.status("done").name == "first try" and d.is_dir()
    assert at.selectbox[0].format_func("done") == "first try (done)"
    assert list(at.dataframe[0].value["name"]) == ["first try"]

    at.button(key="delete").click()  # first click only asks
    at.run()
    assert d.is_dir() and any("cannot be undone" in w.value for w in at.warning)
    at.button(key="delete_no").click()
    at.run()
    assert d.is_dir() and not at.warning
    at.button(key="delete").click()
    at.run()
    at.button(key="delete_yes").click()
    at.run()
    assert not at.exception, at.exception
    assert not d.exists() and any("No runs yet" in i.value for i in at.info)

    # a live run: the button is disabled and says why; the engine refuses too
    live = make_tiny_run(runs_root(), run_id="live", state="running")
    st = json.loads((live / "status.json").read_text())
    st.update(pid=psutil.Process().pid, create_time=psutil.Process().create_time())
    (live / "status.json").write_text(json.dumps(st))
    at.run()
    assert at.button(key="delete").disabled
    assert any("cannot be deleted: stop it first" in c.value for c in at.caption)
    with pytest.raises(RuntimeError, match="stop it before deleting"):
        jobs.delete("live")


def test_preset_first_and_refills_the_form(monkeypatch):
    at = _train_page(monkeypatch)
    preset = at.selectbox(key="cfg_preset")
    assert preset.value == "demo" and preset.options == ["spec", "stylegan2", "demo"]  # CPU: demo
    assert preset.label == "preset · preset"
    form = next(e for e in at.expander if e.label == "New run")
    first = next(w for w in form.selectbox)  # the first widget of the form
    assert first.key == "cfg_preset"
    at.number_input(key="cfg_lr_g").set_value(1e-3)  # a user's edit, replaced by the preset's value
    at.selectbox(key="cfg_preset").set_value("spec")
    at.run()
    assert not at.exception, at.exception
    spec = C.preset_values("spec")
    for name in ("res", "batch", "alpha_max", "ada_p_max", "sample_kimg", "lr_g", "amp", "loss"):
        w = next(w for kind in ("number_input", "selectbox") for w in getattr(at, kind)
                 if w.key == f"cfg_{name}")
        assert w.value == pytest.approx(spec[name]) if isinstance(spec[name], float) else w.value == spec[name], name
    assert at.number_input(key="cfg_ema_rampup").value == 0.0
    # and back: stylegan2 = the defaults
    at.selectbox(key="cfg_preset").set_value("stylegan2")
    at.run()
    assert at.selectbox(key="cfg_res").value == 64 and at.number_input(key="cfg_alpha_max").value == 0.5


def test_form_opens_on_spec_with_a_gpu(monkeypatch):
    at = _train_page(monkeypatch, gpu=True)
    assert at.selectbox(key="cfg_preset").value == "spec"
    assert at.selectbox(key="cfg_res").value == 256 and at.number_input(key="cfg_batch").value == 8


def test_list_field_is_a_multiselect_of_its_choices(monkeypatch):
    """ada_ops holds several ops: a selectbox returned one of them and trained with xflip only."""
    at = _train_page(monkeypatch)
    ops = at.multiselect(key="cfg_ada_ops")
    assert ops.value == list(C.PRESETS["demo"]["ada_ops"]) and len(ops.value) > 1  # the demo preset's
    assert set(ops.options) == set(C.ADA_OPS)
