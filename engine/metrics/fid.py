"""FID, KID, precision/recall and IS in any feature space, overall and per class.

The arithmetic is torch-fidelity's (feature-level functions: FID from the eigenvalues of
sigma1 @ sigma2, unbiased polynomial-kernel KID over random subsets, Kynkaenniemi k-NN precision/recall,
IS from logits); this module only embeds images, caches the real side on disk and splits by class.

Real features are cached in <data set>/eval_cache/ keyed by (data set, split, feature space + weights
hash, size, per-class cap), so a second evaluation of any run on that data set embeds only its samples.
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from engine.images import resize_uint8, uint8_to_float
from engine.metrics.registry import register_metric
from engine.utils import atomic_write_bytes

IS_NOTE = ("IS rewards confident, varied predictions of the space's classifier (ImageNet classes for "
           "`inception`); it means little for H&E and is reported only for completeness")


# ----------------------------------------------------------------------------------------------
# Embedding and the real-set cache

@torch.no_grad()
def embed(space, images, batch: int = 64, device: str = "cpu", res: int | None = None, logits: bool = False,
          progress: Callable[[int, int], None] | None = None):
    """Features (N, d) float32 of uint8 NHWC `images` (array or memmap, read in batches); with
    `logits`, also the space's logits (None when it has no `logits` method)."""
    n = len(images)
    feats, outs = np.zeros((n, space.num_features), np.float32), []
    has_logits = logits and hasattr(space, "logits")
    for i in range(0, n, batch):
        x = np.asarray(images[i:i + batch])
        if res:
            x = resize_uint8(x, res)
        x = uint8_to_float(x, device)
        if has_logits and hasattr(space, "features_and_logits"):  # one forward for both (Inception)
            f, lg = space.features_and_logits(x)
        else:
            f, lg = space(x), (space.logits(x) if has_logits else None)
        feats[i:i + len(x)] = f.float().cpu().numpy()
        if lg is not None:
            outs.append(lg.float().cpu().numpy())
        if progress:
            progress(min(i + batch, n), n)
    if not logits:
        return feats
    return feats, (np.concatenate(outs) if outs else None)


def subset_per_class(labels: np.ndarray, idx: np.ndarray, cap: int, seed: int = 0) -> np.ndarray:
    """Up to `cap` rows of every class from `idx` (a fixed seeded choice), sorted for memmap reads."""
    rng = np.random.default_rng(seed)
    pick = []
    for c in np.unique(labels[idx]):
        rows = idx[labels[idx] == c]
        pick.append(rng.permutation(rows)[:cap] if cap else rows)
    return np.sort(np.concatenate(pick)) if pick else np.zeros(0, np.int64)


class RealSet:
    """Up to `cap` patches per class of one real split at the evaluation resolution.

    Which patches is fixed by (split, cap), so pixel-only metrics never need a feature space; `feats`
    are embedded on first use and cached on disk (see real_set), `images` / `take` read the memmap.
    """

    def __init__(self, data, split: str, index: np.ndarray, res: int, embedder: Callable | None = None):
        self.data, self.split, self.index, self.res = data, split, index, res
        self.labels = np.asarray(data.labels)[index].astype(np.int64)
        self._embedder, self._feats, self._images, self.cache_file = embedder, None, None, ""

    @property
    def feats(self) -> np.ndarray:
        if self._feats is None:
            if self._embedder is None:
                raise ValueError("this real set has no feature space")
            self._feats = self._embedder(self)
        return self._feats

    @property
    def images(self) -> np.ndarray:
        """All its patches (uint8 NHWC at `res`), read once; use `take` for a few of a large set."""
        if self._images is None:
            self._images = self.take(np.arange(len(self.index)))
        return self._images

    def take(self, rows) -> np.ndarray:
        """Patches at positions `rows` of this set, read from the data set's memmap in sorted order."""
        rows = np.asarray(rows, np.int64)
        if self._images is not None:
            return self._images[rows]
        order = np.argsort(self.index[rows], kind="stable")
        out = np.empty((len(rows), self.res, self.res, 3), np.uint8)
        if len(rows):
            out[order] = resize_uint8(np.asarray(self.data.images[self.index[rows][order]]), self.res)
        return out


