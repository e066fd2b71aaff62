"""Patch quality filter: pure functions on uint8 (H,W,3) images, thresholds from PrepareConfig.

Each measure catches one kind of bad tile seen in scanned H&E collections: out-of-focus regions (Laplacian
variance), empty / constant tiles (grey entropy), pure background (tissue ratio, off by default because
BACK is a class of its own), over-exposed or black tiles (clipped pixels), and heavy JPEG compression
(8x8 block edges in the pixel domain, and DCT terms zeroed on the 8x8 grid only).
"""
from __future__ import annotations

from typing import Any

import numpy as np

# reject reason -> the PrepareConfig field holding its threshold
REASONS = {"saturated": "max_saturation", "low_entropy": "min_entropy", "blur": "min_laplacian_var",
           "low_tissue": "min_tissue_ratio", "blocky": "max_blockiness", "dct_blocky": "max_dct_blockiness"}


_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def grey(img: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma as float32 in [0, 255]."""
    return img.astype(np.float32) @ _LUMA


def optical_density(img: np.ndarray, io: float = 240.0) -> np.ndarray:
    """Beer-Lambert optical density per channel; io=240 like Macenko's reference code and torchstain."""
    return -np.log((img.astype(np.float32) + 1.0) / io)


def tissue_mask(img: np.ndarray, beta: float = 0.15) -> np.ndarray:
    """Pixels stained enough to carry H&E colour: OD >= beta in every channel (Macenko's criterion)."""
    return (optical_density(img) >= beta).all(axis=-1)


def _grey(img: np.ndarray) -> np.ndarray:
    return img if img.ndim == 2 else grey(img)  # measures accept a precomputed grey image too


def laplacian_var(img: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of the grey image; low = blurred or flat."""
    g = _grey(img)
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4.0 * g[1:-1, 1:-1]
    return float(lap.var()) if lap.size else 0.0


def entropy(img: np.ndarray) -> float:
    """Shannon entropy (bits) of the 256-bin grey histogram; 0 for a constant image, at most 8."""
    hist = np.bincount(np.rint(_grey(img)).astype(np.uint8).ravel(), minlength=256).astype(np.float64)
    p = hist[hist > 0] / hist.sum()
    return float(-(p * np.log2(p)).sum())


def tissue_ratio(img: np.ndarray) -> float:
    return float(tissue_mask(img).mean())


def saturation(img: np.ndarray) -> float:
    """Fraction of channel values clipped at 0 or 255 (over-exposed glass, black scanner borders)."""
    return float(((img == 0) | (img == 255)).mean())


def blockiness(img: np.ndarray) -> float:
    """Mean |gradient| across 8x8 block boundaries divided by the mean inside blocks (~1 for clean tiles).

    JPEG codes every 8x8 block on its own, so strong compression leaves steps at multiples of 8 that
    are absent elsewhere. Flat images (no gradients at all) score 1.
    """
    g = _grey(img)
    dx, dy = np.abs(np.diff(g, axis=1)), np.abs(np.diff(g, axis=0))
    if dx.shape[1] < 16 or dy.shape[0] < 16:
        return 1.0
    bx = (np.arange(dx.shape[1]) % 8) == 7  # difference between columns 8k+7 and 8k+8
    by = (np.arange(dy.shape[0]) % 8) == 7
    boundary = np.concatenate([dx[:, bx].ravel(), dy[by].ravel()]).mean()
    interior = np.concatenate([dx[:, ~bx].ravel(), dy[~by].ravel()]).mean()
    return float((boundary + 1e-3) / (interior + 1e-3))


def _dct_matrix(n: int = 8) -> np.ndarray:
    k = np.arange(n)
    m = np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m  # orthonormal DCT-II


_DCT8 = _dct_matrix()
_UV = np.add.outer(np.arange(8), np.arange(8))
_MID = (_UV >= 1) & (_UV <= 5)  # low/mid AC terms: a mild JPEG keeps them, a heavy one zeroes them


def _zero_share(g: np.ndarray, zero: float) -> float:
    h, w = (g.shape[0] // 8) * 8, (g.shape[1] // 8) * 8
    blocks = g[:h, :w].reshape(h // 8, 8, w // 8, 8).transpose(0, 2, 1, 3)
    coef = _DCT8 @ blocks @ _DCT8.T
    return float((np.abs(coef[..., _MID]) < zero).mean())


def dct_blockiness(img: np.ndarray, zero: float = 0.5) -> float:
    """Share of low/mid-frequency 8x8 DCT terms zeroed on the JPEG grid, minus the same share on a grid
    shifted by 4 pixels; ~0 for clean tiles, 0.05 for JPEG quality 90, 0.3-0.6 for quality 20.

    JPEG quantisation zeroes these terms only in the blocks it coded, so the shifted grid (whose blocks
    straddle JPEG block edges) keeps them; comparing the two makes flat tiles (BACK), whose terms are
    small on every grid, score ~0 instead of looking compressed. `zero` is in grey levels of the
    orthonormal DCT, above the 0.29 rms that rounding to uint8 alone leaves.
    """
    g = _grey(img)
    if min(g.shape) < 20:
        return 0.0
    return max(0.0, _zero_share(g, zero) - _zero_share(g[4:, 4:], zero))


def measure(img: np.ndarray) -> dict[str, float]:
    """Every quality measure of one uint8 (H,W,3) patch, keyed like the config fields they are checked by."""
    g = grey(img)
    return {"laplacian_var": laplacian_var(g), "entropy": entropy(g), "tissue_ratio": tissue_ratio(img),
            "saturation": saturation(img), "blockiness": blockiness(g), "dct_blockiness": dct_blockiness(g)}


def check(img: np.ndarray, cfg: Any) -> str | None:
    """None if the patch passes every threshold of `cfg` (a PrepareConfig), else the first reject reason.

    Cheap tests run first, so most rejects never pay for the DCT.
    """
    if saturation(img) > cfg.max_saturation:
        return "saturated"
    g = grey(img)
    if entropy(g) < cfg.min_entropy:
        return "low_entropy"
    if laplacian_var(g) < cfg.min_laplacian_var:
        return "blur"
    if cfg.min_tissue_ratio > 0 and tissue_ratio(img) < cfg.min_tissue_ratio:
        return "low_tissue"
    if blockiness(g) > cfg.max_blockiness:
        return "blocky"
    if dct_blockiness(g) > cfg.max_dct_blockiness:
        return "dct_blocky"
    return None
