"""Statistics of a review study, from the answers joined with the truth (`studies.answers_frame`).

Every number comes from a well-kept library, not from formulas written here:
- accuracy at telling real from synthetic, sensitivity, specificity: `scipy.stats.binomtest` (two-sided
  test against 50 %, Clopper-Pearson 95 % interval);
- realism (Likert 1-5) real vs synthetic: `scipy.stats.mannwhitneyu` (two-sided);
- class agreement: `sklearn.metrics.confusion_matrix`, `cohen_kappa_score` against the true class;
- inter-reviewer agreement: `sklearn.metrics.cohen_kappa_score` per pair (on the patches both answered),
  `statsmodels.stats.inter_rater.fleiss_kappa` over the patches every reviewer answered.

"Positive" is synthetic: sensitivity = synthetic patches called synthetic, specificity = real patches
called real. Pooled accuracy treats every answer as one trial; answers of different reviewers to the same
patch are not independent, so the per-reviewer rows are the ones to test on (the pooled row describes).

Everything returns plain dicts / lists / floats (JSON-ready; None where a number is undefined, e.g. no
answers or a kappa whose chance agreement is 1) or pandas DataFrames (`*_table`), for the pages to plot.
"""
from __future__ import annotations

import itertools
import math
import warnings
from typing import Any

import numpy as np
import pandas as pd

LIKERT = (1, 2, 3, 4, 5)


