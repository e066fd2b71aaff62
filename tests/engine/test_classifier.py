"""In-domain classifier (train / save / load / CLI) and the frozen `domain` feature space."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from engine.config import ConfigError
from engine.metrics.classifier import (dihedral, format_confusion, load_classifier,
                                       train_classifier)
from engine.metrics.features import (FEATURE_SPACES, DomainFeatures, load_domain_features,
                                     load_feature_space)

ROOT = Path(__file__).resolve().parents[2]
NAMES = ["red", "green", "blue", "grey"]
COLOURS = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200], [128, 128, 128]])


def make_prepared(root: Path, per_class=12, size=32, seed=0) -> Path:
    """A tiny prepared data set in the DATA layout: noisy solid-colour classes, 8/2/2 split per class."""
    rng = np.random.default_rng(seed)
    n = per_class * len(NAMES)
    labels = np.repeat(np.arange(len(NAMES)), per_class)
    noise = rng.normal(0, 20, (n, size, size, 3))
    images = np.clip(COLOURS[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)
    idx = np.arange(n).reshape(len(NAMES), per_class)
    splits = {"train": idx[:, :8].ravel(), "val": idx[:, 8:10].ravel(), "test": idx[:, 10:].ravel()}
    splits["eval"] = idx[:, :2].ravel()
    root.mkdir(parents=True, exist_ok=True)
    (root / "splits").mkdir(exist_ok=True)
    np.save(root / "images.npy", images)
    np.save(root / "labels.npy", labels.astype(np.int64))
    for k, v in splits.items():
        np.save(root / "splits" / f"{k}.npy", v.astype(np.int64))
    (root / "dataset.json").write_text(json.dumps({"class_names": NAMES, "size": size}))
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    data = make_prepared(tmp_path_factory.mktemp("data") / "tiny")
    out = data / "clf.pt"
    calls = []
    meta = train_classifier(data, out, epochs=1, batch=16, seed=0, device="cpu",
                            progress=lambda d, t, m: calls.append((d, t, m)))
    return data, out, meta, calls


def test_train_writes_weights_only_file(trained):
    data, out, meta, calls = trained
    ckpt = torch.load(out, weights_only=True)
    m = ckpt["meta"]
    assert m["class_names"] == NAMES and m["num_classes"] == 4 and m["size"] == 32
    conf = np.array(m["confusion"])
    assert conf.shape == (4, 4) and conf.sum() == 8 == m["val_n"]
    assert m["val_acc"] == pytest.approx(np.trace(conf) / 8)
    assert calls[-1][0] == calls[-1][1] == 2  # 32 train images / batch 16, one epoch
    model, meta2 = load_classifier(out)
    assert not model.training and meta2["arch"] == meta["arch"]
    assert model(torch.zeros(3, 3, 32, 32)).shape == (3, 4)


def test_easy_task_high_val_accuracy(tmp_path):
    data = make_prepared(tmp_path / "easy")
    meta = train_classifier(data, None, epochs=8, batch=16, lr=3e-3, seed=1, device="cpu")
    assert Path(meta["out"]) == data / "classifier.pt" and (data / "classifier.pt").is_file()
    assert meta["val_acc"] >= 0.85, meta["confusion"]


def test_cli_trains_and_prints_confusion(tmp_path):
    data = make_prepared(tmp_path / "cli", per_class=10)
    out = tmp_path / "sub" / "c.pt"
    r = subprocess.run([sys.executable, "-m", "engine", "train-classifier", "--data", str(data),
                        "--out", str(out), "--epochs", "1", "--batch", "16", "--device", "cpu"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "val accuracy" in r.stdout and "rows = true class" in r.stdout
    assert all(n in r.stdout for n in NAMES) and out.is_file()


def test_cli_bad_input_exits_2(tmp_path, capsys):
    from engine.__main__ import main

    assert main(["train-classifier", "--data", str(tmp_path), "--arch", "no_such_net"]) == 2
    assert "'arch'" in capsys.readouterr().err
    assert main(["train-classifier", "--data", str(tmp_path / "none"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "none") in err and "python -m engine prepare" in err


def test_bad_inputs_fail_clearly(tmp_path):
    with pytest.raises(ConfigError, match="'epochs'"):
        train_classifier(tmp_path, epochs=0)
    with pytest.raises(ConfigError, match="'device'"):
        train_classifier(tmp_path, device="gpu")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        load_classifier(bad)


def test_missing_file_message(tmp_path):
    path = tmp_path / "nowhere" / "classifier.pt"
    for fn in (load_domain_features, load_classifier):
        with pytest.raises(FileNotFoundError) as e:
            fn(path)
        msg = str(e.value)
        assert "python -m engine train-classifier --data" in msg and f"--out {path}" in msg
        assert "domain head off" in msg


def test_domain_features_frozen_but_differentiable(trained):
    _, out, meta, _ = trained
    df = load_domain_features(out)
    assert "domain" in FEATURE_SPACES and isinstance(load_feature_space("domain", out), DomainFeatures)
    x = torch.rand(5, 3, 48, 48, requires_grad=True) * 2 - 1  # another size: resized inside
    x.retain_grad()
    f = df(x)
    assert f.shape == (5, df.num_features) and df.num_features == 512
    f.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert list(df.parameters()) == []
    assert all(not b.requires_grad and b.grad is None for b in df.buffers())

    # Inside a "discriminator" that is put in train mode, has requires_grad toggled on and is
    # optimised, the features stay in eval mode and their weights do not move.
    parent = nn.Module()
    parent.df, parent.head = df, nn.Linear(df.num_features, 1)
    before = {k: v.clone() for k, v in df.state_dict().items()}
    parent.train().requires_grad_(True)
    assert not df.training and not any(m.training for m in df.modules())
    opt = torch.optim.SGD(parent.parameters(), lr=1.0)
    y = torch.rand(4, 3, 32, 32) * 2 - 1
    parent.head(parent.df(y)).sum().backward()
    opt.step()
    assert all(torch.equal(before[k], v) for k, v in df.state_dict().items())
    assert torch.allclose(df(y), df(y))


def test_dihedral_and_confusion_table():
    x = torch.arange(16).float().view(1, 1, 4, 4).repeat(256, 3, 1, 1)
    y = dihedral(x, torch.Generator().manual_seed(0))
    assert torch.equal(y.flatten(1).sort(1).values, x.flatten(1).sort(1).values)
    assert len({tuple(v.flatten().tolist()) for v in y[:, 0]}) == 8  # all flips/rotations occur
    table = format_confusion([[3, 1], [0, 4]], ["ADI", "TUM"]).splitlines()
    assert table[1].split() == ["ADI", "3", "1"] and table[2].split() == ["TUM", "0", "4"]
