"""Presets: preset <- --config file <- flags, the record in config.json, --dry-run, and the
default preset by device."""
import json

import pytest
import torch

from engine import config as C
from engine.__main__ import main as cli
from engine.config import TrainConfig
from engine.train.loop import parse_args


@pytest.fixture
def cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_default_preset_by_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert C.default_preset() == "spec"
    assert parse_args([])[0].preset == "spec" and parse_args([])[0].res == 256
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert C.default_preset() == "demo"
    cfg = parse_args([])[0]
    assert cfg.preset == "demo"
    # demo = the measured CPU first run (bench/demo_quality.py): its values over the defaults
    assert C.to_dict(cfg) == {**C.to_dict(TrainConfig()), **C.PRESETS["demo"], "preset": "demo"}


def test_demo_is_a_tiny_labelmap_net_that_trains_on_the_cpu():
    from engine.models.stylegan2 import Discriminator, Generator, count_params, generator_kwargs

    cfg = C.to_dict(C.from_dict(TrainConfig, C.preset_values("demo")))
    G = Generator(**generator_kwargs(cfg, 9))
    D = Discriminator(32, 9, channel_base=cfg["channel_base"], channel_max=cfg["channel_max"],
                      d_cond=cfg["d_cond"])
    spec = C.to_dict(C.from_dict(TrainConfig, C.preset_values("spec")))
    spec_g = Generator(**generator_kwargs({**spec, "res": 32}, 9))
    # the point of the preset: steps per second on a CPU, so a net far smaller than the spec's at 32 px
    assert count_params(G) * 20 < count_params(spec_g)
    assert D.from_rgb.parametrizations.weight.original.shape[1] == 4  # the class map beside RGB
    real, y = torch.rand(8, 3, 32, 32) * 2 - 1, torch.arange(8) % 9
    assert D(G(torch.randn(8, cfg["z_dim"]), y), y).shape == (8,) and D(real, y).isfinite().all()


def test_every_preset_is_valid_and_stylegan2_is_the_defaults():
    for name in C.PRESET_NAMES:
        assert C.preset_values(name)["preset"] == name
        assert set(C.PRESETS[name]) <= set(C.to_dict(TrainConfig()))  # only existing fields
    assert C.preset_values("stylegan2") == C.to_dict(TrainConfig())
    with pytest.raises(C.ConfigError, match="'preset' must be one of: spec, stylegan2, demo"):
        C.preset_values("paper")


def test_spec_values():
    v = C.preset_values("spec")
    assert (v["res"], v["batch"], v["z_dim"], v["w_dim"], v["n_mlp"]) == (256, 8, 512, 512, 8)
    assert (v["r1_gamma"], v["r1_every"], v["drift"], v["stats_weight"], v["saturation_weight"]) == (
        15.0, 8, 1e-3, 3e-3, 0.05)
    assert (v["lr_g"], v["lr_d"], v["beta1"], v["beta2"], v["ema_beta"]) == (4e-4, 7e-5, 0.0, 0.99, 0.9995)
    assert v["alpha_max"] == 0.15
    # 400 / 800 steps at batch 8
    assert v["sample_kimg"] == pytest.approx(3.2) and v["snap_kimg"] == pytest.approx(6.4)


def test_resolution_order_preset_then_file_then_flag(tmp_path, cpu):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"res": 32, "alpha_max": 0.3}))
    cfg, _ = parse_args(["--preset", "spec", "--config", str(f), "--alpha-max", "0.2"])
    assert cfg.preset == "spec"
    assert cfg.batch == 8 and cfg.amp == "off"  # from the preset: the file does not name them
    assert cfg.res == 32                        # the file over the preset
    assert cfg.alpha_max == 0.2                 # the flag over the file
    # the file may name the preset; a flag still wins over it
    f.write_text(json.dumps({"preset": "spec", "lr_d": 1e-4}))
    cfg, _ = parse_args(["--config", str(f)])
    assert (cfg.preset, cfg.res, cfg.lr_d) == ("spec", 256, 1e-4)
    cfg, _ = parse_args(["--config", str(f), "--preset", "stylegan2"])
    assert (cfg.preset, cfg.res, cfg.lr_d) == ("stylegan2", 64, 1e-4)


