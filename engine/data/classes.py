"""Human-readable descriptions of the tissue classes (assets/classes.json), for pages and reports."""
from __future__ import annotations

import json
from functools import lru_cache

from engine.utils import REPO_ROOT


@lru_cache(maxsize=1)
def class_descriptions() -> dict[str, str]:
    """{class name: one-sentence description}; empty when the asset file is missing."""
    try:
        d = json.loads((REPO_ROOT / "assets" / "classes.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return {k: v for k, v in d.items() if not k.startswith("_")}
