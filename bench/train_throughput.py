"""Training throughput of the StyleGAN2-lite step: one JSON line per configuration.

    python bench/train_throughput.py --res 64,128,256 --batch 32 --steps 50 --amp auto --compile
    python bench/train_throughput.py --res 32 --batch 8 --steps 5 --device cpu   # smoke test
    python bench/train_throughput.py --family ddpm --preset demo --res 32 --batch 16 --steps 10 --device cpu

Each line: img/s, s/kimg, peak memory, FLOPs per step (torch.utils.flop_counter over one eager
step, R1 steps weighted by 1/r1_every) and an MFU estimate against the device's dense peak. The step
is the trainer's own (engine.train.step.GanTrainer.train_step) on synthetic images, so data loading
is left out; everything else (ADA, R1, losses, G_ema, stats) is in. Any TrainConfig field can be set
with --set name=value (e.g. --set channel_base=16384 --set channel_max=512).

`--family ddpm` (any family with a family module, engine.families) times that family's own train_step
(engine.train.family_loop.build_family: its section from the family preset `--preset`, then --set for
its fields too) on the same synthetic batch; FLOPs are not counted there (gflop_per_step null).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from engine.config import TrainConfig, from_dict  # noqa: E402
from engine.train.logging import Stats  # noqa: E402
from engine.train.step import GanTrainer, resolve_amp  # noqa: E402

# Dense peak FLOP/s by GPU name fragment: (bf16/fp16 tensor cores, fp32 without tensor cores).
PEAKS = {"H200": (989e12, 67e12), "H100": (989e12, 67e12), "A100": (312e12, 19.5e12),
         "L40S": (362e12, 91.6e12), "A10": (125e12, 31.2e12), "V100": (125e12, 15.7e12)}


def peak_flops(device: torch.device, amp_dtype) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, (half, fp32) in PEAKS.items():
        if key in name:
            return half if amp_dtype is not None else fp32
    return None


def count_flops(T: GanTrainer, real, y, stats) -> float:
    """FLOPs of one average step, counted on the eager modules (compiled code hides its ops)."""
    from torch.utils.flop_counter import FlopCounterMode

    class _NoModules:  # totals only: the per-module tracker trips over no_grad views of parameters
        parents = {"Global"}

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return None

    saved = T.G_fwd, T.D_fwd
    T.G_fwd, T.D_fwd = T.G_ddp, T.D_ddp
    counts = []
    try:
        for step in (0, 1):  # step 0 runs R1 (and path length when on), step 1 does not
            fc = FlopCounterMode(display=False)
            fc.mod_tracker = _NoModules()
            with fc:
                T.train_step(real, y, step, stats)
            counts.append(fc.get_total_flops())
    finally:
        T.G_fwd, T.D_fwd = saved
    every = max(1, T.cfg.r1_every)
    return counts[1] + (counts[0] - counts[1]) / every


def bench_family(res: int, args) -> dict:
    """img/s of a family module's train_step (ddpm ...), one JSON-able dict."""
    from engine import config as C
    from engine.train.family_loop import build_family

    fields = {"family": args.family, "res": res, "batch": args.batch, "amp": args.amp, "compile": args.compile,
              "device": args.device, "workers": 0, "preset": args.preset or C.default_preset()}
    section = {}
    sec_names = {f.name for f in dataclasses.fields(C.FAMILY_SECTIONS[args.family][0])}
    for kv in args.set:
        k, _, v = kv.partition("=")
        (section if k in sec_names else fields)[k] = v
    fields = {**C.preset_values(fields["preset"]), **fields, args.family: section}
    cfg = from_dict(TrainConfig, C.resolve_section(fields))
    device = torch.device("cuda" if cfg.device != "cpu" and torch.cuda.is_available() else "cpu")
    amp_dtype = resolve_amp(cfg.amp, device)
    fam = build_family(cfg, 9, device, amp=amp_dtype is not None)
    real = torch.rand(cfg.batch, 3, res, res, device=device) * 2 - 1
    y = torch.arange(cfg.batch, device=device) % 9

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    for _ in range(args.warmup):
        fam.train_step(real, y)
    sync()
    warm_s = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        out = fam.train_step(real, y)
    float(out["loss"])  # the loop's host sync at a log row
    sync()
    dt = time.perf_counter() - t0
    img_s = args.steps * cfg.batch / dt
    mem = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
           else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"bench": "train_throughput", "family": cfg.family, "preset": cfg.preset, "res": res,
            "batch": cfg.batch, "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else "off", "compile": cfg.compile,
            "section": getattr(cfg, cfg.family), "steps": args.steps,
            "img_per_s": round(img_s, 2), "s_per_kimg": round(1000 / img_s, 3),
            "peak_mem_gb": round(mem / 2**30, 3), "warmup_s": round(warm_s, 2), "gflop_per_step": None,
            "threads": torch.get_num_threads() if device.type == "cpu" else None}


