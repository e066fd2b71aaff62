"""Per-class generation from a loaded generator.

A sample is named by (class, seed): the seed alone fixes z (`torch.Generator().manual_seed(seed)`), so
the same pair gives the same patch in the Samples page, the Style-mixing page, the CLI and evaluation,
whatever the batch it was drawn in. Noise is the generator's constant maps by default for the same reason.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from engine.images import tile, to_uint8


def seed_z(seed: int, z_dim: int) -> torch.Tensor:
    """(1, z_dim) latent of a seed; drawn alone so it does not depend on the batch it joins."""
    return torch.randn(1, z_dim, generator=torch.Generator().manual_seed(int(seed)))


def _device(G: nn.Module, device) -> torch.device:
    return torch.device(device) if device is not None else next(G.parameters()).device


def is_family(G: Any) -> bool:
    """Whether G samples through its family's own sampler (engine.families.FamilyGenerator, e.g. ddpm)
    rather than as G(z, y, truncation=...)."""
    return callable(getattr(G, "sample", None))


@torch.no_grad()
def generate(G: nn.Module, classes: list[int], seeds: list[int], truncation: float = 1.0,
             noise_mode: str = "const", device: str | None = None, batch: int = 64,
             progress: Callable[[int, int], None] | None = None,
             class_names: list[str] | None = None, **options: Any) -> tuple[np.ndarray, list[dict]]:
    """One image per (class, seed) pair, class-major (all seeds of classes[0] first).

    Args:
        truncation: psi toward the class's average w (1 = none, 0 = the class average). StyleGAN only:
            a family with its own sampler (ddpm) ignores it (records say psi None).
        device: where G lives (None = G's own device).
        progress: called as progress(done, total) after each batch.
        class_names: names for the records (default: G's class indices as strings).
        options: the family's sampler options (ddpm: sampler, steps, eta, guidance; None = its default).
    Returns (uint8 NHWC images, records [{"class_index", "class", "seed", "psi"}], plus the sampler
    options for a family that has them).
    """
    pairs = [(c, s) for c in classes for s in seeds]
    if is_family(G):
        opts = G.sample_options(**options)
        records = [{"class_index": int(c), "class": class_names[c] if class_names else str(c), "seed": int(s),
                    "psi": None, **opts} for c, s in pairs]
        if not pairs:
            return np.zeros((0, G.res, G.res, 3), np.uint8), records
        images = G.sample([c for c, _ in pairs], [s for _, s in pairs], progress=progress, batch=batch, **opts)
        return images, records
    if any(v is not None for v in options.values()):
        raise ValueError(f"sampler option(s) {', '.join(k for k, v in options.items() if v is not None)} "
                         "apply to diffusion families only; this generator takes truncation")
    dev = _device(G, device)
    records = [{"class_index": int(c), "class": class_names[c] if class_names else str(c), "seed": int(s),
                "psi": float(truncation)} for c, s in pairs]
    out = []
    for i in range(0, len(pairs), batch):
        part = pairs[i:i + batch]
        z = torch.cat([seed_z(s, G.z_dim) for _, s in part]).to(dev)
        y = torch.tensor([c for c, _ in part], dtype=torch.long, device=dev)
        out.append(to_uint8(G(z, y, truncation=truncation, noise_mode=noise_mode)))
        if progress is not None:
            progress(min(i + batch, len(pairs)), len(pairs))
    images = np.concatenate(out) if out else np.zeros((0, G.res, G.res, 3), np.uint8)
    return images, records


def class_grid(G: nn.Module, classes: list[int], seeds: list[int], truncation: float = 1.0,
               **kw: Any) -> np.ndarray:
    """uint8 HWC grid, one row per class, one column per seed (`generate` kwargs pass through)."""
    images, _ = generate(G, classes, seeds, truncation, **kw)
    return tile(images, rows=len(classes))
