"""Memorisation audit: an exact copy of a training patch has distance ratio 0; fresh samples about 1."""
import numpy as np
import pytest

from engine.metrics.memorisation import distance_ratios, nearest


def test_nearest_matches_brute_force():
    rng = np.random.default_rng(0)
    q, r = rng.normal(size=(30, 5)), rng.normal(size=(40, 5))
    d, i = nearest(q, r, chunk=7)
    full = np.linalg.norm(q[:, None] - r[None], axis=2)
    np.testing.assert_array_equal(i, full.argmin(1))
    np.testing.assert_allclose(d, full.min(1), rtol=1e-5)


def test_copy_of_a_training_patch_is_flagged():
    rng = np.random.default_rng(1)
    train = rng.normal(size=(200, 4))
    held = rng.normal(size=(50, 4))
    fresh = rng.normal(size=(20, 4))
    gen = np.concatenate([train[17:18], fresh])
    labels = np.zeros(len(gen), np.int64)
    d, idx, ratio, ref = distance_ratios(gen, labels, train, held, np.zeros(50, np.int64), 2)
    assert idx[0] == 17 and ratio[0] == pytest.approx(0.0, abs=1e-3)
    assert 0.5 < np.median(ratio[1:]) < 2.0  # independent samples sit as far as held-out real patches
    assert ref[1] == pytest.approx(ref[0])  # a class with no held-out patch uses the pooled median