def bench(res: int, args) -> dict:
    fields = {"res": res, "batch": args.batch, "amp": args.amp, "compile": args.compile,
              "channels_last": args.channels_last, "device": args.device, "workers": 0}
    for kv in args.set:
        k, _, v = kv.partition("=")
        fields[k] = v
    cfg = from_dict(TrainConfig, fields)
    device = torch.device("cuda" if cfg.device != "cpu" and torch.cuda.is_available() else "cpu")
    amp_dtype = resolve_amp(cfg.amp, device)
    torch.manual_seed(0)
    T = GanTrainer(cfg, num_classes=9, device=device, amp_dtype=amp_dtype)
    stats = Stats(device)
    real = torch.rand(cfg.batch, 3, res, res, device=device) * 1.8 - 0.9
    if cfg.channels_last:
        real = real.contiguous(memory_format=torch.channels_last)
    y = torch.arange(cfg.batch, device=device) % 9
    flops = count_flops(T, real, y, stats) if not args.no_flops else None

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    for step in range(args.warmup):  # includes torch.compile's first traces
        T.train_step(real, y, step, stats)
    sync()
    warm_s = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for step in range(args.warmup, args.warmup + args.steps):
        T.train_step(real, y, step, stats)
        if (step + 1) % cfg.ada_interval == 0:
            T.update_controls(step + 1, 0.0)  # the loop's one host sync per ada_interval steps
    sync()
    dt = time.perf_counter() - t0
    img_s = args.steps * cfg.batch / dt
    peak = peak_flops(device, amp_dtype)
    mem = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
           else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"bench": "train_throughput", "res": res, "batch": cfg.batch, "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else "off", "compile": cfg.compile,
            "channels_last": cfg.channels_last, "channel_base": cfg.channel_base,
            "channel_max": cfg.channel_max, "z_dim": cfg.z_dim, "steps": args.steps,
            "img_per_s": round(img_s, 2), "s_per_kimg": round(1000 / img_s, 3),
            "peak_mem_gb": round(mem / 2**30, 3), "warmup_s": round(warm_s, 2),
            "gflop_per_step": None if flops is None else round(flops / 1e9, 2),
            "tflop_per_s": None if flops is None else round(flops * args.steps / dt / 1e12, 3),
            "mfu": None if flops is None or peak is None else round(flops * args.steps / dt / peak, 4),
            "threads": torch.get_num_threads() if device.type == "cpu" else None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--res", default="64,128,256", help="comma-separated resolutions")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=50, help="timed steps (after --warmup)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--amp", default="auto", choices=("auto", "bf16", "fp16", "off"))
    p.add_argument("--compile", action="store_true")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--no-flops", action="store_true", help="skip the FLOP count (and MFU)")
    p.add_argument("--family", default="stylegan2", help="stylegan2 (GanTrainer) or a family with a family "
                   "module, e.g. ddpm")
    p.add_argument("--preset", default="", help="the family section's preset (default: by device, as train)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="any other TrainConfig field, e.g. --set channel_base=16384")
    args = p.parse_args(argv)
    if args.device == "cpu":
        args.amp = "off" if args.amp == "auto" else args.amp
    for res in [int(r) for r in args.res.split(",")]:
        from engine import families

        run = bench_family if args.family in families.MODULES else bench
        print(json.dumps(run(res, args)), flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
