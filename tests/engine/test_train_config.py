import dataclasses
import json

import pytest

from engine import config as C
from engine.__main__ import main as cli
from engine.config import ConfigError, TrainConfig


def test_defaults_are_valid_and_documented():
    cfg = C.validate(TrainConfig())
    for f in dataclasses.fields(cfg):
        assert f.metadata.get("help"), f"field {f.name} has no help text"
        assert f.metadata.get("label"), f"field {f.name} has no label"  # what a form shows beside the name
    # The spec's values are the `spec` preset now, checked field by field (none skipped) against the
    # table in test_spec_table.py; the defaults are the stylegan2 preset.
    assert C.to_dict(cfg) == C.preset_values("stylegan2")
    assert cfg.domain_head is False and cfg.family == "stylegan2" and cfg.r1_lazy_scale is True


@pytest.mark.parametrize("field,value,needle", [
    ("r1_gamma", -1, "between 0.0 and inf"),
    ("res", 4, "one of: 8, 16, 32, 64, 128, 256"),
    ("res", 48, "one of: 8, 16, 32, 64, 128, 256"),
    ("res", 512, "one of: 8, 16, 32, 64, 128, 256"),  # the generator stops at 256 (it used to pass here)
    ("loss", "hinge", "one of: logistic, bce"),
    ("family", "vae", "one of: stylegan2, dcgan, mlp_gan, ddpm"),  # every family runs now
    ("batch", 6, "multiple of 'mbstd_group'"),
    ("alpha_off", 0.9, "'alpha_off' (0.9) must be below 'alpha_on'"),
    ("mixing_prob", 1.5, "between 0.0 and 1.0"),
])
def test_bad_values_name_field_and_range(field, value, needle):
    with pytest.raises(ConfigError) as e:
        C.from_dict(TrainConfig, {field: value})
    assert field in str(e.value) and needle in str(e.value)


def test_cli_bad_value_exits_2_before_anything_is_written(tmp_path, capsys):
    run = tmp_path / "run"
    rc = cli(["train", "--run-dir", str(run), "--r1-gamma", "-3"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "r1_gamma" in err and "between 0.0 and inf" in err
    assert not run.exists()


def test_cli_gpu_only_amp_on_cpu_exits_2(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    rc = cli(["train", "--run-dir", str(tmp_path / "r"), "--amp", "bf16"])
    assert rc == 2 and "'amp'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_dry_run_prints_resolved_config_with_config_file_and_flags(tmp_path, capsys):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"res": 32, "batch": 8, "r1_gamma": 2.5}))
    rc = cli(["train", "--config", str(f), "--batch", "12", "--dry-run"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert out["res"] == 32 and out["batch"] == 12 and out["r1_gamma"] == 2.5  # flags override the file
    assert set(out) == {f.name for f in dataclasses.fields(TrainConfig)}


def test_unknown_key_in_config_file_is_an_error(tmp_path, capsys):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"r1_gama": 1}))
    assert cli(["train", "--config", str(f), "--dry-run"]) == 2
    assert "r1_gama" in capsys.readouterr().err


def test_labels_and_offered_values():
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    assert C.field_label(fields["lr_g"]) == "G learning rate · lr_g"  # phrase beside the one name
    labels = [f.metadata["label"] for f in fields.values()]
    assert len(set(labels)) == len(labels)  # two fields never read the same
    assert C.offered(fields["res"]) == C.RES_CHOICES == (8, 16, 32, 64, 128, 256)
    assert C.offered(fields["family"]) == C.IMPLEMENTED_FAMILIES  # only families that run
    assert C.offered(fields["loss"]) == ("logistic", "bce") and C.offered(fields["batch"]) is None
    for res in C.RES_CHOICES:  # every size a form offers builds a generator
        from engine.models.stylegan2 import _check_res

        _check_res(res)


@pytest.mark.parametrize("field", ["alpha_tau", "alpha_dalpha", "watchdog_factor", "watchdog_threshold",
                                   "watchdog_alpha_factor"])
def test_zero_is_refused_where_the_controllers_need_a_positive_value(field):
    # These passed validation (inclusive range 0..1) and then AlphaGate / SaturationWatchdog raised a
    # bare ValueError when the run started.
    # alpha_tau is a time constant in steps: no upper bound to quote
    hi = "" if field == "alpha_tau" else " and at most 1.0"
    with pytest.raises(ConfigError, match=rf"'{field}' must be above 0.0{hi} \(got 0.0\)"):
        C.validate(TrainConfig(**{field: 0.0}))
    C.validate(TrainConfig(**{field: 1.0}))


def test_watchdog_defaults_follow_the_spec():
    cfg = C.validate(TrainConfig())
    assert (cfg.watchdog_threshold, cfg.watchdog_factor, cfg.watchdog_floor, cfg.watchdog_alpha_factor,
            cfg.watchdog_alpha_floor, cfg.watchdog_log_every) == (0.75, 0.9, 0.005, 0.95, 0.1, 50)
