"""Families `dcgan` and `mlp_gan` through the shared family loop: a few CPU steps (metrics_gan.csv with
the GAN columns, the inapplicable ones empty), exact resume, per-class sampling, ConfigErrors."""
import json

import numpy as np
import pytest
import torch

from engine import config as C
from engine import runs
from engine.train import loop
from engine.train.checkpoint import load_checkpoint
from engine.train.logging import CSV_COLUMNS, read_csv_rows

COMMON = ["--res", "16", "--batch", "8", "--z-dim", "16", "--grid-per-class", "2", "--log-kimg", "0.016",
          "--sample-kimg", "0.032", "--snap-kimg", "0.032", "--best-metric", "off", "--tensorboard", "false",
          "--kimg", "0.048"]
FAMILIES = {
    "dcgan": ["--family", "dcgan", "--g-channels", "8", "--d-channels", "8", "--channel-max", "16",
              "--embed-dim", "8"],
    "dcgan_wgan_acgan": ["--family", "dcgan", "--g-channels", "8", "--d-channels", "8", "--channel-max", "16",
                         "--embed-dim", "8", "--loss", "wgan_gp", "--d-cond", "acgan", "--texture-weight", "0.1",
                         "--d-steps", "2"],
    "mlp_gan": ["--family", "mlp_gan", "--g-hidden", "32,32", "--d-hidden", "32", "--embed-dim", "8",
                "--dropout", "0.3", "--d-noise", "0.1"],
}


def train(run, data_dir, fam, *extra):
    return loop.main(["--data", str(data_dir), "--run-dir", str(run), *COMMON, *FAMILIES[fam], *extra])


def rows(run):
    return [{k: v for k, v in r.items() if k not in ("img_per_s", "time_s")}
            for r in read_csv_rows(run / "metrics_gan.csv")]


def status(run):
    return json.loads((run / "status.json").read_text())


@pytest.mark.parametrize("fam", list(FAMILIES))
def test_few_steps_exact_resume_and_sampling(tmp_path, data_dir, fam, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert train(a, data_dir, fam) == 0                                   # 6 steps straight
    log = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    # the console line shows a GAN's two losses and its G learning rate (it printed "loss None lr 0")
    assert log and all(" d_loss " in line and " g_loss " in line and " lr 0 " not in line for line in log)
    assert train(b, data_dir, fam, "--stop-after", "3") == 0              # 3 + resume 3
    assert status(b)["state"] == "stopped"
    assert loop.main(["--resume", str(b)]) == 0
    assert status(a)["state"] == status(b)["state"] == "finished"
    ra = rows(a)
    assert ra == rows(b) and [r["step"] for r in ra] == ["2", "4", "6"]
    header = tuple(read_csv_rows(a / "metrics_gan.csv")[0])
    assert header[:len(CSV_COLUMNS)] == CSV_COLUMNS and "g_total" in header
    assert all(r["ada_p"] == "" and r["alpha"] == "" and r["r1"] == "" for r in ra)  # not this family's
    assert all(r["d_loss"] and r["g_loss"] and 0 <= float(r["acc"]) <= 1 for r in ra)
    ca, cb = load_checkpoint(a)[0]["family_state"], load_checkpoint(b)[0]["family_state"]
    for key in ("G_ema", "D"):
        for k in ca[key]:
            assert torch.equal(ca[key][k], cb[key][k]), f"{key}.{k} differs after resume"
    family = FAMILIES[fam][1]
    meta = json.loads((a / "exports" / "generator.json").read_text())
    assert meta["family"] == family and runs.family(a) == family and meta["kwargs"]["res"] == 16
    assert runs.grids(a)

    from engine.sampling import generate, load_generator, style_mix

    for step in (None, 4):  # export, then a checkpoint
        G, meta = load_generator(a, step)
        assert (G.res, G.num_classes) == (16, 9)
        images, records = generate(G, [0, 3], [1, 2], truncation=0.7)
        assert images.shape == (4, 16, 16, 3) and images.dtype == np.uint8
        again, _ = generate(G, [3], [2])
        assert np.array_equal(again[0], images[3])                        # (class, seed) names a patch
        assert [r["class_index"] for r in records] == [0, 0, 3, 3]
    with pytest.raises(ValueError, match="StyleGAN"):
        style_mix(G, (0, 1), (1, 2), 1)


def test_config_errors_name_the_field_and_presets_apply():
    with pytest.raises(C.ConfigError, match="'d_cond'"):
        loop.parse_args(["--family", "dcgan", "--d-cond", "nope"])
    with pytest.raises(C.ConfigError, match="'gp_weight'"):
        loop.parse_args(["--family", "dcgan", "--loss", "wgan_gp", "--gp-weight", "0"])
    with pytest.raises(C.ConfigError, match="'g_hidden'"):
        loop.parse_args(["--family", "mlp_gan", "--g-hidden", "0"])
    cfg, _ = loop.parse_args(["--family", "dcgan", "--preset", "demo", "--loss", "hinge", "--lr-d", "1e-3"])
    assert cfg.dcgan["d_cond"] == C.DCGAN_PRESETS["demo"]["d_cond"] and cfg.dcgan["lr_d"] == 1e-3
    assert cfg.dcgan["loss"] == "hinge" and cfg.loss in ("logistic", "bce")  # TrainConfig's stays StyleGAN2's
    m, _ = loop.parse_args(["--family", "mlp_gan", "--preset", "demo"])
    assert m.mlp_gan["real_label"] == 0.9 and m.batch % 2 == 0
