"""TensorBoard events beside metrics_gan.csv: the same numbers as the CSV, the config as text, resume
without doubled steps, and a run that still trains when the tensorboard package is missing."""
import json
import time
import sys

import pytest

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from engine.train.logging import CSV_COLUMNS, MetricsCSV, read_csv_rows, tb_tag, truncate_csv  # noqa: E402


def _events(run_dir) -> EventAccumulator:
    ea = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})  # 0 = keep every event
    ea.Reload()
    return ea


def _scalars(ea: EventAccumulator) -> dict[str, dict[int, float]]:
    return {tag: {e.step: e.value for e in ea.Scalars(tag)} for tag in ea.Tags()["scalars"]}


def _csv_as_scalars(path) -> dict[str, dict[int, float]]:
    """What TensorBoard should hold: every non-empty numeric cell of the CSV, keyed by tag and step."""
    out: dict[str, dict[int, float]] = {}
    for r in read_csv_rows(path):
        for col, cell in r.items():
            if cell not in ("", "nan"):
                out.setdefault(tb_tag(col), {})[int(r["step"])] = float(cell)
    return out


def _assert_same(tb: dict, csv: dict) -> None:
    assert set(tb) == set(csv)
    for tag in csv:
        assert sorted(tb[tag]) == sorted(csv[tag]), tag
        for step, v in csv[tag].items():
            assert tb[tag][step] == pytest.approx(v, rel=1e-6), (tag, step)  # events hold float32


def _row(step: int, **kw) -> dict:
    r = {"epoch": step / 10, "step": step, "kimg": step * 8 / 1000, "d_loss": 1.0 / step, "g_loss": 2.0 + step,
         "acc": 0.5, "ada_p": 0.01 * step, "alpha": None, "r1": float("nan"), "lr_g": 4e-4, "g_fm": 0.25,
         "img_per_s": 100.0 + step, "time_s": float(step)}
    r.update(kw)
    return r


def test_scalars_equal_csv_rows_and_config_text(tmp_path):
    cfg = {"family": "stylegan2", "res": 16, "ada_target": 0.6}
    with MetricsCSV(tmp_path / "metrics_gan.csv", extras=("g_fm",), tensorboard=True, config=cfg) as m:
        for s in (2, 4, 6):
            m.write(_row(s))
        ea = _events(tmp_path)  # readable while the writer is open: a live run's curves show up
        assert sorted(e.step for e in ea.Scalars("loss/d_loss")) == [2, 4, 6]
    assert list(tmp_path.glob("events.out.tfevents.*"))
    ea = _events(tmp_path)
    tb = _scalars(ea)
    _assert_same(tb, _csv_as_scalars(tmp_path / "metrics_gan.csv"))
    # tags grouped, the last part the CSV column; empty / NaN cells are no points at all
    assert {"loss/d_loss", "loss/g_loss", "ada/ada_p", "ada/acc", "lr/lr_g", "speed/img_per_s",
            "loss/g_fm", "progress/kimg"} <= set(tb)
    assert all(t.rsplit("/", 1)[-1] in CSV_COLUMNS + ("g_fm",) for t in tb)
    assert "domain/alpha" not in tb and "loss/r1" not in tb
    assert tb["loss/g_loss"] == {2: 4.0, 4: 6.0, 6: 8.0}
    # the resolved config once, as a JSON code block
    text = ea.Tensors("config/text_summary")
    assert len(text) == 1 and text[0].step == 0
    body = text[0].tensor_proto.string_val[0].decode()
    assert body.startswith("```json\n") and json.loads(body[len("```json\n"):-len("\n```")]) == cfg


def test_off_by_default_and_without_the_package(tmp_path, monkeypatch, capsys):
    MetricsCSV(tmp_path / "a" / "m.csv").write(_row(1))
    assert not list((tmp_path / "a").glob("events.out.tfevents.*"))
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # `import` now raises ImportError
    m = MetricsCSV(tmp_path / "b" / "m.csv", tensorboard=True, config={"x": 1})
    m.write(_row(1))
    m.close()
    assert m.tb is None and not list((tmp_path / "b").glob("events.out.tfevents.*"))
    assert [r["step"] for r in read_csv_rows(tmp_path / "b" / "m.csv")] == ["1"]  # the CSV as always
    warnings = [ln for ln in capsys.readouterr().out.splitlines() if "TensorBoard" in ln]
    assert len(warnings) == 1 and warnings[0].startswith("warning:")


def test_resume_after_kill_purges_events_past_the_checkpoint(tmp_path):
    path = tmp_path / "metrics_gan.csv"
    m = MetricsCSV(path, tensorboard=True, config={"kimg": 1})
    for s in (2, 4, 6, 8):
        m.write(_row(s))
    m.tb.flush()  # killed here (no close); the last checkpoint was at step 5
    truncate_csv(path, 5)
    # a resumed run is a later process: its event file is named by a later second (two files made in the
    # same second would be ordered by TensorBoard's file counter, which sorts "10" before "9")
    time.sleep(1.05)
    with MetricsCSV(path, tensorboard=True, config={"kimg": 2}, purge_step=5 + 1) as m2:
        for s in (6, 8, 10):
            m2.write(_row(s, g_loss=-float(s)))  # the steps after the checkpoint happen again
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 2
    ea = _events(tmp_path)
    tb = _scalars(ea)
    assert [e.step for e in ea.Scalars("loss/g_loss")] == [2, 4, 6, 8, 10]  # no step twice
    assert tb["loss/g_loss"] == {2: 4.0, 4: 6.0, 6: -6.0, 8: -8.0, 10: -10.0}  # the resumed values win
    _assert_same(tb, _csv_as_scalars(path))
    assert [t.step for t in ea.Tensors("config/text_summary")] == [0, 6]  # each session's config


def test_tiny_run_with_resume_writes_the_csv_curves(tmp_path, data_dir):
    from tests.engine.test_train_loop import train

    from engine.train import loop

    run = tmp_path / "run"
    assert train(run, data_dir, "--kimg", "0.064", "--stop-after", "3") == 0
    assert loop.main(["--resume", str(run)]) == 0
    ea = _events(run)
    tb = _scalars(ea)
    assert [e.step for e in ea.Scalars("loss/d_loss")] == [2, 4, 6, 8]
    _assert_same(tb, _csv_as_scalars(run / "metrics_gan.csv"))
    cfg = json.loads((run / "config.json").read_text())
    first = ea.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert json.loads(first[len("```json\n"):-len("\n```")])["res"] == cfg["res"] == 16
    off = tmp_path / "off"
    assert train(off, data_dir, "--kimg", "0.016", "--tensorboard", "false") == 0
    assert not list(off.glob("events.out.tfevents.*")) and read_csv_rows(off / "metrics_gan.csv")
