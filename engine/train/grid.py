"""Per-class sample grids: one row per class, fixed seeds, so grids of successive steps compare."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine.images import png_bytes, tile, to_uint8
from engine.utils import atomic_write_bytes


def grid_latents(num_classes: int, per_class: int, z_dim: int, seed: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed (z, y) for a grid: row c holds `per_class` samples of class c; same seeds every call."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(num_classes * per_class, z_dim, generator=g)
    y = torch.arange(num_classes).repeat_interleave(per_class)
    return z, y


@torch.no_grad()
def generate_grid(G: nn.Module, num_classes: int, per_class: int, *, seed: int = 0,
                  truncation: float = 1.0, batch: int = 64) -> np.ndarray:
    """uint8 HWC grid image from G (G_ema): fixed seeds, constant noise, truncation 1 by default.

    Runs under its own RNG fork so that drawing a grid never changes the training run's random
    stream (a run with more grids stays identical to one with fewer).
    """
    device = next(G.parameters()).device
    z, y = grid_latents(num_classes, per_class, G.z_dim, seed)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        parts = [G(z[i:i + batch].to(device), y[i:i + batch].to(device), truncation=truncation,
                   noise_mode="const") for i in range(0, len(z), batch)]
    return tile(to_uint8(torch.cat(parts)), rows=num_classes)


def save_grid(G: nn.Module, path: str | os.PathLike, num_classes: int, per_class: int, *,
              seed: int = 0) -> Path:
    """Write a PNG grid atomically (samples/step_XXXXXXXX.png)."""
    atomic_write_bytes(path, png_bytes(generate_grid(G, num_classes, per_class, seed=seed)))
    return Path(path)
