"""`python -m engine sample`: per-class samples (PNGs + manifest.csv + grid.png) or style mixes from a run."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from engine import runs
from engine import config as C
from engine.config import ConfigError, SampleConfig
from engine.images import png_bytes, tile
from engine.sampling.export import manifest_csv, real_grid, sample_filename
from engine.sampling.generate import generate
from engine.sampling.load import load_generator
from engine.sampling.mixing import style_mix
from engine.sampling.parse import parse_classes, parse_seeds
from engine.utils import atomic_write_bytes, atomic_write_text


def _pair(text: str, class_names: list[str]) -> tuple[int, int]:
    if ":" not in text:
        raise ConfigError(f"donor: expected CLASS:SEED like TUM:3, got {text!r}")
    c, s = text.rsplit(":", 1)
    return parse_classes([c], class_names)[0], parse_seeds(s)[0]


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m engine sample",
                                description="Per-class samples (PNGs + manifest.csv + grid.png) from a run.")
    C.add_arguments(p, SampleConfig)  # one flag per field: --run-dir, --step, --truncation, --sampler ...
    cfg = C.from_args(SampleConfig, p.parse_args(argv))  # validated: ranges, step, the style-mixing pair
    if not Path(cfg.run_dir).is_dir():
        raise ConfigError(f"run_dir: {cfg.run_dir} is not a directory")
    try:
        G, meta = load_generator(cfg.run_dir, cfg.step_arg, device=cfg.device)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(str(e)) from None
    names = meta["class_names"]
    classes, seeds = parse_classes(cfg.classes, names), parse_seeds(cfg.seeds)
    out = Path(cfg.out)
    if cfg.donor:
        if hasattr(G, "sample"):
            raise ConfigError(f"style mixing is StyleGAN-only; this run is {meta['family']}")
        mix = cfg.mix_arg
        dst = _pair(cfg.donor, names)
        try:
            images = np.stack([style_mix(G, (c, s), dst, mix, cfg.truncation) for c in classes for s in seeds])
        except ValueError as e:
            raise ConfigError(str(e)) from None
        records = [{"class_index": c, "class": names[c], "seed": s, "psi": cfg.truncation}
                   for c in classes for s in seeds]
    else:
        opts = {"sampler": cfg.sampler or None, "steps": cfg.sample_steps, "eta": cfg.eta, "guidance": cfg.guidance}
        if not hasattr(G, "sample") and any(v is not None for v in opts.values()):
            raise ConfigError("--sampler, --sample-steps, --eta and --guidance apply to diffusion runs (ddpm); "
                              f"this run is {meta.get('family', 'stylegan2')}: use --truncation")
        if hasattr(G, "sample") and cfg.truncation != 1.0:
            print(f"note: truncation is StyleGAN-only; ignored for a {meta['family']} run", flush=True)
        images, records = generate(G, classes, seeds, cfg.truncation, noise_mode=cfg.noise_mode,
                                   class_names=names,
                                   progress=lambda d, t: print(f"{d}/{t} images", flush=True),
                                   **(opts if hasattr(G, "sample") else {}))
    for i, (img, r) in enumerate(zip(images, records)):
        atomic_write_bytes(out / sample_filename(i, r), png_bytes(img))
    atomic_write_text(out / "manifest.csv", manifest_csv(records, meta["step"]))
    if hasattr(G, "sample") and not cfg.donor:  # what a diffusion run's patches were drawn with
        atomic_write_text(out / "sampler.json", json.dumps(G.sample_options(**opts), indent=2) + "\n")
    atomic_write_bytes(out / "grid.png", png_bytes(tile(images, rows=len(classes))))
    if cfg.real_per_class:
        real = real_grid(cfg.run_dir, [names[c] for c in classes], cfg.real_per_class, size=meta["res"])
        atomic_write_bytes(out / "real_grid.png", png_bytes(real))
        print(f"wrote real_grid.png: {cfg.real_per_class} real patches per class from the eval split of "
              f"{runs.data_dir(cfg.run_dir)}")
    print(f"wrote {len(images)} images, manifest.csv and grid.png to {out} "
          f"(run {Path(cfg.run_dir).name}, step {meta['step']}, {meta['kind']})")
    return 0
