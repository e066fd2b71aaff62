"""The Compare page's figures (ui/figures.py "Compare" section), checked through `fig.to_dict()`."""
import pandas as pd

from ui import figures


def test_compare_bars_error_bars_and_missing_runs():
    t = pd.DataFrame({"run": ["a", "b", "c"], "family": ["stylegan2", "dcgan", "ddpm"],
                      "kid": [0.1, 0.2, float("nan")], "kid_std": [0.01, 0.02, float("nan")]})
    bar = figures.compare_bars(t, "kid", "kid_std", "KID").to_dict()["data"][0]
    assert bar["x"] == ["a", "b"] and bar["error_y"]["array"] == [0.01, 0.02]  # c has no KID: no bar of 0
    assert figures.compare_bars(t, "kid", None, "KID").to_dict()["data"][0].get("error_y") is None


def test_compare_class_bars_one_trace_per_run():
    pc = pd.DataFrame({"run": ["a", "a", "b", "b"], "class": ["ADI", "TUM"] * 2, "kid": [1.0, 2.0, 3.0, 4.0],
                       "kid_std": [0.1, 0.2, 0.3, 0.4]})
    data = figures.compare_class_bars(pc, "kid", "kid_std", "KID per class").to_dict()["data"]
    assert [d["name"] for d in data] == ["a", "b"] and list(data[1]["y"]) == [3.0, 4.0]
    assert list(data[0]["error_y"]["array"]) == [0.1, 0.2]
    assert figures.compare_class_bars(pc, "fid", None, "FID").to_dict()["data"] == []


def test_compare_curves_overlay():
    a = pd.DataFrame({"step": [1, 2], "kimg": [0.004, 0.008], "acc": [0.5, 0.6]})
    b = pd.DataFrame({"step": [1, 2], "kimg": [0.004, 0.008], "loss": [1.0, 0.9]})
    data = figures.compare_curves({"a": a, "b": b, "c": a}, "acc").to_dict()["data"]
    assert [d["name"] for d in data] == ["a", "c"] and list(data[0]["x"]) == [0.004, 0.008]
