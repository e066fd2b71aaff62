"""Downstream check: real-vs-synthetic training sets matched per class; train-and-test bookkeeping."""
import numpy as np

from engine.metrics.downstream import match_per_class, train_and_test


def test_match_per_class_caps_each_class():
    labels = np.array([0] * 10 + [1] * 3 + [2] * 5)
    rows = match_per_class(labels, np.array([4, 4, 0]))
    assert np.bincount(labels[rows], minlength=3).tolist() == [4, 3, 0]
    assert (np.diff(rows) > 0).all()


def test_train_and_test_reports_accuracy_recall_and_confusion():
    rng = np.random.default_rng(0)
    dark = rng.integers(0, 60, (12, 8, 8, 3)).astype(np.uint8)
    light = rng.integers(190, 255, (12, 8, 8, 3)).astype(np.uint8)
    x, y = np.concatenate([dark[:8], light[:8]]), np.array([0] * 8 + [1] * 8)
    tx, ty = np.concatenate([dark[8:], light[8:]]), np.array([0] * 4 + [1] * 4)
    out = train_and_test(x, y, tx, ty, ["dark", "light"], arch="test_resnet", epochs=2, batch=8, seed=0,
                         device="cpu")
    conf = np.array(out["confusion"])
    assert conf.shape == (2, 2) and conf.sum() == 8 and conf.sum(1).tolist() == [4, 4]
    assert out["n_train"] == 16 and out["accuracy"] == conf.trace() / 8
    assert out["per_class_recall"]["dark"] == conf[0, 0] / 4