def cache_path(data, split: str, space_desc: dict, res: int, cap: int) -> Path:
    info = (Path(data.root) / "dataset.json").read_bytes()
    key = json.dumps([str(data.root), hashlib.sha256(info).hexdigest(), split, space_desc["space"],
                      space_desc.get("weights_sha256"), res, cap])
    tag = space_desc["space"].replace(":", "-").replace("/", "-")
    return (Path(data.root) / "eval_cache" /
            f"{split}-{tag}-{res}px-cap{cap}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.npz")


def cached_features(rs: RealSet, space, space_desc: dict, cap: int, batch: int = 64, device: str = "cpu",
                    progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Features of a RealSet from <data>/eval_cache/, or embedded now and stored there (atomically)."""
    path = cache_path(rs.data, rs.split, space_desc, rs.res, cap)
    rs.cache_file = str(path)
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                if np.array_equal(z["index"], rs.index):
                    return z["feats"]
        except (OSError, ValueError, KeyError):
            pass  # a damaged or stale cache file is simply recomputed
    images = rs.data.images[rs.index] if len(rs.index) else np.zeros((0, rs.res, rs.res, 3), np.uint8)
    feats = embed(space, images, batch, device, res=rs.res, progress=progress)
    buf = io.BytesIO()
    np.savez(buf, index=rs.index, labels=rs.labels, feats=feats)
    atomic_write_bytes(path, buf.getvalue())
    return feats


def real_set(data, split: str, res: int, cap: int, space=None, space_desc: dict | None = None,
             batch: int = 64, device: str = "cpu", progress: Callable[[int, int], None] | None = None) -> RealSet:
    """Up to `cap` per class (0 = all) of a real split. `space` may be a module or a zero-argument
    callable returning (module, description), so the space is only loaded when features are read."""
    index = subset_per_class(np.asarray(data.labels), np.asarray(data.splits[split]), cap)

    def embedder(rs: RealSet) -> np.ndarray:
        sp, desc = space() if callable(space) and not isinstance(space, torch.nn.Module) else (space, space_desc)
        return cached_features(rs, sp, desc, cap, batch, device, progress)

    return RealSet(data, split, index, res, embedder if space is not None else None)


# ----------------------------------------------------------------------------------------------
# Metrics on features (torch-fidelity arithmetic)

def fid_from_features(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (>= 2 rows each), clamped at 0."""
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"FID needs at least 2 samples per set (got {len(a)} and {len(b)})")
    sa = fid_features_to_statistics(torch.from_numpy(np.asarray(a, np.float64)))
    sb = fid_features_to_statistics(torch.from_numpy(np.asarray(b, np.float64)))
    # Tiny negative values are round-off (pytorch-fid#105), not "better than identical".
    return max(0.0, fid_statistics_to_metric(sa, sb, verbose=False)["frechet_inception_distance"])


def kid_from_features(a: np.ndarray, b: np.ndarray, subsets: int = 100, subset_size: int = 1000,
                      seed: int = 0) -> dict:
    """KID mean and std over `subsets` random subsets of `subset_size` rows (the standard 1000), or of
    half the smaller set when that has no more rows: whole-set "subsets" would all be the same draw and
    give a std of 0, which says nothing about the estimate's spread."""
    from torch_fidelity.metric_kid import kid_features_to_metric

    n = min(len(a), len(b))
    size = subset_size if n > subset_size else n // 2 if n >= 4 else n
    if size < 2:
        raise ValueError(f"KID needs at least 2 samples per set (got {len(a)} and {len(b)})")
    out = kid_features_to_metric(torch.from_numpy(np.asarray(a, np.float64)),
                                 torch.from_numpy(np.asarray(b, np.float64)), kid_subsets=subsets,
                                 kid_subset_size=size, rng_seed=seed, verbose=False)
    return {"mean": out["kernel_inception_distance_mean"], "std": out["kernel_inception_distance_std"],
            "subset_size": size, "subsets": subsets}


