"""The clinician review in a real browser: the app started on an outside address (as a researcher does to
let reviewers in), a reviewer's link answers three patches by keyboard only, the answers are in the store,
a reload resumes where the reviewer stopped, a bad token gets one sentence and no lab, and a lab page asks
for the access key printed at the first start, then opens with it.

Playwright drives Debian's chromium (.ci/run installs it) against `streamlit run app.py` on a free port.
"""
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = [pytest.mark.e2e]


@pytest.fixture
def study(tmp_path, monkeypatch, review_data):
    monkeypatch.setenv("HISTOGEN_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("HISTOGEN_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("HISTOGEN_REVIEW_DB", raising=False)
    monkeypatch.delenv("HISTOGEN_ACCESS_KEY", raising=False)
    from engine.review import studies as S
    from tests.fixtures_runs import tiny_run_on

    tiny_run_on(review_data)
    return S.create_study({"name": "e2e", "runs": ["tiny"], "classes": ["ADI", "TUM"], "synthetic_per_class": 2,
                           "real_per_class": 2, "display_size": 256, "reviewers": 1, "device": "cpu"})


@pytest.fixture
def server(tmp_path, study):
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} missing: apt-get install -y chromium")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log_path = tmp_path / "streamlit.log"
    with open(log_path, "wb") as log:
        p = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.address", "0.0.0.0",
                              "--server.port", str(port), "--server.headless", "true"], cwd=ROOT,
                             env=dict(os.environ, HISTOGEN_AUTO_DEMO="0", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1"),
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                if urllib.request.urlopen(base + "/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.5)
        yield base, log_path
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def test_reviewer_answers_three_patches_by_keyboard(server, study):
    from playwright.sync_api import sync_playwright

    from engine.review import studies as S
    from engine.review.reviewer import BAD_TOKEN

    base, log_path = server
    token = study["tokens"][0]["token"]
    total = study["patches"]
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = b.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{base}/review?token={token}")
            page.get_by_text(f"0 / {total}").wait_for(timeout=90_000)
            assert page.locator('[data-testid="stSidebar"]').count() == 0  # only the review, no lab
            for n in range(3):
                for key in ("ArrowLeft", "4", "Shift+3", "t"):  # real, confidence 4, realism 3, class TUM
                    page.keyboard.press(key)
                    time.sleep(0.8)
                page.keyboard.press("Control+Enter")
                page.get_by_text(f"{n + 1} / {total}").wait_for(timeout=30_000)
                time.sleep(0.8)
            rows = [r for r in S.export_rows(study["id"]) if r.get("real_or_synthetic")]
            assert len(rows) == 3
            assert {(r["real_or_synthetic"], int(r["confidence"]), int(r["realism"]), r["class"]) for r in rows} == \
                {("real", 4, 3, "TUM")}
            page.reload()
            page.get_by_text(f"3 / {total}").wait_for(timeout=30_000)  # resumed where the reviewer stopped

            bad = b.new_page()
            bad.goto(f"{base}/review?token=bogus")
            time.sleep(4)
            text = bad.locator('[data-testid="stMain"]').inner_text()
            assert text.strip() == BAD_TOKEN and bad.locator('[data-testid="stSidebar"]').count() == 0  # one sentence

            lab = b.new_page()
            lab.goto(f"{base}/train")
            lab.get_by_text("access key").first.wait_for(timeout=60_000)
            assert lab.locator('[data-testid="stSidebar"]').count() == 0  # no lab content without the key
            key = re.search(r"^\s{4}(\S{32,})$", log_path.read_text(), re.M).group(1)  # printed once at start
            lab.locator("input[type=password]").fill(key)
            lab.keyboard.press("Enter")
            lab.get_by_role("heading", name="Train").first.wait_for(timeout=60_000)
        finally:
            b.close()
