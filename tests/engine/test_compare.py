"""engine.compare: comparable keys, groups, the refusal to mix, missing runs and their settings, runs on
different data sets, the grid crop, the CLI table and --csv. Hand-made run directories (no torch model):
config.json, status.json, a metrics CSV, samples/step_*.png grids, eval/<id>.json reports."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from engine import compare as K
from engine import runs
from engine.config import ConfigError, EvalConfig, from_dict
from engine.images import grid_row, png_bytes, tile
from engine.utils import atomic_write_bytes, atomic_write_json, atomic_write_text, runs_root

CLASSES = ["ADI", "BACK", "DEB"]
GAN_CSV = "epoch,step,kimg,d_loss,g_loss,acc,img_per_s,time_s\n"
DIFF_CSV = "epoch,step,kimg,loss,lr,grad_norm,img_per_s,time_s\n"


def make_data(root) -> str:
    """A 'prepared data set' as far as the runs need one: its dataset.json with the class names."""
    d = root / "data-hs"
    atomic_write_json(d / "dataset.json", {"class_names": CLASSES, "size": 16})
    return str(d)


def make_report(run_id: str, rid: str, *, fid: float, kid: float = 0.1, kid_std: float = 0.01,
                features: str = "domain", weights: str = "aaaaaaaaaaaaaaaa", n: int = 18, real_split: str = "eval",
                data: str = "", step: int = 8, **cfg) -> dict:
    """A report in evaluate()'s shape (overall and per class: fid, kid, pr, cas, lpips, downstream)."""
    per = lambda f: {c: f(i) for i, c in enumerate(CLASSES)}  # noqa: E731
    conf = dataclasses.asdict(EvalConfig(run_dir=f"runs/{run_id}", features=features, n=n, real_split=real_split,
                                         by_class=True, metrics="fid,kid,pr,cas,lpips,downstream", **cfg))
    div = {"label": "mean pairwise L2", "generated": {"mean": 2.0, "std": 0.5, "per_class": per(
        lambda i: {"mean": 2.0 + i, "std": 0.1 * (i + 1)})}, "real": {"mean": 2.5, "std": 0.4, "per_class": per(
            lambda i: {"mean": 2.5, "std": 0.2})}}
    return {
        "id": rid, "run_id": run_id, "state": "finished", "data": data, "class_names": CLASSES,
        "checkpoint": {"step": step, "kimg": step * 4 / 1000, "kind": "export", "path": "exports"},
        "features": {"space": features, "num_features": 16, "weights_sha256": weights},
        "n_generated": n, "n_real": {real_split: n}, "real_split": real_split, "truncation": conf["truncation"],
        "seeds": [0, n // 3 - 1], "config": conf,
        "metrics": {
            "fid": {"value": fid, "per_class": per(lambda i: {"value": fid + i})},
            "kid": {"mean": kid, "std": kid_std, "per_class": per(lambda i: {"mean": kid + i, "std": kid_std})},
            "pr": {"precision": 0.6, "recall": 0.4, "per_class": per(lambda i: {"precision": 0.5, "recall": 0.3})},
            "cas": {"cas": 0.7, "real_accuracy": 0.9, "per_class": per(lambda i: {"cas": 0.6 + 0.1 * i,
                                                                                  "real_accuracy": 0.9})},
            "lpips": {"feature_diversity": div, "lpips": {"error": "no AlexNet weights"}},
            "downstream": {"sets": {s: {"accuracy": a, "per_class_recall": per(lambda i: a)}
                                    for s, a in (("real", 0.9), ("synthetic", 0.5), ("real+synthetic", 0.85))}}}}


def make_run(root, run_id: str, family: str, data: str, reports=(), *, img_per_s=(50.0, 100.0, 120.0),
             best_kimg: float | None = 0.024, checkpoint: bool = True, name: str = "") -> str:
    """runs/<run_id> with config.json (family, data), status.json, its family's metrics CSV, one grid of
    len(CLASSES) rows, reports, optionally exports/best; returns the run directory."""
    d = root / run_id
    atomic_write_json(d / runs.CONFIG, {"family": family, "data": data, "res": 16, "num_classes": len(CLASSES),
                                        "batch": 4})
    atomic_write_json(d / runs.STATUS, {"state": "finished", "step": 8, "kimg": 0.032, "started_at": 1.0,
                                        "heartbeat_at": 11.0})
    head, row = (DIFF_CSV, "{e},{s},{k},0.5,1e-4,1.0,{v},{t}\n") if family == "ddpm" else \
        (GAN_CSV, "{e},{s},{k},1.2,0.8,0.6,{v},{t}\n")
    lines = [row.format(e=s / 10, s=s, k=s * 4 / 1000, v=v, t=2.0 * s) for s, v in enumerate(img_per_s, 1)]
    name_csv = runs.METRICS_DIFFUSION if family == "ddpm" else runs.METRICS_GAN
    atomic_write_text(d / name_csv, head + "".join(lines))
    # cell value = 40 * row + 10 * column: a crop of row k is recognisable
    cells = np.stack([np.full((8, 8, 3), 40 * r + 10 * c, np.uint8) for r in range(len(CLASSES)) for c in range(2)])
    atomic_write_bytes(runs.grid_path(d, 8), png_bytes(tile(cells, rows=len(CLASSES))))
    if checkpoint:
        atomic_write_bytes(runs.checkpoint_path(d, 8), b"not a real checkpoint")
    if best_kimg is not None:
        b = d / runs.EXPORTS / runs.BEST
        atomic_write_json(b / "best.json", {"step": int(best_kimg * 250), "kimg": best_kimg, "metric": "fid_domain",
                                            "score": 10.0})
        atomic_write_json(b / "generator.json", {"family": family})
        atomic_write_bytes(b / "generator.safetensors", b"x")
    if name:
        atomic_write_text(d / runs.NAME, name)
    for rep in reports:
        atomic_write_json(runs.eval_dir(d) / f"{rep['id']}.json", {**rep, "data": rep.get("data") or data})
    return str(d)


def three_runs(root, data: str) -> list[str]:
    """stylegan2 and dcgan with comparable reports; ddpm with an incomparable one only (inception
    features) and, for stylegan2, an older incomparable one too (36 generated)."""
    return [
        make_run(root, "sg2", "stylegan2", data, [make_report("sg2", "20260101-000000", fid=9.0, n=36),
                                                 make_report("sg2", "20260102-000000", fid=10.0)], name="main"),
        make_run(root, "dc", "dcgan", data, [make_report("dc", "20260102-000001", fid=20.0, kid=0.2)]),
        make_run(root, "dd", "ddpm", data, [make_report("dd", "20260102-000002", fid=3.0, features="inception",
                                                        weights="bbbbbbbbbbbbbbbb")], best_kimg=None)]


@pytest.fixture
def three(tmp_path):
    data = make_data(tmp_path)
    return three_runs(runs_root(), data), data


def test_comparable_key_names_what_differs():
    a = K.comparable_key(make_report("r", "1", fid=1.0))
    assert a == K.comparable_key(make_report("r", "2", fid=5.0, seed=7, kid_subsets=3, lpips_pairs=9))
    b = K.comparable_key(make_report("r", "3", fid=1.0, features="inception", n=36))
    assert a != b and a.differences(b) == ["feature space: domain vs inception", "generated patches: 18 vs 36"]
    assert a != K.comparable_key(make_report("r", "4", fid=1.0, weights="cccccccccccccccc"))  # retrained classifier
    assert a != K.comparable_key(make_report("r", "5", fid=1.0, real_split="test"))
    assert a != K.comparable_key(make_report("r", "6", fid=1.0, downstream_epochs=9))
    assert a != K.comparable_key(make_report("r", "7", fid=1.0, truncation=0.7))


def test_compare_groups_and_never_mixes(three):
    dirs, data = three
    cmp = K.compare(dirs)
    # groups: the 18-sample domain one covers sg2 and dc; inception (dd) and 36 samples (sg2) are apart
    assert [sorted(g.run_ids) for g in cmp.groups] == [["dc", "sg2"], ["dd"], ["sg2"]]
    assert cmp.chosen == 0
    t = cmp.table.set_index("run")
    assert list(t.index) == ["sg2", "dc", "dd"]
    assert list(t["family"]) == ["stylegan2", "dcgan", "ddpm"] and t.loc["sg2", "name"] == "main"
    assert t.loc["sg2", "fid"] == 10.0  # the latest report of its key, not the older 36-sample one (9.0)
    assert t.loc["dc", "kid"] == 0.2 and t.loc["dc", "kid_std"] == 0.01
    assert np.isnan(t.loc["dd", "fid"]) and pd.isna(t.loc["dd", "report"])  # inception FID 3.0 not mixed in
    assert t.loc["sg2", "diversity_generated_std"] == 0.5 and t.loc["sg2", "acc_synthetic"] == 0.5
    assert np.isnan(t.loc["sg2", "lpips_generated"])  # LPIPS failed in the report: no number made up
    assert cmp.missing == ["dd"]
    assert any(e.startswith("dd:") and "feature space: domain vs inception" in e for e in cmp.excluded)
    assert any(e.startswith("sg2:") and "generated patches: 18 vs 36" in e for e in cmp.excluded)
    # cost: median img/s, last time_s, kimg of the best checkpoint
    assert t.loc["sg2", "img_per_s"] == 100.0 and t.loc["sg2", "time_s"] == 6.0
    assert t.loc["sg2", "best_kimg"] == 0.024 and np.isnan(t.loc["dd", "best_kimg"])
    # per class, from the same group only
    pc = cmp.per_class
    assert sorted(set(pc["run"])) == ["dc", "sg2"] and list(pc[pc.run == "sg2"]["fid"]) == [10.0, 11.0, 12.0]
    assert list(pc[pc.run == "dc"]["recall_synthetic"]) == [0.5] * 3


def test_choosing_another_group_and_metrics(three):
    dirs, _ = three
    cmp = K.compare(dirs, key=1)
    t = cmp.table.set_index("run")
    assert t.loc["dd", "fid"] == 3.0 and np.isnan(t.loc["sg2", "fid"]) and sorted(cmp.missing) == ["dc", "sg2"]
    cmp = K.compare(dirs, metrics=["kid", "precision"])
    assert [c for c in cmp.table.columns if c not in K.RUN_COLUMNS + K.COST_COLUMNS] == ["kid", "kid_std",
                                                                                        "precision"]
    with pytest.raises(ConfigError, match="unknown 'nope'"):
        K.compare(dirs, metrics=["nope"])
    with pytest.raises(ConfigError, match="key: 9"):
        K.compare(dirs, key=8)


def test_missing_runs_get_the_group_settings(three, tmp_path):
    dirs, _ = three
    rep = make_report("dc", "20260103-000000", fid=20.0, n=27, lpips_pairs=5, kid_subsets=7, seed=3)
    atomic_write_json(runs.eval_dir(dirs[1]) / f"{rep['id']}.json", rep)
    cmp = K.compare(dirs, key=next(i for i, g in enumerate(K.compare(dirs).groups) if g.key.n_generated == 27))
    assert cmp.missing == ["sg2", "dd"]
    s = cmp.settings
    assert s["n"] == 27 and s["features"] == "domain" and s["real_split"] == "eval" and s["by_class"] is True
    assert s["lpips_pairs"] == 5 and s["kid_subsets"] == 7 and s["seed"] == 3  # identical, not only comparable
    assert s["metrics"] == "fid,kid,pr,cas,lpips,downstream" and "step" not in s
    for rid in cmp.missing:  # start_eval validates these as EvalConfig fields
        from_dict(EvalConfig, {**s, "run_dir": str(runs.run_dir(rid))})


def test_run_without_checkpoint_cannot_be_evaluated(tmp_path):
    data = make_data(tmp_path)
    a = make_run(runs_root(), "a", "stylegan2", data, [make_report("a", "20260101-000000", fid=1.0)])
    b = make_run(runs_root(), "b", "dcgan", data, checkpoint=False, best_kimg=None)
    cmp = K.compare([a, b])
    assert cmp.missing == ["b"] and "no checkpoint" in cmp.cannot_evaluate["b"]


def test_no_report_at_all(tmp_path):
    data = make_data(tmp_path)
    cmp = K.compare([make_run(runs_root(), "a", "dcgan", data), make_run(runs_root(), "b", "ddpm", data)])
    assert cmp.groups == [] and cmp.chosen is None and cmp.missing == ["a", "b"]
    assert list(cmp.table["run"]) == ["a", "b"] and cmp.table["fid"].isna().all()
    assert cmp.table.set_index("run").loc["b", "img_per_s"] == 100.0  # read from metrics_diffusion.csv


def test_different_data_sets_are_refused(tmp_path):
    data = make_data(tmp_path)
    other = tmp_path / "other"
    atomic_write_json(other / "dataset.json", {"class_names": CLASSES})
    a = make_run(runs_root(), "a", "stylegan2", data)
    b = make_run(runs_root(), "b", "dcgan", str(other))
    with pytest.raises(ConfigError) as e:
        K.compare([a, b])
    assert "different data sets" in str(e.value) and f"a on {data}" in str(e.value) and f"b on {other}" in str(e.value)


def test_weights_note_when_the_classifier_changed(tmp_path):
    from engine.metrics.features import file_sha256

    data = make_data(tmp_path)
    clf = tmp_path / "data-hs" / "classifier.pt"
    clf.write_bytes(b"classifier v1")
    sha = file_sha256(clf)[:16]
    a = make_run(runs_root(), "a", "stylegan2", data, [make_report("a", "20260101-000000", fid=1.0, weights=sha)])
    b = make_run(runs_root(), "b", "dcgan", data)
    assert K.compare([a, b]).notes == []
    clf.write_bytes(b"classifier v2")
    [note] = K.compare([a, b]).notes
    assert "changed since these reports" in note


def test_grid_row_and_class_strip(three):
    dirs, _ = three
    cells = np.stack([np.full((4, 5, 3), 10 * i, np.uint8) for i in range(6)])
    g = tile(cells, rows=3)
    assert grid_row(g, 1, 3).shape == (4, 2 * 5 + 2, 3) and grid_row(g, 1, 3)[0, 0, 0] == 20
    with pytest.raises(ValueError):
        grid_row(g, 3, 3)
    step, strip = K.class_strip(dirs[1], "DEB")
    assert step == 8 and strip.shape == (8, 2 * 8 + 2, 3) and strip[0, 0, 0] == 80 and strip[0, -1, 0] == 90
    assert K.class_strip(dirs[1], "TUM") is None


def test_common_signals(three):
    dirs, _ = three
    frames = K.read_curves(dirs)
    assert K.common_signals(frames) == ["img_per_s", "time_s"]  # GAN and DDPM CSVs share only these
    assert "d_loss" in K.common_signals({k: frames[k] for k in ("sg2", "dc")})


def test_default_selection(three, tmp_path):
    dirs, _ = three
    assert K.default_selection(dirs) == ["sg2", "dc", "dd"]
    assert K.default_selection(dirs, max_runs=2) == ["sg2", "dc"]


def test_cli_table_and_csv(three, tmp_path, capsys):
    from engine.__main__ import main

    dirs, data = three
    assert main(["compare", *dirs]) == 0
    out = capsys.readouterr().out
    assert "*[1] sg2, dc:" in out and "[2] dd:" in out and "missing (no report with these settings): dd" in out
    assert "python -m engine evaluate --run-dir" in out and "--n 18" in out and "--features domain" in out
    assert "not in this table: dd:" in out
    assert main(["compare", "sg2", "dc", "dd", "--csv", "-"]) == 0  # run ids under the runs root
    df = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out))
    assert list(df["run"]) == ["sg2", "dc", "dd"] and list(df["fid"].fillna(-1)) == [10.0, 20.0, -1]
    path = tmp_path / "t.csv"
    assert main(["compare", *dirs, "--key", "2", "--csv", str(path)]) == 0
    assert "*[2] dd:" in capsys.readouterr().out
    assert list(pd.read_csv(path)["fid"].fillna(-1)) == [-1, -1, 3.0]
    assert main(["compare", *dirs, "--by-class", "--csv", "-"]) == 0
    pc = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out))
    assert len(pc) == 2 * len(CLASSES) and set(pc["class"]) == set(CLASSES)
    other = tmp_path / "other"
    atomic_write_json(other / "dataset.json", {"class_names": CLASSES})
    make_run(runs_root(), "x", "dcgan", str(other))
    assert main(["compare", "sg2", "x"]) == 2
    assert "different data sets" in capsys.readouterr().err
    assert main(["compare", "nope"]) == 2


