"""The plotly figures of the pages (ui/figures.py): the Train curves from metrics_gan.csv rows and the
Evaluate charts from report tables, checked through `fig.to_dict()`."""
import pandas as pd
import pytest

from engine.train import curves
from ui import figures




def test_figures(csv_path):
    _, path = csv_path
    df, _ = curves.read_metrics(path)
    cfg = {"ada": True, "ada_target": 0.6, "ada_p_max": 0.8, "domain_head": False}
    figs = figures.figures(df, cfg)
    # no slot for what the run does not use: alpha (domain head off), pixel ranges (empty columns)
    assert list(figs) == ["losses", "acc", "ada_p", "lr", "speed"]

    losses = figs["losses"].to_dict()
    names = [t["name"] for t in losses["data"]]
    assert names == ["d_loss", "g_loss"]  # r1 column empty -> no trace
    assert list(losses["data"][1]["y"]) == [3.0, 4.0, 5.0]
    assert list(losses["data"][0]["x"]) == pytest.approx([0.004, 0.008, 0.012])
    assert losses["layout"]["xaxis"]["title"]["text"] == "kimg"

    acc = figs["acc"].to_dict()
    assert [t["name"] for t in acc["data"]] == ["acc", "acc_ema"]
    shapes = acc["layout"]["shapes"]
    assert len(shapes) == 1 and shapes[0]["y0"] == shapes[0]["y1"] == 0.6  # the ADA target line

    alpha = figures.fig_alpha(df).to_dict()  # built on its own, an empty column gives a note, no trace
    assert not alpha["data"]
    assert alpha["layout"]["annotations"][0]["text"] == figures.NOT_APPLICABLE

    lr_axis = figs["lr"].to_dict()["layout"]["yaxis"]
    assert lr_axis["type"] == "log"
    assert (lr_axis["tickformat"], lr_axis["dtick"]) == (".0e", "D2")  # `2e-4`, not "2" / "100µ"
    assert list(figs["speed"].to_dict()["data"][0]["y"]) == [101.0, 102.0, 103.0]
    assert list(figs["ada_p"].to_dict()["data"][0]["y"]) == pytest.approx([0.01, 0.02, 0.03])


def test_figures_domain_head_lines():
    df = pd.DataFrame({"step": [1, 2], "kimg": [0.1, 0.2], "acc": [0.7, 0.8], "acc_ema": [0.7, 0.75],
                       "alpha": [0.0, 0.01]})
    figs = figures.figures(df, {"ada": False, "ada_target": 0.6, "domain_head": True, "alpha_on": 0.78,
                               "alpha_off": 0.7, "alpha_max": 0.5})
    ys = sorted(s["y0"] for s in figs["acc"].to_dict()["layout"]["shapes"])
    assert ys == [0.7, 0.78]  # ADA off -> no target line; the gate's hysteresis band instead
    alpha = figs["alpha"].to_dict()
    assert list(alpha["data"][0]["y"]) == [0.0, 0.01]
    assert alpha["layout"]["shapes"][0]["y0"] == 0.5


def test_figures_empty_frame():
    figs = figures.figures(pd.DataFrame(), {})
    assert len(figs) == 7  # before the first row nothing is known to be unused
    assert all(not f.to_dict()["data"] for f in figs.values())
    assert figs["losses"].to_dict()["layout"]["annotations"][0]["text"] == "no rows yet"
    # but a config with the domain head off already says alpha will never be drawn
    assert "alpha" not in figures.figures(pd.DataFrame(), {"domain_head": False})


def test_unused_curves_take_no_slot(csv_path):
    _, path = csv_path
    df, _ = curves.read_metrics(path)
    df["ada_p"] = float("nan")  # ADA off: an all-empty column
    figs = figures.figures(df, {"ada": False, "domain_head": False})
    assert "ada_p" not in figs and "alpha" not in figs and "ranges" not in figs
    df["alpha"] = 0.1
    assert "alpha" in figures.figures(df, {"domain_head": True})


# ----------------------------------------------------------------------------------------------
# Evaluate page

def test_bars_with_error_bars_and_missing_columns():
    table = pd.DataFrame({"kid": [0.1, 0.2], "kid_std": [0.01, 0.02], "fid": [5.0, 6.0]}, index=["ADI", "TUM"])
    d = figures.bars(table, [("kid", "kid_std", "KID"), ("absent", None, "x")], "KID per class", "KID").to_dict()
    assert [t["name"] for t in d["data"]] == ["KID"]  # a column the report lacks draws no bar
    assert list(d["data"][0]["x"]) == ["ADI", "TUM"] and list(d["data"][0]["error_y"]["array"]) == [0.01, 0.02]
    assert d["layout"]["barmode"] == "group"


def test_history_one_panel_per_metric_and_markers_kept_apart():
    hist = pd.DataFrame({"step": [100, 200, 200], "fid": [30.0, 20.0, 21.0], "precision": [0.5, 0.6, 0.6],
                         "recall": [0.4, 0.5, 0.5], "kid": [float("nan")] * 3})
    d = figures.history_figure(hist).to_dict()
    assert [a["text"] for a in d["layout"]["annotations"]] == ["FID", "precision / recall"]  # KID all empty
    assert [t["name"] for t in d["data"]] == ["FID", "precision", "recall"]
    xs = list(d["data"][0]["x"])
    assert xs[1] != xs[2] and all(abs(x - s) <= 0.3 * 100 for x, s in zip(xs, hist["step"]))
    assert list(d["layout"]["xaxis2"]["tickvals"]) == [100, 200]  # integer steps on x


def test_confusion_and_stain_figures():
    d = figures.confusion_figure([[3, 1], [0, 4]], ["ADI", "TUM"], "trained on real").to_dict()
    assert d["data"][0]["type"] == "heatmap" and d["layout"]["yaxis"]["autorange"] == "reversed"
    stain = {"edges": [0.0, 0.5, 1.0], "H": {"real": [1.0, 2.0], "generated": [1.5, 1.5]},
             "E": {"real": [0.5, 0.5], "generated": [0.2, 0.8]}}
    s = figures.stain_figure(stain)
    assert [t.name for t in s.data] == ["H real", "H generated", "E real", "E generated"]
    assert list(s.data[0].x) == [0.25, 0.75]  # bin centres


def test_data_page_figures():
    counts = pd.DataFrame({"train": [5, 3, 8], "val": [1, 1, 2], "eval": [2, 0, 2]}, index=["ADI", "TUM", "total"])
    fig = figures.counts_figure(counts, ["train", "val"])
    assert [t.name for t in fig.data] == ["train", "val"]
    assert list(fig.data[0].x) == ["ADI", "TUM"] and list(fig.data[0].y) == [5, 3]  # no total bar
    od = pd.DataFrame({"od_r": [0.2, 0.3], "od_b": [0.5, 0.1], "n": [4, 4]}, index=["ADI", "TUM"])
    fig = figures.optical_density_figure(od)
    assert [t.name for t in fig.data] == ["od_r", "od_b"]
    assert figures.optical_density_figure(od[["n"]]) is None
