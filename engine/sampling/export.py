"""Writing samples out: file names, manifest.csv, the zip the Samples page offers, the real-tile grid."""
from __future__ import annotations

import csv
import io
import os
import zipfile

import numpy as np

from engine import runs
from engine.config import ConfigError
from engine.images import png_bytes, tile

MANIFEST_COLUMNS = ("file", "class", "seed", "psi", "checkpoint_step")


def real_grid(run_dir: str | os.PathLike, classes: list[str], per_class: int, seed: int = 0,
              size: int | None = None) -> np.ndarray:
    """One row per class of real eval-split patches of the run's data set, resized to `size` (e.g. the
    generator's res); a class with fewer patches leaves its row's end blank. ConfigError when the data
    set is missing or lacks a class."""
    from engine.data.dataset import load_prepared, real_tiles

    d = runs.data_dir(run_dir)
    try:
        data = load_prepared(d)
    except FileNotFoundError as e:
        raise ConfigError(f"real_per_class: {e}") from None
    rows, px = [], size or data.size
    for c in classes:
        t = real_tiles(data, c, per_class, seed, size=px)
        pad = np.full((per_class - len(t), px, px, 3), 255, np.uint8)
        rows.append(np.concatenate([t, pad]))
    return tile(np.concatenate(rows), rows=len(classes))


def sample_filename(i: int, record: dict) -> str:
    return f"{i:05d}_{record['class']}_seed{record['seed']}.png"


def manifest_csv(records: list[dict], checkpoint_step: int | None) -> str:
    """manifest.csv text: file, class, seed, psi, checkpoint_step (one row per image)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(MANIFEST_COLUMNS)
    for i, r in enumerate(records):
        w.writerow([sample_filename(i, r), r["class"], r["seed"], r["psi"],
                    "" if checkpoint_step is None else int(checkpoint_step)])
    return buf.getvalue()


def export_zip(images: np.ndarray, records: list[dict], checkpoint_step: int | None) -> bytes:
    """A zip of one PNG per image plus manifest.csv (file, class, seed, psi, checkpoint_step)."""
    if len(images) != len(records):
        raise ValueError(f"export_zip: {len(images)} images but {len(records)} records")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:  # PNGs are compressed already
        for i, (img, r) in enumerate(zip(images, records)):
            zf.writestr(sample_filename(i, r), png_bytes(img))
        zf.writestr("manifest.csv", manifest_csv(records, checkpoint_step))
    return buf.getvalue()
