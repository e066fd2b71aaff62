"""Family `ddpm` through the shared parts: the loop (CSV, grids, checkpoints, export, exact resume, best
model), loading + generate, evaluate, the sample CLI and the config section (flags, presets)."""
import json

import numpy as np
import pytest
import torch

from engine import config as C
from engine import runs
from engine.train import loop
from engine.train.checkpoint import load_checkpoint
from engine.train.logging import read_csv_rows
from engine.train.schedule import grid_steps

# a tiny U-Net at 16 px (levels 16, 8): a step takes milliseconds on one CPU thread
TINY = ["--family", "ddpm", "--res", "16", "--batch", "8", "--channels", "8", "--channel-mult", "1,2",
        "--layers-per-block", "1", "--attention-res", "8", "--attention-head-dim", "8", "--dropout", "0.1",
        "--timesteps", "50", "--warmup-steps", "2", "--sample-steps", "2", "--ema-kimg", "0.01",
        "--grid-per-class", "2", "--log-kimg", "0.016", "--sample-kimg", "0.032", "--snap-kimg", "0.032",
        "--best-metric", "off", "--tensorboard", "false"]


def train(run, data_dir, *extra):
    return loop.main(["--data", str(data_dir), "--run-dir", str(run), *TINY, *extra])


def rows(run):
    return [{k: v for k, v in r.items() if k not in ("img_per_s", "time_s")}
            for r in read_csv_rows(run / "metrics_diffusion.csv")]


def status(run):
    return json.loads((run / "status.json").read_text())


@pytest.fixture(scope="module")
def ddpm_run(tmp_path_factory, data_dir):
    run = tmp_path_factory.mktemp("ddpm") / "run"
    assert train(run, data_dir, "--kimg", "0.048") == 0  # 6 steps
    return run


def test_flags_and_presets_fill_the_section():
    cfg, _ = loop.parse_args(["--family", "ddpm", "--preset", "demo", "--channels", "64", "--grad-clip", "0.5"])
    assert cfg.ddpm["channels"] == 64                                   # its own flag
    assert cfg.ddpm["grad_clip"] == 0.5                                 # a shared flag, copied in
    assert cfg.ddpm["channel_mult"] == C.DDPM_PRESETS["demo"]["channel_mult"]  # the family's demo preset
    assert isinstance(C.section(cfg), C.DDPMConfig)
    spec, _ = loop.parse_args(["--family", "ddpm", "--preset", "spec"])
    assert spec.ddpm["channels"] == 192
    gan, _ = loop.parse_args(["--preset", "demo"])
    assert gan.family == "stylegan2" and gan.ddpm == {}
    # an old config.json without the section still loads; a bad section value names its field
    assert C.from_dict(C.TrainConfig, {"res": 32}).ddpm == {}
    with pytest.raises(C.ConfigError, match="'channels'"):
        C.from_dict(C.TrainConfig, {"family": "ddpm", "ddpm": {"channels": 3}})


def test_a_ddpm_run_writes_the_run_directory(ddpm_run):
    run = ddpm_run
    assert status(run)["state"] == "finished" and status(run)["step"] == 6
    assert runs.metrics_path(run).name == "metrics_diffusion.csv" and not (run / "metrics_gan.csv").exists()
    r = read_csv_rows(run / "metrics_diffusion.csv")
    assert [x["step"] for x in r] == ["2", "4", "6"]
    assert tuple(r[0]) == ("epoch", "step", "kimg", "loss", "loss_q1", "loss_q2", "loss_q3", "loss_q4", "lr",
                           "grad_norm", "img_per_s", "time_s")
    assert all(float(x["loss"]) > 0 and float(x["grad_norm"]) > 0 for x in r)
    assert float(r[0]["lr"]) < float(r[1]["lr"])                        # the warm-up
    assert [s for s, _ in runs.grids(run)] == grid_steps(0.048, 8, 0.032)
    ck, _ = load_checkpoint(run)
    assert ck["family"] == "ddpm" and ck["step"] == 6 and ck["family_state"]["step"] == 6
    meta = json.loads((run / "exports" / "generator.json").read_text())
    assert meta["family"] == "ddpm" and meta["res"] == 16 and meta["step"] == 6
    assert meta["class_names"] == runs.class_names(run) and meta["config"]["channels"] == 8
    assert json.loads((run / "config.json").read_text())["ddpm"]["channels"] == 8
    assert runs.family(run) == "ddpm"


