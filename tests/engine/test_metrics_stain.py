"""Colour check: identical sets have no gap; a paler generator shows a gap and lower stain means."""
import numpy as np
import pytest

from engine.metrics.stain import compare


def tissue(n=12, seed=0):
    rng = np.random.default_rng(seed)
    h = np.array([0.65, 0.70, 0.29]) * rng.uniform(0.2, 1.2, (n, 16, 16, 1))  # haematoxylin OD
    e = np.array([0.07, 0.99, 0.11]) * rng.uniform(0.2, 1.0, (n, 16, 16, 1))  # eosin OD
    return np.clip(240 * np.exp(-(h + e)) - 1, 0, 255).astype(np.uint8)


def test_identical_sets_have_no_colour_gap():
    x = tissue()
    out = compare(x, x)
    assert out["H"]["wasserstein"] == pytest.approx(0.0, abs=1e-9)
    assert out["E"]["wasserstein"] == pytest.approx(0.0, abs=1e-9)
    assert out["H"]["real"] == out["H"]["generated"] and len(out["edges"]) == 41


def test_a_paler_set_has_a_gap_and_less_stain():
    x = tissue()
    pale = np.clip(255 - (255 - x.astype(np.float32)) * 0.5, 0, 255).astype(np.uint8)
    out = compare(x, pale)
    assert out["H"]["wasserstein"] > 0.05 and out["E"]["wasserstein"] > 0.0
    assert out["H"]["mean_generated"] < out["H"]["mean_real"]
    assert out["tissue_fraction"]["generated"] <= out["tissue_fraction"]["real"]
