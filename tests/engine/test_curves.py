"""Incremental metrics reading (partial last line, resume rewrite) and thinning; the curve figures are
tested in tests/ui/test_figures.py."""
import math

import pandas as pd

from engine.train import curves
from engine.train.logging import CSV_COLUMNS, truncate_csv
from tests.fixtures_runs import metrics_row




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
    m.write(metrics_row(4))
    assert list(curves.follow_metrics(path, state)["step"]) == [1, 2, 3, 4]
    assert state["offset"] > off
    # resume from a checkpoint at step 2: the CSV is rewritten (new file) and steps 3.. happen again
    truncate_csv(path, 2)
    m.write(metrics_row(3, g_loss=-1.0))
    df = curves.follow_metrics(path, state)
    assert list(df["step"]) == [1, 2, 3]
    assert df["g_loss"].iloc[-1] == -1.0


def test_thin_keeps_last_row():
    df = pd.DataFrame({"step": range(10_001), "kimg": range(10_001)})
    t = curves.thin(df, 1000)
    assert len(t) <= 1001 and t["step"].iloc[-1] == 10_000 and t["step"].iloc[0] == 0
