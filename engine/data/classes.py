"""The names the lab's data sets share: the NCT-CRC tissue classes, the splits, and the classes'
human-readable descriptions (assets/classes.json) for pages and reports."""
from __future__ import annotations

import json
from functools import lru_cache

from engine.utils import REPO_ROOT

# NCT-CRC-HE-100K's tissue classes in its order: the order the NCT sources and histosynth use, and the
# names of a 9-class run whose data set is gone.
NCT_CLASSES = ("ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM")
# train / val / test for training and model selection; eval held out for FID/LPIPS (disjoint from
# train in sets prepared with eval_disjoint).
SPLITS = ("train", "val", "test", "eval")


@lru_cache(maxsize=1)
def class_descriptions() -> dict[str, str]:
    """{class name: one-sentence description}; empty when the asset file is missing."""
    try:
        d = json.loads((REPO_ROOT / "assets" / "classes.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return {k: v for k, v in d.items() if not k.startswith("_")}
