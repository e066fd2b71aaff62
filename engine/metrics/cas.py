"""Classification accuracy score (CAS): does the real-trained classifier see the class G was asked for?

Per class, the share of generated patches that the data set's `domain` classifier (classifier.pt,
trained on real patches only) assigns to the conditioned class, and their mean over the classes.
Beside it, the same classifier's accuracy on the real test split (val when there is no test split),
measured at the generator's resolution through the same resize path: that is the ceiling a generator
whose patches were indistinguishable from real ones would reach, so a reader can tell "G is bad" from
"the classifier is weak". Chance is 1 / number of classes.

The classifier is the evaluation's own feature space when that is `domain` (no second load) and the
generated patches are the evaluation's (no second generation).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from engine.images import uint8_to_float
from engine.metrics.registry import register_metric


@torch.no_grad()
def predict(space, images, batch: int = 64, device: str = "cpu") -> np.ndarray:
    """Argmax class of the space's `logits` for uint8 NHWC `images` (int64, (N,))."""
    out = np.zeros(len(images), np.int64)
    for i in range(0, len(images), batch):
        x = uint8_to_float(images[i:i + batch], device)
        out[i:i + len(x)] = space.logits(x).argmax(1).cpu().numpy()
    return out


def per_class_share(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> list[float | None]:
    """For each class c: the share of rows labelled c that are predicted c (None for a class with none)."""
    return [float(np.mean(pred[labels == c] == c)) if np.any(labels == c) else None for c in range(num_classes)]


def confusion(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> list[list[int]]:
    """Rows = conditioned (or true) class, columns = predicted class."""
    return np.bincount(labels * num_classes + pred, minlength=num_classes * num_classes
                       ).reshape(num_classes, num_classes).tolist()


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def domain_classifier(ctx):
    """The real-trained classifier: the evaluation's feature space when it is `domain`, else the data
    set's classifier.pt (or --classifier) loaded once per evaluation."""
    if ctx.cfg.features == "domain":
        return ctx.features
    cached = getattr(ctx, "_cas_classifier", None)
    if cached is None:
        from engine.metrics.features import open_feature_space

        path = ctx.cfg.domain_weights or str(Path(ctx.data.root) / "classifier.pt")
        cached = open_feature_space("domain", path, ctx.device)
        ctx._cas_classifier = cached
    return cached


@register_metric("cas")
def cas(ctx) -> dict:
    names, K = ctx.class_names, len(ctx.class_names)
    clf = domain_classifier(ctx)
    # The evaluation may already hold the domain logits of the generated patches (they come with IS).
    reuse = ctx.cfg.features == "domain" and "_embedded" in getattr(ctx, "__dict__", {}) \
        and ctx.gen_logits is not None
    ctx.progress("cas: classifying the generated patches")
    gen_pred = np.asarray(ctx.gen_logits).argmax(1) if reuse else \
        predict(clf, ctx.gen_images, ctx.cfg.batch, ctx.device)
    gen_share = per_class_share(gen_pred, ctx.gen_labels, K)

    splits = ctx.data.splits
    test_split = "test" if len(splits.get("test", ())) else "val" if len(splits.get("val", ())) else None
    real_share, n_test, real_conf = [None] * K, 0, None
    if test_split:
        ctx.progress(f"cas: the classifier's accuracy on real `{test_split}`")
        test = ctx.real(test_split)
        real_pred = predict(clf, test.images, ctx.cfg.batch, ctx.device)
        real_share, n_test = per_class_share(real_pred, test.labels, K), int(len(test.labels))
        real_conf = confusion(real_pred, test.labels, K)
    per_class = {n: {"cas": g, "real_accuracy": r, "n_generated": int(np.sum(ctx.gen_labels == c))}
                 for c, (n, g, r) in enumerate(zip(names, gen_share, real_share))}
    return {"cas": _mean(gen_share), "real_accuracy": _mean(real_share), "chance": 1.0 / K,
            "test_split": test_split, "n_test": n_test, "n_generated": int(len(gen_pred)),
            "classifier": getattr(clf, "weights_path", None), "class_names": names, "per_class": per_class,
            "confusion": confusion(gen_pred, np.asarray(ctx.gen_labels, np.int64), K),
            "real_confusion": real_conf,
            "note": "cas and real_accuracy are means over the classes of the per-class shares; "
                    "real_accuracy (same classifier, real patches at the generator's resolution) is the "
                    "ceiling cas can reach"}
