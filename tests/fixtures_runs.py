"""A tiny finished run directory for page and sampling tests (no training: seconds on a CPU).

`make_tiny_run(root)` writes what a finished stylegan2 run leaves behind (DESIGN "Run directory"):
config.json, status.json "finished", metrics_gan.csv, log.txt, samples/step_*.png, two checkpoints
with latest.json, and exports/generator.safetensors + generator.json.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from engine import config as C
from engine.train.checkpoint import export_generator, save_checkpoint
from engine.train.grid import save_grid
from engine.train.logging import CSV_COLUMNS, MetricsCSV
from engine.utils import atomic_write_json

CLASS_NAMES = ["ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM"]
TINY = dict(res=16, z_dim=32, w_dim=32, n_mlp=2, channel_base=256, channel_max=16, batch=4)
STEPS = (4, 8)


def tiny_generator(seed: int = 0, num_classes: int = len(CLASS_NAMES)):
    """A randomly initialised 16 px Generator; noise strengths and per-class w_avg set to non-zero
    values so that noise and truncation visibly change the output (fresh ones are 0)."""
    from engine.models.stylegan2 import Generator

    torch.manual_seed(seed)
    G = Generator(TINY["res"], num_classes, z_dim=TINY["z_dim"], w_dim=TINY["w_dim"], n_mlp=TINY["n_mlp"],
                  channel_base=TINY["channel_base"], channel_max=TINY["channel_max"])
    with torch.no_grad():
        G.w_avg.copy_(torch.randn_like(G.w_avg))
        for name, p in G.named_parameters():
            if name.endswith("noise.weight"):
                p.fill_(0.5)
    return G.eval().requires_grad_(False)


def make_tiny_run(root: str | Path, run_id: str = "tiny", state: str = "finished") -> Path:
    """Write runs/<run_id> under `root` and return its path (see the module docstring)."""
    d = Path(root) / run_id
    d.mkdir(parents=True, exist_ok=True)
    cfg = C.from_dict(C.TrainConfig, dict(TINY, kimg=STEPS[-1] * TINY["batch"] / 1000, run_dir=str(d),
                                          device="cpu"))
    C.save(cfg, d / "config.json")
    csv = MetricsCSV(d / "metrics_gan.csv")
    for s in range(1, STEPS[-1] + 1):
        csv.write({"epoch": s / 10, "step": s, "kimg": s * TINY["batch"] / 1000, "d_loss": 1.3 - 0.01 * s,
                   "g_loss": 0.8 + 0.01 * s, "acc": 0.5, "acc_ema": 0.5, "ada_p": 0.0, "lr_g": 4e-4,
                   "lr_d": 4e-4, "img_per_s": 100.0, "time_s": 0.1 * s})
    G = None
    for step in STEPS:
        G = tiny_generator(seed=step)
        kimg = step * TINY["batch"] / 1000
        save_checkpoint(d, {"G_ema": G.state_dict(), "step": step, "kimg": kimg, "time_s": 0.1 * step,
                            "config": json.dumps(C.to_dict(cfg))}, step)
        save_grid(G, d / "samples" / f"step_{step:08d}.png", len(CLASS_NAMES), 2)
    export_generator(d, G, {"family": "stylegan2", "kwargs": dict(G.init_kwargs), "class_names": CLASS_NAMES,
                            "res": G.res, "step": STEPS[-1], "kimg": STEPS[-1] * TINY["batch"] / 1000,
                            "num_ws": G.num_ws, "layer_names": list(G.layer_names), "z_dim": G.z_dim})
    (d / "log.txt").write_text(f"training stylegan2 16px\nfinished: {STEPS[-1]} steps\n", encoding="utf-8")
    now = time.time()
    atomic_write_json(d / "status.json", {"state": state, "pid": None, "step": STEPS[-1],
                                          "kimg": STEPS[-1] * TINY["batch"] / 1000, "started_at": now - 5,
                                          "heartbeat_at": now, "message": "done"})
    return d


def metrics_row(step: int, **kw) -> dict:
    """A metrics_gan.csv row of a plausible run at `step` (every CSV column, unknown ones None)."""
    r = {c: None for c in CSV_COLUMNS}
    r.update(epoch=step / 10, step=step, kimg=step * 4 / 1000, d_loss=1.0 / step, g_loss=2.0 + step,
             acc=0.5, acc_ema=0.55, ada_p=0.01 * step, lr_g=4e-4, lr_d=7e-5, img_per_s=100.0 + step,
             time_s=float(step))
    r.update(kw)
    return r


def tiny_run_on(data_dir, run_id: str = "tiny") -> Path:
    """make_tiny_run (a 16 px generator) under the runs root, its config pointed at the prepared data set
    `data_dir` (so its eval split serves as the real side: reviews, evaluations)."""
    from engine.utils import runs_root

    d = make_tiny_run(runs_root(), run_id)
    cfg = json.loads((d / "config.json").read_text())
    cfg["data"] = str(data_dir)
    (d / "config.json").write_text(json.dumps(cfg))
    return d
