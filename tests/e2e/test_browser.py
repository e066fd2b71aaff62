"""End to end in a real browser, on empty runs and data roots, as a new user clicks through the lab:
first start (the demo set is prepared, its domain classifier trains in the background) -> Home -> start a
tiny run on the Train page -> its curve grows -> Stop -> Samples -> Style mixing -> Home shows the
classifier ready -> Evaluate at the page's defaults gives numeric FID / KID per class. Every request the
browser makes is recorded, and the test fails on any that leaves 127.0.0.1 (the lab works offline).
Screenshots go to /tmp/e2e_*.png; the time from the first request to each milestone is printed.

Playwright drives Debian's chromium (`apt-get install -y chromium`; .ci/run installs it) against
`streamlit run app.py` on a free localhost port, in its own process group, with runs and data in tmp.
The demo set is made small (HISTOGEN_DEMO_SIZE / HISTOGEN_DEMO_PER_CLASS) so the whole flow stays within
a few minutes on 2 CPU cores.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# E2E_DEMO_SIZE / E2E_DEMO_PER_CLASS=200 time the flow on the app's real first-start demo set (32 px, 200
# per class; the classifier then takes minutes, so the waits below scale with it). 30 per class, not
# fewer: the held-out eval split (10 %) that FID/KID compare with by default needs 3 tiles per class.
_SIZE, _PER_CLASS = os.environ.get("E2E_DEMO_SIZE", "32"), os.environ.get("E2E_DEMO_PER_CLASS", "30")
DEMO = f"histosynth-{_SIZE}"
DEMO_ENV = {"HISTOGEN_DEMO_SIZE": _SIZE, "HISTOGEN_DEMO_PER_CLASS": _PER_CLASS}
SLOW = max(1.0, int(_SIZE) * int(_PER_CLASS) / (32 * 12) / 8)  # wait factor for a larger demo set
LOCAL_HOSTS = ("127.0.0.1", "localhost")
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


def _kill_recorded(path: Path) -> None:
    """Kill the process group a status.json records (trainers and data jobs run in their own session)."""
    try:
        pid = json.loads(path.read_text()).get("pid")
    except (OSError, ValueError):
        return
    if pid:
        try:
            os.killpg(int(pid), signal.SIGKILL)
        except (ProcessLookupError, PermissionError, ValueError):
            pass


@pytest.fixture
def server(tmp_path):
    """The app on empty roots, as on a fresh machine: its first start prepares the (small) demo set."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not found: apt-get install -y chromium (.ci/run does it)")
    port = _free_port()
    env = dict(os.environ, HISTOGEN_RUNS=str(tmp_path / "runs"), HISTOGEN_DATA=str(tmp_path / "data"),
               HISTOGEN_AUTO_DEMO="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **DEMO_ENV)
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
        for st in [*(tmp_path / "runs").glob("*/status.json"), *(tmp_path / "runs").glob("*/eval/jobs/*/status.json"),
                   *(tmp_path / "data").glob(".jobs/*/status.json")]:
            _kill_recorded(st)
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        log.close()


def _points(page) -> int:
    """Points in the first trace of the first plotly chart (the losses), 0 before it is drawn."""
    return page.evaluate("""() => {
        const p = document.querySelector('.js-plotly-plot');
        return p && p.data && p.data.length ? p.data[0].x.length : 0; }""")


def _label(name: str) -> str:
    """The form's label of a config field (`G learning rate · lr_g`)."""
    import dataclasses

    from engine import config as C
    return C.field_label(next(f for f in dataclasses.fields(C.TrainConfig) if f.name == name))


def _select(page, label: str, option: str) -> None:
    page.get_by_label(_label(label), exact=True).first.click()  # a baseweb select: open it, pick the option
    page.get_by_role("option", name=option).first.click()


def _nav(page, title: str, heading: str | None = None) -> None:
    """Open a page from the sidebar navigation (page bodies link to other pages too) and wait for its
    title (`heading`, default the page's name)."""
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title).click()
    page.get_by_role("heading", name=heading or title, exact=True).first.wait_for()


def _report(tmp: Path, run_id: str) -> dict | None:
    """The newest finished evaluation report of a run on disk, None before there is one."""
    from engine.metrics import report as R

    done = [r for r in R.list_reports(tmp / "runs" / run_id) if R.report_state(r) != "failed"]
    return done[-1] if done else None


def _numeric(v) -> bool:
    return isinstance(v, (int, float)) and v == v and abs(v) != float("inf")