def test_report_json_shape_matches_report_tables():
    """The hand-made report reads through engine.metrics.report like a real one (so these tests mean something)."""
    from engine.metrics import report as R

    rep = json.loads(json.dumps(make_report("r", "20260101-000000", fid=1.0)))
    h = R.headline(rep)
    assert h["fid"] == 1.0 and h["kid_std"] == 0.01 and h["cas"] == 0.7 and h["acc_synthetic"] == 0.5
    assert R.report_state(rep) == "finished"
    pc = R.per_class_table(rep)
    assert list(pc.index) == CLASSES and "recall_synthetic" in pc and "diversity_generated_std" in pc


def test_a_real_report_compares(monkeypatch, tmp_path):
    """A report evaluate() wrote (tiny run, untrained `test_resnet` domain space) beside a hand-made dcgan
    run on the same data set: its numbers fill the table, the dcgan run is missing, and its settings are
    the report's own."""
    from engine.metrics.evaluate import evaluate
    from engine.utils import read_json
    from tests.engine.test_metrics_evaluate import tiny_eval_setup

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    run_dir, data_dir = tiny_eval_setup()
    atomic_write_json(run_dir / "config.json", {**read_json(run_dir / "config.json"), "data": str(data_dir)})
    report, _ = evaluate(EvalConfig(run_dir=str(run_dir), data=str(data_dir), by_class=True, n=18, kid_subsets=3,
                                    metrics="fid,kid,pr,lpips,cas", lpips_pairs=3, batch=16, device="cpu"))
    dc = make_run(runs_root(), "dc", "dcgan", str(data_dir))
    cmp = K.compare([run_dir, dc])
    row = cmp.table.set_index("run").loc[run_dir.name]
    assert row["family"] == "stylegan2" and row["fid"] == pytest.approx(report["metrics"]["fid"]["value"])
    assert row["kid_std"] == pytest.approx(report["metrics"]["kid"]["std"])
    assert cmp.missing == ["dc"] and cmp.groups[0].key.weights == report["features"]["weights_sha256"]
    s = cmp.settings
    assert (s["n"], s["kid_subsets"], s["lpips_pairs"], s["metrics"]) == (18, 3, 3, "fid,kid,pr,lpips,cas")
    assert s["data"] == str(data_dir) and cmp.notes == []  # the classifier file is the one the report used
    assert set(cmp.per_class["class"]) == set(report["class_names"])


def test_class_strip_of_an_unreadable_grid_is_none(three):
    dirs, _ = three
    atomic_write_bytes(runs.grid_path(dirs[0], 9), b"half a png")
    assert K.class_strip(dirs[0], "ADI") is None
