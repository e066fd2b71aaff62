"""What the Data page shows, computed without a UI: prepared sets, count tables, preview grids."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from engine.data.classes import SPLITS
from engine.utils import data_root, read_json



def list_prepared(root: str | Path | None = None) -> list[Path]:
    """Prepared data sets (directories holding a dataset.json) directly under `root`, newest first."""
    root = Path(root) if root is not None else data_root()
    if not root.is_dir():
        return []
    # dot-folders are temp/old copies of a preparation in progress (prepare os.replace()s them in)
    found = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
             and (p / "dataset.json").is_file()]
    return sorted(found, key=lambda p: (p / "dataset.json").stat().st_mtime, reverse=True)


def describe(path: str | Path) -> str:
    """One line for a picker: name, source, size and total patches."""
    p = Path(path)
    info = read_json(p / "dataset.json", {}) or {}
    # eval is held out of train in sets with eval_disjoint (FID against training patches would reward
    # memorising them); older sets still load, their eval being a subset of train
    held_out = info.get("eval_disjoint", False)
    n = sum(sum(c.values()) for s, c in (info.get("counts") or {}).items() if s != "eval" or held_out)
    tag = " (synthetic)" if info.get("synthetic") else ""
    return f"{p.name} — {info.get('source', '?')}{tag}, {info.get('size', '?')} px, {n} patches"


def counts_table(info: dict) -> pd.DataFrame:
    """Patches per class (rows, in the data set's class order) and split (columns), with totals."""
    classes = list(info.get("class_names", []))
    counts = info.get("counts", {}) or {}
    df = pd.DataFrame({s: [int((counts.get(s) or {}).get(c, 0)) for c in classes] for s in SPLITS
                       if s in counts}, index=pd.Index(classes, name="class"))
    if not df.empty:
        df.loc["total"] = df.sum(axis=0)
    return df


def rejects_table(info: dict) -> pd.DataFrame:
    """Files skipped at preparation, by reason, with an example path for each."""
    rejected = info.get("rejected", {}) or {}
    examples = info.get("rejected_examples", {}) or {}
    rows = []
    for reason, n in sorted(rejected.items(), key=lambda kv: -int(kv[1])):
        ex = examples.get(reason) or []
        rows.append({"reason": reason, "count": int(n), "example": ex[0] if ex else ""})
    return pd.DataFrame(rows, columns=["reason", "count", "example"])


def preview_grid(images: np.ndarray, labels: np.ndarray, indices: np.ndarray, num_classes: int,
                 per_class: int = 8, seed: int = 0, pad: int = 2) -> np.ndarray:
    """A uint8 HWC mosaic with one row per class: `per_class` random patches of each (blank if fewer)."""
    from engine.images import tile

    rng = np.random.default_rng(seed)
    cells = np.full((num_classes, per_class, *images.shape[1:]), 255, np.uint8)
    lab = labels[indices]
    for c in range(num_classes):
        pool = indices[lab == c]
        pick = rng.choice(pool, size=min(per_class, len(pool)), replace=False) if len(pool) else []
        for j, i in enumerate(sorted(pick)):
            cells[c, j] = images[i]
    return tile(cells.reshape(-1, *images.shape[1:]), rows=num_classes, pad=pad)
