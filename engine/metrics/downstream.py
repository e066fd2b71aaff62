"""Downstream check ("CNN baseline"): does a classifier trained on synthetic patches recognise real ones?

Three classifiers with the same recipe (engine.metrics.classifier.fit_classifier) are trained on real
training patches, on the generated patches, and on both, then tested on the real test split: accuracy,
per-class recall and confusion matrices. The real training set is cut to the generated set's size per
class, so "real" and "synthetic" compete on equal numbers.
"""
from __future__ import annotations

import numpy as np

from engine.metrics.classifier import evaluate_classifier, fit_classifier
from engine.metrics.registry import register_metric


def train_and_test(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                   class_names: list[str], *, arch: str, epochs: int, batch: int, seed: int, device: str,
                   progress=None) -> dict:
    """Fit on (train_x, train_y), score on (test_x, test_y): accuracy, per-class recall, confusion."""
    K = len(class_names)
    model = fit_classifier(train_x, train_y, K, arch=arch, epochs=epochs, batch=batch, seed=seed, device=device,
                           progress=progress)
    acc, conf = evaluate_classifier(model, test_x, np.asarray(test_y, np.int64), np.arange(len(test_y)), K, device)
    recall = {n: (row[c] / sum(row) if sum(row) else None) for c, (n, row) in enumerate(zip(class_names, conf))}
    return {"n_train": int(len(train_y)), "accuracy": acc, "per_class_recall": recall, "confusion": conf}


def match_per_class(labels: np.ndarray, counts: np.ndarray, seed: int = 0) -> np.ndarray:
    """Rows of `labels` with at most counts[c] of each class c (seeded choice)."""
    rng = np.random.default_rng(seed)
    rows = [rng.permutation(np.flatnonzero(labels == c))[:int(k)] for c, k in enumerate(counts)]
    return np.sort(np.concatenate(rows)) if rows else np.zeros(0, np.int64)


@register_metric("downstream")
def downstream(ctx) -> dict:
    cfg, names = ctx.cfg, ctx.class_names
    test_split = "test" if len(ctx.data.splits["test"]) else "val"
    test, train = ctx.real(test_split), ctx.real("train")
    if len(test.labels) == 0:
        raise ValueError("downstream needs a real test (or val) split; this data set has neither")
    counts = np.bincount(ctx.gen_labels, minlength=len(names))
    real_rows = match_per_class(train.labels, counts, ctx.seed)
    sets = {"real": (train.take(real_rows), train.labels[real_rows]),
            "synthetic": (ctx.gen_images, ctx.gen_labels)}
    sets["real+synthetic"] = tuple(np.concatenate([a, b]) for a, b in zip(sets["real"], sets["synthetic"]))
    out = {"test_split": test_split, "n_test": int(len(test.labels)), "arch": cfg.downstream_arch,
           "epochs": cfg.downstream_epochs, "class_names": names, "sets": {}}
    for name, (x, y) in sets.items():
        ctx.progress(f"downstream: training on {name} ({len(y)} patches)")
        out["sets"][name] = train_and_test(x, y, test.images, test.labels, names, arch=cfg.downstream_arch,
                                           epochs=cfg.downstream_epochs, batch=cfg.batch, seed=ctx.seed,
                                           device=ctx.device)
    return out