def test_resume_is_exact(tmp_path, data_dir):
    a, b = tmp_path / "a", tmp_path / "b"
    assert train(a, data_dir, "--kimg", "0.048") == 0                      # 6 steps straight
    assert train(b, data_dir, "--kimg", "0.048", "--stop-after", "3") == 0  # 3 (mid log interval) ...
    assert status(b)["state"] == "stopped" and status(b)["step"] == 3
    assert loop.main(["--resume", str(b)]) == 0                            # ... + 3
    assert status(b)["state"] == "finished"
    assert rows(a) == rows(b) and len(rows(a)) == 3
    ca, cb = load_checkpoint(a)[0]["family_state"], load_checkpoint(b)[0]["family_state"]
    for key in ("ema", "model"):
        for k in ca[key]:
            assert torch.equal(ca[key][k], cb[key][k]), f"{key}.{k} differs after resume"
    with pytest.raises(C.ConfigError, match="channels"):                   # the model cannot change
        loop.main(["--resume", str(b), "--channels", "16"])


def test_load_and_generate_per_class_deterministic(ddpm_run):
    from engine.sampling import generate, load_generator

    for step in (None, 4):  # the export of the finished run, then a checkpoint
        G, meta = load_generator(ddpm_run, step)
        assert (G.res, G.num_classes, meta["family"]) == (16, len(meta["class_names"]), "ddpm")
        images, records = generate(G, [0, 2], [5, 6], truncation=0.5, sampler="ddim", steps=2, guidance=1.0)
        assert images.shape == (4, 16, 16, 3) and images.dtype == np.uint8
        assert [(r["class_index"], r["seed"]) for r in records] == [(0, 5), (0, 6), (2, 5), (2, 6)]
        assert records[0]["sampler"] == "ddim" and records[0]["steps"] == 2 and records[0]["psi"] is None
        again, _ = generate(G, [2], [6], sampler="ddim", steps=2, guidance=1.0)
        assert np.array_equal(again[0], images[3])        # a (class, seed) names its patch, whatever the batch
        assert not np.array_equal(images[0], images[1])   # seeds differ
    with pytest.raises(TypeError, match="sample"):
        G(torch.zeros(1, 4), torch.zeros(1, dtype=torch.long))


def test_style_mixing_says_stylegan_only(ddpm_run):
    from engine.sampling import load_generator, style_mix

    G, _ = load_generator(ddpm_run)
    with pytest.raises(ValueError, match="StyleGAN"):
        style_mix(G, (0, 1), (1, 2), 2)


def test_sample_cli_takes_sampler_options(ddpm_run, tmp_path):
    from engine.sampling.cli import main

    out = tmp_path / "out"
    assert main(["--run-dir", str(ddpm_run), "--out", str(out), "--classes", "0,1", "--seeds", "0-1",
                 "--sampler", "dpm", "--sample-steps", "2", "--guidance", "0"]) == 0
    assert (out / "grid.png").is_file() and len(list(out.glob("0*.png"))) == 4
    assert json.loads((out / "sampler.json").read_text()) == {"sampler": "dpm", "steps": 2, "eta": 0.0,
                                                              "guidance": 0.0}


