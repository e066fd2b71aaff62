"""One way to open the app under AppTest: from the entry point (so st.navigation and the sidebar run),
with the runs/data roots already pointed at the test's tmp dir and no automatic demo preparation."""
from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]


def open_app(monkeypatch, page: str | None = None, *, run_first: bool = False,
             timeout: float = 60) -> AppTest:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("HISTOGEN_AUTO_DEMO", "0")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=timeout)
    if run_first:
        at.run()
    if page:
        at.switch_page(page)
    return at
