"""Review statistics on hand-made answer tables whose accuracy, CI, p-values and kappas are known."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from engine.review import stats as R
from engine.review.studies import EXPORT_COLUMNS

S_, R_ = "synthetic", "real"
# 10 patches: p0-p4 synthetic, p5-p9 real. Reviewer A is right 8 times, B 6 times; they agree on 8 of
# 10 patches with both saying "synthetic" 5 times: p_o = 0.8, p_e = 0.5, Cohen's kappa = 0.6.
SOURCE = [S_] * 5 + [R_] * 5
A = [S_, S_, S_, S_, R_, R_, R_, R_, R_, S_]
B = [S_, S_, S_, R_, R_, R_, R_, R_, S_, S_]


def frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([{c: r.get(c) for c in EXPORT_COLUMNS} for r in rows], columns=list(EXPORT_COLUMNS))


def table() -> pd.DataFrame:
    rows = []
    for who, answers in (("A", A), ("B", B)):
        for i, (ans, src) in enumerate(zip(answers, SOURCE)):
            rows.append({"reviewer": who, "patch": f"p{i}", "real_or_synthetic": ans, "source": src,
                         "true_class": "ADI" if i % 2 else "TUM", "class": "ADI" if i % 2 else "TUM",
                         "run": ("r1" if i < 3 else "r2") if src == S_ else None,
                         "realism": 4 if src == R_ else 2})
    return frame(rows)


def test_per_reviewer_and_pooled_accuracy_with_exact_ci_and_binomial_test():
    t = R.detection_table(table()).set_index("reviewer")
    a, b, pooled = t.loc["A"], t.loc["B"], t.loc["pooled"]
    assert (a["n"], a["correct"], a["accuracy"]) == (10, 8, 0.8)
    # Clopper-Pearson for 8/10 (beta quantiles) and the two-sided binomial p = 2 * P(X >= 8) = 0.109375
    assert a["ci_low"] == pytest.approx(0.443905, abs=1e-5) and a["ci_high"] == pytest.approx(0.974789, abs=1e-5)
    assert a["p_value"] == pytest.approx(0.109375, abs=1e-9)
    assert (a["sensitivity"], a["specificity"], a["tp"], a["fn"], a["tn"], a["fp"]) == (0.8, 0.8, 4, 1, 4, 1)
    assert (b["correct"], b["sensitivity"], b["specificity"]) == (6, 0.6, 0.6)
    assert b["p_value"] == pytest.approx(0.753906, abs=1e-6)  # 2 * P(X >= 6), n = 10
    assert (pooled["n"], pooled["correct"]) == (20, 14)
    assert pooled["p_value"] == pytest.approx(0.115318, abs=1e-6)  # 2 * P(X >= 14), n = 20


def test_cohen_kappa_per_pair_and_fleiss_overall():
    res = R.inter_rater(table(), "real_or_synthetic")
    assert res["pairs"] == [{"a": "A", "b": "B", "n": 10, "kappa": pytest.approx(0.6)}]
    # two raters, 10 patches: Fleiss' P_bar = 0.8, P_e = 0.5^2 + 0.5^2 = 0.5 -> 0.6 as well
    assert res["fleiss"]["kappa"] == pytest.approx(0.6) and res["fleiss"]["n_patches"] == 10
    k = R.kappa_table(table())
    assert k.loc["A", "B"] == pytest.approx(0.6) and k.loc["A", "A"] == 1.0


def test_fleiss_kappa_of_the_textbook_example():
    # Fleiss (1971) as worked on Wikipedia: 10 subjects, 14 raters, 5 categories -> kappa = 0.210
    counts = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
              [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    cats = ["ADI", "BACK", "DEB", "LYM", "MUC"]
    rows = []
    for i, row in enumerate(counts):
        answers = [c for c, n in zip(cats, row) for _ in range(n)]
        rows += [{"reviewer": f"r{j:02d}", "patch": f"p{i}", "class": c, "true_class": "ADI", "source": R_}
                 for j, c in enumerate(answers)]
    res = R.inter_rater(frame(rows), "class")
    assert res["fleiss"]["kappa"] == pytest.approx(0.20993, abs=1e-4)
    assert (res["fleiss"]["n_patches"], res["fleiss"]["n_reviewers"]) == (10, 14) and len(res["pairs"]) == 91


def test_fleiss_uses_only_patches_every_reviewer_answered_and_undefined_kappa_is_none():
    df = table()
    df = df[~((df["reviewer"] == "B") & (df["patch"] == "p0"))]
    res = R.inter_rater(df, "real_or_synthetic")
    assert res["fleiss"]["n_patches"] == 9 and res["pairs"][0]["n"] == 9
    same = frame([{"reviewer": w, "patch": f"p{i}", "real_or_synthetic": S_, "source": S_}
                  for w in "AB" for i in range(3)])
    res = R.inter_rater(same, "real_or_synthetic")
    assert res["pairs"][0]["kappa"] is None and res["fleiss"]["kappa"] is None  # chance agreement is 1
    assert R.inter_rater(same[same["reviewer"] == "A"], "real_or_synthetic")["fleiss"]["kappa"] is None


def test_realism_mann_whitney():
    df = frame([{"reviewer": "A", "patch": f"p{i}", "source": s, "realism": v}
                for i, (s, v) in enumerate([(R_, 5), (R_, 4), (S_, 1), (S_, 2)])])
    r = R.realism(df)
    # every real score above every synthetic one: U = 2 * 2 = 4, exact two-sided p = 2 / C(4, 2) = 1/3
    assert r["mann_whitney_u"] == 4 and r["p_value"] == pytest.approx(1 / 3) and r["auc"] == 1.0
    assert r["real"]["mean"] == 4.5 and r["synthetic"]["counts"] == {1: 1, 2: 1, 3: 0, 4: 0, 5: 0}
    assert R.realism(df[df["source"] == R_])["p_value"] is None


def test_class_agreement_and_confusion_matrix():
    pairs = [("ADI", "ADI", S_), ("ADI", "TUM", S_), ("TUM", "TUM", R_), ("TUM", "TUM", S_)]
    df = frame([{"reviewer": "A", "patch": f"p{i}", "true_class": t, "class": c, "source": s}
                for i, (t, c, s) in enumerate(pairs)])
    ca = R.class_agreement(df, ["ADI", "LYM", "TUM"])
    assert (ca["n"], ca["correct"], ca["accuracy"]) == (4, 3, 0.75)
    assert ca["matrix"] == [[1, 0, 1], [0, 0, 0], [0, 0, 2]]
    # Cohen's kappa vs the truth: p_o = 0.75, p_e = 0.5 * 0.25 + 0.5 * 0.75 = 0.5 -> 0.5
    assert ca["kappa"] == pytest.approx(0.5)
    assert ca["by_source"]["synthetic"]["correct"] == 2 and ca["by_source"]["real"]["accuracy"] == 1.0
    m = R.confusion_table(df, ["ADI", "LYM", "TUM"])
    assert m.loc["ADI", "TUM"] == 1 and m.index.name == "true_class"


def test_summary_per_class_and_per_run_is_json():
    s = R.summarize(table(), ["ADI", "TUM"])
    json.dumps(s, allow_nan=False)  # plain values only, no NaN
    assert s["detection"]["pooled"]["correct"] == 14 and [r["reviewer"] for r in s["detection"]["per_reviewer"]] == ["A", "B"]
    assert s["runs"] == ["r1", "r2"] and set(s["by_run"]) == {"r1", "r2"}
    # r1: synthetic p0-p2 (A 3/3, B 3/3 right) + all 10 real answers (A 4, B 3 right)
    r1 = s["by_run"]["r1"]["detection"]
    assert (r1["n"], r1["correct"], r1["sensitivity"], r1["specificity"]) == (16, 13, 1.0, 0.7)
    assert set(s["by_class"]) == {"ADI", "TUM"} and s["by_class"]["ADI"]["detection"]["n"] == 10
    assert s["realism"]["auc"] == 1.0 and s["class_agreement"]["accuracy"] == 1.0
    one_run = table()
    one_run["run"] = one_run["run"].where(one_run["run"].isna(), "r1")
    assert R.summarize(one_run)["by_run"] == {}


def test_empty_table_gives_none_not_errors():
    s = R.summarize(frame([]))
    json.dumps(s, allow_nan=False)
    assert s["n_answers"] == 0 and s["detection"]["pooled"]["accuracy"] is None
    assert s["agreement"]["class"]["fleiss"]["kappa"] is None
