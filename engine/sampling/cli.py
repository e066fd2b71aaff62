"""`python -m engine sample`: per-class samples (PNGs + manifest.csv + grid.png) or style mixes from a run."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from engine import runs
from engine.config import ConfigError
from engine.images import png_bytes, tile
from engine.sampling.export import manifest_csv, real_grid, sample_filename
from engine.sampling.generate import generate
from engine.sampling.load import load_generator
from engine.sampling.mixing import style_mix
from engine.sampling.parse import MAX_SEEDS, parse_classes, parse_seeds, parse_step
from engine.utils import atomic_write_bytes, atomic_write_text


def _pair(text: str, class_names: list[str]) -> tuple[int, int]:
    if ":" not in text:
        raise ConfigError(f"donor: expected CLASS:SEED like TUM:3, got {text!r}")
    c, s = text.rsplit(":", 1)
    return parse_classes([c], class_names)[0], parse_seeds(s)[0]


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m engine sample",
                                description="Per-class samples (PNGs + manifest.csv + grid.png) from a run.")
    p.add_argument("--run-dir", required=True, help="run directory (runs/<id>)")
    p.add_argument("--step", default=None, help="checkpoint step, latest (the default: the newest checkpoint, "
                                                  "the export of a finished run) or best (exports/best)")
    p.add_argument("--classes", default="all", help="class names or indices, e.g. ADI,TUM (default: all)")
    p.add_argument("--seeds", default="0-7", help="seeds, e.g. 0-7 or 1,5,9")
    p.add_argument("--truncation", type=float, default=1.0, help="truncation psi in [0, 1]")
    p.add_argument("--noise-mode", default="const", choices=("const", "random", "none"))
    # diffusion runs (ddpm): the sampler options, by their DDPMConfig names; unset = the run's defaults
    p.add_argument("--sampler", default=None, choices=("ddim", "ddpm", "dpm"), help="ddpm runs: sampler")
    p.add_argument("--sample-steps", type=int, default=None, help="ddpm runs: denoising steps")
    p.add_argument("--eta", type=float, default=None, help="ddpm runs: DDIM eta (0 = deterministic)")
    p.add_argument("--guidance", type=float, default=None, help="ddpm runs: classifier-free guidance scale")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--real-per-class", type=int, default=0,
                   help="also write real_grid.png: this many real patches per class from the eval split of "
                        "the run's data set (config.json `data`), to compare with grid.png by eye")
    p.add_argument("--donor", default=None, help="style mixing: donor CLASS:SEED; every sample becomes a mix")
    p.add_argument("--crossover", type=int, default=None, help="style mixing: layers >= this from the donor")
    p.add_argument("--mix", default=None, help="style mixing: per-layer donor weights, comma separated")
    a = p.parse_args(argv)
    if not 0.0 <= a.truncation <= 1.0:
        raise ConfigError(f"truncation must lie in [0, 1], got {a.truncation}")
    if not Path(a.run_dir).is_dir():
        raise ConfigError(f"run_dir: {a.run_dir} is not a directory")
    if not 0 <= a.real_per_class <= MAX_SEEDS:
        raise ConfigError(f"real_per_class must lie in 0..{MAX_SEEDS}, got {a.real_per_class}")
    try:
        G, meta = load_generator(a.run_dir, parse_step(a.step), device=a.device)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(str(e)) from None
    names = meta["class_names"]
    classes, seeds = parse_classes(a.classes, names), parse_seeds(a.seeds)
    out = Path(a.out)
    if a.donor:
        if hasattr(G, "sample"):
            raise ConfigError(f"style mixing is StyleGAN-only; this run is {meta['family']}")
        if (a.crossover is None) == (a.mix is None):
            raise ConfigError("style mixing: give exactly one of --crossover K or --mix w1,w2,...")
        mix = a.crossover if a.crossover is not None else [float(v) for v in a.mix.split(",")]
        dst = _pair(a.donor, names)
        try:
            images = np.stack([style_mix(G, (c, s), dst, mix, a.truncation) for c in classes for s in seeds])
        except ValueError as e:
            raise ConfigError(str(e)) from None
        records = [{"class_index": c, "class": names[c], "seed": s, "psi": a.truncation}
                   for c in classes for s in seeds]
    else:
        opts = {"sampler": a.sampler, "steps": a.sample_steps, "eta": a.eta, "guidance": a.guidance}
        if not hasattr(G, "sample") and any(v is not None for v in opts.values()):
            raise ConfigError("--sampler, --sample-steps, --eta and --guidance apply to diffusion runs (ddpm); "
                              f"this run is {meta.get('family', 'stylegan2')}: use --truncation")
        if hasattr(G, "sample") and a.truncation != 1.0:
            print(f"note: truncation is StyleGAN-only; ignored for a {meta['family']} run", flush=True)
        images, records = generate(G, classes, seeds, a.truncation, noise_mode=a.noise_mode,
                                   class_names=names,
                                   progress=lambda d, t: print(f"{d}/{t} images", flush=True),
                                   **(opts if hasattr(G, "sample") else {}))
    for i, (img, r) in enumerate(zip(images, records)):
        atomic_write_bytes(out / sample_filename(i, r), png_bytes(img))
    atomic_write_text(out / "manifest.csv", manifest_csv(records, meta["step"]))
    if hasattr(G, "sample") and not a.donor:  # what a diffusion run's patches were drawn with
        atomic_write_text(out / "sampler.json", json.dumps(G.sample_options(**opts), indent=2) + "\n")
    atomic_write_bytes(out / "grid.png", png_bytes(tile(images, rows=len(classes))))
    if a.real_per_class:
        real = real_grid(a.run_dir, [names[c] for c in classes], a.real_per_class, size=meta["res"])
        atomic_write_bytes(out / "real_grid.png", png_bytes(real))
        print(f"wrote real_grid.png: {a.real_per_class} real patches per class from the eval split of "
              f"{runs.data_dir(a.run_dir)}")
    print(f"wrote {len(images)} images, manifest.csv and grid.png to {out} "
          f"(run {Path(a.run_dir).name}, step {meta['step']}, {meta['kind']})")
    return 0
