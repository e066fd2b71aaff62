"""End to end in a real browser: open the app, start a tiny run from the Train page, watch the curve
grow, stop it, open Samples and see the grid. Screenshots go to /tmp/e2e_*.png.

Playwright drives Debian's chromium (`apt-get install -y chromium`; .ci/run installs it) against
`streamlit run app.py` on a free localhost port, in its own process group, with runs and data in tmp.
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

from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# A model small enough to log a CSV row every step or two on a 2-core CPU.
FORM = {"batch": "4", "kimg": "100", "z_dim": "32", "w_dim": "32", "n_mlp": "2", "channel_base": "64",
        "channel_max": "16", "log_kimg": "0.004", "sample_kimg": "0.02", "snap_kimg": "0.02",
        "grid_per_class": "2", "workers": "0"}

# Not marked slow: the one real-browser test of the main flow runs in CI (.ci/run installs chromium).
pytestmark = [pytest.mark.e2e]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not found: apt-get install -y chromium (.ci/run does it)")
    from engine.config import PrepareConfig
    from engine.data.prepare import prepare

    data = tmp_path / "data"
    prepare(PrepareConfig(source="histosynth", size=32, per_class=4, seed=0, out=str(data / "hs32"),
                          quality_filter=False))
    port = _free_port()
    env = dict(os.environ, HISTOGEN_RUNS=str(tmp_path / "runs"), HISTOGEN_DATA=str(data),
               HISTOGEN_AUTO_DEMO="0", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    log = open(tmp_path / "streamlit.log", "wb")
    p = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                          "--server.address", "127.0.0.1", "--server.port", str(port),
                          "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false"],
                         cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 120
        while True:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                pass
            assert p.poll() is None, (tmp_path / "streamlit.log").read_text()
            assert time.time() < deadline, "streamlit did not answer /_stcore/health in 120 s"
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}", tmp_path
    finally:
        # the trainer runs in its own session: kill it by the pid it recorded, then the server's group
        import json

        for st in (tmp_path / "runs").glob("*/status.json"):
            pid = json.loads(st.read_text()).get("pid")
            if pid:
                try:
                    os.killpg(int(pid), signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        log.close()


def _points(page) -> int:
    """Points in the first trace of the first plotly chart (the losses), 0 before it is drawn."""
    return page.evaluate("""() => {
        const p = document.querySelector('.js-plotly-plot');
        return p && p.data && p.data.length ? p.data[0].x.length : 0; }""")


def _select(page, label: str, option: str) -> None:
    page.get_by_label(label, exact=True).first.click()  # a baseweb select: open it, pick the option
    page.get_by_role("option", name=option).first.click()


def test_train_stop_then_samples(server):
    from playwright.sync_api import expect, sync_playwright

    url, tmp = server
    t0 = time.time()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        page.set_default_timeout(60_000)
        expect.set_options(timeout=60_000)  # torch imports and reruns take seconds on a busy 2-core box
        try:
            # open the app (the entry point draws the navigation), then the Train page
            page.goto(url)
            expect(page.get_by_role("heading", name="Data")).to_be_visible()
            page.get_by_role("link", name="Train").click()
            expect(page.get_by_role("heading", name="Train")).to_be_visible()
            expect(page.get_by_text("No runs yet")).to_be_visible()

            # a tiny run from the form: the prepared 32 px set trained at 16 px on the CPU
            _select(page, "data", "hs32")
            _select(page, "res", "16")
            page.get_by_text("advanced", exact=True).click()
            _select(page, "device", "cpu")
            for name, value in FORM.items():
                box = page.locator(f'input[aria-label="{name}"]')
                box.fill(value)
                box.press("Tab")
            page.locator('input[aria-label="run_id"]').fill("e2e")
            page.get_by_role("button", name="Start").click()

            # the live curve grows without any click (st.fragment re-runs every 2 s)
            wait_for(lambda: (tmp / "runs" / "e2e" / "launch.json").is_file(), 30, "the run directory")
            n1 = wait_for(lambda: _points(page) >= 2 and _points(page), 120, "the first CSV rows on the curve")
            n2 = wait_for(lambda: _points(page) > n1 and _points(page), 60, "the curve to grow")
            assert n2 > n1 >= 2
            page.evaluate("() => document.querySelector('.js-plotly-plot').scrollIntoView()")
            page.screenshot(path="/tmp/e2e_train_running.png")

            page.get_by_role("button", name="Stop").click()
            stopped = page.get_by_text(re.compile(r"stopped · step \d+"))  # the selected run's status line
            expect(stopped).to_be_visible(timeout=90_000)
            expect(page.get_by_role("button", name="Resume")).to_be_enabled()
            assert (tmp / "runs" / "e2e" / "checkpoints" / "latest.json").is_file()
            stopped.scroll_into_view_if_needed()
            page.screenshot(path="/tmp/e2e_train_stopped.png")

            # the Samples page shows the stopped run's grid: one image row per class
            page.get_by_role("link", name="Samples").click()
            expect(page.get_by_role("heading", name="Samples")).to_be_visible()
            images = page.locator('[data-testid="stImage"] img')
            wait_for(lambda: images.count() >= 9, 120, "nine per-class sample rows")
            expect(page.get_by_text("e2e", exact=False).first).to_be_visible()
            page.screenshot(path="/tmp/e2e_samples.png")
        except Exception:
            page.screenshot(path="/tmp/e2e_failure.png", full_page=True)
            raise
        finally:
            browser.close()
    print(f"e2e took {time.time() - t0:.0f} s")
