"""Sampling throughput of the `ddpm` family: one JSON line per (sampler, steps).

    python bench/sample_throughput.py                                  # demo net, 32 px, CPU
    python bench/sample_throughput.py --preset spec --res 64 --device cuda --n 256 --batch 128
    python bench/sample_throughput.py --samplers ddpm --steps 1000 --n 4   # full-T ancestral sampling

The net is freshly initialised (speed does not depend on the weights); the loop is the product's own
(engine.families.ddpm.DDPMFamily.sample: per-sample seeds, guidance, the diffusers schedulers). With
guidance > 0 every step runs the U-Net on twice the batch (conditional + unconditional). Any
DDPMConfig field can be set with --set name=value.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from engine.config import DDPM_PRESETS, DDPMConfig, from_dict  # noqa: E402
from engine.families.ddpm import DDPMFamily  # noqa: E402
from engine.models.unet import param_count  # noqa: E402


def bench(fam: DDPMFamily, sampler: str, steps: int, args) -> dict:
    classes = [i % 9 for i in range(args.n)]
    seeds = list(range(args.n))

    def sync():
        if fam.device.type == "cuda":
            torch.cuda.synchronize()

    fam.sample(classes[:2], seeds[:2], sampler=sampler, steps=2, guidance=args.guidance)  # warm-up
    sync()
    t0 = time.perf_counter()
    fam.sample(classes, seeds, sampler=sampler, steps=steps, guidance=args.guidance, batch=args.batch)
    sync()
    dt = time.perf_counter() - t0
    steps_run = steps or fam.diffusion.T
    evals = args.n * steps_run * (2 if args.guidance > 0 else 1)
    return {"bench": "sample_throughput", "preset": args.preset, "res": fam.res, "sampler": sampler,
            "steps": steps_run, "guidance": args.guidance, "n": args.n, "batch": args.batch,
            "device": str(fam.device), "amp": fam.amp and fam.device.type == "cuda",
            "params_m": round(param_count(fam.model) / 1e6, 3),
            "img_per_s": round(args.n / dt, 3), "s_per_img": round(dt / args.n, 4),
            "unet_img_evals_per_s": round(evals / dt, 1), "seconds": round(dt, 2),
            "threads": torch.get_num_threads() if fam.device.type == "cpu" else None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="demo", choices=sorted(DDPM_PRESETS), help="DDPM preset of the net")
    p.add_argument("--res", type=int, default=32)
    p.add_argument("--samplers", default="ddim,dpm,ddpm", help="comma-separated: ddim, dpm, ddpm")
    p.add_argument("--steps", default="10,25", help="comma-separated step counts (0 = all T)")
    p.add_argument("--n", type=int, default=16, help="images per measurement")
    p.add_argument("--batch", type=int, default=16, help="images per U-Net pass")
    p.add_argument("--guidance", type=float, default=1.0, help="guidance scale (0 = none: half the work)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--no-amp", action="store_true", help="fp32 on a GPU too")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="any other DDPMConfig field, e.g. --set channels=64")
    args = p.parse_args(argv)
    fields = dict(DDPM_PRESETS[args.preset])
    for kv in args.set:
        k, _, v = kv.partition("=")
        fields[k] = v
    cfg = from_dict(DDPMConfig, fields)
    device = "cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu"
    fam = DDPMFamily(cfg, args.res, 9, device, amp=not args.no_amp)
    for sampler in args.samplers.split(","):
        for steps in [int(s) for s in args.steps.split(",")]:
            print(json.dumps(bench(fam, sampler, steps, args)), flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
