"""The shared training loop of the families with a family module (engine.families: ddpm first).

The same run-directory contract as the StyleGAN2 loop (engine.train.loop, which calls this one for such
a family): status.json, the stop file and SIGTERM, checkpoints (the family's state_dict beside the shared
step / kimg / time_s / data position / statistics / global RNG / config), exact resume, the family's
metrics CSV (its csv_name and csv_columns, through MetricsCSV so TensorBoard gets the same curves),
per-class grids (family.grid), exports (exports/generator.safetensors + generator.json, what
`from_export` needs) and the best model (the quick held-out FID of engine.train.loop.BestModel, on the
family's sampler). One process: DDP is the StyleGAN2 loop's alone so far.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine import config as C
from engine import families, runs
from engine.config import ConfigError, TrainConfig
from engine.images import png_bytes
from engine.train import schedule
from engine.train.checkpoint import export_generator, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from engine.train.data import Batches, load_training_data, training_data_dir
from engine.train.logging import MetricsCSV, Stats, log_event, truncate_csv
from engine.utils import atomic_write_bytes, atomic_write_text

# the columns the loop fills itself; every other CSV column comes from the family's step
LOOP_COLUMNS = ("epoch", "step", "kimg", "img_per_s", "time_s")


def build_family(cfg: TrainConfig, num_classes: int, device: torch.device, amp: bool = False):
    """The Family object of cfg.family, built from its config section and the shared run options."""
    cls = families.get(cfg.family)
    return cls.build(C.section(cfg), cfg.res, num_classes, device,
                     total_steps=schedule.total_steps(cfg.kimg, cfg.batch), amp=amp, compile=cfg.compile,
                     seed=cfg.seed)


def add_step(stats: Stats, out: dict[str, Any]) -> None:
    """Accumulate one step's scalars: means over the log interval, `*_min` / `*_max` extremes. `loss_qK`
    with `n_qK` (a per-quartile mean and its sample count) is kept as sum and count, so the row's quartile
    loss is the mean over every sample of the interval (a quartile a step did not draw is NaN there and
    counts 0)."""
    for k, v in out.items():
        if k.startswith("n_q"):
            continue
        n = out.get("n_q" + k[len("loss_q"):]) if k.startswith("loss_q") else None
        if n is not None:
            n = torch.as_tensor(n, dtype=torch.float32)
            stats.add("sum_" + k, torch.nan_to_num(torch.as_tensor(v, dtype=torch.float32)) * n)
            stats.add("n_" + k, n)
        elif k.endswith("_min"):  # pixel ranges: the extremes over the interval, as the GAN loop logs them
            stats.add_min(k, v)
        elif k.endswith("_max"):
            stats.add_max(k, v)
        else:
            stats.add(k, v)


def row_of(result: dict[str, float]) -> dict[str, Any]:
    """The CSV row of Stats.result(): quartile losses from their sums and counts (empty when none)."""
    row = {k: v for k, v in result.items() if not k.startswith(("sum_", "n_"))}
    for k in result:
        if k.startswith("sum_"):
            name = k[4:]
            n = result.get("n_" + name, 0.0)
            row[name] = result[k] / n if n > 0 else None
    return row


def write_header(path: Path, columns: tuple[str, ...]) -> None:
    """The family's header, once: MetricsCSV keeps the header it finds (its default is the GAN's)."""
    if not path.exists() or path.stat().st_size == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, ",".join(columns) + "\n")


def export_meta(fam, class_names: list[str], cfg: TrainConfig) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, meta = fam.export()
    meta = dict(meta, class_names=list(class_names), kimg=fam.step * cfg.batch / 1000)
    return tensors, meta


def save_family_grid(fam, path: Path, per_class: int, seed: int) -> None:
    # its own RNG fork: a grid never moves the run's random stream (more grids, same run)
    with torch.random.fork_rng(devices=[fam.device] if fam.device.type == "cuda" else []):
        img = fam.grid(per_class, seed=seed)
    atomic_write_bytes(path, png_bytes(img))


def train_family(cfg: TrainConfig, *, resume: bool = False, stop_after: int = 0) -> int:
    """Run (or continue) the training of a family with a family module; returns 0."""
    from engine.train.loop import BestModel, open_run, record_end, resolve, wait_for_gpu

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # every rank would write the run directory
        raise ConfigError(f"family {cfg.family} trains in one process; torchrun (DDP) is stylegan2's alone so far")
    device, amp_dtype = resolve(cfg)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    run_dir, status, stop = open_run(cfg, device, resume=resume)
    batches = csv = None
    try:
        status.set("running", message="starting")
        if device.type == "cuda" and not wait_for_gpu(run_dir, status, stop):
            return 0
        cfg = C.replaced(cfg, run_dir=str(run_dir), data=training_data_dir(cfg))
        data = load_training_data(cfg)
        batches = Batches(data, cfg, device=device)
        fam = build_family(cfg, len(data.class_names), device, amp=amp_dtype is not None)
        stats = Stats(device)
        step, time_s = 0, 0.0
        if resume:
            found = load_checkpoint(run_dir, map_location="cpu")
            if found is not None:
                ck, path = found
                if ck.get("family") != cfg.family:
                    raise ConfigError(f"{path} is a checkpoint of family {ck.get('family', 'stylegan2')!r}, "
                                      f"not {cfg.family!r}")
                fam.load_state_dict(ck["family_state"])
                batches.load_state_dict(ck["data"])
                stats.load_state_dict(ck["stats"])
                set_rng_state(ck["rng"])
                step, time_s = int(ck["step"]), float(ck["time_s"])
                print(f"resumed from {path} at step {step} ({step * cfg.batch / 1000:.3f} kimg)", flush=True)
            else:
                print(f"no whole checkpoint in {run_dir}; starting from step 0", flush=True)
        C.save(cfg, run_dir / "config.json")
        csv_path = run_dir / fam.csv_name
        truncate_csv(csv_path, step)
        write_header(csv_path, tuple(fam.csv_columns))
        csv = MetricsCSV(csv_path, tensorboard=cfg.tensorboard, config=C.to_dict(cfg),
                         purge_step=step + 1 if resume else None)
        best = BestModel(cfg, data, device, run_dir, enabled=True, resume=resume)
        total_steps = schedule.total_steps(cfg.kimg, cfg.batch)
        fam.total_steps = total_steps  # the LR schedule follows a changed kimg on resume
        print(f"training {cfg.family} {cfg.res}px, {len(data.class_names)} classes, batch {cfg.batch}, "
              f"{total_steps} steps ({cfg.kimg} kimg) on {device} (amp {amp_dtype}) -> {run_dir}", flush=True)

        def every(kimg_interval: float) -> bool:
            return schedule.crossed(step, cfg.batch, kimg_interval)

        grid_kimg = schedule.sample_interval_kimg(cfg.sample_kimg, cfg.kimg)

        def snapshot() -> None:
            state = {"family": cfg.family, "family_state": fam.state_dict(), "step": step,
                     "kimg": step * cfg.batch / 1000, "time_s": time_s, "data": batches.state_dict(),
                     "stats": stats.state_dict(), "rng": rng_state(), "config": json.dumps(C.to_dict(cfg))}
            save_checkpoint(run_dir, state, step, keep_last=cfg.keep_last)
            tensors, meta = export_meta(fam, data.class_names, cfg)
            export_generator(run_dir, tensors, meta)
            # after the checkpoint: a failure here loses nothing
            best.update(families.FamilyGenerator(fam), meta, step, weights=tensors)

        if step == 0:
            save_family_grid(fam, runs.grid_path(run_dir, 0), cfg.grid_per_class, cfg.seed)
        status.set("running", message="", step=step, kimg=step * cfg.batch / 1000)
        start_step, n_row = step, step
        t_row = t_last = time.perf_counter()
        stopping = False
        while step < total_steps:
            x, y = batches.next()
            add_step(stats, fam.train_step(x, y))
            step += 1
            now = time.perf_counter()
            time_s += now - t_last
            t_last = now
            kimg = step * cfg.batch / 1000
            want_stop = stop.requested() or bool(stop_after and step - start_step >= stop_after)
            if every(cfg.log_kimg) or step == total_steps:
                row = row_of(stats.result())
                stats.reset()
                row.update(epoch=round(batches.epoch_float, 6), step=step, kimg=kimg,
                           img_per_s=(step - n_row) * cfg.batch / max(now - t_row, 1e-9), time_s=time_s)
                t_row, n_row = now, step
                csv.write(row)
                # ddpm rows have loss/lr, the GAN families d_loss, g_loss and lr_g
                losses = {k: row[k] for k in ("loss", "d_loss", "g_loss") if row.get(k) is not None}
                lr = row.get("lr", row.get("lr_g")) or 0
                print(f"step {step:>7d} kimg {kimg:8.3f}  "
                      + "".join(f"{k} {v:.4f}  " for k, v in losses.items())
                      + f"lr {lr:.3g}  {row['img_per_s']:.1f} img/s", flush=True)
                bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
                if bad:
                    log_event(run_dir, {"event": "non_finite_loss", "step": step, **bad})
            if every(grid_kimg) or step == total_steps:
                save_family_grid(fam, runs.grid_path(run_dir, step), cfg.grid_per_class, cfg.seed)
            if want_stop and step < total_steps:
                status.set("stopping", message="saving a checkpoint", step=step, kimg=kimg)
            if every(cfg.snap_kimg) or step == total_steps or want_stop:
                snapshot()
            status.heartbeat(step=step, kimg=kimg)
            if want_stop and step < total_steps:
                stopping = True
                break
        record_end(status, stopping, step, cfg.batch, time_s)
        return 0
    except BaseException as e:
        status.set("failed", message=f"{type(e).__name__}: {e}")
        raise
    finally:
        stop.restore()
        if batches is not None:
            batches.close()
        if csv is not None:
            csv.close()
