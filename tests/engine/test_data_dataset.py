"""PreparedData, PatchDataset, BalancedClassSampler, uint8_to_float, demo set."""
from collections import Counter

import numpy as np
import pytest
import torch

from engine.config import ConfigError, PrepareConfig
from engine.data.dataset import (BalancedClassSampler, PatchDataset, default_demo_dir, ensure_demo,
                                 load_prepared, real_tiles, uint8_to_float)
from engine.runs import data_dir as run_data_dir
from engine.data.prepare import prepare


@pytest.fixture
def data(tmp_path):
    cfg = PrepareConfig(source="histosynth", size=32, per_class=5, out=str(tmp_path / "d"))
    return load_prepared(prepare(cfg))


def test_patch_dataset_range_and_values(data):
    ds = PatchDataset(data, "train")
    assert len(ds) == len(data.splits["train"])
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and isinstance(y, int)
    assert -1 <= x.min() < 0 < x.max() <= 1
    back = ((x.permute(1, 2, 0) + 1) * 127.5).round().to(torch.uint8).numpy()
    first = data.splits["train"][0]
    assert np.array_equal(back, data.images[first]) and y == data.labels[first]
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=8)))
    assert batch[0].shape == (8, 3, 32, 32)
    with pytest.raises(ConfigError, match="split"):
        PatchDataset(data, "holdout")


def test_uint8_to_float():
    x = torch.tensor([0, 255, 128], dtype=torch.uint8).view(1, 1, 3, 1).expand(2, 1, 3, 3).permute(0, 1, 3, 2)
    y = uint8_to_float(x, device="cpu")
    assert y.shape == (2, 3, 1, 3) and y[0, 0, 0, 0] == -1 and y[0, 1, 0, 0] == 1
    assert uint8_to_float(np.zeros((1, 4, 4, 3), np.uint8)).shape == (1, 3, 4, 4)


def test_balanced_sampler():
    labels = np.array([0] * 50 + [1] * 3 + [2] * 10)
    s = BalancedClassSampler(labels, 8, seed=1)
    idx = list(s)
    assert len(idx) == len(s) == 24
    assert Counter(labels[idx].tolist()) == {0: 8, 1: 8, 2: 8}
    assert sorted(Counter(i for i in idx if labels[i] == 1).values()) == [2, 3, 3]  # small class: even repeats
    assert len(set(i for i in idx if labels[i] == 0)) == 8  # large class: no repeats within an epoch
    assert idx == list(BalancedClassSampler(labels, 8, seed=1))
    s.set_epoch(1)
    assert list(s) != idx
    assert labels[idx].tolist() != sorted(labels[idx].tolist())  # classes are shuffled together
    with pytest.raises(ConfigError):
        BalancedClassSampler(labels, 0)


def test_load_prepared_errors(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        load_prepared(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(e.value) and "python -m engine prepare" in str(e.value)
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "dataset.json").write_text('{"class_names": ["A"], "size": 32}')
    with pytest.raises(ConfigError, match="incomplete or damaged"):
        load_prepared(tmp_path / "half")


def test_ensure_demo_prepares_once():
    p = ensure_demo(size=32, per_class=2)
    assert p == default_demo_dir(32) and load_prepared(p).images.shape == (18, 32, 32, 3)
    mtime = (p / "dataset.json").stat().st_mtime_ns
    assert ensure_demo(size=32, per_class=2) == p and (p / "dataset.json").stat().st_mtime_ns == mtime
    ensure_demo(size=32, per_class=3)  # another request rebuilds it
    assert load_prepared(p).images.shape[0] == 27


def test_class_descriptions_cover_the_nct_classes():
    from engine.data.classes import class_descriptions
    from engine.data.histosynth import CLASSES

    desc = class_descriptions()
    assert set(CLASSES) <= set(desc)
    assert all(len(desc[c]) > 20 for c in CLASSES)


def test_real_tiles_come_from_the_eval_split(tmp_path):
    cfg = PrepareConfig(source="histosynth", size=32, per_class=30, eval_frac=0.2, out=str(tmp_path / "d"))
    data = load_prepared(prepare(cfg))
    c = data.class_names.index("TUM")
    ev = data.splits["eval"][data.labels[data.splits["eval"]] == c]
    assert len(ev) >= 3
    assert data.eval_disjoint and not set(ev.tolist()) & set(data.splits["train"].tolist())  # held out
    t = real_tiles(data.root, "TUM", 3, seed=1)
    assert t.shape == (3, 32, 32, 3) and t.dtype == np.uint8
    pool = {data.images[i].tobytes() for i in ev}  # every tile is a TUM tile of the eval split
    assert all(x.tobytes() in pool for x in t)
    assert np.array_equal(t, real_tiles(data, "TUM", 3, seed=1))  # seeded
    assert len({real_tiles(data, "TUM", 1, seed=s).tobytes() for s in range(6)}) > 1  # the seed picks
    assert len(real_tiles(data, "TUM", 10_000)) == len(ev)  # no more than the split holds
    assert len(real_tiles(data, "TUM", 0)) == 0
    small = real_tiles(data, "TUM", 3, seed=1, size=16)  # at a generator's res, as the trainer resizes
    assert small.shape == (3, 16, 16, 3) and small.dtype == np.uint8
    assert abs(float(small.mean()) - float(t.mean())) < 3
    with pytest.raises(ConfigError, match="class 'XYZ' is not in data set"):
        real_tiles(data, "XYZ", 2)
    with pytest.raises(ConfigError, match="split must be one of"):
        real_tiles(data, "TUM", 2, split="holdout")


def test_run_data_dir(tmp_path):
    import json

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "config.json").write_text(json.dumps({"data": "/x/nct-64", "res": 64}))
    assert str(run_data_dir(tmp_path / "a")) == "/x/nct-64"
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "config.json").write_text(json.dumps({"data": "", "res": 16}))
    assert run_data_dir(tmp_path / "b") == default_demo_dir(32)  # the demo the trainer makes for res 16
