"""engine.runs: the run-directory contract (paths, config, entries, the default entry, class names, grids)
on hand-made run directories: no torch, no training."""
from __future__ import annotations

import json

import pytest

from engine import runs
from engine.utils import atomic_write_json


def _run(tmp_path, state="finished", ckpts=(4, 8), export_step=8, best_step=None, names=None):
    d = tmp_path / "r1"
    (d / "checkpoints").mkdir(parents=True)
    for s in ckpts:
        (d / "checkpoints" / f"step_{s:08d}.pt").write_bytes(b"x")
    (d / "checkpoints" / ".step_00000012.pt.abc.tmp").write_bytes(b"half")  # a killed write: not an entry
    if export_step is not None:
        (d / "exports").mkdir()
        (d / "exports" / "generator.safetensors").write_bytes(b"x")
        meta = {"step": export_step}
        if names:
            meta["class_names"] = names
        atomic_write_json(d / "exports" / "generator.json", meta)
    if best_step is not None:
        b = d / "exports" / "best"
        b.mkdir(parents=True)
        (b / "generator.safetensors").write_bytes(b"x")
        atomic_write_json(b / "generator.json", {"step": best_step})
        atomic_write_json(b / "best.json", {"step": best_step, "metric": "fid_domain", "score": 12.345})
    atomic_write_json(d / "status.json", {"state": state})
    return d


def test_run_ids_and_paths(tmp_path):
    assert runs.run_dir("a-1.b_c", tmp_path) == tmp_path / "a-1.b_c"
    for bad in ("", "../x", ".deleting-a", "a/b"):
        assert not runs.is_run_id(bad)
        with pytest.raises(ValueError, match="invalid run id"):
            runs.run_dir(bad, tmp_path)
    assert runs.grid_path(tmp_path, 12).name == "step_00000012.png"
    assert runs.checkpoint_path(tmp_path, 3) == tmp_path / "checkpoints" / "step_00000003.pt"


def test_config_falls_back_to_launch_json(tmp_path):
    assert runs.read_config(tmp_path) == {}
    atomic_write_json(tmp_path / "launch.json", {"res": 32})
    assert runs.read_config(tmp_path) == {"res": 32}
    atomic_write_json(tmp_path / "config.json", {"res": 64})
    assert runs.read_config(tmp_path) == {"res": 64}
    (tmp_path / "status.json").write_text("{half", encoding="utf-8")  # a torn write reads as empty
    assert runs.read_status(tmp_path) == {}


def test_entries_and_default(tmp_path):
    d = _run(tmp_path, best_step=4)
    kinds = [(e["step"], e["kind"]) for e in runs.entries(d)]
    assert kinds == [(8, "export"), (8, "checkpoint"), (4, "checkpoint"), (4, "best")]
    fin = runs.choices(d)
    assert [(e["step"], e["kind"], e["default"]) for e in fin] == \
        [(4, "best", False), (8, "export", True), (4, "checkpoint", False)]
    assert fin[0]["label"] == "best (step 4, FID 12.35)"
    assert runs.default_entry(d)["kind"] == "export"
    going = runs.choices(d, finished=False)
    assert runs.default_entry(d, finished=False)["kind"] == "checkpoint"
    assert [e["kind"] for e in going if e["step"] == 8] == ["checkpoint"]


def test_find_entry(tmp_path):
    d = _run(tmp_path, best_step=4)
    assert runs.find_entry(d)["kind"] == "export"              # latest of a finished run
    assert runs.find_entry(d, "latest")["kind"] == "export"
    atomic_write_json(d / "status.json", {"state": "running"})
    assert runs.find_entry(d)["kind"] == "checkpoint"          # a run still going: its newest checkpoint
    assert runs.find_entry(d, 4)["kind"] == "checkpoint"
    assert runs.find_entry(d, "best")["step"] == 4
    with pytest.raises(FileNotFoundError, match="available steps: 8, 4"):
        runs.find_entry(d, 5)
    with pytest.raises(FileNotFoundError, match="not a checkpoint or export"):
        runs.find_entry(d, path=tmp_path / "elsewhere.pt")
    e = _run(tmp_path / "x", ckpts=(), export_step=None)
    assert not runs.has_entry(e)
    with pytest.raises(FileNotFoundError, match="no checkpoint or export yet"):
        runs.find_entry(e)
    with pytest.raises(FileNotFoundError, match="no best model"):
        runs.find_entry(_run(tmp_path / "y"), "best")             # a run without exports/best


def test_best_needs_its_whole_directory(tmp_path):
    d = _run(tmp_path, best_step=4)
    (d / "exports" / "best" / "generator.safetensors").unlink()  # half-copied: not offered
    assert runs.best_info(d) is None
    assert all(e["kind"] != "best" for e in runs.entries(d))


def test_class_names_chain(tmp_path, monkeypatch):
    monkeypatch.setenv("HISTOGEN_DATA", str(tmp_path / "data"))
    d = _run(tmp_path, names=["A", "B"])
    assert runs.class_names(d) == ["A", "B"]                    # the export's
    d2 = _run(tmp_path / "two")
    ds = tmp_path / "nct"
    ds.mkdir()
    (ds / "dataset.json").write_text(json.dumps({"class_names": ["X", "Y", "Z"]}), encoding="utf-8")
    atomic_write_json(d2 / "config.json", {"data": str(ds), "res": 32})
    assert runs.data_dir(d2) == ds
    assert runs.class_names(d2, 3) == ["X", "Y", "Z"]           # the data set's
    assert runs.class_names(d2, 9)[0] == "ADI"                  # a mismatch: NCT order for 9
    assert runs.class_names(d2, 2) == ["class0", "class1"]
    atomic_write_json(d2 / "config.json", {"res": 16})          # no data: the demo at its res (>= 32)
    assert runs.data_dir(d2) == tmp_path / "data" / "histosynth-32"


def test_grids_oldest_first(tmp_path):
    (tmp_path / "samples").mkdir()
    for s in (12, 3):
        runs.grid_path(tmp_path, s).write_bytes(b"png")
    (tmp_path / "samples" / "other.png").write_bytes(b"png")
    assert [s for s, _ in runs.grids(tmp_path)] == [3, 12]
    assert runs.metrics_path(tmp_path).name == "metrics_gan.csv"
    (tmp_path / "metrics_diffusion.csv").write_text("step\n", encoding="utf-8")
    assert runs.metrics_path(tmp_path).name == "metrics_diffusion.csv"
