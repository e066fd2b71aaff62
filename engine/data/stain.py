"""Stain normalisation (Macenko, Vahadane) against a user-chosen reference tile, and stain statistics.

Both methods model an H&E tile in optical density (OD) as OD = W @ C: W holds the two stain colour
vectors (haematoxylin, eosin) and C their per-pixel concentrations. Normalising = estimate W and C of
the tile, rescale C to the reference's 99th percentiles and recompose with the reference's W.
Macenko (2009) finds W from the angular extremes in the plane of the two main OD eigenvectors; we use
torchstain's numpy implementation. Vahadane (2016) finds W by sparse non-negative matrix factorisation;
torchstain 1.4 has none, so a small one is below (multiplicative updates with an L1 penalty on C).
Tiles with too little tissue (BACK, much of ADI) make both estimates meaningless or crash torchstain
(EIDOSLAB/torchstain#54), so they pass through unchanged and are counted.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from engine.config import ConfigError
from engine.data.quality import optical_density, tissue_mask

IO = 240.0  # bright-field intensity of the glass, as in Macenko's and torchstain's code
BETA = 0.15  # min OD in every channel for a pixel to count as stained
MIN_TISSUE = 0.1  # below this stained fraction a tile passes through unchanged
MAX_FIT_PIXELS = 20_000  # stain vectors are fitted on a random subsample; plenty for a 3x2 matrix
# Ruifrok & Johnston's H and E OD vectors, the start of the NMF and the answer for an empty tile
RUIFROK = np.array([[0.650, 0.072], [0.704, 0.990], [0.286, 0.105]])


def _unit_cols(w: np.ndarray) -> np.ndarray:
    return w / np.maximum(np.linalg.norm(w, axis=0, keepdims=True), 1e-8)


def _order_he(w: np.ndarray) -> np.ndarray:
    """Haematoxylin first: it absorbs more red than eosin does (the heuristic of Macenko's code)."""
    return w if w[0, 0] >= w[0, 1] else w[:, ::-1]


def sample_od(images: np.ndarray, rng: np.random.Generator, max_pixels: int | None = None,
              max_stained: int = MAX_FIT_PIXELS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OD of uint8 pixels (any shape ending in 3): (od of all sampled pixels (n, 3), their stained mask,
    OD rows of the stained ones). Pixels are first subsampled to `max_pixels` (None = all), the stained
    rows then to `max_stained`, both with `rng`."""
    px = np.asarray(images).reshape(-1, 3)
    if max_pixels is not None and len(px) > max_pixels:
        px = px[rng.choice(len(px), max_pixels, replace=False)]
    od = optical_density(px, IO)
    stained = (od >= BETA).all(axis=1)
    od_stained = od[stained]
    if len(od_stained) > max_stained:
        od_stained = od_stained[rng.choice(len(od_stained), max_stained, replace=False)]
    return od, stained, od_stained


def _stained_od(img: np.ndarray) -> np.ndarray:
    """OD rows (n, 3) of the stained pixels, subsampled to MAX_FIT_PIXELS (with a fixed seed, so a
    tile always normalises to the same output whatever was processed before it)."""
    return sample_od(img, np.random.default_rng(0))[2]


def concentrations(od: np.ndarray, w: np.ndarray, clip: bool = True) -> np.ndarray:
    """Least-squares stain concentrations (n, 2) of OD rows (n, 3). Clipped at 0 for statistics
    (stains only absorb); unclipped when recomposing, so that colours off the H-E plane survive."""
    c = np.linalg.lstsq(w, od.T, rcond=None)[0].T
    return np.clip(c, 0, None) if clip else c


def macenko_vectors(od: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """H and E unit vectors (3, 2) from stained OD rows, by Macenko's angular-percentile method."""
    _, vecs = np.linalg.eigh(np.cov(od.T))
    plane = vecs[:, 1:3]  # the two largest eigenvectors span the stain plane
    proj = od @ plane
    phi = np.arctan2(proj[:, 1], proj[:, 0])
    lo, hi = np.percentile(phi, [alpha, 100 - alpha])
    v = np.stack([plane @ [np.cos(a), np.sin(a)] for a in (lo, hi)], axis=1)
    v *= np.sign(v.sum(axis=0, keepdims=True) + 1e-12)  # eigenvectors have no sign; OD is positive
    return _order_he(_unit_cols(v))


def vahadane_vectors(od: np.ndarray, lam: float = 0.1, iters: int = 60) -> np.ndarray:
    """H and E unit vectors (3, 2) by sparse NMF: min ||OD^T - W C||^2 + lam |C|_1, W, C >= 0.

    Multiplicative updates (Lee & Seung, with the L1 term in the denominator of C's update) keep both
    factors non-negative without a step size; W's columns are renormalised each step so that the
    sparsity penalty cannot be dodged by scaling W up and C down. Started from Macenko's vectors:
    from a fixed start (Ruifrok) these updates converge slowly and drift on strongly off-colour tiles.
    """
    v = od.T.astype(np.float64)  # (3, n)
    try:
        w = np.clip(macenko_vectors(od), 1e-3, None)
    except (np.linalg.LinAlgError, ValueError):
        w = RUIFROK.copy()
    c = np.clip(np.linalg.lstsq(w, v, rcond=None)[0], 1e-3, None)
    for _ in range(iters):
        c *= (w.T @ v) / (w.T @ w @ c + lam + 1e-9)
        w *= (v @ c.T) / (w @ (c @ c.T) + 1e-9)
        norms = np.maximum(np.linalg.norm(w, axis=0), 1e-8)
        w /= norms
        c *= norms[:, None]
    return _order_he(_unit_cols(w))


METHODS = {"macenko": macenko_vectors, "vahadane": vahadane_vectors}


class StainNormalizer:
    """Map tiles to the stain colours of a reference tile. Call on uint8 (H,W,3); returns uint8 (H,W,3).

    `passed` counts tiles returned unchanged (too little tissue, or a degenerate fit).
    Macenko goes through torchstain's numpy normaliser; Vahadane through `vahadane_vectors` above.
    """

    def __init__(self, method: str, reference: np.ndarray):
        if method not in METHODS:
            raise ConfigError(f"config field 'stain_norm' must be one of: none, {', '.join(METHODS)} "
                              f"(got {method!r})")
        self.method, self.passed = method, 0
        od = _stained_od(reference)
        if len(od) < 100 or tissue_mask(reference, BETA).mean() < MIN_TISSUE:
            raise ConfigError("config field 'stain_reference': the reference tile has too little stained "
                              "tissue to estimate H&E stain vectors; choose a tile that is mostly tissue")
        self.w_ref = METHODS[method](od)
        self.max_ref = np.percentile(concentrations(od, self.w_ref, clip=False), 99, axis=0)
        if method == "macenko":
            import torchstain  # its `normalizers` is an attribute of the package, not an importable module

            self._tsn = torchstain.normalizers.MacenkoNormalizer(backend="numpy")
            self._tsn.fit(reference)

    def __call__(self, img: np.ndarray) -> np.ndarray:
        if tissue_mask(img, BETA).mean() < MIN_TISSUE:
            self.passed += 1
            return img
        try:
            if self.method == "macenko":
                out, _, _ = self._tsn.normalize(I=img, stains=False)
                return np.ascontiguousarray(out, dtype=np.uint8)
            return self._vahadane(img)
        except (np.linalg.LinAlgError, IndexError, ValueError, FloatingPointError):
            self.passed += 1  # degenerate OD cloud (e.g. one colour): leave the tile as it was
            return img

    def _vahadane(self, img: np.ndarray) -> np.ndarray:
        w = vahadane_vectors(_stained_od(img))
        od = optical_density(img.reshape(-1, 3), IO)
        c = concentrations(od, w, clip=False)
        c *= self.max_ref / np.maximum(np.percentile(c, 99, axis=0), 1e-6)
        out = IO * np.exp(-(c @ self.w_ref.T)) - 1.0  # inverse of optical_density
        return np.clip(np.rint(out), 0, 255).astype(np.uint8).reshape(img.shape)


def load_reference(path: str | os.PathLike) -> np.ndarray:
    """The reference tile as uint8 RGB; ConfigError naming `stain_reference` when it cannot be read."""
    from engine.data.sources import Reject, read_image

    if not path or not os.path.isfile(path):
        raise ConfigError(f"config field 'stain_reference': reference tile {path!r} not found; "
                          "give the path of an image file")
    try:
        return read_image(path)
    except Reject as r:
        raise ConfigError(f"config field 'stain_reference': cannot read {path} ({r})") from None


# ----------------------------------------------------------------------------------------------
# Statistics for the Data page

def stain_stats(images: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """Colour statistics of a set of uint8 tiles (N,H,W,3), pooled over all their stained pixels.

    Returns a JSON-able dict: n, tissue_ratio (mean stained fraction), mean_od (R,G,B over all pixels),
    he_vectors ({"H": [r,g,b], "E": [r,g,b]} unit OD vectors by Macenko, None when there is too little
    tissue), and concentration summaries of H and E (mean, p50, p99) over the stained pixels.
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"n": int(len(images)), "tissue_ratio": None, "mean_od": None, "he_vectors": None,
                           "H": None, "E": None}
    if len(images) == 0:
        return out
    all_od, stained, od = sample_od(images, rng, max_pixels=20 * MAX_FIT_PIXELS)
    out["tissue_ratio"] = float(stained.mean())
    out["mean_od"] = [round(float(x), 4) for x in np.clip(all_od, 0, None).mean(axis=0)]  # glass brighter than IO: 0
    if len(od) < 100:  # (MAX_FIT_PIXELS >= 100: the cap never decides this)
        return out
    try:
        w = macenko_vectors(od)
    except (np.linalg.LinAlgError, ValueError):
        return out
    c = concentrations(od, w)
    out["he_vectors"] = {"H": [round(float(x), 4) for x in w[:, 0]], "E": [round(float(x), 4) for x in w[:, 1]]}
    for k, col in (("H", c[:, 0]), ("E", c[:, 1])):
        out[k] = {"mean": float(col.mean()), "p50": float(np.percentile(col, 50)),
                  "p99": float(np.percentile(col, 99))}
    return out


def stain_stats_by_class(images: np.ndarray, labels: np.ndarray, class_names: list[str],
                         max_per_class: int = 64, seed: int = 0,
                         indices: np.ndarray | None = None) -> dict[str, dict[str, Any]]:
    """`stain_stats` of up to `max_per_class` random tiles of each class, drawn from `indices` (default:
    all). Only the drawn tiles are read, so `images` may be a memory-mapped cache of any size."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    pool = np.arange(len(labels)) if indices is None else np.asarray(indices)
    out = {}
    for c, name in enumerate(class_names):
        idx = pool[labels[pool] == c]
        if len(idx) > max_per_class:
            idx = rng.choice(idx, max_per_class, replace=False)
        tiles = np.asarray(images[np.sort(idx)]) if len(idx) else np.zeros((0, 1, 1, 3), np.uint8)
        out[name] = stain_stats(tiles, seed)
    return out


def stain_stats_table(data: Any, per_class: int = 64, split: str = "train", seed: int = 0):
    """Per-class stain statistics of a PreparedData split as a DataFrame (rows: classes) for the Data page.

    Columns: n, tissue_ratio, od_r/od_g/od_b (mean OD), H_r/H_g/H_b and E_r/E_g/E_b (stain vectors),
    H_mean/H_p99 and E_mean/E_p99 (concentrations); NaN where a class has too little tissue.
    """
    import pandas as pd

    stats = stain_stats_by_class(data.images, data.labels, data.class_names, per_class, seed,
                                 indices=data.splits[split])
    rows = {}
    for name, s in stats.items():
        row = {"n": s["n"], "tissue_ratio": s["tissue_ratio"]}
        row.update(zip(("od_r", "od_g", "od_b"), s["mean_od"] or [np.nan] * 3))
        for k in "HE":
            row.update(zip((f"{k}_r", f"{k}_g", f"{k}_b"), (s["he_vectors"] or {}).get(k) or [np.nan] * 3))
            row[f"{k}_mean"], row[f"{k}_p99"] = (s[k]["mean"], s[k]["p99"]) if s[k] else (np.nan, np.nan)
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("class")
