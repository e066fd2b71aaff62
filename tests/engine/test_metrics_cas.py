"""`cas` (classification accuracy score): hand-checkable on a colour classifier, and end to end in a report."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn

from engine.metrics import cas as C
from engine.metrics.fid import real_set

K, RES = 3, 8
COLOURS = torch.tensor([[1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]])  # red, green, blue


class ColourClassifier(nn.Module):
    """Predicts the class whose colour is nearest the image's mean colour: its answers are known by hand."""

    def logits(self, x):
        return -torch.cdist(x.mean(dim=(2, 3)), COLOURS)


def colour_images(classes) -> np.ndarray:
    rgb = ((COLOURS[list(classes)] + 1) * 127.5).round().to(torch.uint8).numpy()
    return np.broadcast_to(rgb[:, None, None, :], (len(rgb), RES, RES, 3)).copy()


def fake_ctx(make_gen, per_class: int = 4):
    """A context as engine.metrics.evaluate builds it, over a 3-class set whose test split has 4 patches per
    class; 1 of class 0's test patches is green (mislabelled), so the classifier's real accuracy is 11/12."""
    test_labels = np.repeat(np.arange(K), 4)
    looks = test_labels.copy()
    looks[0] = 1
    data = SimpleNamespace(root="unused", images=colour_images(looks), labels=test_labels,
                           splits={"train": np.zeros(0, np.int64), "val": np.zeros(0, np.int64),
                                   "test": np.arange(len(test_labels))})
    gen_labels = np.repeat(np.arange(K), per_class)
    ctx = SimpleNamespace(class_names=["ADI", "BACK", "DEB"], cfg=SimpleNamespace(features="domain", batch=5),
                          features=ColourClassifier(), data=data, device="cpu", gen_labels=gen_labels,
                          progress=lambda *a, **k: None,
                          real=lambda split, cap=None: real_set(data, split, RES, 0))
    ctx.gen_images = make_gen(data, gen_labels)
    return ctx


def real_patches_of(data, labels):
    """A 'generator' that returns the real test patches of the conditioned class (cycling through them)."""
    rows = [np.flatnonzero(data.labels == c)[i % 4] for i, c in enumerate(labels)]
    return data.images[rows]


def test_cas_of_real_patches_equals_the_classifier_accuracy_and_wrong_class_gives_zero():
    out = C.cas(fake_ctx(real_patches_of))
    assert out["test_split"] == "test" and out["n_test"] == 12 and out["n_generated"] == 12
    assert out["per_class"]["ADI"]["real_accuracy"] == pytest.approx(0.75)
    assert out["real_accuracy"] == pytest.approx((0.75 + 1 + 1) / 3)
    for name, row in out["per_class"].items():  # same patches, same classifier: CAS is the ceiling exactly
        assert row["cas"] == pytest.approx(row["real_accuracy"]) and row["n_generated"] == 4
    assert out["cas"] == pytest.approx(out["real_accuracy"]) and out["chance"] == pytest.approx(1 / 3)
    assert out["confusion"][0] == [3, 1, 0]

    wrong = C.cas(fake_ctx(lambda data, labels: colour_images((labels + 1) % K)))
    assert wrong["cas"] == 0.0 and all(r["cas"] == 0.0 for r in wrong["per_class"].values())
    assert wrong["real_accuracy"] == pytest.approx(out["real_accuracy"])  # the ceiling does not depend on G


def test_cas_without_test_split_uses_val_then_reports_no_ceiling():
    ctx = fake_ctx(real_patches_of)
    ctx.data.splits["val"], ctx.data.splits["test"] = ctx.data.splits["test"], np.zeros(0, np.int64)
    assert C.cas(ctx)["test_split"] == "val"
    ctx.data.splits["val"] = np.zeros(0, np.int64)
    out = C.cas(ctx)
    assert out["test_split"] is None and out["real_accuracy"] is None and out["cas"] == pytest.approx(11 / 12)


def test_cas_in_an_evaluate_report_reuses_the_loaded_classifier(monkeypatch):
    from engine.metrics import features
    from engine.metrics.evaluate import EvalConfig, evaluate, summary
    from engine.metrics.report import headline, per_class_table
    from tests.engine.test_metrics_evaluate import tiny_eval_setup

    run_dir, data_dir = tiny_eval_setup(per_class=4)
    loads = []
    real_load = features.load_domain_features
    monkeypatch.setattr(features, "load_domain_features", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    report, _ = evaluate(EvalConfig(run_dir=str(run_dir), data=str(data_dir), metrics="fid,cas", n=18, batch=16,
                                    device="cpu"))
    m = report["metrics"]["cas"]
    assert "error" not in m, m
    assert len(loads) == 1  # fid's feature space served cas too
    assert 0 <= m["cas"] <= 1 and m["n_generated"] == 18 and set(m["per_class"]) == set(report["class_names"])
    assert m["test_split"] in ("test", "val") and m["n_test"] > 0 and 0 <= m["real_accuracy"] <= 1
    assert headline(report)["cas"] == m["cas"]
    assert {"cas", "cas_real_accuracy"} <= set(per_class_table(report))
    assert "CAS " in summary(report)
    # another feature space: cas still uses the data set's real-trained classifier, loaded once
    loads.clear()
    other, _ = evaluate(EvalConfig(run_dir=str(run_dir), data=str(data_dir), metrics="cas", features="inception",
                                   n=18, batch=16, device="cpu"))
    assert "error" not in other["metrics"]["cas"] and len(loads) == 1
    assert other["metrics"]["cas"]["cas"] == pytest.approx(m["cas"])  # same samples, same classifier
