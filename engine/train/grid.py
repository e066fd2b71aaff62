"""Per-class sample grids: one row per class, fixed seeds, so grids of successive steps compare."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from engine.utils import atomic_write_bytes


def grid_latents(num_classes: int, per_class: int, z_dim: int, seed: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed (z, y) for a grid: row c holds `per_class` samples of class c; same seeds every call."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(num_classes * per_class, z_dim, generator=g)
    y = torch.arange(num_classes).repeat_interleave(per_class)
    return z, y


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """float NCHW in [-1, 1] -> uint8 NHWC."""
    x = ((img.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def tile(images: np.ndarray, rows: int, pad: int = 2) -> np.ndarray:
    """uint8 NHWC -> one image with `rows` rows and a white `pad` between cells."""
    n, h, w, c = images.shape
    cols = n // rows
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, np.uint8)
    for i in range(n):
        r, k = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + k * (w + pad)
        out[top:top + h, left:left + w] = images[i]
    return out


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


def png_bytes(image: np.ndarray) -> bytes:
    """uint8 HWC -> PNG file bytes."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def save_grid(G: nn.Module, path: str | os.PathLike, num_classes: int, per_class: int, *,
              seed: int = 0) -> Path:
    """Write a PNG grid atomically (samples/step_XXXXXXXX.png)."""
    atomic_write_bytes(path, png_bytes(generate_grid(G, num_classes, per_class, seed=seed)))
    return Path(path)
