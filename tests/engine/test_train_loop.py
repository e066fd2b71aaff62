"""The training loop end to end on a tiny model: resume exactness, crash safety, stop, export, DDP."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from engine.config import ConfigError
from engine.train import loop
from engine.train.checkpoint import load_checkpoint, load_generator_export
from engine.train.logging import CSV_COLUMNS, read_csv_rows
from engine.train.schedule import grid_steps

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--res", "16", "--batch", "8", "--z-dim", "32", "--w-dim", "32", "--n-mlp", "2",
        "--channel-base", "256", "--channel-max", "64", "--grid-per-class", "2",
        "--r1-every", "2", "--ada-interval", "2", "--ada-kimg", "0.5", "--pl-weight", "2",
        "--pl-every", "2", "--log-kimg", "0.016", "--sample-kimg", "0.032", "--snap-kimg", "0.032"]



def train(run, data_dir, *extra):
    return loop.main(["--data", str(data_dir), "--run-dir", str(run), *TINY, *extra])


def rows(run):
    return [{k: v for k, v in r.items() if k not in ("img_per_s", "time_s")}
            for r in read_csv_rows(run / "metrics_gan.csv")]


def status(run):
    return json.loads((run / "status.json").read_text())


def env1():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT))


# ----------------------------------------------------------------------------------------------

def test_resume_is_exact_and_export_rebuilds_g_ema(tmp_path, data_dir):
    a, b = tmp_path / "a", tmp_path / "b"
    # ada_target 0.1: p must move in 8 steps whatever D's accuracy on these 9 tiles happens to be
    assert train(a, data_dir, "--kimg", "0.064", "--ada-target", "0.1") == 0          # 8 steps straight
    assert status(a)["state"] == "finished"
    # 3 steps (mid log interval and mid controller interval), stop, resume for the rest
    assert train(b, data_dir, "--kimg", "0.064", "--ada-target", "0.1", "--stop-after", "3") == 0
    assert status(b)["state"] == "stopped" and status(b)["step"] == 3
    assert (b / "checkpoints" / "step_00000003.pt").is_file()
    assert loop.main(["--resume", str(b)]) == 0
    assert status(b)["state"] == "finished"

    ra, rb = rows(a), rows(b)
    assert [r["step"] for r in ra] == ["2", "4", "6", "8"]
    assert ra == rb                                              # every column but the timings
    assert list(read_csv_rows(a / "metrics_gan.csv")[0])[:len(CSV_COLUMNS)] == list(CSV_COLUMNS)
    assert float(ra[-1]["ada_p"]) > 0 and ra[-1]["r1"] != "" and ra[-1]["pl"] != ""
    ca, _ = load_checkpoint(a)
    cb, _ = load_checkpoint(b)
    for key in ("G_ema", "D"):
        for k in ca[key]:
            assert torch.equal(ca[key][k], cb[key][k]), f"{key}.{k} differs after resume"
    # sample_kimg 0.032 is half of this 0.064-kimg run: grids come every tenth of the run instead (here
    # every step), so a short run shows progress rather than its step-0 noise until the end
    assert sorted(p.name for p in (a / "samples").glob("*.png")) == [
        f"step_{s:08d}.png" for s in range(9)] == [f"step_{s:08d}.png" for s in grid_steps(0.064, 8, 0.032)]

    # the export rebuilds G_ema without the trainer and draws the same images
    from engine.models.stylegan2 import Generator

    G, meta = load_generator_export(a)
    assert meta["class_names"][:2] == ["ADI", "BACK"] and meta["step"] == 8
    ref = Generator(**meta["kwargs"]).eval()
    ref.load_state_dict(ca["G_ema"])
    z, y = torch.randn(4, 32), torch.tensor([0, 3, 5, 8])
    with torch.no_grad():
        assert torch.equal(G(z, y, noise_mode="const"), ref(z, y, noise_mode="const"))


def test_stop_file_gives_stopped_state_and_checkpoint(tmp_path, data_dir):
    run = tmp_path / "r"
    run.mkdir()
    (run / "stop").touch()
    assert train(run, data_dir, "--kimg", "1") == 0
    st = status(run)
    assert st["state"] == "stopped" and st["step"] == 1 and "resume" in st["message"]
    assert json.loads((run / "checkpoints" / "latest.json").read_text())["step"] == 1
    assert json.loads((run / "config.json").read_text())["kimg"] == 1.0
    # model fields cannot change on resume; kimg can (and a stale stop file is cleared)
    with pytest.raises(ConfigError, match="res"):
        loop.main(["--resume", str(run), "--res", "32"])
    assert loop.main(["--resume", str(run), "--kimg", "0.024"]) == 0
    assert status(run)["state"] == "finished" and status(run)["step"] == 3
    with pytest.raises(ConfigError, match="already holds a run"):
        train(run, data_dir)


def test_sigkill_during_checkpoint_write_resumes_from_last_whole_one(tmp_path, data_dir):
    run = tmp_path / "r"
    assert train(run, data_dir, "--kimg", "0.064", "--stop-after", "2") == 0  # whole checkpoint at 2
    env = dict(env1(), HISTOGEN_TEST_CKPT_SLEEP="120")
    p = subprocess.Popen([sys.executable, "-m", "engine", "train", "--resume", str(run)], cwd=ROOT, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 240
        while not list((run / "checkpoints").glob(".step_00000004.pt.*.tmp")):  # temp written, not renamed
            assert p.poll() is None, p.stdout.read().decode()
            assert time.time() < deadline, "the checkpoint at step 4 was never started"
            time.sleep(0.2)
        os.kill(p.pid, signal.SIGKILL)
    finally:
        p.kill()
        p.wait()
    assert json.loads((run / "checkpoints" / "latest.json").read_text())["step"] == 2
    assert loop.main(["--resume", str(run)]) == 0
    assert status(run)["state"] == "finished"
    assert [r["step"] for r in rows(run)] == ["2", "4", "6", "8"]        # no duplicated rows
    assert not list((run / "checkpoints").glob("*.tmp"))


def test_sigterm_finishes_the_step_and_stops(tmp_path, data_dir):
    run = tmp_path / "r"
    p = subprocess.Popen([sys.executable, "-m", "engine", "train", "--data", str(data_dir),
                          "--run-dir", str(run), *TINY, "--kimg", "10"], cwd=ROOT, env=env1(),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 240
        while not (run / "status.json").exists() or status(run)["step"] < 2:
            assert p.poll() is None, p.stdout.read().decode()
            assert time.time() < deadline
            time.sleep(0.2)
        os.kill(p.pid, signal.SIGTERM)
        assert p.wait(timeout=120) == 0
    finally:
        p.kill()
    st = status(run)
    assert st["state"] == "stopped"
    assert json.loads((run / "checkpoints" / "latest.json").read_text())["step"] == st["step"]


def test_domain_head_gate_and_perceptual_loss(tmp_path, data_dir):
    from engine.metrics.classifier import train_classifier

    clf = tmp_path / "classifier.pt"
    train_classifier(data_dir, clf, arch="test_resnet", epochs=1, batch=16, device="cpu")
    run = tmp_path / "r"
    assert train(run, data_dir, "--kimg", "0.032", "--domain-head", "true", "--domain-features", str(clf),
                 "--alpha-on", "0.01", "--alpha-off", "0", "--alpha-dwell", "0", "--alpha-tau", "1",
                 "--alpha-dalpha", "0.1") == 0
    r = rows(run)
    assert float(r[-1]["alpha"]) > 0                # the gate opened: the domain logit joins D's
    assert float(r[-1]["g_perc"]) >= 0 and r[-1]["perceptual_scale"] == "1.0"
    ck, _ = load_checkpoint(run)
    assert any(k.startswith("domain_head") for k in ck["D"])
    assert not any("classifier" in k for k in ck["D"])  # the frozen extractor is not in checkpoints
    with pytest.raises(ConfigError, match="train-classifier"):
        train(tmp_path / "r2", data_dir, "--domain-head", "true",
              "--domain-features", str(tmp_path / "no.pt"))


def test_watchdog_scales_weights_and_logs_event(tmp_path):
    from engine.config import TrainConfig, validate
    from engine.train.step import GanTrainer

    cfg = validate(TrainConfig(res=16, batch=8, z_dim=8, w_dim=8, n_mlp=1, channel_base=64, channel_max=16,
                               watchdog_threshold=0.5, ada=True))
    T = GanTrainer(cfg, num_classes=3, device=torch.device("cpu"))
    T.gate.enabled, T.gate.alpha = True, 0.3
    T.ctrl = torch.tensor([6.0, 8.0, 2 * 0.8, 2.0])  # acc 0.75 over 8 reals, mean |fake| 0.8 over 2 steps
    events = []
    T.update_controls(step=2, kimg=0.016, on_event=events.append)
    assert events and events[0]["fake_abs_mean"] == pytest.approx(0.8) and events[0]["step"] == 2
    assert T.perceptual_scale == pytest.approx(0.9) and T.gate.alpha_max == pytest.approx(cfg.alpha_max * 0.95)
    assert events[0]["perceptual_weight"] == pytest.approx(0.009)
    assert T.gate.enabled is False
    assert T.acc_ema == pytest.approx(0.75) and T.ada.p == pytest.approx(8 / (cfg.ada_kimg * 1000))
    assert torch.equal(T.ctrl, torch.zeros(4))
    # a hundred more firings: floors (0.005 perceptual, 0.1 alpha_max), one event logged per 50 steps
    for k in range(100):
        T.ctrl = torch.tensor([6.0, 8.0, 2 * 0.8, 2.0])
        T.update_controls(step=4 + 2 * k, kimg=0.016, on_event=events.append)
    assert T.perceptual_scale * cfg.perceptual_weight == pytest.approx(0.005)
    assert T.gate.alpha_max == pytest.approx(0.1)
    assert [e["step"] for e in events] == [2, 52, 102, 152, 202]
    assert T.row_extras()["watchdog_events"] == 101


@pytest.mark.slow
def test_short_cpu_run_gives_class_conditional_samples(tmp_path):
    """32 px histosynth, a few CPU minutes: a train-classifier model recognises the conditioned class
    in G_ema's samples well above chance (1/9). Prints the figure."""
    from engine.config import PrepareConfig
    from engine.data.prepare import prepare
    from engine.metrics.classifier import load_classifier, train_classifier

    data = prepare(PrepareConfig(source="histosynth", size=32, per_class=100, seed=0,
                                 out=str(tmp_path / "hs")))
    meta = train_classifier(data, arch="resnet10t", epochs=5, batch=32, device="cpu")
    run = tmp_path / "run"
    assert loop.main(["--data", str(data), "--run-dir", str(run), "--res", "32", "--batch", "32",
                      "--kimg", "24", "--z-dim", "64", "--w-dim", "64", "--n-mlp", "2",
                      "--channel-base", "512", "--channel-max", "64", "--lr-g", "2e-3", "--lr-d", "2e-3",
                      "--lr-mlp", "0.1", "--mixing-prob", "0", "--r1-gamma", "0.1", "--fm-weight", "0",
                      "--diversity-weight", "0", "--log-kimg", "2", "--snap-kimg", "8",
                      "--sample-kimg", "8"]) == 0
    G, gmeta = load_generator_export(run)
    clf, _ = load_classifier(meta["out"])
    K, n = len(gmeta["class_names"]), 40
    z = torch.randn(K * n, G.z_dim, generator=torch.Generator().manual_seed(1))
    y = torch.arange(K).repeat_interleave(n)
    with torch.no_grad():
        pred = torch.cat([clf(G(z[i:i + 120], y[i:i + 120], noise_mode="const")).argmax(1)
                          for i in range(0, len(z), 120)])
    acc = (pred == y).float().mean().item()
    per_class = {c: round((pred[y == k] == k).float().mean().item(), 2)
                 for k, c in enumerate(gmeta["class_names"])}
    print(f"\nclassifier val acc {meta['val_acc']:.3f}; G_ema samples recognised as their class: "
          f"{acc:.3f} (chance {1 / K:.3f}); per class {per_class}")
    assert acc >= 2.5 / K


