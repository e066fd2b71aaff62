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
    sets = [tr, va, te, ev]
    assert all(not (a & b) for i, a in enumerate(sets) for b in sets[i + 1:])  # eval is held out too
    assert tr | va | te | ev == set(range(len(labels))) and len(ev) > 0
    for c, n in enumerate([50, 30, 10, 3]):
        nv, nt, ne = (int((labels[s[k]] == c).sum()) for k in ("val", "test", "eval"))
        assert (nv, nt) == (max(1, round(n * 0.1)), max(1, round(n * 0.2)))  # stratified per class
        # eval: its fraction of the class; a class of 3 has no room for it (train keeps one)
        assert ne == (0 if n == 3 else max(1, round(n * 0.1)))
        assert int((labels[s["train"]] == c).sum()) == n - nv - nt - ne >= 1
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
        assert row["split"] == next(s for s in ("train", "val", "test", "eval") if i in data.splits[s])
    assert data.split_counts() == data.info["counts"]
    assert data.eval_disjoint and data.info["eval_disjoint"] is True and data.info["eval_subset_of"] is None
    assert data.info["counts"]["eval"] == {c: 1 for c in hs.CLASSES}  # 10% of 6, at least one
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
    with pytest.raises(ConfigError, match="'eval_frac' must leave at least 10% for train"):
        small(tmp_path, val_frac=0.4, test_frac=0.3, eval_frac=0.3)  # eval is held out too now
    with pytest.raises(ConfigError, match="'test_source' must be empty or folder:PATH"):
        small(tmp_path, test_source="histosynth")


def folder(root, counts, seed=0, size=40):
    """<root>/<CLASS>/<i>.png of seeded noise (distinct per class and index); returns root."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c, n in counts.items():
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def test_test_split_from_a_second_folder(tmp_path):
    from engine.data.prepare import summary_table

    main = folder(tmp_path / "train", {"TUM": 10, "ADI": 10, "LYM": 10}, seed=1)
    val7k = folder(tmp_path / "val7k", {"TUM": 3, "ADI": 2}, seed=2)  # no LYM folder
    (val7k / "ADI" / "broken.png").write_bytes(b"")            # rejected: empty
    (val7k / "notes.txt").write_text("not a class")            # rejected: outside a class folder
    out = small(tmp_path, source=f"folder:{main}", test_source=f"folder:{val7k}", size=32, per_class=0,
                test_frac=0.4, quality_filter=False)
    data = load_prepared(out)
    info = data.info
    assert data.class_names == ["ADI", "LYM", "TUM"]  # the main source's (NCT) order
    n_main = 30
    test = data.splits["test"]
    assert test.tolist() == list(range(n_main, n_main + 5))  # the test folder's patches, and only those
    assert info["counts"]["test"] == {"ADI": 2, "LYM": 0, "TUM": 3}
    assert info["test_missing_classes"] == ["LYM"] and info["test_source"] == f"folder:{val7k.resolve()}"
    # test_frac is not used: the main source gives train / val / eval only, all disjoint
    main_splits = [set(data.splits[s].tolist()) for s in ("train", "val", "eval")]
    assert set().union(*main_splits) == set(range(n_main)) and sum(map(len, main_splits)) == n_main
    assert info["counts"]["val"] == {c: 1 for c in data.class_names}
    # the same resize as the main source; labels by folder name
    from PIL import Image
    for i, (c, f) in enumerate([("ADI", "0.png"), ("ADI", "1.png"), ("TUM", "0.png")]):
        want = np.asarray(Image.open(val7k / c / f).resize((32, 32), Image.Resampling.LANCZOS))
        assert np.array_equal(data.images[n_main + i], want) and data.class_names[data.labels[n_main + i]] == c
    # the test folder's rejects are counted apart from the main source's
    assert info["rejected"] == {} and info["test_rejected"] == {"empty": 1, "outside_class_folder": 1}
    text = summary_table(info)
    assert "classes absent from the test folder (0 test patches): LYM" in text
    assert "test folder rejected: 2 files" in text and "test_frac not used" in text
    rows = list(csv.DictReader(open(out / "files.csv")))
    assert {r["split"] for r in rows[n_main:]} == {"test"} and rows[n_main]["source"].startswith(str(val7k.resolve()))


def test_test_folder_errors(tmp_path):
    main = folder(tmp_path / "train", {"TUM": 4, "ADI": 4})
    extra = folder(tmp_path / "val7k", {"TUM": 1, "XYZ": 1, "ADI": 1})
    with pytest.raises(ConfigError, match=r"'test_source'.*XYZ.*main source classes: ADI, TUM; "
                                          r"test source classes: ADI, TUM, XYZ"):
        small(tmp_path, source=f"folder:{main}", test_source=f"folder:{extra}", quality_filter=False)
    with pytest.raises(ConfigError, match="'test_source'.*does not exist"):
        small(tmp_path, source=f"folder:{main}", test_source=f"folder:{tmp_path / 'nope'}")
    with pytest.raises(ConfigError, match="'test_source'.*is the main source itself"):
        small(tmp_path, source=f"folder:{main}", test_source=f"folder:{main}")


def test_old_set_with_eval_inside_train_still_loads(tmp_path):
    """A set prepared before eval was held out: eval_subset_of "train", no eval_disjoint."""
    import json

    from engine.data.prepare import summary_table

    out = small(tmp_path)
    info = json.loads((out / "dataset.json").read_text())
    train = np.load(out / "splits" / "train.npy")
    np.save(out / "splits" / "train.npy", np.sort(np.concatenate([train, np.load(out / "splits" / "eval.npy")])))
    info["counts"]["train"] = {c: info["counts"]["train"][c] + info["counts"]["eval"][c] for c in info["class_names"]}
    del info["eval_disjoint"]
    info["eval_subset_of"] = "train"
    (out / "dataset.json").write_text(json.dumps(info))
    data = load_prepared(out)
    assert not data.eval_disjoint and set(data.splits["eval"]) <= set(data.splits["train"])
    assert "eval is a subset of train" in summary_table(info)
    assert "the four splits are disjoint" in summary_table(load_prepared(small(tmp_path, "new")).info)


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
