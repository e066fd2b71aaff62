"""The `mlp_gan` models (engine.models.mlp_gan) and their config section."""
import json
import time

import pytest
import torch

from engine import losses as L
from engine.config import (MLP_GAN_PRESETS, ConfigError, MLPGANConfig, from_dict, mlp_gan_preset_values,
                           to_dict)
from engine.models.mlp_gan import Discriminator, Generator, discriminator_kwargs, generator_kwargs

K = 3
TINY = dict(z_dim=100, embed_dim=8, g_hidden=(32, 64))


def make(res=16, **d_kw):
    torch.manual_seed(0)
    G = Generator(res, K, **TINY)
    D = Discriminator(res, K, embed_dim=8, d_hidden=(64, 32), **d_kw)
    return G, D


@pytest.mark.parametrize("res", [16, 32, 64])
def test_shapes_and_range(res):
    G, D = make(res)
    z, y = torch.randn(4, 100), torch.tensor([0, 1, 2, 0])
    x = G(z, y)
    assert x.shape == (4, 3, res, res) and x.abs().max() <= 1.0
    assert D(x, y).shape == (4,)


def test_tutorial_layout():
    G = Generator(32, K)  # defaults: the tutorial's 128, 256, 512, latent 100
    kinds = [type(m).__name__ for m in G.net]
    assert kinds[:3] == ["Linear", "LeakyReLU", "BatchNorm1d"] and kinds[-1] == "Tanh"
    assert [m.out_features for m in G.net if isinstance(m, torch.nn.Linear)] == [128, 256, 512, 3 * 32 * 32]
    assert G.net[0].in_features == 100 + 16  # z concatenated with the label embedding
    D = Discriminator(32, K)
    assert D.net[0].in_features == 3 * 32 * 32 + 16
    assert [type(m).__name__ for m in D.net][:3] == ["Linear", "LeakyReLU", "Dropout"]


def test_gradients_reach_both_nets_and_embeddings():
    G, D = make()
    z, y = torch.randn(6, 100), torch.arange(6) % K
    real = torch.rand(6, 3, 16, 16) * 2 - 1
    L.d_loss_bce(D(real, y), D(G(z, y).detach(), y), real_label=0.9).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in D.parameters())
    D.zero_grad()
    L.g_loss_nonsaturating(D(G(z, y), y)).backward()
    assert all(p.grad is not None for p in G.parameters())
    assert (G.embed.weight.grad.abs().sum(1) > 0).all()


def test_d_noise_only_in_train_mode():
    _, D = make(d_noise=0.5, dropout=0.0)
    x, y = torch.zeros(2, 3, 16, 16), torch.tensor([0, 1])
    D.eval()
    assert torch.equal(D(x, y), D(x, y))
    D.train()
    assert not torch.equal(D(x, y), D(x, y))


def test_rebuild_from_init_kwargs_and_config():
    G, D = make()
    G2 = Generator(**json.loads(json.dumps(G.init_kwargs)))
    G2.load_state_dict(G.state_dict())
    G.eval(), G2.eval()
    z, y = torch.randn(2, 100), torch.tensor([0, 1])
    assert torch.equal(G(z, y), G2(z, y))
    cfg = to_dict(from_dict(MLPGANConfig, {"g_hidden": "64,128", "dropout": 0.5}))
    assert Generator(**generator_kwargs(cfg, 16, K)).init_kwargs["g_hidden"] == [64, 128]
    assert Discriminator(**discriminator_kwargs(cfg, 16, K)).init_kwargs["dropout"] == 0.5


def test_bad_options_raise_config_error_naming_the_field():
    with pytest.raises(ConfigError, match="'dropout'"):
        from_dict(MLPGANConfig, {"dropout": 1.5})
    with pytest.raises(ConfigError, match="'d_steps'"):
        from_dict(MLPGANConfig, {"d_steps": 0})
    with pytest.raises(ConfigError, match="'g_hidden'"):
        from_dict(MLPGANConfig, {"g_hidden": []})
    with pytest.raises(ConfigError, match="'d_hidden'"):
        Discriminator(16, K, d_hidden=())
    with pytest.raises(ConfigError, match="'res'"):
        Generator(48, K)
    with pytest.raises(ConfigError, match="'preset'"):
        mlp_gan_preset_values("tutorial")


def test_presets_validate_and_spec_is_the_tutorial():
    for name in MLP_GAN_PRESETS:
        assert mlp_gan_preset_values(name)
    spec = mlp_gan_preset_values("spec")
    assert spec["z_dim"] == 100 and spec["g_hidden"] == [128, 256, 512] and spec["d_hidden"] == [512, 256]
    assert (spec["lr_g"], spec["lr_d"], spec["beta1"], spec["beta2"]) == (2e-4, 2e-4, 0.5, 0.999)


def test_trains_in_seconds_at_32px_and_d_loss_falls():
    """The demo config at 32 px: D steps on a fixed batch lower D's loss; the whole run takes seconds."""
    torch.manual_seed(0)
    cfg = mlp_gan_preset_values("demo")
    G = Generator(**generator_kwargs(cfg, 32, K))
    D = Discriminator(**discriminator_kwargs(cfg, 32, K))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg["lr_d"], betas=(cfg["beta1"], cfg["beta2"]))
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg["lr_g"], betas=(cfg["beta1"], cfg["beta2"]))
    real = torch.rand(16, 3, 32, 32) * 2 - 1
    y, z = torch.arange(16) % K, torch.randn(16, 100)
    t0 = time.perf_counter()
    fake = G(z, y).detach()
    d_losses = []
    for _ in range(10):
        loss = L.d_loss_bce(D(real, y), D(fake, y), real_label=cfg["real_label"])
        opt_d.zero_grad()
        loss.backward()
        opt_d.step()
        d_losses.append(float(loss.detach()))
    assert d_losses[-1] < 0.7 * d_losses[0]
    for _ in range(5):  # and full G+D steps run
        loss = L.g_loss_nonsaturating(D(G(z, y), y))
        opt_g.zero_grad()
        loss.backward()
        opt_g.step()
    assert time.perf_counter() - t0 < 30  # generous: 2 shared cores; it takes well under a second alone