def test_empty_data_uses_the_histosynth_demo(tmp_path, data_dir, monkeypatch):
    import engine.data.dataset as ds

    calls = []
    monkeypatch.setattr(ds, "ensure_demo", lambda **kw: calls.append(kw) or data_dir)
    run = tmp_path / "r"
    assert loop.main(["--run-dir", str(run), *TINY, "--kimg", "0.008"]) == 0
    assert calls and calls[0]["size"] == 32  # histosynth's smallest size; the loader resizes to 16
    assert json.loads((run / "config.json").read_text())["data"] == str(data_dir)


def test_changing_kimg_on_resume_keeps_the_lr_curve_continuous():
    from engine import config as C
    from engine.train.step import GanTrainer, cosine_lr

    def trainer(kimg):
        cfg = C.validate(C.TrainConfig(res=16, batch=8, z_dim=8, w_dim=8, n_mlp=1, channel_base=64,
                                       channel_max=16, kimg=kimg))
        return GanTrainer(cfg, num_classes=3, device=torch.device("cpu")), cfg

    def lrs(T, n):  # lr_g after each of n more scheduler steps
        out = []
        for _ in range(n):
            T.opt_g.step(); T.opt_d.step(); T.sched_g.step(); T.sched_d.step()
            out.append(T.opt_g.param_groups[0]["lr"])
        return out

    A, cfg = trainer(0.8)                                       # 100 steps
    before = lrs(A, 60)
    state = A.state_dict()
    state["config"] = json.dumps(C.to_dict(cfg))
    B, cfg_b = trainer(1.6)                                     # resumed with twice the length
    B.load_state_dict(state)
    assert B.opt_g.param_groups[0]["lr"] == pytest.approx(before[-1])
    after = lrs(B, 140)
    # a jump to the 200-step curve would take lr_g from 4e-4 * f100(60) to 4e-4 * f200(61): the bound
    # below is what such a jump would be
    jump_old = cfg.lr_g * abs(cosine_lr(200, cfg.lr_min_frac)(61) - cosine_lr(100, cfg.lr_min_frac)(60))
    steps = [before[i + 1] - before[i] for i in range(59)]
    assert abs(after[0] - before[-1]) <= max(abs(d) for d in steps) < jump_old / 10
    assert all(b <= a + 1e-12 for a, b in zip(after, after[1:]))   # still decreasing
    assert after[-1] == pytest.approx(cfg.lr_g * cfg.lr_min_frac)  # reaches the floor at the new end
    assert after[-1 - 40] > cfg.lr_g * cfg.lr_min_frac * 1.01       # ... not before
    assert B.sched_d.get_last_lr()[0] == pytest.approx(cfg.lr_d * cfg.lr_min_frac)
    # a second resume at the same length keeps the two-piece curve; one without lr_segments (an old
    # checkpoint) rebuilds the first piece from its config
    state2 = B.state_dict()
    C2, _ = trainer(1.6)
    C2.load_state_dict(state2)
    assert C2.lr_segments == B.lr_segments and len(B.lr_segments) == 2
    del state["lr_segments"]
    D, _ = trainer(1.6)
    D.load_state_dict(state)
    assert D.lr_segments == B.lr_segments
