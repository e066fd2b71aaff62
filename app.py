"""HistoGen Lab: Streamlit entry point. A frame shared by all pages: navigation and the sidebar; a
reviewer's token link gets the review page alone; on an outside address the lab pages ask for the
access key (engine/access.py)."""
from __future__ import annotations

import os
import time

import streamlit as st

from engine import access
from engine.utils import data_root, device_label, runs_root
from ui import frame

# A local PNG: a `:material/...:` page icon makes the browser fetch the favicon from fonts.gstatic.com
# (an emoji one from a CDN), and the lab makes no request to any host but its own.
st.set_page_config(page_title="HistoGen Lab", page_icon=str(frame.FAVICON), layout="wide")


@st.cache_resource(show_spinner=False)
def _device() -> str:
    import torch

    if not torch.cuda.is_available():
        # Sampling in the app shares the CPU with background training runs: two threads fighting
        # a trainer for two cores were ~8x slower than one thread in bench/ui_latency.py.
        torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    return device_label()


@st.cache_resource(show_spinner="Preparing the built-in demo data set (histosynth)...")
def _ensure_demo(root: str, demo: frame.DemoSettings) -> str:
    # The lab must do its main job on a fresh machine with no download: the first start makes the
    # synthetic demo set (a few seconds) so every page has data to work on.
    from engine.data.dataset import ensure_demo
    from engine.jobs.classifier import ensure_classifier

    out = ensure_demo(size=demo.size, per_class=demo.per_class, seed=demo.seed)
    ensure_classifier(out)  # its domain classifier, in the background (minutes): Evaluate needs it
    return str(out)


# A reviewer's token link (`/review?token=...`): the review page alone. No navigation, no sidebar, no
# demo data, no access key: the token is the reviewer's identity, and the page shows one sentence for a
# bad one. Every other URL of the lab opens only through the branch below.
if st.query_params.get("token"):
    _review = frame.BY_PATH["pages/review.py"]
    pg = st.navigation([st.Page(_review.path, title=_review.title, icon=_review.icon, url_path=_review.url_path)],
                       position="hidden")
    with frame.frame():
        pg.run()
    st.stop()


@st.cache_resource(show_spinner=False)
def _first_exposed_start(root: str) -> None:
    # Once per server process: make the access key if there is none, and print it in the terminal
    # (the researcher's), never on a page.
    key = access.ensure_key(root)
    if key:
        print(f"\nHistoGen Lab listens on an outside address, so its pages ask for an access key.\n"
              f"Access key (shown once; only its hash is kept in {access.key_path(root)}):\n\n    {key}\n\n"
              "`python -m engine access reset` makes a new one.\n", flush=True)


def _locked() -> bool:
    """Whether this session must type the access key first: the server listens beyond this machine (the
    config binds 127.0.0.1; `--server.address 0.0.0.0` opens it) and the session has not typed the key.
    The typed key is checked on every run, so `engine access reset` locks out sessions with the old one."""
    if access.is_loopback(st.get_option("server.address")):
        return False
    _first_exposed_start(str(runs_root()))
    return not access.verify(st.session_state.get("_histogen_access_key"), runs_root())


def _key_prompt() -> None:
    st.title("HistoGen Lab · access key")
    st.write("This lab is reachable from the network, so its pages ask for the researcher's access key "
             "(once per browser session). Reviewers do not need it: their links open their review.")
    # A text box alone, no form: Enter sends it, and its value survives a rerun (a button's click would
    # not survive require_frame's rerun of a page's first run).
    typed = st.text_input("access key", type="password", key="access_key_input",
                          placeholder="paste the key and press Enter")
    if typed:
        if access.verify(typed, runs_root()):
            st.session_state["_histogen_access_key"] = typed  # a plain key: kept when the box is gone
            st.rerun()
        time.sleep(1)  # slows guessing; a generated key (192 random bits) cannot be guessed anyway
        st.error("That is not the access key.")
    st.caption(f"The key was printed in the terminal at the lab's first start on an outside address (or it is "
               f"`{access.ENV_KEY}`). Lost it? On the lab's machine, `python -m engine access reset` prints a new one.")


if _locked():
    # Hidden navigation: no page list, and the requested page stays in the URL for after the key. Not
    # inside frame.frame(): a page's require_frame() then sends every run of this session through here.
    st.navigation(frame.st_pages(), position="hidden")
    _key_prompt()
    st.stop()

pg = st.navigation(frame.st_pages())  # before anything slow, so the navigation is right from the first run

if os.environ.get("HISTOGEN_AUTO_DEMO", "1") != "0":
    try:
        _ensure_demo(str(data_root()), frame.demo_settings())
    except Exception as e:  # the Data page still works and shows how to prepare data by hand
        st.warning(f"Could not prepare the demo data set: {e}")


with st.sidebar:
    st.caption("HistoGen Lab")
    st.markdown(f"**Runs root**  \n`{runs_root()}`")
    st.markdown(f"**Data root**  \n`{data_root()}`")
    st.markdown(f"**Device**  \n{_device()}")

with frame.frame():
    pg.run()
