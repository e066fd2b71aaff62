"""HistoGen Lab: Streamlit entry point. A frame shared by all pages: navigation and the sidebar."""
from __future__ import annotations

import os

import streamlit as st

import ui_cache
from engine.utils import data_root, device_label, runs_root

st.set_page_config(page_title="HistoGen Lab", page_icon=":material/biotech:", layout="wide")


@st.cache_resource(show_spinner=False)
def _device() -> str:
    import torch

    if not torch.cuda.is_available():
        # Sampling in the app shares the CPU with background training runs: two threads fighting
        # a trainer for two cores were ~8x slower than one thread in bench/ui_latency.py.
        torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    return device_label()


@st.cache_resource(show_spinner="Preparing the built-in demo data set (histosynth, 64 px)...")
def _ensure_demo(root: str) -> str:
    # The lab must do its main job on a fresh machine with no download: the first start makes the
    # synthetic demo set (a few seconds) so every page has data to work on.
    from engine.data.dataset import ensure_demo

    return str(ensure_demo(size=64, per_class=200, seed=0))


pages = [
    st.Page("pages/data.py", title="Data", icon=":material/dataset:", url_path="data", default=True),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:", url_path="train"),
    st.Page("pages/samples.py", title="Samples", icon=":material/photo_library:", url_path="samples"),
    st.Page("pages/style_mixing.py", title="Style mixing", icon=":material/tune:", url_path="style_mixing"),
    st.Page("pages/evaluate.py", title="Evaluate", icon=":material/analytics:", url_path="evaluate"),
]
pg = st.navigation(pages)  # before anything slow, so the navigation is right from the first run

if os.environ.get("HISTOGEN_AUTO_DEMO", "1") != "0":
    try:
        _ensure_demo(str(data_root()))
    except Exception as e:  # the Data page still works and shows how to prepare data by hand
        st.warning(f"Could not prepare the demo data set: {e}")


with st.sidebar:
    st.caption("HistoGen Lab")
    st.markdown(f"**Runs root**  \n`{runs_root()}`")
    st.markdown(f"**Data root**  \n`{data_root()}`")
    st.markdown(f"**Device**  \n{_device()}")

with ui_cache.frame():
    pg.run()
