"""AppTest: the Style mixing page with an empty runs root and with a tiny finished run."""

import numpy as np
from streamlit.testing.v1 import AppTest

from tests.pages.apptest import open_app

from engine import sampling
from engine.utils import runs_root
from tests.fixtures_runs import make_tiny_run



def _page(monkeypatch) -> AppTest:
    return open_app(monkeypatch, "pages/style_mixing.py")


def test_style_mixing_page_empty_root(monkeypatch):
    at = _page(monkeypatch).run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Style mixing"
    assert any("No run with a checkpoint" in i.value and "Train" in i.value for i in at.info)
    assert not at.get("image")


def test_style_mixing_page_tiny_run(monkeypatch):
    run = make_tiny_run(runs_root())
    at = _page(monkeypatch).run()
    assert not at.exception, at.exception
    assert len(at.get("image")) == 3  # source | donor | mixed
    assert len(at.get("download_button")) == 1
    G = sampling.load_generator(run)[0]
    n = G.num_ws
    # crossover select: its options are 0..num_ws, labelled with the layer name and group
    cross = at.selectbox(key=f"mix_cross_{n}")
    assert cross.options[0].startswith("0: 4x4 conv (coarse)") and cross.options[n].endswith("none (source only)")
    cross.set_value(n).run()
    assert not at.exception, at.exception
    # per-layer sliders: one per w input, labelled by resolution and group; moving one reruns the image
    at.radio(key="mix_mode").set_value("per-layer sliders").run()
    assert not at.exception, at.exception
    labels = [s.label for s in at.slider if s.key.startswith("mix_w_")]
    assert labels == [f"{g['name']} ({g['group']})" for g in sampling.layer_groups(G)]
    at.selectbox(key="mix_dst_class_tiny").set_value("TUM")
    at.slider(key=f"mix_w_{n}_0").set_value(1.0).run()
    assert not at.exception, at.exception
    assert len(at.get("image")) == 3
    mix = [1.0] + [0.0] * (n - 4) + [1.0] * 3
    panel = at.session_state["mix_panel"]
    assert np.array_equal(panel[2], sampling.style_mix(G, (0, 0), (8, 1), mix, truncation=0.7))
    assert np.array_equal(panel[1], sampling.style_mix(G, (0, 0), (8, 1), [1.0] * n, truncation=0.7))
    assert any("rendered in" in c.value for c in at.caption)