def test_best_model_on_a_ddpm_run(tmp_path, data_dir, monkeypatch):
    scores = iter([5.0, 3.0, 4.0])
    seen = []

    def scorer(cfg, data, device):
        def score(G):  # what the real scorer does: generate uint8 per (class, seed)
            from engine.sampling import generate

            images, _ = generate(G, [0, 1], [0])
            seen.append(images.shape)
            return {"score": next(scores), "n": 2, "n_real": 2}
        return score

    monkeypatch.setattr(loop, "make_best_scorer", scorer)
    run = tmp_path / "best"
    assert train(run, data_dir, "--kimg", "0.048", "--best-metric", "fid_domain", "--snap-kimg", "0.016") == 0
    assert seen == [(2, 16, 16, 3)] * 3
    best = json.loads((run / "exports" / "best" / "best.json").read_text())
    assert best["step"] == 4 and best["score"] == 3.0
    from engine.sampling import load_generator

    G, meta = load_generator(run, "best")
    assert meta["family"] == "ddpm" and meta["step"] == 4 and G.res == 16


def test_evaluate_on_a_ddpm_run_records_sampler_options(ddpm_run, data_dir, monkeypatch):
    from engine.metrics import evaluate as E

    cfg = C.from_dict(C.EvalConfig, {"run_dir": str(ddpm_run), "metrics": "fid", "n": 6, "features": "domain",
                                     "data": str(data_dir), "device": "cpu"})
    calls = []

    def fake_metric(name, ctx):  # the generated patches are what evaluate hands every metric
        calls.append(ctx.gen_images.shape)
        return {"value": 1.0}

    monkeypatch.setattr(E, "calc_metric", fake_metric)
    report, path = E.evaluate(cfg)
    assert calls and calls[0][1:] == (16, 16, 3)
    assert report["family"] == "ddpm"
    assert report["sampler"]["sampler"] == "ddim" and report["sampler"]["steps"] == 2
    assert path.is_file()


def test_bench_train_throughput_family_ddpm(capsys):
    import importlib.util

    from tests.conftest import ROOT

    spec = importlib.util.spec_from_file_location("bench_tt", ROOT / "bench" / "train_throughput.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--family", "ddpm", "--res", "16", "--batch", "4", "--steps", "1", "--warmup", "0",
                       "--device", "cpu", "--preset", "demo", "--set", "channels=16",
                       "--set", "attention_head_dim=16", "--set", "attention_res=8"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert out["family"] == "ddpm" and out["img_per_s"] > 0 and out["section"]["channels"] == 16


def test_tensorboard_gets_the_family_curves(tmp_path, data_dir):
    run = tmp_path / "tb"
    args = [a for a in TINY if a not in ("--tensorboard", "false")]
    assert loop.main(["--data", str(data_dir), "--run-dir", str(run), *args, "--kimg", "0.016"]) == 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(run))
    ea.Reload()
    tags = set(ea.Tags()["scalars"])
    assert {"loss/loss", "loss/loss_q1", "grad/grad_norm", "lr/lr"} <= tags


def test_real_best_model_on_a_ddpm_run_equals_evaluate(tmp_path):
    """The trainer's quick held-out FID (HeldOutFID on the family's sampler) is evaluate's FID on the eval
    split at equal N; `--step best` loads the ddpm best model."""
    from engine.metrics.evaluate import EvalConfig, evaluate
    from tests.engine.test_metrics_evaluate import tiny_eval_setup

    _, data = tiny_eval_setup()  # a `domain` classifier file and 2 eval patches per class
    run = tmp_path / "best"
    assert train(run, data, "--kimg", "0.032", "--best-metric", "fid_domain", "--best-n", "18") == 0
    best = json.loads((run / "exports" / "best" / "best.json").read_text())
    assert best["n"] == 18 and best["score"] > 0
    report, _ = evaluate(EvalConfig(run_dir=str(run), data=str(data), metrics="fid", n=18, step="best",
                                    device="cpu"))
    assert report["checkpoint"]["kind"] == "best" and report["sampler"]["steps"] == 2
    assert report["metrics"]["fid"]["value"] == pytest.approx(best["score"], rel=1e-5)
