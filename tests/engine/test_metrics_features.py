"""Feature spaces beyond `domain`: the missing-weights sentences, timm with a local checkpoint, Inception."""
import pytest
import torch

from engine.metrics import features as Fe


def test_missing_inception_weights_is_the_promised_sentence(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(FileNotFoundError) as e:
        Fe.open_feature_space("inception")
    msg = str(e.value)
    assert Fe.INCEPTION_FILE in msg  # which file
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in msg and "--inception-weights PATH" in msg  # where
    assert "the `domain` feature space works offline" in msg
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Fe.open_feature_space("inception", tmp_path / "nope.pth")


def test_domain_missing_names_the_train_classifier_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m engine train-classifier"):
        Fe.open_feature_space("domain", tmp_path / "classifier.pt")


def test_unknown_spaces_are_refused():
    with pytest.raises(ValueError, match="domain, inception or timm"):
        Fe.open_feature_space("clip")
    with pytest.raises(ValueError, match="unknown timm architecture"):
        Fe.open_feature_space("timm:no_such_net_xyz", "w.pt")


def test_timm_space_from_a_local_checkpoint(tmp_path):
    import timm
    from safetensors.torch import save_file

    with pytest.raises(FileNotFoundError, match="--timm-weights"):
        Fe.open_feature_space("timm:test_resnet")
    torch.manual_seed(0)
    full = timm.create_model("test_resnet", pretrained=False, num_classes=5)  # with a head: dropped on load
    path = tmp_path / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in full.state_dict().items()}, str(path))
    m = Fe.open_feature_space("timm:test_resnet", path)
    x = torch.rand(3, 3, 24, 24) * 2 - 1
    f = m(x)
    assert f.shape == (3, m.num_features) and m.name == "timm:test_resnet"
    assert not any(p.requires_grad for p in m.parameters())
    # the loaded weights are the checkpoint's: same pooled features as the source model on the same input
    full.eval()
    xi = torch.nn.functional.interpolate((x + 1) / 2, size=(m.size, m.size), mode="bilinear", antialias=True)
    ref = full.forward_head(full.forward_features((xi - m.mean) / m.std), pre_logits=True)
    torch.testing.assert_close(f, ref, atol=1e-4, rtol=1e-4)
    desc = Fe.describe_space(m)
    assert desc["weights_sha256"] == Fe.file_sha256(path)[:16] and desc["num_features"] == m.num_features


@pytest.mark.slow
def test_inception_space_loads_a_local_file(tmp_path, monkeypatch):
    """Random weights in the real file format (no download): loads without unpickling, 2048-d output."""
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    with monkeypatch.context() as mp:  # build one randomly initialised extractor to get the state-dict layout
        mp.setattr(tfi, "load_state_dict_from_url", lambda *a, **k: {})
        mp.setattr(tfi.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None)
        net = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    path = tmp_path / Fe.INCEPTION_FILE
    torch.save(net.state_dict(), path)
    m = Fe.open_feature_space("inception", path)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert m(x).shape == (2, 2048) and m.logits(x).shape == (2, 1008)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    (tmp_path / "th" / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "th" / "hub" / "checkpoints" / Fe.INCEPTION_FILE).write_bytes(path.read_bytes())
    assert Fe.open_feature_space("inception").weights_path.endswith(Fe.INCEPTION_FILE)  # found in the hub cache
