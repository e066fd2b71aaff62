"""The `dcgan` models (engine.models.dcgan) and their config section: shapes, heads, gradients, sanity."""
import json

import pytest
import torch

from engine import losses as L
from engine.config import (DCGAN_PRESETS, ConfigError, DCGANConfig, dcgan_preset_values, from_dict,
                           to_dict)
from engine.models.dcgan import (D_CONDS, G_UPSAMPLES, Discriminator, Generator, SelfAttention,
                                 channels_at, discriminator_kwargs, generator_kwargs)
from engine.models.ops import power_iteration

K = 3  # classes
TINY_G = dict(z_dim=8, embed_dim=8, g_channels=4, channel_max=16)
TINY_D = dict(embed_dim=8, d_channels=4, channel_max=16)


def make_g(res=16, **kw):
    torch.manual_seed(0)
    return Generator(res, K, **{**TINY_G, **kw})


def make_d(res=16, **kw):
    torch.manual_seed(1)
    return Discriminator(res, K, **{**TINY_D, **kw})


def batch(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 8, generator=g), torch.arange(n) % K


@pytest.mark.parametrize("res", [16, 32, 64, 128, 256])
@pytest.mark.parametrize("up", G_UPSAMPLES)
def test_generator_shapes_and_range(res, up):
    G = make_g(res, g_upsample=up, attention=True)
    z, y = batch(2)
    x = G(z, y)
    assert x.shape == (2, 3, res, res)
    assert x.abs().max() <= 1.0  # tanh
    assert any(isinstance(m, SelfAttention) for m in G.modules())


@pytest.mark.parametrize("res", [16, 64, 256])
@pytest.mark.parametrize("cond", D_CONDS)
@pytest.mark.parametrize("multiscale", [False, True])
def test_discriminator_head_shapes(res, cond, multiscale):
    D = make_d(res, d_cond=cond, attention=True, multiscale=multiscale)
    img, y = torch.rand(3, 3, res, res) * 2 - 1, torch.tensor([0, 1, 2])
    out = D(img, y)
    assert out.logits.shape == (3,)
    assert len(out.scale_logits) == (2 if multiscale else 1)
    # the multi-scale logit is the sum of the scales' logits (documented contract)
    assert torch.allclose(out.logits, torch.stack(out.scale_logits).sum(0), atol=1e-6)
    if cond == "acgan":
        assert out.class_logits.shape == (3, K)
    else:
        assert out.class_logits is None
    assert all(f.dim() == 4 for f in out.feats) and out.feats[-1].shape[-1] == 4


def test_conditioning_changes_the_logit():
    img = torch.rand(2, 3, 16, 16) * 2 - 1
    for cond in ("projection", "labelmap"):
        D = make_d(d_cond=cond)
        a, b = D(img, torch.tensor([0, 0])).logits, D(img, torch.tensor([1, 1])).logits
        assert not torch.allclose(a, b), cond


def test_labelmap_is_never_res_squared_wide():
    # the review's fix: no nn.Embedding(num_classes, res * res) (65,536 wide at 256 px)
    D = make_d(256, d_cond="labelmap")
    lm = D.scales[0].label_map
    assert max(p.shape[-1] for p in lm.parameters()) < 256 * 256
    assert sum(p.numel() for p in lm.parameters()) < 8 * 16 * 16 + K * 8 + 16 * 16 + 1
    assert lm(torch.tensor([0, 2])).shape == (2, 1, 256, 256)


def all_grads(module):
    return {n: p.grad for n, p in module.named_parameters()}


@pytest.mark.parametrize("cond", D_CONDS)
def test_gradients_reach_g_d_and_embeddings(cond):
    G, D = make_g(attention=True), make_d(d_cond=cond, attention=True, multiscale=True)
    z, y = batch(4)
    real = torch.rand(4, 3, 16, 16) * 2 - 1
    # D step: every D parameter gets a gradient, the conditioning path included
    fake = G(z, y).detach()
    r, f = D(real, y), D(fake, y)
    loss = L.d_loss_hinge(r.logits, f.logits)
    if cond == "acgan":
        loss = loss + L.acgan_class_loss(r.class_logits, y) + L.acgan_class_loss(f.class_logits, y)
    loss.backward()
    grads = all_grads(D)
    assert all(g is not None for g in grads.values()), [n for n, g in grads.items() if g is None]
    cond_params = {"projection": "embed", "labelmap": "label_map", "acgan": "cls"}[cond]
    assert any(g.abs().sum() > 0 for n, g in grads.items() if cond_params in n)
    assert any(g.abs().sum() > 0 for n, g in grads.items() if n.endswith("gamma"))  # attention opens
    # G step: gradients reach every G parameter through D, the label embedding's used rows included
    D.zero_grad()
    f = D(G(z, y), y)
    g_loss = L.g_loss_hinge(f.logits) + (L.acgan_class_loss(f.class_logits, y) if cond == "acgan" else 0)
    g_loss.backward()
    grads = all_grads(G)
    assert all(g is not None for g in grads.values()), [n for n, g in grads.items() if g is None]
    assert (G.embed.weight.grad[:K].abs().sum(1) > 0).all()
    assert G.input.weight.grad.abs().sum() > 0 and G.to_rgb[1].weight.grad.abs().sum() > 0


