"""Image conversions every part of the lab shares: float NCHW in [-1, 1] (what G makes and D, the
classifier and the feature spaces read) <-> uint8 NHWC (what the data cache, PNGs and pages hold).

One home, so the rounding and the range are the same for a training grid, a metric and a page.
"""
from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """float NCHW in [-1, 1] -> uint8 NHWC (clamped, rounded; on the host)."""
    x = ((img.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def uint8_to_float(batch: torch.Tensor | np.ndarray, device: str | torch.device | None = None) -> torch.Tensor:
    """uint8 (N,H,W,3) -> float32 (N,3,H,W) in [-1, 1]. With `device`, the uint8 batch moves first."""
    x = torch.as_tensor(np.ascontiguousarray(batch) if isinstance(batch, np.ndarray) else batch)
    if device is not None:
        x = x.to(device, non_blocking=True)
    # One copy into contiguous NCHW float: convs want it, and it is faster than converting permuted strides.
    return x.permute(0, 3, 1, 2).to(torch.float32, memory_format=torch.contiguous_format).div_(127.5).sub_(1.0)


def resize_uint8(images: np.ndarray, res: int) -> np.ndarray:
    """uint8 NHWC -> uint8 NHWC at res x res (antialiased bilinear; unchanged when already that size)."""
    if images.shape[1] == res and images.shape[2] == res:
        return np.ascontiguousarray(images)
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(res, res), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


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


def grid_row(img: np.ndarray, row: int, rows: int, pad: int = 2) -> np.ndarray:
    """Row `row` of an image `tile` made with `rows` rows (a training grid: one row per class), without
    the padding around it. ValueError when `row` is out of range or the image is not such a grid."""
    h = (img.shape[0] - pad) // max(rows, 1) - pad
    if not 0 <= row < rows or h < 1 or rows * (h + pad) + pad != img.shape[0]:
        raise ValueError(f"row {row} of a {rows}-row grid: the image is {img.shape[0]} px high "
                         f"({rows} rows of cells with a {pad} px pad expected)")
    top = pad + row * (h + pad)
    return np.ascontiguousarray(img[top:top + h, pad:img.shape[1] - pad])


def png_bytes(image: np.ndarray) -> bytes:
    """uint8 HWC -> PNG file bytes."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def upscale(img: np.ndarray, min_px: int = 192) -> np.ndarray:
    """Nearest-neighbour enlargement so small patches (16-64 px) are visible on a page without blur."""
    k = max(1, min_px // max(img.shape[0], 1))
    return img if k == 1 else img.repeat(k, axis=0).repeat(k, axis=1)
