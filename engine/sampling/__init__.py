"""Sampling from trained generators, in small modules:

    parse.py     seeds, classes and steps as users type them (CLI flags and page boxes)
    load.py      the EMA generator an entry of a run points at (engine.runs knows the entries)
    generate.py  per-class generation by (class, seed), class grids
    mixing.py    style mixing (StyleGAN families)
    export.py    PNG file names, manifest.csv, the zip, the real-tile grid
    cli.py       `python -m engine sample`

The names below are the package's API (`from engine import sampling; sampling.generate(...)`).
"""
from engine.images import png_bytes, tile
from engine.runs import KIND_HELP, choices as checkpoint_choices, entries as list_checkpoints
from engine.sampling.export import MANIFEST_COLUMNS, export_zip, manifest_csv, real_grid, sample_filename
from engine.sampling.generate import class_grid, generate, is_family, seed_z
from engine.sampling.load import load_generator
from engine.sampling.mixing import layer_groups, mix_weights, style_mix, style_mix_batch
from engine.sampling.parse import MAX_SEEDS, parse_classes, parse_seeds, parse_step, take_seeds

__all__ = ["KIND_HELP", "MANIFEST_COLUMNS", "MAX_SEEDS", "checkpoint_choices", "class_grid", "export_zip",
           "generate", "is_family", "layer_groups", "list_checkpoints", "load_generator", "manifest_csv", "mix_weights",
           "parse_classes", "parse_seeds", "parse_step", "png_bytes", "real_grid", "sample_filename",
           "seed_z", "style_mix", "style_mix_batch", "take_seeds", "tile"]
