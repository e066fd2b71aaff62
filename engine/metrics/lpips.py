"""Intra-class diversity: mean pairwise LPIPS of generated patches next to the same figure for real ones.

LPIPS comes from the `lpips` package: its calibrated linear layers ship inside the wheel, but its
AlexNet/VGG/SqueezeNet trunk is torchvision's ImageNet model, which the package would download. We build
it with a random trunk (no download) and load the trunk from a local file (user-given or the torch hub
cache). Without that file LPIPS is reported as unavailable with the file name and where to put it, and
the same pairwise diversity in the evaluation feature space (always available offline) stands in,
labelled as such -- it is not LPIPS.
"""
from __future__ import annotations

import re
import warnings

import numpy as np
import torch

from engine.images import uint8_to_float
from engine.metrics.features import find_weights, hub_checkpoints_dir, load_state_dict_file
from engine.metrics.registry import register_metric

# torchvision's file names in the hub cache for each LPIPS trunk
BACKBONES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth",
             "squeeze": "squeezenet1_1-b8a52dc0.pth"}


def lpips_missing_message(net: str = "alex", path=None) -> str:
    where = f"{path} does not exist; " if path else ""
    return (f"LPIPS {net} backbone weights not found: {where}put {BACKBONES[net]} (torchvision's ImageNet "
            f"{net} weights) in {hub_checkpoints_dir()} ($TORCH_HOME/hub/checkpoints) or pass --lpips-weights "
            "PATH; the pairwise diversity in the `domain` feature space works offline.")


def load_lpips(net: str = "alex", weights=None, device: str = "cpu") -> torch.nn.Module:
    """lpips.LPIPS with its trunk from `weights` (or the hub cache); never downloads.

    Input of the returned module: two float NCHW batches in [-1, 1]; output (N,1,1,1) distances.
    """
    if net not in BACKBONES:
        raise ValueError(f"LPIPS net must be one of: {', '.join(BACKBONES)} (got {net!r})")
    path = find_weights(weights, BACKBONES[net], lambda p: lpips_missing_message(net, p))
    import lpips

    with warnings.catch_warnings():  # torchvision deprecation noise from lpips 0.1.4 (PerceptualSimilarity#108)
        warnings.simplefilter("ignore")
        model = lpips.LPIPS(net=net, pnet_rand=True, verbose=False)
    sd = load_state_dict_file(path)
    # lpips splits torchvision's `features` Sequential into slices that keep the layer indices:
    # trunk key sliceK.I.weight <- torchvision key features.I.weight
    trunk = {}
    for k in model.net.state_dict():
        m = re.fullmatch(r"slice\d+\.(\d+)\.(.+)", k)
        src = f"features.{m.group(1)}.{m.group(2)}" if m else k
        if src not in sd:
            raise ValueError(f"{path} is not torchvision {net} weights (no {src})")
        trunk[k] = sd[src]
    model.net.load_state_dict(trunk)
    model.weights_path = str(path)
    return model.to(device).eval().requires_grad_(False)


def sample_pairs(n: int, pairs: int, rng: np.random.Generator) -> np.ndarray:
    """Up to `pairs` distinct unordered index pairs (i < j) of range(n)."""
    total = n * (n - 1) // 2
    if total == 0:
        return np.zeros((0, 2), np.int64)
    if total <= pairs:
        i, j = np.triu_indices(n, 1)
        return np.stack([i, j], 1)
    out = set()
    while len(out) < pairs:
        i, j = rng.integers(0, n, 2)
        if i != j:
            out.add((min(i, j), max(i, j)))
    return np.array(sorted(out), np.int64)


@torch.no_grad()
def pairwise(dist, labels: np.ndarray, class_names: list[str], pairs: int = 200, seed: int = 0) -> dict:
    """Mean +- std of dist(a, b) over random same-class pairs, per class and pooled.

    `dist(idx_a, idx_b) -> (P,) numpy distances` between rows of the set `labels` describes.
    """
    rng = np.random.default_rng(seed)
    per, pooled = {}, []
    for c, name in enumerate(class_names):
        rows = np.flatnonzero(labels == c)
        pr = sample_pairs(len(rows), pairs, rng)
        if len(pr) == 0:
            continue
        d = np.concatenate([dist(rows[pr[s:s + 64, 0]], rows[pr[s:s + 64, 1]]) for s in range(0, len(pr), 64)])
        per[name] = {"mean": float(d.mean()), "std": float(d.std()), "pairs": int(len(d))}
        pooled.append(d)
    d = np.concatenate(pooled) if pooled else np.zeros(0)
    return {"mean": float(d.mean()) if len(d) else None, "std": float(d.std()) if len(d) else None,
            "pairs": int(len(d)), "per_class": per}


def lpips_dist(model, images: np.ndarray, device: str = "cpu"):
    def f(a, b):
        x, y = uint8_to_float(images[a], device), uint8_to_float(images[b], device)
        return model(x, y).flatten().cpu().numpy()
    return f


def feature_dist(feats: np.ndarray):
    return lambda a, b: np.linalg.norm(feats[a].astype(np.float64) - feats[b], axis=1)


@register_metric("lpips")
def lpips_diversity(ctx) -> dict:
    """LPIPS diversity (generated vs real) when the trunk weights are here, plus the feature-space
    diversity, which is always computed."""
    real = ctx.real(ctx.cfg.real_split)
    pairs, names = ctx.cfg.lpips_pairs, ctx.class_names
    space = ctx.space_desc["space"]
    out = {"feature_diversity": {
        "label": f"mean pairwise L2 distance in the `{space}` feature space (not LPIPS)",
        "generated": pairwise(feature_dist(ctx.gen_feats), ctx.gen_labels, names, pairs, ctx.seed),
        "real": pairwise(feature_dist(real.feats), real.labels, names, pairs, ctx.seed)}}
    try:
        model = load_lpips(ctx.cfg.lpips_net, ctx.cfg.lpips_weights or None, ctx.device)
    except FileNotFoundError as e:
        out["lpips"] = {"error": str(e)}
        return out
    ctx.progress("LPIPS pairs")
    out["lpips"] = {"net": ctx.cfg.lpips_net, "weights": model.weights_path,
                    "generated": pairwise(lpips_dist(model, ctx.gen_images, ctx.device), ctx.gen_labels,
                                          names, pairs, ctx.seed),
                    "real": pairwise(lpips_dist(model, real.images, ctx.device), real.labels, names,
                                     pairs, ctx.seed)}
    return out
