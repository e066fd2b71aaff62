"""Memorisation audit: is a generated patch closer to one training patch than real patches ever are?

For each generated patch: its nearest real training patch in the feature space and the distance d.
The yardstick is how close *unseen* real patches (the held-out test split) come to the training set:
ratio = d / median(nearest-training distance of held-out patches of the same class). A ratio well below
1 (default flag: < 0.5) means the generator reproduces a training patch more closely than independent
tissue does -- a copy candidate. The closest pairs are stored as images for side-by-side review.
"""
from __future__ import annotations

import numpy as np
import torch

from engine.metrics.registry import register_metric


def nearest(query: np.ndarray, ref: np.ndarray, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """(distance, index) of the nearest `ref` row (L2) for every `query` row, in chunks."""
    r = torch.from_numpy(np.asarray(ref, np.float32))
    d, i = [], []
    for s in range(0, len(query), chunk):
        q = torch.from_numpy(np.asarray(query[s:s + chunk], np.float32))
        m = torch.cdist(q, r).min(dim=1)
        d.append(m.values.numpy())
        i.append(m.indices.numpy())
    return (np.concatenate(d).astype(np.float64), np.concatenate(i)) if d else (np.zeros(0), np.zeros(0, np.int64))


def distance_ratios(gen_feats, gen_labels, train_feats, held_feats, held_labels, num_classes: int):
    """Nearest-training distance, index and ratio per generated row (see module doc), plus the
    per-class reference distances. Classes without held-out patches use the pooled median."""
    d, idx = nearest(gen_feats, train_feats)
    dh, _ = nearest(held_feats, train_feats)
    pooled = float(np.median(dh)) if len(dh) else float("nan")
    ref = np.array([np.median(dh[held_labels == c]) if (held_labels == c).any() else pooled
                    for c in range(num_classes)])
    ratio = d / np.maximum(ref[gen_labels], 1e-12)
    return d, idx, ratio, ref


@register_metric("memorisation")
def memorisation(ctx) -> dict:
    names, thr, k = ctx.class_names, ctx.cfg.memorisation_threshold, ctx.cfg.memorisation_pairs
    train = ctx.real("train", ctx.cfg.memorisation_train_cap)
    held_split = "test" if len(ctx.data.splits["test"]) else "val"
    held = ctx.real(held_split)
    if len(train.labels) == 0 or len(held.labels) == 0:
        raise ValueError(f"memorisation needs real `train` and `{held_split}` patches")
    d, idx, ratio, ref = distance_ratios(ctx.gen_feats, ctx.gen_labels, train.feats, held.feats, held.labels,
                                         len(names))
    order = np.argsort(ratio)[:k]
    ctx.save_array("memorisation_generated", ctx.gen_images[order])
    ctx.save_array("memorisation_real", train.take(idx[order]))
    pairs = [{"rank": r, "generated": int(g), "class": names[ctx.gen_labels[g]], "seed": ctx.gen_seeds[g],
              "train_row": int(train.index[idx[g]]), "distance": float(d[g]), "ratio": float(ratio[g])}
             for r, g in enumerate(order)]
    per = {n: {"median_ratio": float(np.median(ratio[ctx.gen_labels == c])),
               "min_ratio": float(ratio[ctx.gen_labels == c].min()),
               "flagged": int((ratio[ctx.gen_labels == c] < thr).sum()), "reference_distance": float(ref[c])}
           for c, n in enumerate(names) if (ctx.gen_labels == c).any()}
    return {"reference": f"median nearest-training distance of real `{held_split}` patches of the same class",
            "n_train_searched": int(len(train.labels)), "n_held_out": int(len(held.labels)), "threshold": thr,
            "median_ratio": float(np.median(ratio)), "min_ratio": float(ratio.min()),
            "flagged": int((ratio < thr).sum()), "flagged_fraction": float((ratio < thr).mean()),
            "per_class": per, "pairs": pairs,
            "pairs_files": ["memorisation_generated", "memorisation_real"]}
