"""Colour check: H&E optical-density histograms of real vs generated patches.

Both sets are projected onto the *real* set's Macenko stain vectors (haematoxylin, eosin), so the
histograms compare how much of each stain the generator paints, in one common basis. The gap per stain
is the 1-D Wasserstein distance between the two concentration distributions (in OD units).
"""
from __future__ import annotations

import numpy as np
from scipy.stats import wasserstein_distance

from engine.data.stain import MAX_FIT_PIXELS, RUIFROK, concentrations, macenko_vectors, sample_od
from engine.metrics.registry import register_metric

MAX_PIXELS = 200_000  # per set; plenty for 40-bin histograms


def stained_od(images: np.ndarray, seed: int = 0) -> tuple[np.ndarray, float]:
    """OD rows (n, 3) of the stained pixels of uint8 NHWC images (random subsample of MAX_PIXELS) and
    the stained fraction of all pixels."""
    _, stained, od = sample_od(images, np.random.default_rng(seed), max_pixels=4 * MAX_PIXELS,
                               max_stained=MAX_PIXELS)
    return od, float(stained.mean()) if len(stained) else 0.0


def stain_basis(od: np.ndarray) -> np.ndarray:
    """Macenko H and E vectors (3, 2) of the real set; Ruifrok's standard ones if it has too little tissue."""
    if len(od) < 100:
        return RUIFROK / np.linalg.norm(RUIFROK, axis=0)
    try:
        return macenko_vectors(od[:MAX_FIT_PIXELS])
    except (np.linalg.LinAlgError, ValueError):
        return RUIFROK / np.linalg.norm(RUIFROK, axis=0)


def compare(real: np.ndarray, gen: np.ndarray, bins: int = 40, seed: int = 0) -> dict:
    """Histograms (density) of H and E concentrations, real vs generated, and their Wasserstein gaps."""
    (od_r, f_r), (od_g, f_g) = stained_od(real, seed), stained_od(gen, seed)
    w = stain_basis(od_r)
    c_r = concentrations(od_r, w) if len(od_r) else np.zeros((0, 2))
    c_g = concentrations(od_g, w) if len(od_g) else np.zeros((0, 2))
    both = np.concatenate([c_r, c_g])
    hi = float(np.percentile(both, 99.5)) if len(both) else 1.0
    edges = np.linspace(0.0, max(hi, 1e-3), bins + 1)
    out = {"basis": {"H": w[:, 0].round(4).tolist(), "E": w[:, 1].round(4).tolist()}, "edges": edges.tolist(),
           "tissue_fraction": {"real": f_r, "generated": f_g}}
    for j, s in enumerate(("H", "E")):
        hr = np.histogram(c_r[:, j], edges, density=True)[0] if len(c_r) else np.zeros(bins)
        hg = np.histogram(c_g[:, j], edges, density=True)[0] if len(c_g) else np.zeros(bins)
        gap = wasserstein_distance(c_r[:, j], c_g[:, j]) if len(c_r) and len(c_g) else None
        out[s] = {"real": hr.round(5).tolist(), "generated": hg.round(5).tolist(), "wasserstein": gap,
                  "mean_real": float(c_r[:, j].mean()) if len(c_r) else None,
                  "mean_generated": float(c_g[:, j].mean()) if len(c_g) else None}
    return out


@register_metric("stain")
def stain(ctx) -> dict:
    real = ctx.real(ctx.cfg.real_split)
    out = compare(real.images, ctx.gen_images, seed=ctx.seed)
    if ctx.per_class:
        out["per_class"] = {}
        for c, n in enumerate(ctx.class_names):
            r, g = real.images[real.labels == c], ctx.gen_images[ctx.gen_labels == c]
            if len(r) and len(g):
                cc = compare(r, g, seed=ctx.seed)
                out["per_class"][n] = {s: {"wasserstein": cc[s]["wasserstein"], "mean_real": cc[s]["mean_real"],
                                           "mean_generated": cc[s]["mean_generated"]} for s in ("H", "E")}
    return out
