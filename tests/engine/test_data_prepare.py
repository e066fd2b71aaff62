"""prepare: splits, cache round trip, atomic replace, CLI."""
import csv
import os
import subprocess
import sys

import numpy as np
import pytest

from engine.config import ConfigError, PrepareConfig
from engine.data import histosynth as hs
from engine.data.dataset import load_prepared
from engine.data.prepare import _shrink_npy, make_splits, prepare

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def small(tmp_path, name="d", **kw):
    kw = {"source": "histosynth", "size": 32, "per_class": 6, "seed": 0, "out": str(tmp_path / name), **kw}
    return prepare(PrepareConfig(**kw))


def test_splits_disjoint_stratified_seeded():
    labels = np.repeat(np.arange(4), [50, 30, 10, 3])
    s = make_splits(labels, 0.1, 0.2, 0.1, seed=3)
    tr, va, te, ev = (set(s[k].tolist()) for k in ("train", "val", "test", "eval"))
    assert not (tr & va) and not (tr & te) and not (va & te)
    assert tr | va | te == set(range(len(labels)))
    assert ev <= tr and len(ev) > 0
    for c, n in enumerate([50, 30, 10, 3]):
        nv, nt = (int((labels[s[k]] == c).sum()) for k in ("val", "test"))
        assert (nv, nt) == (max(1, round(n * 0.1)), max(1, round(n * 0.2)))  # stratified per class
    assert all(np.array_equal(s[k], make_splits(labels, 0.1, 0.2, 0.1, seed=3)[k]) for k in s)
    assert not np.array_equal(s["val"], make_splits(labels, 0.1, 0.2, 0.1, seed=4)["val"])
    one = make_splits(np.array([0, 1, 1]), 0.1, 0.1, 0.0, seed=0)  # classes below 3 patches stay in train
    assert one["train"].tolist() == [0, 1, 2] and len(one["val"]) == len(one["test"]) == len(one["eval"]) == 0


def test_cache_round_trip(tmp_path):
    out = small(tmp_path)
    data = load_prepared(out)
    assert isinstance(data.images, np.memmap) and data.images.shape == (54, 32, 32, 3)
    assert data.info["rejected"] == {} and data.info["synthetic"] is True and data.info["synthetic_label"]
    rows = list(csv.DictReader(open(out / "files.csv")))
    assert [r["index"] for r in rows] == [str(i) for i in range(54)]
    for (img, c, name), row, i in zip(hs.generate(32, 6, 0), rows, range(54)):
        assert np.array_equal(data.images[i], img) and data.labels[i] == c and row["source"] == name
        assert row["class"] == data.class_names[c]
        assert row["split"] == next(s for s in ("train", "val", "test") if i in data.splits[s])
    assert data.split_counts() == data.info["counts"]
    assert data.info["counts"]["val"] == {c: 1 for c in hs.CLASSES}
    assert data.info["config"]["per_class"] == 6 and data.info["seed"] == 0 and data.info["created_at"]


def test_same_seed_same_data_and_splits(tmp_path):
    a, b, c = load_prepared(small(tmp_path, "a")), load_prepared(small(tmp_path, "b")), \
        load_prepared(small(tmp_path, "c", seed=1))
    assert np.array_equal(a.images, b.images) and all(np.array_equal(a.splits[k], b.splits[k]) for k in a.splits)
    assert not np.array_equal(a.images, c.images)


def test_replace_is_atomic_and_safe(tmp_path):
    out = small(tmp_path, per_class=3)
    assert load_prepared(out).images.shape[0] == 27
    small(tmp_path, per_class=4)  # an existing prepared set is replaced by a complete new one
    assert load_prepared(out).images.shape[0] == 36

    def boom(done, total, msg):
        if done > 10:
            raise RuntimeError("crash mid-way")

    with pytest.raises(RuntimeError):
        prepare(PrepareConfig(source="histosynth", size=32, per_class=6, out=str(out)), progress=boom)
    assert load_prepared(out).images.shape[0] == 36  # the old set is intact
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["d"]  # no temp dirs

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.docx").write_text("precious")
    with pytest.raises(ConfigError, match="'out'.*not a prepared data set"):
        small(tmp_path, "mine")
    assert (tmp_path / "mine" / "thesis.docx").read_text() == "precious"


def test_progress_callback(tmp_path):
    calls = []
    prepare(PrepareConfig(source="histosynth", size=32, per_class=4, out=str(tmp_path / "p")),
            progress=lambda d, t, m: calls.append((d, t, m)))
    assert calls[-1][:2] == (36, 36) and all(0 < d <= t for d, t, _ in calls) and "kept" in calls[-1][2]


def test_shrink_npy(tmp_path):
    p = tmp_path / "x.npy"
    a = np.lib.format.open_memmap(p, mode="w+", dtype=np.uint8, shape=(1000, 4, 4, 3))
    a[:] = np.arange(1000)[:, None, None, None] % 251
    a.flush()
    del a
    _shrink_npy(p, 7)
    b = np.load(p)
    assert b.shape == (7, 4, 4, 3) and (b[:, 0, 0, 0] == np.arange(7)).all()
    assert np.array_equal(np.load(p, mmap_mode="r"), b)


def test_bad_config_values(tmp_path):
    with pytest.raises(ConfigError, match="'per_class'"):
        small(tmp_path, per_class=-1)
    with pytest.raises(ConfigError, match="'size'"):
        small(tmp_path, size=300)
    with pytest.raises(ConfigError, match="'val_frac'"):
        small(tmp_path, val_frac=0.5, test_frac=0.45)


def run_cli(*args, env_root):
    env = {**os.environ, "HISTOGEN_DATA": str(env_root)}
    return subprocess.run([sys.executable, "-m", "engine", "prepare", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_prepare(tmp_path):
    r = run_cli("--source", "histosynth", "--size", "32", "--per-class", "10", "--out", str(tmp_path / "tmp"),
                env_root=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "class" in r.stdout and "TUM" in r.stdout and "total" in r.stdout and "rejected: none" in r.stdout
    assert load_prepared(tmp_path / "tmp").images.shape == (90, 32, 32, 3)
    r = run_cli("--source", "bogus", env_root=tmp_path)
    assert r.returncode == 2 and "config field 'source'" in r.stderr and "histosynth" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_worker_processes_give_the_same_cache(tmp_path, monkeypatch, shared_data):
    import engine.data.prepare as P

    monkeypatch.setattr(P, "PARALLEL_MIN", 0)
    src = f"folder:{shared_data / 'nct_figure_crops'}"
    a = load_prepared(small(tmp_path, "a", source=src, workers=1))
    b = load_prepared(small(tmp_path, "b", source=src, workers=2))
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
