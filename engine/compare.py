"""`python -m engine compare RUN [RUN ...]`: several runs (any families, one data set) side by side on
comparable evaluation reports, with their training cost.

    python -m engine compare runs/A runs/B runs/C [--key N] [--metrics fid,kid,cas] [--csv FILE|-]

What makes two reports comparable (`comparable_key`): the numbers of two reports may stand in one
column only when they measure the same thing the same way:
  - the real side: the data set the report compared against (`data`), its real split (`real_split`)
    and the real-patch cap (`n_real`);
  - the feature space (`features`) *and its weights* (the `weights_sha256` the report carries: the
    `domain` classifier retrained is another space);
  - the sample count (`n_generated`): FID is biased at small N, so FIDs at different N differ by
    construction; the truncation of the samples (`truncation`) changes their distribution;
  - `by_class`: the per-class view of a group is then complete for every run in it;
  - the options that change a metric's value (`lpips_net`, `downstream_arch`, `downstream_epochs`),
    taken from the report's config even when that metric did not run (its defaults, then).
Not in the key (they change only the random draw or the estimate's spread, which the error bars
carry): `seed`, `kid_subsets`, `lpips_pairs`, `batch`, `device`; nor the checkpoint (each run's own
is what is compared). They are copied into `Comparison.settings` all the same, so that the missing
runs are evaluated with identical settings.

`compare` keeps the latest finished report per run and key, groups the reports by key, chooses one
group (by default the one covering most runs, then the newest) and builds one table from that group
alone: a report of another group never enters a column; `Comparison.excluded` says why each other
group is out, `missing` lists the runs with no report in the chosen group and `settings` the
EvalConfig fields that `engine.jobs.eval.start_eval(run_id, settings)` evaluates them with.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd

from engine import runs
from engine.config import DEFAULT_METRICS, ConfigError, flag
from engine.metrics import report as R
from engine.utils import runs_root

# Metric columns of the table, each with the error bar the report carries for it (None: the report
# carries none). Names are the report tables' (engine.metrics.report.headline / per_class_table).
METRIC_COLUMNS: tuple[tuple[str, str | None], ...] = (
    ("fid", None), ("kid", "kid_std"), ("precision", None), ("recall", None), ("cas", None),
    ("lpips_generated", "lpips_generated_std"), ("diversity_generated", "diversity_generated_std"),
    ("acc_synthetic", None), ("acc_real+synthetic", None), ("acc_real", None))
# Per class, downstream accuracy is the recall of the class on real test patches.
CLASS_COLUMNS: tuple[tuple[str, str | None], ...] = METRIC_COLUMNS[:7] + (
    ("recall_synthetic", None), ("recall_real+synthetic", None), ("recall_real", None))
COST_COLUMNS = ("img_per_s", "time_s", "best_kimg")
RUN_COLUMNS = ("run", "name", "family", "report", "step", "kimg")
# `metrics=` may name report metrics (the registry's names) or table columns
METRIC_GROUPS = {"fid": ("fid",), "kid": ("kid",), "pr": ("precision", "recall"), "cas": ("cas",),
                 "lpips": ("lpips_generated", "diversity_generated"),
                 "downstream": ("acc_synthetic", "acc_real+synthetic", "acc_real")}
DOWNSTREAM_CLASS = {"acc_synthetic": "recall_synthetic", "acc_real+synthetic": "recall_real+synthetic",
                    "acc_real": "recall_real"}
# EvalConfig fields copied from the chosen group's report, so the missing runs get identical settings
SETTINGS = ("metrics", "features", "by_class", "n", "n_real", "real_split", "data", "domain_weights",
            "inception_weights", "timm_weights", "lpips_net", "lpips_weights", "lpips_pairs", "kid_subsets",
            "truncation", "seed", "downstream_arch", "downstream_epochs", "memorisation_threshold",
            "memorisation_pairs", "memorisation_train_cap")
COMPARABLE_HELP = ("Reports are comparable when they share the data set and real split, the feature space "
                   "and its weights, the number of generated (and real) patches, the truncation, the per-class "
                   "flag and the LPIPS / downstream options; the seed and the KID subsets only change the "
                   "random draw, which the error bars carry. Numbers of reports that differ in any of these "
                   "never share a column.")


# ----------------------------------------------------------------------------------------------
# The comparable key

@dataclass(frozen=True)
class ReportKey:
    """What two reports must share to stand in one column (see the module docstring)."""
    data: str
    features: str
    weights: str | None          # the feature space's weights_sha256 (else its weights path)
    n_generated: int
    real_split: str
    n_real: int | None           # EvalConfig.n_real: the real cap per split (0 = as many as generated)
    by_class: bool
    truncation: float
    lpips_net: str | None
    downstream_arch: str | None
    downstream_epochs: int | None

    LABELS = {"data": "data set", "features": "feature space", "weights": "feature weights",
              "n_generated": "generated patches", "real_split": "real split", "n_real": "real patches per split",
              "by_class": "per-class metrics", "truncation": "truncation", "lpips_net": "LPIPS trunk",
              "downstream_arch": "downstream architecture", "downstream_epochs": "downstream epochs"}

    def describe(self) -> str:
        """`domain (weights 1a2b3c) · 18 generated · real eval (cap: as many) · per class · truncation 1 ...`"""
        w = f" (weights {self.weights})" if self.weights else ""
        cap = "as many as generated" if not self.n_real else f"at most {self.n_real}"
        return (f"`{self.features}`{w} · {self.n_generated} generated · real `{self.real_split}` ({cap}) · "
                f"{'per class' if self.by_class else 'overall only'} · truncation {self.truncation:g} · "
                f"LPIPS {self.lpips_net} · downstream {self.downstream_arch} x {self.downstream_epochs} epochs")

    def differences(self, other: "ReportKey") -> list[str]:
        """`feature space: domain vs inception`, one per field that differs."""
        out = []
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if a != b:
                out.append(f"{self.LABELS[f.name]}: {a} vs {b}")
        return out


def _cfg(report: dict) -> dict:
    return report.get("config") if isinstance(report.get("config"), dict) else {}


def _norm_path(p) -> str:
    return str(Path(p).expanduser().resolve()) if p else ""


def comparable_key(report: dict) -> ReportKey:
    """The key of one report (reports written before they carried their config fall back to the report's
    own fields: features, n_generated, real_split, truncation, per-class results)."""
    cfg, feats = _cfg(report), report.get("features") or {}
    metrics = report.get("metrics") or {}
    by_class = cfg.get("by_class", cfg.get("per_class"))
    if by_class is None:
        by_class = any(isinstance(m, dict) and "per_class" in m for m in metrics.values())
    epochs = cfg.get("downstream_epochs", (metrics.get("downstream") or {}).get("epochs"))
    return ReportKey(
        data=_norm_path(report.get("data") or cfg.get("data")),
        features=str(feats.get("space") or cfg.get("features") or "domain"),
        weights=feats.get("weights_sha256") or (str(feats["weights"]) if feats.get("weights") else None),
        n_generated=int(report.get("n_generated") or 0),
        real_split=str(report.get("real_split") or cfg.get("real_split") or "eval"),
        n_real=None if cfg.get("n_real") is None else int(cfg["n_real"]),
        by_class=bool(by_class),
        truncation=float(report.get("truncation", cfg.get("truncation", 1.0))),
        lpips_net=cfg.get("lpips_net", (metrics.get("lpips") or {}).get("lpips", {}).get("net")),
        downstream_arch=cfg.get("downstream_arch", (metrics.get("downstream") or {}).get("arch")),
        downstream_epochs=None if epochs is None else int(epochs))


# ----------------------------------------------------------------------------------------------
# Runs, groups, the comparison

@dataclass
class RunInfo:
    run_id: str
    run_dir: Path
    name: str
    family: str
    data: str                    # the prepared data set it trained on (resolved)

    @property
    def title(self) -> str:
        return f"{self.name} ({self.run_id})" if self.name else self.run_id


@dataclass
class Group:
    """Comparable reports: the latest finished report with this key, per run (run id -> report)."""
    key: ReportKey
    reports: dict[str, dict]

    @property
    def run_ids(self) -> list[str]:
        return list(self.reports)

    @property
    def newest(self) -> dict:
        return max(self.reports.values(), key=lambda r: str(r.get("id") or ""))

    def label(self, total: int | None = None) -> str:
        of = f" of {total}" if total is not None else ""
        return f"{len(self.reports)}{of} run(s) ({', '.join(self.reports)}): {self.key.describe()}"


@dataclass
class Comparison:
    runs: list[RunInfo]
    groups: list[Group]                   # most runs first, then the newest
    chosen: int | None                    # index into groups (None: no run has a finished report)
    table: pd.DataFrame                   # one row per run: RUN_COLUMNS, metrics (+ std), COST_COLUMNS
    per_class: pd.DataFrame               # one row per (run, class) of the chosen group's reports
    missing: list[str]                    # run ids with no report in the chosen group
    settings: dict                        # EvalConfig fields to evaluate `missing` with (start_eval options)
    excluded: list[str] = field(default_factory=list)   # why each other group is not in the table
    cannot_evaluate: dict[str, str] = field(default_factory=dict)  # missing run id -> why it cannot be
    notes: list[str] = field(default_factory=list)
    metric_columns: list[tuple[str, str | None]] = field(default_factory=list)  # (value, std) in the table

    @property
    def group(self) -> Group | None:
        return None if self.chosen is None else self.groups[self.chosen]

    @property
    def data(self) -> str:
        return self.runs[0].data if self.runs else ""


def resolve_run(run: str | os.PathLike) -> Path:
    """A run directory from a path or a run id (looked up under the runs root)."""
    p = Path(run).expanduser()
    if p.is_dir():
        return p
    d = runs.run_dir(p.name, runs_root()) if runs.is_run_id(p.name) else p
    if not d.is_dir():
        raise FileNotFoundError(f"run {run} does not exist (neither a directory nor a run id under {runs_root()})")
    return d


def run_info(d: str | os.PathLike) -> RunInfo:
    d = Path(d)
    return RunInfo(run_id=d.name, run_dir=d, name=runs.read_name(d), family=runs.family(d),
                   data=_norm_path(runs.data_dir(d)))


def check_same_data(infos: list[RunInfo]) -> None:
    """ConfigError naming the runs and their data sets when they did not train on one data set."""
    by_data: dict[str, list[str]] = {}
    for r in infos:
        by_data.setdefault(r.data, []).append(r.run_id)
    if len(by_data) > 1:
        parts = "; ".join(f"{', '.join(ids)} on {data}" for data, ids in by_data.items())
        raise ConfigError(f"runs on different data sets cannot be compared: {parts}. Pick runs trained on one "
                          "data set (their metrics compare generators against different real patches)")


def finished_reports(d: str | os.PathLike) -> dict[ReportKey, dict]:
    """The latest finished report of a run per comparable key."""
    out: dict[ReportKey, dict] = {}
    for rep in R.list_reports(d):  # oldest first: a later report of the same key replaces an earlier one
        if R.report_state(rep) == "finished":
            out[comparable_key(rep)] = rep
    return out


def group_reports(per_run: dict[str, dict[ReportKey, dict]]) -> list[Group]:
    """Groups of comparable reports, the one covering most runs first, then the newest."""
    groups: dict[ReportKey, dict[str, dict]] = {}
    for run_id, by_key in per_run.items():
        for key, rep in by_key.items():
            groups.setdefault(key, {})[run_id] = rep
    out = [Group(k, v) for k, v in groups.items()]
    out.sort(key=lambda g: str(g.newest.get("id") or ""), reverse=True)
    out.sort(key=lambda g: len(g.reports), reverse=True)  # stable: the newest first among equals
    return out


def _num(v) -> float:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return math.nan
    return v if math.isfinite(v) else math.nan


def cost(d: str | os.PathLike) -> dict:
    """Training cost of a run: img_per_s (median over the metrics CSV rows), time_s (its last time_s, else
    the status' heartbeat - start), best_kimg (kimg of the best checkpoint, exports/best)."""
    from engine.train.curves import read_metrics

    df, _ = read_metrics(runs.metrics_path(d))
    speed = df["img_per_s"].where(df["img_per_s"] > 0).dropna() if "img_per_s" in df else pd.Series(dtype=float)
    t = df["time_s"].dropna() if "time_s" in df else pd.Series(dtype=float)
    time_s = float(t.iloc[-1]) if len(t) else math.nan
    if math.isnan(time_s):
        s = runs.read_status(d)
        time_s = _num(s.get("heartbeat_at")) - _num(s.get("started_at"))
    best = runs.best_info(d) or {}
    return {"img_per_s": float(speed.median()) if len(speed) else math.nan, "time_s": time_s,
            "best_kimg": _num(best.get("kimg"))}


def _g(d, *keys):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def report_row(report: dict) -> dict:
    """The overall numbers of a report, with the error bars it carries (KID std over subsets, the std of
    the pairwise distances of LPIPS / feature diversity)."""
    h, m = R.headline(report), report.get("metrics") or {}
    row = {c: _num(h.get(c)) for c, _ in METRIC_COLUMNS}
    row["kid_std"] = _num(h.get("kid_std"))
    row["lpips_generated_std"] = _num(_g(m, "lpips", "lpips", "generated", "std"))
    row["diversity_generated_std"] = _num(_g(m, "lpips", "feature_diversity", "generated", "std"))
    row.update(report=report.get("id"), step=h.get("step"), kimg=h.get("kimg"))
    return row


def _columns(metrics: list[str] | None) -> list[tuple[str, str | None]]:
    if metrics is None:
        return list(METRIC_COLUMNS)
    known = {c for c, _ in METRIC_COLUMNS}
    want: list[str] = []
    for name in metrics:
        name = name.strip()
        if name in METRIC_GROUPS:
            want += METRIC_GROUPS[name]
        elif name in known:
            want.append(name)
        elif name:
            raise ConfigError(f"metrics: unknown {name!r}; use report metrics ({', '.join(METRIC_GROUPS)}) or "
                              f"table columns ({', '.join(c for c, _ in METRIC_COLUMNS)})")
    return [(c, e) for c, e in METRIC_COLUMNS if c in want]


def _metric_names(report: dict) -> list[str]:
    """The metrics a report was asked for (its config), else those it holds."""
    asked = _cfg(report).get("metrics")
    return [m.strip() for m in asked.split(",") if m.strip()] if asked else list(report.get("metrics") or {})


def settings_from(group: Group) -> dict:
    """EvalConfig fields of the group's newest report (metrics: every metric of the group's reports), for
    `start_eval(run_id, settings)`. The checkpoint is each run's latest, or its best when the report
    evaluated a best model."""
    rep = group.newest
    cfg = _cfg(rep)
    newest_first = sorted(group.reports.values(), key=lambda r: str(r.get("id") or ""), reverse=True)
    names = list(dict.fromkeys(m for r in newest_first for m in _metric_names(r)))
    out = {k: cfg[k] for k in SETTINGS if k in cfg}
    if "per_class" in cfg and "by_class" not in out:  # a report of before the rename
        out["by_class"] = bool(cfg["per_class"])
    k = group.key
    out.setdefault("features", k.features)
    out.setdefault("n", k.n_generated)
    out.setdefault("real_split", k.real_split)
    out.setdefault("truncation", k.truncation)
    out.setdefault("by_class", k.by_class)
    if "seed" not in out and isinstance(rep.get("seeds"), list) and rep["seeds"]:
        out["seed"] = int(rep["seeds"][0])
    out["metrics"] = ",".join(names) or DEFAULT_METRICS
    if str(cfg.get("step", "")) == "best" or (rep.get("checkpoint") or {}).get("kind") == "best":
        out["step"] = "best"
    return out


def _weights_note(group: Group, settings: dict, data: str) -> str | None:
    """A note when the `domain` classifier file changed since the group's reports: reports of the missing
    runs made now would land in another group."""
    k = group.key
    if k.features != "domain" or not k.weights or len(k.weights) != 16:
        return None
    from engine.jobs.classifier import classifier_path

    path = Path(settings.get("domain_weights") or classifier_path(settings.get("data") or data))
    if not path.is_file():
        return (f"The `domain` classifier of these reports ({path}) is missing now: an evaluation would train a "
                "new one, another feature space, so its reports would not be comparable with these.")
    from engine.metrics.features import file_sha256

    now = file_sha256(path)[:16]
    if now != k.weights:
        return (f"The `domain` classifier file {path} changed since these reports (weights {k.weights}, now "
                f"{now}): new evaluations would not be comparable with them; evaluate every run again.")
    return None


def compare(run_dirs: list[str | os.PathLike], metrics: list[str] | None = None,
            key: int | ReportKey | None = None) -> Comparison:
    """Compare runs on their comparable reports.

    Args:
        run_dirs: run directories (or run ids under the runs root), trained on one data set.
        metrics: metric columns to keep (report metric names such as "pr", or table columns such as
            "precision"); None = all.
        key: the group to tabulate: an index into `Comparison.groups` or a ReportKey; None = the group
            covering most runs (then the newest).
    Returns a Comparison. Raises ConfigError when the runs trained on different data sets (naming them),
    when `metrics` names an unknown column or `key` no group; FileNotFoundError for a missing run.
    """
    dirs = list(dict.fromkeys(resolve_run(d) for d in run_dirs))
    infos = [run_info(d) for d in dirs]
    check_same_data(infos)
    cols = _columns(metrics)
    per_run = {r.run_id: finished_reports(r.run_dir) for r in infos}
    groups = group_reports(per_run)
    chosen = None
    if isinstance(key, ReportKey):
        chosen = next((i for i, g in enumerate(groups) if g.key == key), None)
        if chosen is None:
            raise ConfigError("key: no report of these runs has the settings asked for")
    elif key is not None:
        if not 0 <= int(key) < len(groups):
            raise ConfigError(f"key: {int(key) + 1} is not a group of comparable reports; these runs have "
                              f"{len(groups)} (1..{len(groups)})")
        chosen = int(key)
    elif groups:
        chosen = 0
    group = groups[chosen] if chosen is not None else None
    rows, class_rows = [], []
    for r in infos:
        row = {"run": r.run_id, "name": r.name, "family": r.family, "report": None, "step": None, "kimg": None}
        rep = group.reports.get(r.run_id) if group else None
        vals = report_row(rep) if rep else {}
        for c, e in cols:
            row[c] = vals.get(c, math.nan)
            if e:
                row[e] = vals.get(e, math.nan)
        row.update({k: vals[k] for k in ("report", "step", "kimg") if k in vals})
        row.update(cost(r.run_dir))
        rows.append(row)
        if rep:
            pc = R.per_class_table(rep)
            want = [c for c, _ in cols] + [DOWNSTREAM_CLASS[c] for c, _ in cols if c in DOWNSTREAM_CLASS]
            for cls, vals_c in pc.iterrows():
                cr = {"run": r.run_id, "name": r.name, "family": r.family, "class": cls}
                for c, e in CLASS_COLUMNS:
                    if c in want:
                        cr[c] = _num(vals_c.get(c))
                        if e:
                            cr[e] = _num(vals_c.get(e))
                class_rows.append(cr)
    value_cols = [x for c, e in cols for x in ((c, e) if e else (c,))]
    table = pd.DataFrame(rows, columns=list(RUN_COLUMNS) + value_cols + list(COST_COLUMNS))
    per_class = pd.DataFrame(class_rows)
    if len(per_class):
        per_class = per_class.dropna(axis=1, how="all")
    missing = [r.run_id for r in infos if not group or r.run_id not in group.reports]
    excluded = []
    for i, g in enumerate(groups):
        if i != chosen:
            why = "; ".join(group.key.differences(g.key)) if group else ""
            excluded.append(f"{', '.join(g.run_ids)}: {g.key.describe()}" + (f" (differs in {why})" if why else ""))
    settings = settings_from(group) if group else {"metrics": DEFAULT_METRICS, "by_class": True}
    cannot = {rid: f"run {rid} has no checkpoint or export to evaluate yet"
              for rid in missing if not runs.has_entry(next(r.run_dir for r in infos if r.run_id == rid))}
    notes = []
    if group and missing and (note := _weights_note(group, settings, infos[0].data)):
        notes.append(note)
    return Comparison(runs=infos, groups=groups, chosen=chosen, table=table, per_class=per_class,
                      missing=missing, settings=settings, excluded=excluded, cannot_evaluate=cannot, notes=notes,
                      metric_columns=cols)


def default_selection(run_dirs: list[str | os.PathLike], max_runs: int = 4) -> list[str]:
    """What a picker preselects: up to `max_runs` runs with a finished report, on the data set of the first
    such run (run_dirs in the order given, e.g. newest first)."""
    out, data = [], None
    for d in run_dirs:
        d = Path(d)
        if not any(R.report_state(r) == "finished" for r in R.list_reports(d)):
            continue
        here = _norm_path(runs.data_dir(d))
        data = data or here
        if here == data:
            out.append(d.name)
        if len(out) >= max_runs:
            break
    return out


# ----------------------------------------------------------------------------------------------
# Grids and curves, for the page

def class_strip(d: str | os.PathLike, class_name: str) -> tuple[int, np.ndarray] | None:
    """(step, uint8 HWC) of the row of `class_name` in the run's latest sample grid (one row per class);
    None when the run has no (readable) grid or not that class."""
    from PIL import Image

    from engine.images import grid_row

    grids = runs.grids(d)
    names = runs.class_names(d, int(runs.read_config(d).get("num_classes") or 0) or None)
    if not grids or class_name not in names:
        return None
    step, path = grids[-1]
    try:
        img = np.asarray(Image.open(path).convert("RGB"))
        return step, grid_row(img, names.index(class_name), len(names))
    except (OSError, ValueError):  # half-written, or not one row per class: no strip rather than a broken page
        return None


SIGNAL_SKIP = ("epoch", "step", "kimg")


def read_curves(run_dirs: list[str | os.PathLike]) -> dict[str, pd.DataFrame]:
    """{run id: its metrics CSV (metrics_gan.csv or metrics_diffusion.csv) as a DataFrame}."""
    from engine.train.curves import read_metrics

    return {Path(d).name: read_metrics(runs.metrics_path(d))[0] for d in run_dirs}


def common_signals(frames: dict[str, pd.DataFrame]) -> list[str]:
    """Columns that hold data in every frame (in the first frame's order), x columns left out."""
    frames = [f for f in frames.values()]
    if not frames:
        return []
    have = [{c for c in f.columns if f[c].notna().any()} for f in frames]
    common = set.intersection(*have)
    return [c for c in frames[0].columns if c in common and c not in SIGNAL_SKIP]


# ----------------------------------------------------------------------------------------------
# CLI

def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def text(cmp: Comparison) -> str:
    """The comparison as the terminal shows it: the groups, the table, the missing runs and how to evaluate
    them with the same settings."""
    lines = [f"data set: {cmp.data}", "comparable reports (--key N):"]
    for i, g in enumerate(cmp.groups):
        mark = "*" if i == cmp.chosen else " "
        lines.append(f" {mark}[{i + 1}] {', '.join(g.run_ids)}: {g.key.describe()}")
    if not cmp.groups:
        lines.append("   none: no run has a finished evaluation report")
    lines.append("")
    lines.append(cmp.table.to_string(index=False, na_rep="—", formatters={c: _fmt for c in cmp.table.columns}))
    for e in cmp.excluded:
        lines.append(f"not in this table: {e}")
    if cmp.missing:
        flags = " ".join(f"{flag(k)} {str(v).lower() if isinstance(v, bool) else v}"
                         for k, v in cmp.settings.items() if v != "")
        lines.append(f"missing (no report with these settings): {', '.join(cmp.missing)}")
        for rid in cmp.missing:
            if rid in cmp.cannot_evaluate:
                lines.append(f"  {cmp.cannot_evaluate[rid]}")
            else:
                d = next(r.run_dir for r in cmp.runs if r.run_id == rid)
                lines.append(f"  python -m engine evaluate --run-dir {d} {flags}")
    lines.extend(f"note: {n}" for n in cmp.notes)
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m engine compare",
                                description="Several runs side by side on comparable evaluation reports "
                                            "(one data set), with their training cost.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories or run ids")
    p.add_argument("--key", type=int, default=None, metavar="N",
                   help="the group of comparable reports to tabulate (as listed; default: most runs)")
    p.add_argument("--metrics", default="", help="comma-separated columns or report metrics (default: all)")
    p.add_argument("--csv", default="", metavar="FILE|-", help="also write the table as CSV (- = stdout only)")
    p.add_argument("--by-class", action="store_true", help="the per-class table instead of the overall one")
    a = p.parse_args(argv)
    try:
        cmp = compare(a.runs, [m for m in a.metrics.split(",") if m.strip()] or None,
                      None if a.key is None else a.key - 1)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    table = cmp.per_class if a.by_class else cmp.table
    if a.csv == "-":
        sys.stdout.write(table.to_csv(index=False))
        return 0
    if a.by_class:
        print(table.to_string(index=False, na_rep="—", formatters={c: _fmt for c in table.columns}))
    else:
        print(text(cmp))
    if a.csv:
        from engine.utils import atomic_write_text

        atomic_write_text(a.csv, table.to_csv(index=False))
        print(f"saved {a.csv}")
    return 0
