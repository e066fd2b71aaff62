"""HistoGen Lab: Streamlit entry point. A frame shared by all pages: navigation and the sidebar."""
from __future__ import annotations

import os

import streamlit as st

import ui_cache
import ui_nav
from engine.utils import data_root, device_label, runs_root

# A local PNG: a `:material/...:` page icon makes the browser fetch the favicon from fonts.gstatic.com
# (an emoji one from a CDN), and the lab makes no request to any host but its own.
st.set_page_config(page_title="HistoGen Lab", page_icon=str(ui_nav.FAVICON), layout="wide")


@st.cache_resource(show_spinner=False)
def _device() -> str:
    import torch

    if not torch.cuda.is_available():
        # Sampling in the app shares the CPU with background training runs: two threads fighting
        # a trainer for two cores were ~8x slower than one thread in bench/ui_latency.py.
        torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    return device_label()


@st.cache_resource(show_spinner="Preparing the built-in demo data set (histosynth)...")
def _ensure_demo(root: str, demo: ui_nav.DemoSettings) -> str:
    # The lab must do its main job on a fresh machine with no download: the first start makes the
    # synthetic demo set (a few seconds) so every page has data to work on.
    from engine.data.dataset import ensure_demo
    from engine.metrics.classifier_jobs import ensure_classifier

    out = ensure_demo(size=demo.size, per_class=demo.per_class, seed=demo.seed)
    ensure_classifier(out)  # its domain classifier, in the background (minutes): Evaluate needs it
    return str(out)


pg = st.navigation(ui_nav.st_pages())  # before anything slow, so the navigation is right from the first run

if os.environ.get("HISTOGEN_AUTO_DEMO", "1") != "0":
    try:
        _ensure_demo(str(data_root()), ui_nav.demo_settings())
    except Exception as e:  # the Data page still works and shows how to prepare data by hand
        st.warning(f"Could not prepare the demo data set: {e}")


with st.sidebar:
    st.caption("HistoGen Lab")
    st.markdown(f"**Runs root**  \n`{runs_root()}`")
    st.markdown(f"**Data root**  \n`{data_root()}`")
    st.markdown(f"**Device**  \n{_device()}")

with ui_cache.frame():
    pg.run()
