import json
import math
import os
import time

import psutil
import pytest
import torch

from engine.jobs.core import StatusWriter
from engine.train.logging import (CSV_COLUMNS, MetricsCSV, Stats, log_event, read_csv_rows,
                                  truncate_csv)

DESIGN_COLUMNS = ("epoch, step, kimg, d_loss, g_loss, real_mu, real_min, real_max, fake_mu, fake_min, "
                  "fake_max, ada_p, acc, acc_ema, alpha, r1, lr_g, lr_d, img_per_s, time_s")


def test_csv_columns_exactly_as_design_then_extras(tmp_path):
    assert ", ".join(CSV_COLUMNS) == DESIGN_COLUMNS
    csv = MetricsCSV(tmp_path / "m.csv", extras=("g_fm", "step"))
    csv.write({"step": 1, "kimg": 0.008, "alpha": None, "r1": float("nan"), "g_fm": 0.5})
    lines = (tmp_path / "m.csv").read_text().splitlines()
    assert lines[0] == ",".join(CSV_COLUMNS) + ",g_fm"
    row = read_csv_rows(tmp_path / "m.csv")[0]
    assert row["step"] == "1" and row["alpha"] == "" and row["r1"] == "" and row["d_loss"] == ""
    assert row["g_fm"] == "0.5"
    MetricsCSV(tmp_path / "m.csv", extras=("other",))  # reopening never writes a second header
    assert (tmp_path / "m.csv").read_text().count("epoch,") == 1


def test_truncate_keeps_rows_up_to_step_and_drops_torn_line(tmp_path):
    csv = MetricsCSV(tmp_path / "m.csv")
    for s in (2, 4, 6, 8):
        csv.write({"step": s, "d_loss": 0.1 * s})
    with open(tmp_path / "m.csv", "a") as f:
        f.write("0.5,10,0.0")  # a kill in the middle of an append
    assert truncate_csv(tmp_path / "m.csv", 6) == 3
    assert [r["step"] for r in read_csv_rows(tmp_path / "m.csv")] == ["2", "4", "6"]


def test_status_writer_fields_atomic_and_heartbeat_rate(tmp_path):
    st = StatusWriter(tmp_path / "status.json", every_s=3600)
    st.set("running", message="hi", step=3, kimg=0.024)
    d = json.loads((tmp_path / "status.json").read_text())
    assert {"state", "pid", "pgid", "create_time", "step", "kimg", "started_at", "heartbeat_at",
            "message"} <= set(d)
    assert d["state"] == "running" and d["pid"] == os.getpid() and d["step"] == 3
    assert abs(d["create_time"] - psutil.Process().create_time()) < 1
    assert abs(d["heartbeat_at"] - time.time()) < 60  # Unix seconds (engine.jobs reads floats)
    st.heartbeat(step=4, kimg=0.032)  # within every_s: not rewritten
    assert json.loads((tmp_path / "status.json").read_text())["step"] == 3
    st.every_s = 0
    st.heartbeat(step=5, kimg=0.04)
    assert json.loads((tmp_path / "status.json").read_text())["step"] == 5
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(AssertionError):
        st.set("exploded")


def test_events_jsonl(tmp_path, capsys):
    log_event(tmp_path, {"event": "saturation_watchdog", "step": 7})
    log_event(tmp_path, {"event": "x", "step": 8})
    lines = [json.loads(l) for l in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [e["step"] for e in lines] == [7, 8]
    assert "saturation_watchdog" in capsys.readouterr().out


def test_stats_mean_min_max_and_state_roundtrip():
    s = Stats()
    for v in (1.0, 2.0, 6.0):
        s.add("loss", torch.tensor(v))
        s.add_min("lo", v)
        s.add_max("hi", torch.tensor(v))
    s2 = Stats()
    s2.load_state_dict(s.state_dict())
    for st in (s, s2):
        r = st.result()
        assert r == {"loss": 3.0, "lo": 1.0, "hi": 6.0}
    s.reset()
    assert s.result() == {}
    assert not math.isnan(s2.result()["loss"])
