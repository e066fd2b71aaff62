"""AppTest: the Review page's two views (a reviewer's token link; the researcher's lab page) and the
access key the lab pages ask for when the app listens on an outside address (app.py, engine/access.py)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from streamlit import config as st_config
from streamlit.testing.v1 import AppTest

from engine import access
from engine.review import store as ST
from engine.review import studies as S
from engine.utils import runs_root
from tests.fixtures_runs import tiny_run_on
from tests.pages.apptest import open_app

PROMPT = "HistoGen Lab · access key"
ANSWER = {"real_or_synthetic": "real", "confidence": 4, "realism": 3, "class": "TUM"}


@pytest.fixture(autouse=True)
def _sqlite_store(monkeypatch):
    monkeypatch.delenv(ST.ENV_DB, raising=False)
    monkeypatch.delenv(access.ENV_KEY, raising=False)



@pytest.fixture
def study(review_data):
    """4 patches (ADI, TUM; one synthetic and one real each), 2 reviewers."""
    tiny_run_on(review_data)
    return S.create_study({"name": "Pilot", "runs": ["tiny"], "classes": ["ADI", "TUM"], "synthetic_per_class": 1,
                           "real_per_class": 1, "display_size": 24, "reviewers": 2, "device": "cpu",
                           "instructions": "Take your time."})


@pytest.fixture
def exposed():
    """The server bound to every interface (`--server.address 0.0.0.0`), as app.py reads it."""
    old = st_config.get_option("server.address")
    st_config.set_option("server.address", "0.0.0.0")
    yield
    st_config.set_option("server.address", old)


def _reviewer(monkeypatch, token: str) -> AppTest:
    at = open_app(monkeypatch)
    at.query_params["token"] = token
    return at.run()


def _progress_text(at: AppTest) -> str:
    return at.get("progress")[0].proto.text


def _all_text(at: AppTest) -> str:
    parts = [e.value for kind in ("title", "subheader", "markdown", "caption", "info", "success", "warning", "error")
             for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts)


# ----------------------------------------------------------------------------------------------
# Reviewer view

def test_reviewer_answers_one_patch(monkeypatch, study):
    token = study["tokens"][0]["token"]
    at = _reviewer(monkeypatch, token)
    assert not at.exception, at.exception
    assert _progress_text(at) == "0 / 4"
    assert len(at.get("image")) == 1 and at.subheader[0].value == "Pilot"
    assert any("Take your time." in i.value for i in at.info)
    # only the review: no sidebar, no lab navigation or page
    assert len(at.sidebar.children) == 0 and not at.title
    # every answer has its key on its button
    keys = {b.key: b.proto.shortcut for b in at.button}
    assert keys["review_real_or_synthetic_real"] == "left" and keys["review_real_or_synthetic_synthetic"] == "right"
    assert keys["review_confidence_4"] == "4" and keys["review_realism_3"] == "shift+3"
    assert keys["review_class_ADI"] == "a" and keys["review_class_TUM"] == "t"
    assert keys["review_submit"] == "ctrl+enter"
    # a missing answer: the engine's sentence, nothing saved
    at.button(key="review_real_or_synthetic_real").click().run()
    at.button(key="review_submit").click().run()
    assert any("answer every question" in w.value for w in at.warning)
    assert S.export_rows(study["id"]) == []
    assert at.button(key="review_real_or_synthetic_real").proto.type == "primary"  # the choice is kept
    for key in ("review_confidence_4", "review_realism_3", "review_class_TUM"):
        at.button(key=key).click().run()
    first = at.session_state["review_pending"]
    (pid,) = list(first)
    at.text_area[0].input("nuclei look odd").run()
    at.button(key="review_submit").click().run()
    assert not at.exception, at.exception
    rows = S.export_rows(study["id"])
    assert len(rows) == 1
    r = rows[0]
    assert (r["patch"], r["real_or_synthetic"], r["confidence"], r["realism"], r["class"], r["comment"]) == \
        (pid, "real", 4, 3, "TUM", "nuclei look odd")
    assert _progress_text(at) == "1 / 4"
    assert any("Answer saved" in s.value for s in at.success)
    assert "Patch 2 of 4" in _all_text(at)
    # resumable: a new browser session with the same link opens at the next patch
    again = _reviewer(monkeypatch, token)
    assert _progress_text(again) == "1 / 4" and "Patch 2 of 4" in _all_text(again)
    # going back shows the saved answer
    again.button(key="review_prev").click().run()
    assert "Patch 1 of 4" in _all_text(again)
    assert again.button(key="review_class_TUM").proto.type == "primary"
    assert again.text_area[0].value == "nuclei look odd"


@pytest.mark.parametrize("kind", ["bad", "other study closed", "expired"])
def test_bad_token_gets_one_sentence(monkeypatch, study, kind):
    if kind == "bad":
        token, want = "not-a-token", S.BAD_TOKEN
    elif kind == "other study closed":
        token, want = study["tokens"][1]["token"], S.CLOSED
        S.close_study(study["id"])
    else:
        token, want = S.invite(study["id"], 1, expires_days=1e-9)[0]["token"], S.EXPIRED
    at = _reviewer(monkeypatch, token)
    assert not at.exception, at.exception
    assert [e.value for e in at.error] == [want]
    assert len(at.main.children) == 1 and len(at.sidebar.children) == 0
    assert not at.button and not at.get("image") and not at.title and not at.text_input


def test_finished_reviewer_sees_thanks(monkeypatch, study):
    token = study["tokens"][0]["token"]
    for _ in range(4):
        v = S.reviewer_view(token)
        S.submit(token, v["patch"]["id"], ANSWER)
    at = _reviewer(monkeypatch, token)
    assert not at.exception, at.exception
    assert any("Thank you" in s.value for s in at.success)
    assert _progress_text(at) == "4 / 4"
    assert not at.get("image")
    text = _all_text(at).lower()
    assert not re.search(r"synthetic|correct|accuracy|reviewer 2|tiny", text), text


# ----------------------------------------------------------------------------------------------
# Researcher view

def _researcher(monkeypatch) -> AppTest:
    return open_app(monkeypatch, "pages/review.py").run()


def test_researcher_empty_root(monkeypatch):
    at = _researcher(monkeypatch)
    assert not at.exception, at.exception
    assert at.title[0].value == "Review"
    assert any("No run with a checkpoint" in i.value for i in at.info)
    assert any("No study yet" in i.value for i in at.info)


def test_researcher_reads_progress_and_statistics(monkeypatch, study):
    for t in study["tokens"]:
        for _ in range(4):
            v = S.reviewer_view(t["token"])
            S.submit(t["token"], v["patch"]["id"], ANSWER)
    at = _researcher(monkeypatch)
    assert not at.exception, at.exception
    assert at.selectbox(key="review_study").value == study["id"]
    progress = at.dataframe[0].value
    assert list(progress["answered"]) == [4, 4] and set(progress["state"]) == {"finished"}
    assert _progress_text(at) == "8 / 8 answers from 2 reviewers"
    assert any(s.value == "Statistics" for s in at.subheader)
    # accuracy, realism, 3 confusion tabs, 2 kappa heatmaps
    assert len(at.get("plotly_chart")) == 7
    # everyone said "real": half right, sensitivity 0, specificity 1
    assert [m.value for m in at.metric][:4] == ["50.0 %", "1", "0.0 %", "100.0 %"]
    (dl,) = at.get("download_button")
    assert dl.proto.label == "Export CSV"


def test_researcher_creates_a_study_and_gets_links_once(monkeypatch, review_data):
    tiny_run_on(review_data)
    at = _researcher(monkeypatch)
    assert not at.exception, at.exception
    classes = next(m for m in at.multiselect if m.label.startswith("classes"))
    classes.set_value(["LYM", "TUM"])
    at.number_input(key="review_cfg_synthetic_per_class").set_value(1)
    at.number_input(key="review_cfg_real_per_class").set_value(1)
    at.number_input(key="review_cfg_display_size").set_value(32)
    at.number_input(key="review_cfg_reviewers").set_value(2)
    at.selectbox(key="review_cfg_device").set_value("cpu")
    next(b for b in at.button if b.label == "Create study").click().run()
    assert not at.exception, at.exception
    (row,) = S.list_studies()
    assert row["patches"] == 4 and row["reviewers"] == 2
    code = at.code[0].value
    tokens = re.findall(r"review\?token=([A-Za-z0-9_\-%]+)", code)
    assert len(tokens) == 2
    v = S.reviewer_view(tokens[0])
    assert v["total"] == 4 and v["study"]["display_size"] == 32
    assert "relative" in at.warning[0].value  # no request headers under AppTest: a relative link
    at.button(key="review_links_done").click().run()
    assert not at.code and tokens[0] not in _all_text(at)


def test_researcher_closes_and_archives_after_confirming(monkeypatch, study):
    at = _researcher(monkeypatch)
    at.button(key="review_close").click().run()
    assert any("cannot be undone" in w.value for w in at.warning)
    assert S.get_study(study["id"])["state"] == "open"  # not before the confirmation
    at.button(key="review_confirm_no").click().run()
    assert S.get_study(study["id"])["state"] == "open"
    assert not any(b.key == "review_confirm_yes" for b in at.button)
    at.button(key="review_close").click().run()
    at.button(key="review_confirm_yes").click().run()
    assert not at.exception, at.exception
    assert S.get_study(study["id"])["state"] == "closed"
    at.button(key="review_archive").click().run()
    at.button(key="review_confirm_yes").click().run()
    assert S.get_study(study["id"])["state"] == "archived"
    assert (Path(study["dir"]) / "answers.csv").is_file()
    assert any("No study yet" in i.value for i in at.info)


# ----------------------------------------------------------------------------------------------
# The access key (app.py + engine/access.py)

def test_loopback_needs_no_key(monkeypatch):
    assert access.is_loopback(st_config.get_option("server.address"))  # .streamlit/config.toml binds 127.0.0.1
    at = open_app(monkeypatch, "pages/samples.py").run()
    assert not at.exception and at.title[0].value == "Samples"
    assert not any(t.key == "access_key_input" for t in at.text_input)
    assert not (runs_root() / access.KEY_FILE).exists()


def _open_the_lab(at: AppTest, key: str) -> AppTest:
    return at.text_input(key="access_key_input").input(key).run()


def test_exposed_lab_page_asks_for_the_key(monkeypatch, exposed, capsys):
    monkeypatch.setattr("time.sleep", lambda s: None)
    # The default page (app.py's own run, as a browser's every run is). A switched page would run alone
    # after the first run under AppTest (its legacy `pages/` mode; see frame.require_frame).
    at = open_app(monkeypatch).run()
    assert not at.exception, at.exception
    # the prompt, and no lab content: no page, no sidebar (roots, device), no navigation
    assert [t.value for t in at.title] == [PROMPT]
    assert len(at.sidebar.children) == 0
    assert at.text_input(key="access_key_input").proto.type == 1  # PASSWORD
    assert "Runs root" not in _all_text(at) and str(runs_root()) not in _all_text(at)
    # made at the first exposed start, stored hashed, printed in the terminal
    key_file = runs_root() / access.KEY_FILE
    assert key_file.is_file()
    printed = re.search(r"^\s+(\S{32,})$", capsys.readouterr().out, re.M)
    assert printed and access.verify(printed.group(1), runs_root())
    key = printed.group(1)
    assert key not in key_file.read_text()
    # a wrong key: refused, still no content
    _open_the_lab(at, "guess")
    assert [e.value for e in at.error] == ["That is not the access key."]
    assert [t.value for t in at.title] == [PROMPT] and len(at.sidebar.children) == 0
    # the right one: the page, and the key is not asked again in this session
    _open_the_lab(at, key)
    assert not at.exception, at.exception
    assert at.title[0].value == "HistoGen Lab" and len(at.sidebar.children) > 0
    assert "Runs root" in _all_text(at) or any("Runs root" in m.value for m in at.sidebar.markdown)
    at.run()
    assert at.title[0].value == "HistoGen Lab" and not any(t.key == "access_key_input" for t in at.text_input)
    # after a reset, the old key opens nothing
    access.reset_key(runs_root())
    again = _open_the_lab(open_app(monkeypatch).run(), key)
    assert [t.value for t in again.title] == [PROMPT] and [e.value for e in again.error] == ["That is not the access key."]


def test_exposed_env_key_and_token_bypass(monkeypatch, exposed, study):
    monkeypatch.setenv(access.ENV_KEY, "s3cret-from-env")
    at = open_app(monkeypatch).run()
    assert [t.value for t in at.title] == [PROMPT]
    _open_the_lab(at, "s3cret-from-env")
    assert at.title[0].value == "HistoGen Lab" and len(at.sidebar.children) > 0
    assert not (runs_root() / access.KEY_FILE).exists()  # the environment's key: nothing written
    # a token link needs no key and opens its review only
    rev = _reviewer(monkeypatch, study["tokens"][0]["token"])
    assert not rev.exception, rev.exception
    assert _progress_text(rev) == "0 / 4" and len(rev.sidebar.children) == 0 and not rev.text_input
    assert not rev.title


def test_exposed_switched_page_first_run_asks_for_the_key(monkeypatch, exposed):
    """A lab page's URL opened directly gets the prompt too (its first run goes through app.py)."""
    at = open_app(monkeypatch, "pages/review.py").run()
    assert [t.value for t in at.title] == [PROMPT] and not at.selectbox and not at.get("plotly_chart")
