"""Reading evaluation reports (runs/<id>/eval/<report id>.json) into tables for the page and notebooks."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from engine import runs
from engine.utils import read_json

REPORT_RE = re.compile(r"^\d{8}-\d{6}(-\d+)?\.json$")


def list_reports(run_dir) -> list[dict]:
    """Every readable report of a run, oldest first (a half-written or foreign file is skipped)."""
    d = runs.eval_dir(run_dir)
    if not d.is_dir():
        return []
    reports = [read_json(p) for p in sorted(d.iterdir()) if REPORT_RE.match(p.name)]
    return [r for r in reports if isinstance(r, dict) and isinstance(r.get("metrics"), dict)]


def report_state(report: dict) -> str:
    """"failed" or "finished". A report written before reports had a state is failed when every metric in
    it failed (an evaluation without its feature space saved such empty reports)."""
    if report.get("state") in ("failed", "finished"):
        return report["state"]
    m = report.get("metrics") or {}
    return "failed" if not m or all(isinstance(r, dict) and "error" in r for r in m.values()) else "finished"


def failed_reason(report: dict) -> str:
    """Why a failed report has no result: each distinct error once, with the metrics it stopped."""
    by_error: dict[str, list[str]] = {}
    for name, r in (report.get("metrics") or {}).items():
        if isinstance(r, dict) and "error" in r:
            by_error.setdefault(r["error"], []).append(name)
    return " ".join(f"{', '.join(names)}: {err}" for err, names in by_error.items()) or "no metric was run"


def load_arrays(run_dir, report: dict) -> dict[str, np.ndarray]:
    """The side arrays of a report (e.g. memorisation pairs); {} when it has none."""
    info = report.get("arrays") or {}
    path = runs.eval_dir(run_dir) / str(info.get("file", ""))
    if not info or not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _get(d: dict, *keys, default=None):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


def headline(report: dict) -> dict:
    """Overall numbers of one report (None where a metric was not run or failed)."""
    m = report.get("metrics", {})
    ds = _get(m, "downstream", "sets", default={}) or {}
    div = _get(m, "lpips", "feature_diversity", default={}) or {}
    return {"report": report.get("id"), "step": _get(report, "checkpoint", "step"),
            "kimg": _get(report, "checkpoint", "kimg"), "features": _get(report, "features", "space"),
            "n_generated": report.get("n_generated"),
            "n_real": _get(report, "n_real", report.get("real_split", "train")),
            "fid": _get(m, "fid", "value"), "kid": _get(m, "kid", "mean"), "kid_std": _get(m, "kid", "std"),
            "precision": _get(m, "pr", "precision"), "recall": _get(m, "pr", "recall"),
            "is": _get(m, "is", "mean"), "is_std": _get(m, "is", "std"),
            "diversity_generated": _get(div, "generated", "mean"), "diversity_real": _get(div, "real", "mean"),
            "lpips_generated": _get(m, "lpips", "lpips", "generated", "mean"),
            "lpips_real": _get(m, "lpips", "lpips", "real", "mean"),
            "acc_real": _get(ds, "real", "accuracy"), "acc_synthetic": _get(ds, "synthetic", "accuracy"),
            "acc_real+synthetic": _get(ds, "real+synthetic", "accuracy"),
            "cas": _get(m, "cas", "cas"), "cas_real_accuracy": _get(m, "cas", "real_accuracy"),
            "memorised_fraction": _get(m, "memorisation", "flagged_fraction"),
            "H_gap": _get(m, "stain", "H", "wasserstein"), "E_gap": _get(m, "stain", "E", "wasserstein")}


def history_table(reports: list[dict]) -> pd.DataFrame:
    """One row per report (headline numbers), sorted by checkpoint step: the page's history chart.
    Failed reports (no result in them) are left out: they are not a point of the history."""
    df = pd.DataFrame([headline(r) for r in reports if report_state(r) != "failed"])
    return df.sort_values(["step", "report"], kind="stable").reset_index(drop=True) if len(df) else df


def per_class_table(report: dict) -> pd.DataFrame:
    """Rows = classes; columns = every per-class number the report has (FID, KID +- std, P/R, N,
    diversity generated/real, LPIPS generated/real, downstream recall per training set, CAS and
    the classifier's real accuracy, colour gaps)."""
    m, names = report.get("metrics", {}), report.get("class_names", [])
    rows = {n: {"n_generated": _get(report, "n_generated_per_class", n),
                "n_real": _get(report, "n_real_per_class", report.get("real_split", "train"), n)} for n in names}
    for n in names:
        r = rows[n]
        r["fid"] = _get(m, "fid", "per_class", n, "value")
        r["kid"] = _get(m, "kid", "per_class", n, "mean")
        r["kid_std"] = _get(m, "kid", "per_class", n, "std")
        r["precision"] = _get(m, "pr", "per_class", n, "precision")
        r["recall"] = _get(m, "pr", "per_class", n, "recall")
        for side in ("generated", "real"):
            r[f"diversity_{side}"] = _get(m, "lpips", "feature_diversity", side, "per_class", n, "mean")
            r[f"diversity_{side}_std"] = _get(m, "lpips", "feature_diversity", side, "per_class", n, "std")
            r[f"lpips_{side}"] = _get(m, "lpips", "lpips", side, "per_class", n, "mean")
            r[f"lpips_{side}_std"] = _get(m, "lpips", "lpips", side, "per_class", n, "std")
        for s, v in (_get(m, "downstream", "sets", default={}) or {}).items():
            r[f"recall_{s}"] = _get(v, "per_class_recall", n)
        r["cas"] = _get(m, "cas", "per_class", n, "cas")
        r["cas_real_accuracy"] = _get(m, "cas", "per_class", n, "real_accuracy")
        r["memorised"] = _get(m, "memorisation", "per_class", n, "flagged")
        for s in ("H", "E"):
            r[f"{s}_gap"] = _get(m, "stain", "per_class", n, s, "wasserstein")
    df = pd.DataFrame.from_dict(rows, orient="index")
    return df.dropna(axis=1, how="all")
