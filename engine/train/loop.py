"""`python -m engine train`: the conditional StyleGAN2-lite training loop (the other families, ddpm, dcgan
and mlp_gan, run the shared family loop, engine.train.family_loop, from `train`).

Read top to bottom: config -> run directory -> data -> models and optimisers -> (resume) -> steps
(D step, G step, G_ema, controllers, CSV rows, grids, checkpoints, stop) -> finish. The models,
losses and controllers live in their own modules; this file only wires them together.

    python -m engine train --data DIR --run-dir runs/ID --res 64 --batch 16 --kimg 5
    python -m engine train --resume runs/ID            # continue a stopped or killed run
    torchrun --nproc_per_node=N -m engine train ...    # DDP, rank 0 writes
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import socket
import sys
import time
from pathlib import Path

import numpy as np
import torch

from engine import config as C
from engine import runs
from engine.config import ConfigError, TrainConfig
from engine.jobs.core import StatusWriter, new_id
from engine.train import dist, schedule
from engine.train.checkpoint import BEST_DIR, export_best, export_generator, load_checkpoint, save_checkpoint
from engine.train.data import Batches, load_training_data, training_data_dir
from engine.train.grid import save_grid
from engine.train.logging import MetricsCSV, Stats, log_event, truncate_csv
from engine.train.step import GanTrainer, resolve_amp
from engine.utils import pick_device


# ----------------------------------------------------------------------------------------------
# Config and command line

def parse_args(argv: list[str]) -> tuple[TrainConfig, argparse.Namespace]:
    """Config from defaults <- preset <- --config JSON (or the run's config.json with --resume) <- flags."""
    p = argparse.ArgumentParser(prog="python -m engine train",
                                description="Train a class-conditional generator into a run directory.")
    p.add_argument("--config", metavar="FILE.json", help="start from the fields of this JSON file")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its latest checkpoint "
                   f"(flags may change only: {', '.join(C.RESUMABLE_FIELDS)})")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config as JSON and exit")
    p.add_argument("--stop-after", type=int, default=0, metavar="STEPS",
                   help="stop like a stop request after this many steps of this invocation")
    C.add_arguments(p, TrainConfig)
    C.add_section_arguments(p)  # the family sections' fields (--channels ... for ddpm)
    args = p.parse_args(argv)
    base: dict = {}
    if args.resume:
        if args.config:
            raise ConfigError("--config and --resume do not go together: a resumed run keeps its "
                              "config.json")
        args.run_dir = None  # the run directory is the one being resumed
        cfg_path = Path(args.resume) / "config.json"
        if not cfg_path.is_file():
            raise ConfigError(f"--resume {args.resume}: no config.json there; it is not a run directory "
                              "that started")
        base = json.loads(cfg_path.read_text(encoding="utf-8"))
        base["run_dir"] = str(Path(args.resume))
        # a run from before presets trained on the defaults, which are the stylegan2 preset
        base.setdefault("preset", "stylegan2")
        saved, cfg = C.from_dict(TrainConfig, base), C.from_args(TrainConfig, args, base)
        changed = [f.name for f in dataclasses.fields(cfg) if f.name not in C.RESUMABLE_FIELDS
                   and getattr(cfg, f.name) != getattr(saved, f.name)]
        # a family section names its own changed fields (ddpm.channels)
        changed = [n for c in changed for n in (
            [f"{c}.{k}" for k in getattr(cfg, c) if getattr(cfg, c).get(k) != getattr(saved, c).get(k)]
            if c in C.FAMILY_SECTIONS and isinstance(getattr(saved, c), dict) and getattr(saved, c) else [c])]
        if changed:
            raise ConfigError(f"config field(s) {', '.join(changed)} cannot change on --resume; only "
                              f"{', '.join(C.RESUMABLE_FIELDS)} can")
        return cfg, args
    if args.config:
        base = C.load_fields(TrainConfig, args.config)  # only the file's fields: over the preset
    return C.from_args(TrainConfig, args, base), args


def resolve(cfg: TrainConfig) -> tuple[torch.device, torch.dtype | None]:
    """Device and autocast dtype; GPU-only choices fail here, before anything is written."""
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"config field 'device' is {cfg.device!r} but no GPU is visible; use auto or cpu")
    device = torch.device(pick_device(cfg.device))  # the one device rule: engine.config.DEVICE_PATTERN
    return device, resolve_amp(cfg.amp, device)


