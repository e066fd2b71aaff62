"""FID / KID / PR / IS on cases with known answers, embedding with a tiny feature space, the real cache."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from engine.metrics import fid as M


class TinySpace(nn.Module):
    """A fixed random conv + global pooling: a stand-in feature space with `num_features`."""

    num_features = 8
    name = "tiny"

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, self.num_features, 3)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return torch.tanh(self.conv(x)).mean(dim=(2, 3)) + x.mean(dim=(1, 2, 3))[:, None]

    def logits(self, x):
        return self.forward(x)[:, :3] * 5


def images(n, seed=0, shift=0):
    rng = np.random.default_rng(seed)
    return np.clip(rng.integers(40, 200, (n, 8, 8, 3)) + shift, 0, 255).astype(np.uint8)


def test_identical_sets_give_zero_and_a_shift_gives_more():
    space = TinySpace()
    a = M.embed(space, images(64))
    b = M.embed(space, images(64, shift=40))
    c = M.embed(space, images(64, shift=80))
    assert M.fid_from_features(a, a) == pytest.approx(0.0, abs=1e-6)
    fid_b, fid_c = M.fid_from_features(a, b), M.fid_from_features(a, c)
    assert fid_b > 1e-3 and fid_c > fid_b  # a larger shift is further away
    kid_same = M.kid_from_features(a, a, subsets=5)["mean"]
    kid_b, kid_c = (M.kid_from_features(a, x, subsets=5)["mean"] for x in (b, c))
    # identical sets: only the unbiased estimator's O(1/m) diagonal term remains
    assert abs(kid_same) < 0.02 * kid_b and kid_c > kid_b > 0
    pr = M.pr_from_features(a, a)
    assert pr["precision"] == 1.0 and pr["recall"] == 1.0
    assert M.pr_from_features(c, a)["precision"] < 0.5


def test_per_class_equals_overall_on_a_single_class_set():
    space = TinySpace()
    g, r = M.embed(space, images(40, 1)), M.embed(space, images(50, 2, shift=20))
    gl, rl = np.zeros(40, np.int64), np.zeros(50, np.int64)
    per = M.per_class(M.fid_from_features, g, gl, r, rl, ["TUM"])
    assert per["TUM"]["value"] == pytest.approx(M.fid_from_features(g, r))
    assert per["TUM"]["n_generated"] == 40 and per["TUM"]["n_real"] == 50
    kid = lambda a, b: M.kid_from_features(a, b, subsets=4, seed=3)  # noqa: E731
    assert M.per_class(kid, g, gl, r, rl, ["TUM"])["TUM"]["mean"] == pytest.approx(kid(g, r)["mean"])
    # a class with a single sample reports an error instead of a number
    per2 = M.per_class(M.fid_from_features, g, np.r_[gl[:-1], 1], r, rl, ["TUM", "ADI"])
    assert "error" in per2["ADI"] and per2["ADI"]["n_generated"] == 1


def test_inception_score_from_logits():
    uniform = np.zeros((20, 4))
    assert M.is_from_logits(uniform)["mean"] == pytest.approx(1.0)
    confident = np.eye(4)[np.arange(20) % 4] * 50  # sure and evenly spread: IS -> number of classes
    assert M.is_from_logits(confident, splits=1)["mean"] == pytest.approx(4.0, rel=1e-3)


def test_embed_batches_resize_and_logits():
    space = TinySpace()
    x = images(10)
    f1 = M.embed(space, x, batch=3)
    f2, logits = M.embed(space, x, batch=10, logits=True)
    np.testing.assert_allclose(f1, f2, atol=1e-6)
    assert logits.shape == (10, 3)
    from engine.images import resize_uint8

    assert resize_uint8(x, 4).shape == (10, 4, 4, 3)
    up = resize_uint8(np.full((1, 2, 2, 3), 77, np.uint8), 8)
    assert (up == 77).all()


def test_real_features_are_cached_on_disk(tmp_path):
    from types import SimpleNamespace

    root = tmp_path / "ds"
    root.mkdir()
    (root / "dataset.json").write_text('{"size": 8}')
    labels = np.repeat(np.arange(3), 10)
    data = SimpleNamespace(root=root, images=images(30), labels=labels,
                           splits={"train": np.arange(30)})
    space = TinySpace()
    desc = {"space": "tiny", "weights_sha256": "abc"}
    a = M.real_set(data, "train", 8, cap=4, space=space, space_desc=desc)
    assert len(a.labels) == 12 and np.bincount(a.labels).tolist() == [4, 4, 4]
    assert space.calls == 0  # pixels and labels need no feature space
    fa = a.feats
    calls = space.calls
    assert calls > 0 and fa.shape == (12, 8)
    b = M.real_set(data, "train", 8, cap=4, space=lambda: (space, desc))
    np.testing.assert_array_equal(b.feats, fa)
    assert space.calls == calls  # second time: read from the cache file, no embedding
    np.testing.assert_array_equal(b.take([2, 0]), data.images[a.index[[2, 0]]])
    with pytest.raises(ValueError, match="no feature space"):
        M.real_set(data, "train", 8, cap=4).feats
    # another size or feature-space hash is another cache entry
    assert M.cache_path(data, "train", desc, 4, 4) != M.cache_path(data, "train", desc, 8, 4)
    assert M.cache_path(data, "train", {**desc, "weights_sha256": "x"}, 8, 4) != M.cache_path(data, "train", desc, 8, 4)