def _num(x: Any) -> float | None:
    """A float for JSON, None for NaN / inf / missing."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def proportion(k: int, n: int) -> dict:
    """{"k", "n", "rate", "ci_low", "ci_high", "p_value"}: k successes of n, exact binomial test vs 0.5."""
    from scipy.stats import binomtest

    k, n = int(k), int(n)
    if n == 0:
        return {"k": 0, "n": 0, "rate": None, "ci_low": None, "ci_high": None, "p_value": None}
    bt = binomtest(k, n, 0.5, alternative="two-sided")
    ci = bt.proportion_ci(confidence_level=0.95, method="exact")
    return {"k": k, "n": n, "rate": k / n, "ci_low": _num(ci.low), "ci_high": _num(ci.high),
            "p_value": _num(bt.pvalue)}


def _judged(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["real_or_synthetic"].isin(["real", "synthetic"]) & df["source"].isin(["real", "synthetic"])]


def detection(df: pd.DataFrame) -> dict:
    """Accuracy at telling real from synthetic, with sensitivity and specificity, on the rows of `df`.

    Returns {"n", "correct", "accuracy", "ci_low", "ci_high", "p_value", "sensitivity", "sensitivity_ci_low",
    "sensitivity_ci_high", "specificity", "specificity_ci_low", "specificity_ci_high", "tp", "fn", "tn", "fp"}.
    """
    d = _judged(df)
    syn, real = d[d["source"] == "synthetic"], d[d["source"] == "real"]
    tp = int((syn["real_or_synthetic"] == "synthetic").sum())
    tn = int((real["real_or_synthetic"] == "real").sum())
    acc = proportion(tp + tn, len(d))
    sens, spec = proportion(tp, len(syn)), proportion(tn, len(real))
    return {"n": acc["n"], "correct": acc["k"], "accuracy": acc["rate"], "ci_low": acc["ci_low"],
            "ci_high": acc["ci_high"], "p_value": acc["p_value"],
            "sensitivity": sens["rate"], "sensitivity_ci_low": sens["ci_low"], "sensitivity_ci_high": sens["ci_high"],
            "specificity": spec["rate"], "specificity_ci_low": spec["ci_low"], "specificity_ci_high": spec["ci_high"],
            "tp": tp, "fn": len(syn) - tp, "tn": tn, "fp": len(real) - tn}


def detection_table(df: pd.DataFrame) -> pd.DataFrame:
    """One `detection` row per reviewer, then a "pooled" row; column "reviewer" names the row."""
    rows = [{"reviewer": str(r), **detection(g)} for r, g in df.groupby("reviewer", sort=True)]
    rows.append({"reviewer": "pooled", **detection(df)})
    return pd.DataFrame(rows)


def realism(df: pd.DataFrame) -> dict:
    """Realism scores of real vs synthetic patches: counts per score, mean, median, Mann-Whitney U.

    Returns {"real": {"n", "mean", "median", "counts": {1..5: n}}, "synthetic": {...}, "mann_whitney_u"
    (U of the real scores), "p_value", "auc" (U / (n_real n_synthetic): the chance a real patch is rated
    more realistic than a synthetic one, ties halved; 0.5 = alike)}.
    """
    from scipy.stats import mannwhitneyu

    d = df[df["realism"].notna() & df["source"].isin(["real", "synthetic"])]
    out: dict[str, Any] = {}
    scores = {}
    for src in ("real", "synthetic"):
        s = d.loc[d["source"] == src, "realism"].astype(int).to_numpy()
        scores[src] = s
        out[src] = {"n": int(len(s)), "mean": _num(s.mean()) if len(s) else None,
                    "median": _num(np.median(s)) if len(s) else None,
                    "counts": {int(v): int((s == v).sum()) for v in LIKERT}}
    a, b = scores["real"], scores["synthetic"]
    if len(a) and len(b):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # all scores tied: scipy warns and the p-value is NaN
            res = mannwhitneyu(a, b, alternative="two-sided")
        out.update(mann_whitney_u=_num(res.statistic), p_value=_num(res.pvalue),
                   auc=_num(res.statistic / (len(a) * len(b))))
    else:
        out.update(mann_whitney_u=None, p_value=None, auc=None)
    return out


def _kappa(a, b, labels) -> float | None:
    from sklearn.metrics import cohen_kappa_score

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # chance agreement 1 (both constant): undefined, reported as None
        return _num(cohen_kappa_score(a, b, labels=labels))


def class_agreement(df: pd.DataFrame, labels: list[str] | None = None) -> dict:
    """The reviewers' tissue class against the true (real) or conditioned (synthetic) class.

    Returns {"labels", "n", "correct", "accuracy", "kappa" (Cohen's, answers vs truth), "matrix" (rows:
    true class, columns: answered class, in `labels` order), "by_source": {"real": {...}, "synthetic": {...}}
    (the same without by_source)}.
    """
    from sklearn.metrics import confusion_matrix

    d = df[df["class"].notna() & (df["class"].astype(str) != "")]
    labels = list(labels) if labels else sorted(set(d["true_class"].astype(str)) | set(d["class"].astype(str)))

    def one(part: pd.DataFrame) -> dict:
        if part.empty:
            return {"labels": labels, "n": 0, "correct": 0, "accuracy": None, "kappa": None,
                    "matrix": [[0] * len(labels) for _ in labels]}
        t, p = part["true_class"].astype(str), part["class"].astype(str)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # one class only: sklearn warns although `labels` fixes the shape
            m = confusion_matrix(t, p, labels=labels)
        correct = int((t == p).sum())
        return {"labels": labels, "n": int(len(part)), "correct": correct, "accuracy": correct / len(part),
                "kappa": _kappa(t, p, labels), "matrix": m.astype(int).tolist()}

    out = one(d)
    out["by_source"] = {src: one(d[d["source"] == src]) for src in ("real", "synthetic")}
    return out


def confusion_table(df: pd.DataFrame, labels: list[str] | None = None, source: str | None = None) -> pd.DataFrame:
    """The class confusion matrix as a DataFrame (index: true class, columns: answered class)."""
    ca = class_agreement(df, labels)
    part = ca["by_source"][source] if source else ca
    return pd.DataFrame(part["matrix"], index=pd.Index(ca["labels"], name="true_class"),
                        columns=pd.Index(ca["labels"], name="class"))


def inter_rater(df: pd.DataFrame, column: str = "real_or_synthetic") -> dict:
    """Agreement between reviewers on one question (`real_or_synthetic` or `class`).

    Returns {"pairs": [{"a", "b", "n", "kappa"}] (Cohen's kappa on the patches both answered),
    "fleiss": {"kappa", "n_patches", "n_reviewers"} over the patches every reviewer answered (None when
    fewer than two reviewers or no such patch)}.
    """
    from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

    d = df[df[column].notna() & (df[column].astype(str) != "")]
    wide = d.pivot_table(index="patch", columns="reviewer", values=column, aggfunc="first")
    labels = sorted(set(d[column].astype(str)))
    pairs = []
    for a, b in itertools.combinations(sorted(wide.columns), 2):
        both = wide[[a, b]].dropna()
        pairs.append({"a": str(a), "b": str(b), "n": int(len(both)),
                      "kappa": _kappa(both[a].astype(str), both[b].astype(str), labels) if len(both) else None})
    full = wide.dropna()
    fleiss = {"kappa": None, "n_patches": int(len(full)), "n_reviewers": int(wide.shape[1])}
    if wide.shape[1] >= 2 and len(full):
        codes = full.apply(lambda col: col.map({v: i for i, v in enumerate(labels)})).to_numpy(int)
        table, _ = aggregate_raters(codes, n_cat=len(labels))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # one category only: 0/0, reported as None
            fleiss["kappa"] = _num(fleiss_kappa(table, method="fleiss"))
    return {"pairs": pairs, "fleiss": fleiss}


def kappa_table(df: pd.DataFrame, column: str = "real_or_synthetic") -> pd.DataFrame:
    """Cohen's kappa per reviewer pair as a square DataFrame (1 on the diagonal, NaN where undefined)."""
    res = inter_rater(df, column)
    names = sorted({str(r) for r in df["reviewer"].dropna()})
    m = pd.DataFrame(np.eye(len(names)), index=names, columns=names)
    for p in res["pairs"]:
        m.loc[p["a"], p["b"]] = m.loc[p["b"], p["a"]] = np.nan if p["kappa"] is None else p["kappa"]
    return m


def summarize(df: pd.DataFrame, classes: list[str] | None = None) -> dict:
    """Every statistic of a study: overall, per class and, when the study mixes runs, per run.

    Returns {"n_answers", "reviewers", "runs", "detection": {"pooled", "per_reviewer": [...]}, "realism",
    "class_agreement", "agreement": {"real_or_synthetic": inter_rater, "class": inter_rater},
    "by_class": {class: {"detection", "realism"}}, "by_run": {run: {"detection", "realism",
    "class_agreement"}} (empty for a one-run study)}. Per class, patches are grouped by their true class;
    per run, a run's synthetic patches are set against all the real ones.
    """
    df = df.copy()
    runs = sorted({str(r) for r in df.loc[df["source"] == "synthetic", "run"].dropna()})
    classes = list(classes) if classes else sorted(set(df["true_class"].dropna().astype(str)))
    out: dict[str, Any] = {
        "n_answers": int(len(df)), "reviewers": sorted({str(r) for r in df["reviewer"].dropna()}), "runs": runs,
        "detection": {"pooled": detection(df),
                      "per_reviewer": [{"reviewer": str(r), **detection(g)}
                                       for r, g in df.groupby("reviewer", sort=True)]},
        "realism": realism(df),
        "class_agreement": class_agreement(df, classes),
        "agreement": {q: inter_rater(df, q) for q in ("real_or_synthetic", "class")},
        "by_class": {c: {"detection": detection(g), "realism": realism(g)}
                     for c in classes if len(g := df[df["true_class"] == c])},
        "by_run": {},
    }
    if len(runs) > 1:
        real = df[df["source"] == "real"]
        for r in runs:
            part = pd.concat([df[(df["source"] == "synthetic") & (df["run"].astype(str) == r)], real])
            out["by_run"][r] = {"detection": detection(part), "realism": realism(part),
                                "class_agreement": class_agreement(part, classes)}
    return out