def default_run_dir(cfg: TrainConfig) -> Path:
    from engine.utils import runs_root

    # the id maker of every job (claims the directory: two runs started in one second get two)
    return runs_root() / new_id(runs_root(), f"{cfg.family}-{cfg.res}px")


# ----------------------------------------------------------------------------------------------
# Training

class StopRequest:
    """A `stop` file in the run dir or SIGTERM/SIGINT (the handler only sets a flag)."""

    def __init__(self, run_dir: Path):
        self.file, self.flag = run_dir / "stop", False
        self._old = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread (e.g. called from a test thread)
                pass

    def _handler(self, signum, frame) -> None:
        self.flag = True

    def requested(self) -> bool:
        return self.flag or self.file.exists()

    def restore(self) -> None:
        for sig, h in self._old.items():
            signal.signal(sig, h)


def make_best_scorer(cfg: TrainConfig, data, device: torch.device):
    """The scorer of the best model for cfg.best_metric (fid_domain): G -> {"score", "n", "n_real"},
    lower is better. A module-level function so that a test can hand the loop its own scores."""
    from engine.metrics.evaluate import HeldOutFID

    return HeldOutFID(data, cfg.best_n, cfg.res, device)


class BestModel:
    """exports/best/ (spec 4.3/5 cgan_best_model.pt): at each checkpoint G_ema is scored (a quick FID in
    the `domain` space against the held-out eval split) and kept when it beats the best so far.

    Scoring never stops training: when it cannot run (no domain classifier yet, an empty eval split,
    any error) the run goes on without a best model, one event in events.jsonl says why, and the next
    checkpoint tries again (a classifier trained meanwhile is then used). A resumed run continues
    from the best.json it left."""

    def __init__(self, cfg: TrainConfig, data, device: torch.device, run_dir: Path, *, enabled: bool,
                 resume: bool):
        self.on = enabled and cfg.best_metric != "off"
        self.cfg, self.data, self.run_dir, self.warned = cfg, data, run_dir, False
        self.scorer = make_best_scorer(cfg, data, device) if self.on else None
        from engine.utils import read_json

        found = read_json(run_dir / "exports" / BEST_DIR / "best.json") if resume else None
        self.best = found if isinstance(found, dict) and isinstance(found.get("score"), (int, float)) else None

    def update(self, G_ema, meta: dict, step: int, weights: dict | None = None) -> None:
        """Score G_ema (a generator, or a family's engine.families.FamilyGenerator) and keep it when best;
        `weights`: the tensors to export instead of G_ema's state_dict (a family's export())."""
        if not self.on:
            return
        try:
            r = self.scorer(G_ema)
        except Exception as e:  # noqa: BLE001 - a metric must never end a training run
            if not self.warned:
                self.warned = True
                log_event(self.run_dir, {
                    "event": "best_model_unavailable", "step": step, "metric": self.cfg.best_metric,
                    "reason": f"{type(e).__name__}: {e}",
                    "message": "training goes on without a best model (exports/best/); it is tried again at "
                               "each checkpoint (train the data set's classifier on the Data page or with "
                               "`python -m engine train-classifier`), or set best_metric off"})
            return
        score = float(r["score"])
        better = self.best is None or score < float(self.best["score"])
        print(f"best model: {self.cfg.best_metric} {score:.4g} at step {step} (n {r.get('n')})"
              + (" - new best" if better else f"; best stays step {self.best['step']} ({self.best['score']:.4g})"),
              flush=True)
        if not better:
            return
        info = {"step": int(step), "kimg": step * self.cfg.batch / 1000, "metric": self.cfg.best_metric,
                "score": score, "n": int(r.get("n", 0)), "n_real": int(r.get("n_real", 0)),
                "real_split": "eval", "eval_disjoint": bool(getattr(self.data, "eval_disjoint", False)),
                "features": getattr(self.scorer, "desc", {}) or {}, "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        export_best(self.run_dir, G_ema if weights is None else weights, meta, info)
        self.best = info


def open_run(cfg: TrainConfig, device: torch.device, *, resume: bool, main: bool = True
             ) -> tuple[Path, StatusWriter, "StopRequest"]:
    """The run directory a session writes (refused when a new run would land in an old one), its status
    writer and its stop request. Every training loop opens its run here."""
    run_dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg)
    if not resume and (run_dir / runs.CONFIG).exists():
        raise ConfigError(f"config field 'run_dir': {run_dir} already holds a run; continue it with "
                          f"--resume {run_dir} or choose another run dir")
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            (run_dir / runs.STOP).unlink(missing_ok=True)  # the stop that ended the previous session
    # started_at: this session's start (the ETA); host + device: engine.jobs.estimate uses only this
    # machine's runs (runs roots may be shared between machines)
    status = StatusWriter(run_dir / runs.STATUS, enabled=main,
                          started_at=time.time(), step=0, kimg=0.0, message="", host=socket.gethostname(),
                          device=device.type)
    return run_dir, status, StopRequest(run_dir)