def test_dry_run_prints_every_resolved_value(capsys, cpu):
    assert cli(["train", "--preset", "spec", "--dry-run", "--kimg", "0.5"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {**C.preset_values("spec"), "kimg": 0.5}


def test_bad_preset_exits_2(capsys, cpu):
    assert cli(["train", "--preset", "paper", "--dry-run"]) == 2
    assert "'preset'" in capsys.readouterr().err


def test_config_json_records_preset_and_resume_keeps_it(tmp_path, cpu, data_dir):
    """A tiny run records the preset with every resolved value; resume reads it back unchanged, and a
    config.json from before presets resumes as the stylegan2 preset (the defaults it trained on)."""
    run = tmp_path / "run"
    rc = cli(["train", "--preset", "stylegan2", "--data", str(data_dir), "--run-dir", str(run),
              "--res", "8", "--batch", "4", "--kimg", "0.004", "--channel-base", "64", "--channel-max", "8", "--z-dim", "8",
              "--w-dim", "8", "--n-mlp", "1", "--workers", "0", "--log-kimg", "0.004",
              "--sample-kimg", "0.004", "--snap-kimg", "0.004", "--grid-per-class", "1"])
    assert rc == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["preset"] == "stylegan2" and set(saved) == set(C.to_dict(TrainConfig()))
    cfg, _ = parse_args(["--resume", str(run)])
    assert cfg.preset == "stylegan2" and cfg.res == 8
    del saved["preset"]
    (run / "config.json").write_text(json.dumps(saved))
    cfg, _ = parse_args(["--resume", str(run), "--kimg", "0.016"])  # no "preset cannot change"
    assert cfg.preset == "stylegan2" and cfg.kimg == 0.016


def test_spec_preset_trains_on_the_cpu_at_small_size(tmp_path, cpu, data_dir):
    """The spec's semantics (domain head + perceptual loss, spec ADA rule and warm-ups, controllers at
    every step, R1 without the interval factor, clamped reals, best model) run end to end on a tiny
    model; only sizes are overridden."""
    import shutil

    from engine.metrics.classifier import train_classifier
    from engine.train.logging import read_csv_rows

    data = tmp_path / "data"
    shutil.copytree(data_dir, data)
    train_classifier(data, arch="resnet10t", epochs=1, batch=16, device="cpu")  # the domain head's space
    run = tmp_path / "run"
    small = ["--res", "16", "--batch", "8", "--kimg", "0.032", "--channel-base", "128", "--channel-max", "16",
             "--d-channel-base", "128", "--d-channel-max", "16", "--z-dim", "16", "--w-dim", "16",
             "--n-mlp", "2", "--workers", "0", "--log-kimg", "0.016", "--sample-kimg", "0.016",
             "--snap-kimg", "0.016", "--grid-per-class", "1", "--samples-per-class-per-epoch", "0",
             "--best-n", "9"]
    assert cli(["train", "--preset", "spec", "--data", str(data), "--run-dir", str(run), *small]) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["preset"] == "spec" and saved["domain_head"] is True and saved["ada_rule"] == "spec"
    assert saved["r1_lazy_scale"] is False and saved["ada_interval"] == 1
    rows = read_csv_rows(run / "metrics_gan.csv")
    assert [r["step"] for r in rows] == ["2", "4"]
    assert float(rows[-1]["ada_p"]) == 0.0   # no adaptation before step 500
    assert float(rows[-1]["alpha"]) == 0.0   # nor alpha
    assert rows[-1]["g_perc"] != ""          # the perceptual loss ran in the domain space
    assert float(rows[-1]["real_max"]) <= 0.9 + 1e-6 and float(rows[-1]["real_min"]) >= -0.9 - 1e-6
    assert json.loads((run / "status.json").read_text())["state"] == "finished"
