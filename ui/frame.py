"""The app frame: the lab's pages in their order, the frame every page runs in (`frame`, `require_frame`), the built-in demo set's settings, and the "next step" hint each page
ends with. Streamlit-side only (engine/ never imports this).

Icons: `:material/...:` icons of st.Page and st.page_link are drawn from the Material Symbols font that
Streamlit serves itself; only the *favicon* of st.set_page_config is fetched from fonts.gstatic.com when
given as a Material icon (and from a CDN when given as an emoji), so the favicon is a local file.
"""
from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import streamlit as st


ROOT = Path(__file__).resolve().parent.parent  # the repository (ui/ is one level down)
FAVICON = ROOT / "assets" / "favicon.png"


@dataclass(frozen=True)
class PageInfo:
    path: str       # relative to app.py, as st.Page and st.page_link take it
    title: str
    icon: str
    url_path: str


# The four steps of the lab, in order: data -> train -> samples / style mixing -> evaluate.
PAGES = (
    PageInfo("pages/home.py", "Home", ":material/home:", "home"),
    PageInfo("pages/data.py", "Data", ":material/dataset:", "data"),
    PageInfo("pages/train.py", "Train", ":material/model_training:", "train"),
    PageInfo("pages/samples.py", "Samples", ":material/photo_library:", "samples"),
    PageInfo("pages/style_mixing.py", "Style mixing", ":material/tune:", "style_mixing"),
    PageInfo("pages/evaluate.py", "Evaluate", ":material/analytics:", "evaluate"),
    PageInfo("pages/review.py", "Review", ":material/rate_review:", "review"),
    PageInfo("pages/compare.py", "Compare", ":material/compare:", "compare"),
)
BY_PATH = {p.path: p for p in PAGES}


def st_pages() -> list:
    """st.Page objects for st.navigation; Home is the default (the app's root URL)."""
    return [st.Page(p.path, title=p.title, icon=p.icon, url_path=p.url_path, default=p.url_path == "home")
            for p in PAGES]


@dataclass(frozen=True)
class DemoSettings:
    size: int
    per_class: int
    seed: int


def demo_settings() -> DemoSettings:
    """The demo set the app prepares on its first start: `histosynth` at the `demo` preset's resolution
    (32 px; the set and the first run on a CPU match, so its classifier judges samples at their size),
    200 patches per class.
    HISTOGEN_DEMO_SIZE / HISTOGEN_DEMO_PER_CLASS (the `size` / `per_class` of `engine prepare`) make it
    smaller, e.g. for the browser test on a 2-core CI box."""
    def _int(name: str, default: int) -> int:
        raw = os.environ.get(name, "").strip()
        try:
            return int(raw) if raw else default
        except ValueError:
            return default

    from engine.config import PRESETS

    return DemoSettings(size=_int("HISTOGEN_DEMO_SIZE", PRESETS["demo"]["res"]), per_class=_int("HISTOGEN_DEMO_PER_CLASS", 200),
                        seed=0)


def next_step(page: str, text: str) -> None:
    """The hint a page ends with: a link to the page that usually comes next (`page` is its path)."""
    info = BY_PATH[page]
    st.divider()
    st.page_link(page, label=f"Next · {info.title}: {text}", icon=":material/arrow_forward:")


# ----------------------------------------------------------------------------------------------
# The frame app.py runs every page in

_frame = threading.local()  # script runs of one session happen on one thread, one at a time


@contextlib.contextmanager
def frame():
    """app.py runs the chosen page inside this, so a page can tell it was reached through the frame."""
    _frame.active = True
    st.session_state["_histogen_frame"] = True
    try:
        yield
    finally:
        _frame.active = False


def require_frame() -> None:
    """First call of every page. On a freshly started server, Streamlit's first script run of an app
    that has a `pages/` folder uses the legacy multipage mode: a page URL opened directly runs that page
    alone, without app.py (no sidebar, wrong navigation). Switch the server to st.navigation, as
    app.py would have, and rerun: the rerun goes through app.py to the same page."""
    if getattr(_frame, "active", False) or st.session_state.get("_histogen_frame"):
        # (the second test: this session went through the frame before; AppTest re-enters the legacy
        # mode on every run, and a rerun there would drop the widget event being tested)
        return
    try:  # the switch st.navigation makes in app.py; the legacy path run here does not make it
        from streamlit.runtime.pages_manager import PagesManager

        PagesManager.uses_pages_directory = False
    except ImportError:  # a Streamlit without the legacy mode: nothing to switch
        pass
    st.rerun()