def wait_for_gpu(run_dir: Path, status: StatusWriter, stop: "StopRequest") -> bool:
    """One run per GPU: wait as `queued` (engine.jobs.gpu); False (and `stopped` recorded) when a stop
    came while waiting."""
    from engine.jobs.gpu import acquire_gpu

    if acquire_gpu(run_dir, status, stop):
        return True
    status.set("stopped", message="stopped while queued for the GPU")
    return False


def record_end(status, stopping: bool, step: int, batch: int, time_s: float) -> None:
    """The last status of a session that ended by itself: `stopped` (a stop request, resumable) or
    `finished`; every loop ends through here so the pages read one wording."""
    kimg = step * batch / 1000
    if stopping:
        status.set("stopped", message=f"stopped at step {step}; resume continues from its checkpoint",
                   step=step, kimg=kimg)
        print(f"stopped at step {step}", flush=True)
    else:
        status.set("finished", message="done", step=step, kimg=kimg)
        print(f"finished: {step} steps, {kimg:.3f} kimg, {time_s:.1f} s", flush=True)


def train(cfg: TrainConfig, *, resume: bool = False, stop_after: int = 0) -> int:
    """Run (or continue) training as configured; returns 0. Rank 0 writes the run directory.
    A family with a family module (engine.families.MODULES: ddpm) runs the shared family loop."""
    from engine import families

    if cfg.family in families.MODULES:
        from engine.train.family_loop import train_family

        return train_family(cfg, resume=resume, stop_after=stop_after)
    device, amp_dtype = resolve(cfg)
    info = dist.init(device.type)
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    per_rank = cfg.batch // info.world_size
    if cfg.batch % info.world_size or per_rank % min(cfg.mbstd_group, per_rank):
        raise ConfigError(f"config field 'batch' ({cfg.batch}) must split into {info.world_size} equal "
                          f"per-GPU batches that are multiples of mbstd_group ({cfg.mbstd_group})")
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)

    # --- run directory (config.json is written once the data and models are known to be valid)
    main = info.is_main
    run_dir, status, stop = open_run(cfg, device, resume=resume, main=main)
    try:
        status.set("running", message="starting")
        if device.type == "cuda" and not info.enabled and not wait_for_gpu(run_dir, status, stop):
            return 0
        # --- the config this run records (config.json): the launched one with the two values left to run
        # time filled in (run_dir; data, the demo set prepared here when empty), resolved once into a copy
        # that nothing changes afterwards (the caller's object and launch.json stay as they were)
        cfg = C.replaced(cfg, run_dir=str(run_dir), data=training_data_dir(cfg))
        # --- data, models, optimisers, controllers
        data = load_training_data(cfg)
        batches = Batches(data, cfg, rank=info.rank, world_size=info.world_size, device=device)
        T = GanTrainer(cfg, num_classes=len(data.class_names), device=device, amp_dtype=amp_dtype,
                       info=info, data_dir=data.root)
        stats = Stats(device)
        step, time_s = 0, 0.0
        if resume:
            found = load_checkpoint(run_dir, map_location="cpu")
            if found is not None:
                ck, path = found
                T.load_state_dict(ck)
                batches.load_state_dict(ck["data"])
                stats.load_state_dict(ck["stats"])
                step, time_s = int(ck["step"]), float(ck["time_s"])
                if info.rank > 0:  # ranks draw different noise; only rank 0's RNG was saved
                    torch.manual_seed(cfg.seed + 7919 * info.rank + step)
                print(f"resumed from {path} at step {step} ({step * cfg.batch / 1000:.3f} kimg)",
                      flush=True)
            else:
                print(f"no whole checkpoint in {run_dir}; starting from step 0", flush=True)
        elif info.rank > 0:
            torch.manual_seed(cfg.seed + 7919 * info.rank)
        if main:
            C.save(cfg, run_dir / "config.json")
            truncate_csv(run_dir / "metrics_gan.csv", step)  # rows after the checkpoint happen again
        # TensorBoard beside the CSV; a resume purges the events after the checkpoint as truncate_csv does
        csv = MetricsCSV(run_dir / "metrics_gan.csv", extras=T.EXTRAS, tensorboard=cfg.tensorboard,
                         config=C.to_dict(cfg), purge_step=step + 1 if resume else None) if main else None
        best = BestModel(cfg, data, device, run_dir, enabled=main, resume=resume)
        total_steps = T.total_steps
        print(f"training {cfg.family} {cfg.res}px, {len(data.class_names)} classes, batch {cfg.batch} "
              f"({per_rank} x {info.world_size} rank(s)), {total_steps} steps ({cfg.kimg} kimg) on "
              f"{device} (amp {amp_dtype}) -> {run_dir}", flush=True)

        def every(kimg_interval: float) -> bool:  # did this step cross a multiple of the interval?
            return schedule.crossed(step, cfg.batch, kimg_interval)

        grid_kimg = schedule.sample_interval_kimg(cfg.sample_kimg, cfg.kimg)  # >= 10 grids per run

        def snapshot() -> None:
            if main:
                state = T.state_dict()
                state.update(step=step, kimg=step * cfg.batch / 1000, time_s=time_s,
                             data=batches.state_dict(), stats=stats.state_dict(),
                             config=json.dumps(C.to_dict(cfg)))
                save_checkpoint(run_dir, state, step, keep_last=cfg.keep_last)
                meta = T.export_meta(data.class_names, step)
                export_generator(run_dir, T.G_ema, meta)
                best.update(T.G_ema, meta, step)  # after the checkpoint: a failure here loses nothing

        if main and step == 0:
            save_grid(T.G_ema, runs.grid_path(run_dir, step), T.num_classes,
                      cfg.grid_per_class, seed=cfg.seed)
        status.set("running", message="", step=step, kimg=step * cfg.batch / 1000)
        start_step, t_row, n_row = step, time.perf_counter(), step
        t_last = time.perf_counter()
        stopping = False
        # --- the loop: one step = one D update and one G update on a global batch of cfg.batch
        while step < total_steps:
            real, y = batches.next()
            T.train_step(real, y, step, stats)
            step += 1
            now = time.perf_counter()
            time_s += now - t_last
            t_last = now
            kimg = step * cfg.batch / 1000
            want_stop = stop.requested() or bool(stop_after and step - start_step >= stop_after)
            if step % cfg.ada_interval == 0:  # controllers: one host sync per ada_interval steps
                T.update_controls(step, kimg, on_event=(lambda ev: log_event(run_dir, ev)) if main else None)
            if info.enabled:  # every rank stops on the same step
                want_stop = step % cfg.ada_interval == 0 and dist.any_flag(want_stop, device, info)
            if every(cfg.log_kimg) or step == total_steps:
                row = stats.result(T.reduce_stats)
                stats.reset()
                dt = max(now - t_row, 1e-9)
                row.update(T.row_extras())
                row.update(epoch=round(batches.epoch_float, 6), step=step, kimg=kimg,
                           img_per_s=(step - n_row) * cfg.batch / dt, time_s=time_s)
                t_row, n_row = now, step
                if main:
                    csv.write(row)
                    print(f"step {step:>7d} kimg {kimg:8.3f}  d {row.get('d_loss', 0):.4f}  "
                          f"g {row.get('g_loss', 0):.4f}  acc {row.get('acc', 0):.3f}  "
                          f"p {T.ada.p:.3f}  {row['img_per_s']:.1f} img/s", flush=True)
            if main and (every(grid_kimg) or step == total_steps):
                save_grid(T.G_ema, runs.grid_path(run_dir, step), T.num_classes,
                          cfg.grid_per_class, seed=cfg.seed)
            if want_stop and step < total_steps:
                status.set("stopping", message="saving a checkpoint", step=step, kimg=kimg)
            if every(cfg.snap_kimg) or step == total_steps or want_stop:
                snapshot()
            status.heartbeat(step=step, kimg=kimg)
            if want_stop and step < total_steps:
                stopping = True
                break
        dist.barrier(info)
        record_end(status, stopping, step, cfg.batch, time_s)
        return 0
    except BaseException as e:
        status.set("failed", message=f"{type(e).__name__}: {e}")
        raise
    finally:
        stop.restore()
        if "batches" in locals():
            batches.close()
        if locals().get("csv") is not None:
            csv.close()  # flushes and closes the TensorBoard event file
        dist.cleanup()


def main(argv: list[str]) -> int:
    cfg, args = parse_args(argv)
    if args.dry_run:
        print(json.dumps(C.to_dict(cfg), indent=2))
        return 0
    return train(cfg, resume=bool(args.resume), stop_after=args.stop_after)  # it resolves the device first


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
