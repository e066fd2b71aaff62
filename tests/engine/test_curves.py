"""Incremental metrics reading (partial last line, resume rewrite) and the curve figures."""
import math

import pandas as pd
import pytest

from engine.train import curves
from engine.train.logging import CSV_COLUMNS, MetricsCSV, truncate_csv


def _row(step: int, **kw) -> dict:
    r = {c: None for c in CSV_COLUMNS}
    r.update(epoch=step / 10, step=step, kimg=step * 4 / 1000, d_loss=1.0 / step, g_loss=2.0 + step,
             acc=0.5, acc_ema=0.55, ada_p=0.01 * step, lr_g=4e-4, lr_d=7e-5, img_per_s=100.0 + step,
             time_s=float(step))
    r.update(kw)
    return r


@pytest.fixture
def csv_path(tmp_path):
    m = MetricsCSV(tmp_path / "metrics_gan.csv")
    for s in (1, 2, 3):
        m.write(_row(s))
    return m, tmp_path / "metrics_gan.csv"


def test_read_metrics_partial_last_line(csv_path):
    m, path = csv_path
    with open(path, "a") as f:
        f.write("0.4,4,0.016,0.25")  # the trainer is mid-append
    df, off = curves.read_metrics(path)
    assert list(df["step"]) == [1, 2, 3]
    assert list(df.columns[:len(CSV_COLUMNS)]) == list(CSV_COLUMNS)
    assert math.isnan(df["alpha"].iloc[0])  # empty cell = does not apply
    assert df["g_loss"].tolist() == [3.0, 4.0, 5.0]
    # nothing whole after the offset: no rows, offset unchanged
    df2, off2 = curves.read_metrics(path, off)
    assert df2.empty and off2 == off
    with open(path, "a") as f:
        f.write(",5.0" + "," * (len(CSV_COLUMNS) - 5) + "\n")  # the line is completed
    df3, off3 = curves.read_metrics(path, off)
    assert list(df3["step"]) == [4] and df3["g_loss"].iloc[0] == 5.0
    assert off3 == path.stat().st_size


def test_read_metrics_missing_or_headless(tmp_path):
    df, off = curves.read_metrics(tmp_path / "none.csv")
    assert df.empty and off == 0
    (tmp_path / "h.csv").write_text("epoch,step,ki")  # header still being written
    df, off = curves.read_metrics(tmp_path / "h.csv")
    assert df.empty and off == 0


def test_follow_metrics_incremental_and_resume_rewrite(csv_path):
    m, path = csv_path
    state: dict = {}
    assert list(curves.follow_metrics(path, state)["step"]) == [1, 2, 3]
    off = state["offset"]
    m.write(_row(4))
    assert list(curves.follow_metrics(path, state)["step"]) == [1, 2, 3, 4]
    assert state["offset"] > off
    # resume from a checkpoint at step 2: the CSV is rewritten (new file) and steps 3.. happen again
    truncate_csv(path, 2)
    m.write(_row(3, g_loss=-1.0))
    df = curves.follow_metrics(path, state)
    assert list(df["step"]) == [1, 2, 3]
    assert df["g_loss"].iloc[-1] == -1.0


def test_thin_keeps_last_row():
    df = pd.DataFrame({"step": range(10_001), "kimg": range(10_001)})
    t = curves.thin(df, 1000)
    assert len(t) <= 1001 and t["step"].iloc[-1] == 10_000 and t["step"].iloc[0] == 0


def test_figures(csv_path):
    _, path = csv_path
    df, _ = curves.read_metrics(path)
    cfg = {"ada": True, "ada_target": 0.6, "ada_p_max": 0.8, "domain_head": False}
    figs = curves.figures(df, cfg)
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

    alpha = curves.fig_alpha(df).to_dict()  # built on its own, an empty column gives a note, no trace
    assert not alpha["data"]
    assert alpha["layout"]["annotations"][0]["text"] == curves.NOT_APPLICABLE

    lr_axis = figs["lr"].to_dict()["layout"]["yaxis"]
    assert lr_axis["type"] == "log"
    assert (lr_axis["tickformat"], lr_axis["dtick"]) == (".0e", "D2")  # `2e-4`, not "2" / "100µ"
    assert list(figs["speed"].to_dict()["data"][0]["y"]) == [101.0, 102.0, 103.0]
    assert list(figs["ada_p"].to_dict()["data"][0]["y"]) == pytest.approx([0.01, 0.02, 0.03])


def test_figures_domain_head_lines():
    df = pd.DataFrame({"step": [1, 2], "kimg": [0.1, 0.2], "acc": [0.7, 0.8], "acc_ema": [0.7, 0.75],
                       "alpha": [0.0, 0.01]})
    figs = curves.figures(df, {"ada": False, "ada_target": 0.6, "domain_head": True, "alpha_on": 0.78,
                               "alpha_off": 0.7, "alpha_max": 0.5})
    ys = sorted(s["y0"] for s in figs["acc"].to_dict()["layout"]["shapes"])
    assert ys == [0.7, 0.78]  # ADA off -> no target line; the gate's hysteresis band instead
    alpha = figs["alpha"].to_dict()
    assert list(alpha["data"][0]["y"]) == [0.0, 0.01]
    assert alpha["layout"]["shapes"][0]["y0"] == 0.5


def test_figures_empty_frame():
    figs = curves.figures(pd.DataFrame(), {})
    assert len(figs) == 7  # before the first row nothing is known to be unused
    assert all(not f.to_dict()["data"] for f in figs.values())
    assert figs["losses"].to_dict()["layout"]["annotations"][0]["text"] == "no rows yet"
    # but a config with the domain head off already says alpha will never be drawn
    assert "alpha" not in curves.figures(pd.DataFrame(), {"domain_head": False})


def test_unused_curves_take_no_slot(csv_path):
    _, path = csv_path
    df, _ = curves.read_metrics(path)
    df["ada_p"] = float("nan")  # ADA off: an all-empty column
    figs = curves.figures(df, {"ada": False, "domain_head": False})
    assert "ada_p" not in figs and "alpha" not in figs and "ranges" not in figs
    df["alpha"] = 0.1
    assert "alpha" in curves.figures(df, {"domain_head": True})
