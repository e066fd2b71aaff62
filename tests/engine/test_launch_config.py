"""The launch path resolves a config once: config.json is launch.json with the run-time values filled in."""
import json

from engine import config as C
from engine.config import TrainConfig
from engine.train import loop
from tests.engine.test_train_loop import TINY

# What the trainer fills in at run time, and only when launch.json leaves it empty: `data` (the histosynth
# demo it prepares, engine.train.data.training_data_dir). Every other field is written as launched.
RUN_TIME_FIELDS = ("data",)


def _launch(run, **fields) -> TrainConfig:
    """launch.json as engine.jobs.start writes it: a validated config with its run_dir, every field."""
    flags = dict(zip((f[2:].replace("-", "_") for f in TINY[::2]), TINY[1::2]))
    cfg = C.from_dict(TrainConfig, {**C.preset_values("stylegan2"), **flags, "kimg": 0.008, "run_dir": str(run),
                                    **fields})
    run.mkdir(parents=True)
    C.save(cfg, run / "launch.json")
    return cfg


def test_config_json_equals_the_launch_config(tmp_path, data_dir):
    run = tmp_path / "r"
    launch = _launch(run, data=str(data_dir))
    before = (run / "launch.json").read_text()
    assert loop.main(["--config", str(run / "launch.json")]) == 0
    got = json.loads((run / "config.json").read_text())
    assert set(got) == {f for f in C.to_dict(launch)}
    for name, value in C.to_dict(launch).items():  # field by field, nothing excepted when data is given
        assert got[name] == value, name
    assert (run / "launch.json").read_text() == before  # the launch record is never rewritten


def test_only_the_run_time_fields_differ_and_the_callers_config_is_left_alone(tmp_path, data_dir, monkeypatch):
    import engine.data.dataset as ds

    monkeypatch.setattr(ds, "ensure_demo", lambda **kw: data_dir)  # the demo the trainer would prepare
    run = tmp_path / "r"
    launch = _launch(run, data="")
    mine = C.to_dict(launch)
    assert loop.train(launch) == 0
    assert C.to_dict(launch) == mine  # train() resolved a copy; the caller's object is as it was
    got = json.loads((run / "config.json").read_text())
    assert got["data"] == str(data_dir) and got["run_dir"] == str(run)
    assert {k: v for k, v in got.items() if k not in RUN_TIME_FIELDS} == \
        {k: v for k, v in mine.items() if k not in RUN_TIME_FIELDS}
