"""DDP on the CPU: two gloo processes train a tiny model and must hold identical weights."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parents[2]
TINY = dict(res=16, batch=8, z_dim=32, w_dim=32, n_mlp=2, channel_base=256, channel_max=64, r1_every=2,
            pl_weight=2.0, pl_every=2, ada_interval=1, ada_kimg=0.5, workers=0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, data_dir: str, out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from engine.config import TrainConfig, validate
    from engine.train import dist
    from engine.train.data import Batches, load_training_data
    from engine.train.logging import Stats
    from engine.train.step import GanTrainer

    cfg = validate(TrainConfig(data=data_dir, **TINY))
    info = dist.init("cpu")
    torch.manual_seed(100 + rank)  # different init and noise per rank: DDP must reconcile the weights
    data = load_training_data(cfg)
    batches = Batches(data, cfg, rank=info.rank, world_size=info.world_size)
    T = GanTrainer(cfg, num_classes=len(data.class_names), device=torch.device("cpu"), info=info)
    start = torch.cat([p.detach().flatten().clone() for p in T.G.parameters()])
    stats, labels = Stats(), []
    for step in range(3):
        real, y = batches.next()
        labels.append(y)
        T.train_step(real, y, step, stats)
        T.update_controls(step + 1, (step + 1) * cfg.batch / 1000)
    row = stats.result(T.reduce_stats)
    nets = {"G": T.G, "D": T.D, "G_ema": T.G_ema}
    vecs = {k: torch.cat([p.detach().flatten() for p in m.parameters()]) for k, m in nets.items()}
    result = {}
    for k, v in vecs.items():
        got = [torch.zeros_like(v) for _ in range(world)]
        torch.distributed.all_gather(got, v)
        result[k] = max(float((g - got[0]).abs().max()) for g in got)
    ys = [torch.zeros_like(labels[0]) for _ in range(world)]
    torch.distributed.all_gather(ys, labels[0])
    result.update(per_rank_batch=len(labels[0]), same_labels=bool(torch.equal(ys[0], ys[1])),
                  moved=float((vecs["G"] - start).abs().max()), ada_p=T.ada.p, d_loss=row["d_loss"])
    if rank == 0:
        Path(out).write_text(json.dumps(result))
    dist.cleanup()


def test_two_gloo_ranks_keep_identical_weights(tmp_path, data_dir):
    out = tmp_path / "result.json"
    mp.spawn(_worker, args=(2, _free_port(), str(data_dir), str(out)), nprocs=2, join=True)
    r = json.loads(out.read_text())
    assert r["G"] == 0.0 and r["D"] == 0.0 and r["G_ema"] == 0.0, r
    assert r["moved"] > 0                        # it trained
    assert r["per_rank_batch"] == 4 and not r["same_labels"]  # batch // world_size, different slices
    assert r["ada_p"] > 0 and r["d_loss"] > 0


@pytest.mark.slow
def test_torchrun_cli_two_cpu_ranks(tmp_path, data_dir):
    run = tmp_path / "run"
    args = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "-m", "engine", "train", "--device", "cpu", "--data", str(data_dir), "--run-dir",
                        str(run), "--kimg", "0.032", "--log-kimg", "0.016", "--snap-kimg", "0.016", *args],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    st = json.loads((run / "status.json").read_text())
    assert st["state"] == "finished" and st["step"] == 4
    lines = (run / "metrics_gan.csv").read_text().splitlines()
    assert len(lines) == 3                       # header + 2 rows, written by rank 0 only
    assert "batch 8 (4 x 2 rank(s))" in p.stdout