def test_wgan_gp_double_backward_through_d():
    D = make_d(d_cond="projection", attention=True)
    y = torch.tensor([0, 1])
    real, fake = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    gp = L.gradient_penalty(lambda x: D(x, y).logits, real, fake)
    gp.backward()
    assert D.scales[0].blocks[0].conv.parametrizations.weight.original.grad.abs().sum() > 0


def test_widths_follow_the_dcgan_layout():
    assert channels_at(128, 256, 64, 4096) == 64 and channels_at(4, 256, 64, 4096) == 2048  # ngf .. ngf*32
    assert channels_at(4, 256, 64, 512) == 512
    G = Generator(32, K, z_dim=8, embed_dim=8, g_channels=8, channel_max=64)
    assert G.input.out_channels == 32 and G.blocks[-1].bn.num_features == 8


def test_rebuild_from_init_kwargs_and_config():
    G, D = make_g(g_upsample="transpose", attention=True), make_d(d_cond="acgan", multiscale=True)
    G2 = Generator(**json.loads(json.dumps(G.init_kwargs)))
    D2 = Discriminator(**json.loads(json.dumps(D.init_kwargs)))
    G2.load_state_dict(G.state_dict())
    D2.load_state_dict(D.state_dict())
    z, y = batch(2)
    G.eval(), G2.eval()
    assert torch.equal(G(z, y), G2(z, y))
    cfg = to_dict(from_dict(DCGANConfig, {"g_channels": 8, "d_cond": "labelmap", "attention": True}))
    assert Generator(**generator_kwargs(cfg, 32, K)).init_kwargs["g_channels"] == 8
    assert Discriminator(**discriminator_kwargs(cfg, 32, K)).d_cond == "labelmap"


def test_bad_options_raise_config_error_naming_the_field():
    with pytest.raises(ConfigError, match="'d_cond'.*projection, labelmap, acgan"):
        from_dict(DCGANConfig, {"d_cond": "concat"})
    with pytest.raises(ConfigError, match="'g_upsample'"):
        from_dict(DCGANConfig, {"g_upsample": "pixelshuffle"})
    with pytest.raises(ConfigError, match="'loss'.*hinge"):
        from_dict(DCGANConfig, {"loss": "lsgan"})
    with pytest.raises(ConfigError, match="'gp_weight'"):
        from_dict(DCGANConfig, {"loss": "wgan_gp", "gp_weight": 0})
    with pytest.raises(ConfigError, match="'res'"):
        Generator(24, K)
    with pytest.raises(ConfigError, match="'d_cond'"):
        Discriminator(32, K, d_cond="concat")
    with pytest.raises(ConfigError, match="'preset'.*demo"):
        dcgan_preset_values("fast")


def test_presets_validate():
    for name in DCGAN_PRESETS:
        assert dcgan_preset_values(name)
    spec = dcgan_preset_values("spec")
    assert (spec["lr_g"], spec["lr_d"], spec["beta1"], spec["beta2"]) == (1e-4, 4e-4, 0.0, 0.9)
    assert spec["embed_dim"] == 128 and spec["d_cond"] == "labelmap"


def test_a_few_d_steps_reduce_d_loss_and_g_steps_reduce_g_loss():
    G, D = make_g(), make_d(d_cond="projection")
    z, y = batch(8)
    real = torch.rand(8, 3, 16, 16) * 0.5 + 0.25          # a fixed, easy batch of "reals"
    fake = G(z, y).detach()
    opt_d = torch.optim.Adam(D.parameters(), lr=4e-3, betas=(0.0, 0.9))
    losses = []
    for _ in range(15):
        power_iteration(D)  # the trainer's once-per-D-update spectral-norm step
        loss = L.d_loss_hinge(D(real, y).logits, D(fake, y).logits)
        opt_d.zero_grad()
        loss.backward()
        opt_d.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0]
    D.requires_grad_(False)
    opt_g = torch.optim.Adam(G.parameters(), lr=4e-3, betas=(0.0, 0.9))
    g_losses = []
    for _ in range(10):
        loss = L.g_loss_hinge(D(G(z, y), y).logits)
        opt_g.zero_grad()
        loss.backward()
        opt_g.step()
        g_losses.append(float(loss.detach()))
    assert g_losses[-1] < g_losses[0]
