"""histosynth: determinism, shapes, argument checks, within-class variety, and learnability."""
import itertools

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.data import histosynth as hs


def test_api_constants():
    assert hs.CLASSES == ("ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM")
    assert "synthetic" in hs.SYNTHETIC_LABEL and "not real tissue" in hs.SYNTHETIC_LABEL


def test_same_seed_same_bytes_other_seed_differs():
    for c in (0, 6, 8):
        a, b = hs.render(c, 64, 7), hs.render(c, 64, 7)
        assert a.tobytes() == b.tobytes()
        assert a.tobytes() != hs.render(c, 64, 8).tobytes()
    # the class is part of the seed: same seed, different class, different picture
    assert hs.render(5, 64, 7).tobytes() != hs.render(7, 64, 7).tobytes()


@pytest.mark.parametrize("size", [32, 64, 256])
def test_every_class_renders(size):
    for c in range(len(hs.CLASSES)):
        im = hs.render(c, size, 123 + c)
        assert im.shape == (size, size, 3) and im.dtype == np.uint8
        assert im.std() > 1.0  # not a flat or blank image


def test_odd_sizes_render():
    for size in (33, 100, 255):
        assert hs.render(3, size, 0).shape == (size, size, 3)


@pytest.mark.parametrize("kwargs, field", [
    (dict(class_index=0, size=31, seed=0), "size"),
    (dict(class_index=0, size=257, seed=0), "size"),
    (dict(class_index=-1, size=64, seed=0), "class_index"),
    (dict(class_index=9, size=64, seed=0), "class_index"),
    (dict(class_index=1.5, size=64, seed=0), "class_index"),
    (dict(class_index=0, size=64, seed=-3), "seed"),
])
def test_bad_arguments_raise(kwargs, field):
    with pytest.raises(ValueError, match=field):
        hs.render(**kwargs)


def test_generate_bad_arguments_raise():
    with pytest.raises(ValueError, match="size"):
        next(hs.generate(16, 2, 0))
    with pytest.raises(ValueError, match="per_class"):
        next(hs.generate(32, -1, 0))


def test_generate_order_names_and_seeds():
    items = list(hs.generate(32, 2, 5))
    assert [c for _, c, _ in items] == [c for c in range(9) for _ in range(2)]
    assert items[0][2] == "ADI-histosynth-s5-00000" and items[-1][2] == "TUM-histosynth-s5-00001"
    for im, c, name in items:
        i = int(name.rsplit("-", 1)[1])
        assert np.array_equal(im, hs.render(c, 32, hs.patch_seed(5, c, i)))
    seeds = {hs.patch_seed(s, c, i) for s in range(3) for c in range(9) for i in range(50)}
    assert len(seeds) == 3 * 9 * 50  # no collisions between sets, classes or indices


def test_patches_varied_within_class_and_classes_differ():
    means = []
    for c in range(len(hs.CLASSES)):
        x = np.stack([hs.render(c, 32, hs.patch_seed(0, c, i)) for i in range(8)]).astype(np.float64)
        # variance across patches of 4x4-pooled images, so pixel grain alone cannot pass
        pooled = x.reshape(8, 8, 4, 8, 4, 3).mean((2, 4))
        assert pooled.var(0).mean() > 20, f"{hs.CLASSES[c]} patches look alike"
        means.append(x.mean((0, 1, 2)))
    d = [np.linalg.norm(means[a] - means[b]) for a, b in itertools.combinations(range(9), 2)]
    assert max(d) > 40 and sum(v > 10 for v in d) >= len(d) // 2


def _tensors(per_class, seed):
    xs, ys = zip(*[(im, c) for im, c, _ in hs.generate(64, per_class, seed)])
    x = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return F.avg_pool2d(x, 2), torch.tensor(ys)  # 32 px is enough to tell the classes apart


def test_small_cnn_learns_the_classes():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny net only loses from threads on a shared 2-core runner
    try:
        torch.manual_seed(0)
        xtr, ytr = _tensors(80, seed=1)
        xte, yte = _tensors(30, seed=2)  # held out: other patch seeds
        block = lambda i, o: [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU()]
        net = nn.Sequential(*block(3, 16), nn.MaxPool2d(2), *block(16, 32), nn.MaxPool2d(2), *block(32, 64),
                            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, len(hs.CLASSES)))
        epochs, batches = 8, torch.randperm(len(xtr)).split(32)
        opt = torch.optim.Adam(net.parameters(), 3e-3)
        # linear decay to 0: without it the last noisy Adam steps can flip a whole class at eval time
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / (epochs * len(batches)))
        for _ in range(epochs):
            for b in torch.randperm(len(xtr)).split(32):
                loss = F.cross_entropy(net(xtr[b]), ytr[b])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
        net.eval()
        with torch.no_grad():
            acc = (net(xte).argmax(1) == yte).float().mean().item()
    finally:
        torch.set_num_threads(threads)
    print(f"histosynth held-out accuracy {acc:.3f}")
    assert acc >= 0.9, f"held-out accuracy {acc:.3f}"
