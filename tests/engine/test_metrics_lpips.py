"""LPIPS from a local trunk file (never a download), its missing-file sentence, pairwise diversity."""
import numpy as np
import pytest
import torch

from engine.metrics import lpips as L


def test_missing_lpips_weights_sentence(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(FileNotFoundError) as e:
        L.load_lpips("alex")
    msg = str(e.value)
    assert L.BACKBONES["alex"] in msg and "--lpips-weights PATH" in msg
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in msg and "`domain` feature space works offline" in msg
    with pytest.raises(ValueError, match="alex, vgg, squeeze"):
        L.load_lpips("resnet")


def test_lpips_trunk_loads_from_a_local_torchvision_file(tmp_path):
    import torchvision

    torch.manual_seed(0)
    tv = torchvision.models.alexnet()
    path = tmp_path / L.BACKBONES["alex"]
    torch.save({k: v for k, v in tv.state_dict().items() if k.startswith("features.")}, path)
    model = L.load_lpips("alex", path)
    # the trunk holds the file's weights (first conv), not lpips' random init
    torch.testing.assert_close(model.net.slice1[0].weight, tv.features[0].weight)
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    assert model(x, x).abs().max() < 1e-6
    assert (model(x, x.flip(0))[[0, 2]] > 0).all()
    torch.save({"features.0.weight": tv.features[0].weight}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="is not torchvision alex weights"):
        L.load_lpips("alex", tmp_path / "bad.pth")


def test_pairwise_diversity_on_known_distances():
    feats = np.array([[0.0], [1.0], [3.0], [10.0], [10.0]])
    labels = np.array([0, 0, 0, 1, 1])
    out = L.pairwise(L.feature_dist(feats), labels, ["A", "B"], pairs=100)
    assert out["per_class"]["A"]["mean"] == pytest.approx((1 + 3 + 2) / 3)
    assert out["per_class"]["B"]["mean"] == 0.0 and out["per_class"]["B"]["pairs"] == 1
    assert out["pairs"] == 4 and out["mean"] == pytest.approx(6 / 4)
    few = L.sample_pairs(50, 20, np.random.default_rng(0))
    assert len(few) == 20 and (few[:, 0] < few[:, 1]).all() and len({tuple(p) for p in few}) == 20