def pr_from_features(gen: np.ndarray, real: np.ndarray, k: int = 3) -> dict:
    """Improved precision (fidelity) and recall (coverage) with k-NN balls (Kynkaenniemi et al. 2019)."""
    from torch_fidelity.metric_prc import prc_features_to_metric

    k = min(k, len(gen) - 1, len(real) - 1)
    if k < 1:
        raise ValueError(f"precision/recall needs at least 2 samples per set (got {len(gen)} and {len(real)})")
    out = prc_features_to_metric(torch.from_numpy(np.asarray(gen, np.float32)),
                                 torch.from_numpy(np.asarray(real, np.float32)), prc_neighborhood=k,
                                 prc_batch_size=10000, save_cpu_ram=len(gen) * len(real) > 4e8, verbose=False)
    return {"precision": out["precision"], "recall": out["recall"], "f_score": out["f_score"], "k": k}


def is_from_logits(logits: np.ndarray, splits: int = 10, seed: int = 0) -> dict:
    from torch_fidelity.metric_isc import isc_features_to_metric

    splits = max(1, min(splits, len(logits) // 2))
    out = isc_features_to_metric(torch.from_numpy(np.asarray(logits)), splits=splits, rng_seed=seed)
    return {"mean": out["inception_score_mean"], "std": out["inception_score_std"], "splits": splits}


def per_class(fn, gen: np.ndarray, gen_labels: np.ndarray, real: np.ndarray, real_labels: np.ndarray,
              class_names: list[str]) -> dict:
    """{class name: fn(gen of that class, real of that class) + n_generated/n_real}; errors per class."""
    out = {}
    for c, name in enumerate(class_names):
        g, r = gen[gen_labels == c], real[real_labels == c]
        if len(g) == 0 and len(r) == 0:
            continue
        try:
            v = fn(g, r)
            v = v if isinstance(v, dict) else {"value": v}
        except ValueError as e:
            v = {"error": str(e)}
        out[name] = {**v, "n_generated": int(len(g)), "n_real": int(len(r))}
    return out


def _run(ctx, fn) -> dict:
    real = ctx.real(ctx.cfg.real_split)
    res = fn(ctx.gen_feats, real.feats)
    out = dict(res) if isinstance(res, dict) else {"value": res}
    out.update(n_generated=int(len(ctx.gen_feats)), n_real=int(len(real.feats)), real_split=ctx.cfg.real_split)
    if ctx.per_class:
        out["per_class"] = per_class(fn, ctx.gen_feats, ctx.gen_labels, real.feats, real.labels, ctx.class_names)
    return out


# ----------------------------------------------------------------------------------------------
# Registered metrics

@register_metric("fid")
def fid(ctx) -> dict:
    return _run(ctx, fid_from_features)


@register_metric("kid")
def kid(ctx) -> dict:
    return _run(ctx, lambda a, b: kid_from_features(a, b, subsets=ctx.cfg.kid_subsets, seed=ctx.seed))


@register_metric("pr")
def pr(ctx) -> dict:
    return _run(ctx, pr_from_features)


@register_metric("is")
def inception_score(ctx) -> dict:
    if ctx.gen_logits is None:
        raise ValueError(f"feature space {ctx.space_desc['space']} has no classifier head, so no IS; "
                         "use `domain` (its classifier's classes) or `inception` (ImageNet classes)")
    out = is_from_logits(ctx.gen_logits, seed=ctx.seed)
    out.update(n_generated=int(len(ctx.gen_logits)), logits=f"{ctx.space_desc['space']} classifier",
               note=IS_NOTE)
    return out
