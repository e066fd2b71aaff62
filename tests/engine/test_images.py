"""engine.images: the one home of the uint8 <-> [-1, 1] conversions, tiling, PNG and page upscaling."""
import io

import numpy as np
import torch
from PIL import Image

from engine import images as I


def test_uint8_float_round_trip_is_exact():
    x = np.random.default_rng(0).integers(0, 256, (3, 5, 7, 3), dtype=np.uint8)
    f = I.uint8_to_float(x)
    assert f.shape == (3, 3, 5, 7) and f.dtype == torch.float32 and f.is_contiguous()
    assert float(f.min()) >= -1 and float(f.max()) <= 1
    assert np.array_equal(I.to_uint8(f), x)
    assert np.array_equal(I.to_uint8(torch.full((1, 3, 2, 2), 5.0)), np.full((1, 2, 2, 3), 255, np.uint8))  # clamped


def test_tile_png_and_upscale():
    x = np.zeros((6, 4, 4, 3), np.uint8)
    t = I.tile(x, rows=2, pad=1)
    assert t.shape == (2 * 5 + 1, 3 * 5 + 1, 3) and t[0, 0, 0] == 255 and t[1, 1, 0] == 0
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(I.png_bytes(t)))), t)
    one = x[0]
    assert I.upscale(one, min_px=16).shape == (16, 16, 3) and I.upscale(one, min_px=3) is one
    assert np.array_equal(I.resize_uint8(x, 4), x) and I.resize_uint8(x, 2).shape == (6, 2, 2, 3)