def test_main_flow_offline(server):
    from playwright.sync_api import expect, sync_playwright

    url, tmp = server
    t0, milestones = time.time(), {}

    def mark(name: str) -> None:
        milestones[name] = round(time.time() - t0)
        print(f"e2e {milestones[name]:>4} s  {name}", flush=True)

    external: list[str] = []

    def record(url_: str) -> None:
        if urlparse(url_).scheme in ("data", "blob", "about"):
            return
        if urlparse(url_).hostname not in LOCAL_HOSTS:
            external.append(url_)

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1800})
        context.on("request", lambda r: record(r.url))  # every page, frame and worker of the context
        page = context.new_page()
        page.on("websocket", lambda ws: record(ws.url))
        page.set_default_timeout(60_000)
        expect.set_options(timeout=60_000)  # torch imports and reruns take seconds on a busy 2-core box
        try:
            # first start: the app's root URL is the Home page; its first run prepares the demo set
            page.goto(url)
            expect(page.get_by_role("heading", name="HistoGen Lab")).to_be_visible(timeout=180_000)
            expect(page.get_by_text(f"prepared: {DEMO}").first).to_be_visible(timeout=180_000)
            assert (tmp / "data" / DEMO / "dataset.json").is_file()
            mark("demo data prepared (Home)")
            expect(page.get_by_text("no runs yet").first).to_be_visible()
            page.screenshot(path="/tmp/e2e_home_first.png")

            # a tiny run from the Train form: the 32 px demo set trained at 16 px on the CPU
            _nav(page, "Train")
            expect(page.get_by_text("No runs yet")).to_be_visible()
            _select(page, "data", DEMO)
            _select(page, "res", "16")
            page.get_by_text("advanced", exact=True).first.click()
            _select(page, "device", "cpu")
            for name, value in FORM.items():
                box = page.locator(f'input[aria-label="{_label(name)}"]')
                box.fill(value)
                box.press("Tab")
            page.locator('input[aria-label="run id · run_id"]').fill("e2e")
            page.get_by_role("button", name="Start", exact=True).click()
            mark("run started")

            # the live curve grows without any click (st.fragment re-runs every 2 s)
            wait_for(lambda: (tmp / "runs" / "e2e" / "launch.json").is_file(), 30, "the run directory")
            n1 = wait_for(lambda: _points(page) >= 2 and _points(page), 120, "the first CSV rows on the curve")
            mark("curve drawn")
            n2 = wait_for(lambda: _points(page) > n1 and _points(page), 60, "the curve to grow")
            assert n2 > n1 >= 2
            mark("curve grew")
            page.evaluate("() => document.querySelector('.js-plotly-plot').scrollIntoView()")
            page.screenshot(path="/tmp/e2e_train_running.png")

            # in the page's main area: while a script run is in flight, Streamlit's header has a "Stop" too
            page.get_by_role("main").get_by_role("button", name="Stop", exact=True).first.click()
            stopped = page.get_by_text(re.compile(r"stopped · step \d+"))  # the selected run's status line
            expect(stopped.first).to_be_visible(timeout=90_000)
            expect(page.get_by_role("button", name="Resume")).to_be_enabled()
            assert (tmp / "runs" / "e2e" / "checkpoints" / "latest.json").is_file()
            mark("run stopped")
            stopped.first.scroll_into_view_if_needed()
            page.screenshot(path="/tmp/e2e_train_stopped.png")

            # Samples: the stopped run's grid, one image row per class
            _nav(page, "Samples")
            images = page.locator('[data-testid="stImage"] img')
            wait_for(lambda: images.count() >= 9, 120, "nine per-class sample rows")
            expect(page.get_by_text("e2e", exact=False).first).to_be_visible()
            mark("samples shown")
            page.screenshot(path="/tmp/e2e_samples.png")

            # Style mixing: source, donor and their mix
            _nav(page, "Style mixing")
            expect(page.get_by_text("mixed", exact=True).first).to_be_visible(timeout=120_000)
            wait_for(lambda: images.count() >= 3, 60, "the source, donor and mixed images")
            mark("style mixing shown")
            page.screenshot(path="/tmp/e2e_style_mixing.png")

            # the demo set's domain classifier, trained in the background since the first start
            wait_for(lambda: (tmp / "data" / DEMO / "classifier.pt").is_file(), 180 * SLOW, "the demo set's classifier")
            _nav(page, "Home", "HistoGen Lab")
            expect(page.get_by_text(re.compile(rf"of {re.escape(DEMO)}: ready")).first).to_be_visible()
            expect(page.get_by_text(re.compile(r"1 run\(s\)")).first).to_be_visible()
            mark("classifier ready (Home)")
            page.screenshot(path="/tmp/e2e_home_after.png")

            # Evaluate at the page's defaults: a report with numeric FID / KID for every class
            _nav(page, "Evaluate")
            start = page.get_by_role("button", name="Start evaluation")
            expect(start).to_be_enabled(timeout=120_000)
            start.click()
            mark("evaluation started")
            rep = wait_for(lambda: _report(tmp, "e2e"), 300 * SLOW, "a finished evaluation report")
            from engine.metrics import report as R

            table = R.per_class_table(rep)
            assert len(table) == 9, table
            bad = {c: (r["fid"], r["kid"]) for c, r in table.iterrows()
                   if not (_numeric(r["fid"]) and _numeric(r["kid"]))}
            assert not bad, f"classes without a numeric FID / KID: {bad}"
            expect(page.get_by_role("heading", name="Per class")).to_be_visible(timeout=60_000)
            mark("evaluation report shown")
            page.screenshot(path="/tmp/e2e_evaluate.png")
        except Exception:
            page.screenshot(path="/tmp/e2e_failure.png", full_page=True)
            raise
        finally:
            context.close()
            browser.close()
            print(f"e2e milestones (s from the start of the test): {milestones}")
            if external:
                print(f"requests that left localhost: {sorted(set(external))}")
    assert not external, f"requests left localhost: {sorted(set(external))}"
