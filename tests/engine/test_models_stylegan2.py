import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine.config import ConfigError
from engine.models.ops import NoiseInjection
from engine.models.stylegan2 import Discriminator, Generator, count_params

TINY = dict(z_dim=32, w_dim=32, n_mlp=2, channel_base=256, channel_max=64)


def make_g(res=16, **kw):
    torch.manual_seed(0)
    return Generator(res, 3, **{**TINY, **kw})


def make_d(res=16, **kw):
    torch.manual_seed(1)
    return Discriminator(res, 3, channel_base=256, channel_max=64, **kw)


class TinyFeatures(nn.Module):
    """Stand-in for the frozen classifier: any input size -> (N, num_features)."""
    num_features = 8

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return F.adaptive_avg_pool2d(torch.relu(self.bn(self.conv(x))), 1).flatten(1)


def inputs(n=4, z_dim=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, z_dim, generator=g), torch.arange(n) % 3


# ---------------------------------------------------------------- generator

@pytest.mark.parametrize("res", [16, 32])
def test_generator_shapes_layers_and_clamp(res):
    G = make_g(res, clamp=0.05)
    z, y = inputs()
    img = G(z, y)
    assert img.shape == (4, 3, res, res)
    assert img.abs().max() <= 0.05 and torch.isclose(img.abs().max(), torch.tensor(0.05))
    log2 = res.bit_length() - 1
    assert G.num_ws == 2 * log2 - 2 == len(G.layer_names)
    assert G.layer_names[:3] == ["4x4 conv", "8x8 up", "8x8 conv"] and G.layer_names[-1] == f"{res}x{res} rgb"
    assert G.w_avg.shape == (3, 32)
    # default clamp 0.9, and the output starts well inside it (no saturation at step 0)
    img = make_g(res)(z, y)
    assert img.abs().max() <= 0.9 and img.abs().mean() < 0.5


@pytest.mark.parametrize("res", [12, 4, 512])
def test_bad_resolution_is_rejected(res):
    with pytest.raises(ConfigError, match="res"):
        Generator(res, 3, **TINY)
    with pytest.raises(ConfigError, match="res"):
        Discriminator(res, 3)


def test_noise_starts_at_zero_and_modes():
    G = make_g()
    strengths = [m.weight for m in G.modules() if isinstance(m, NoiseInjection)]
    assert len(strengths) == G.num_ws - 1 and all(float(s.detach()) == 0 for s in strengths)
    z, y = inputs()
    with torch.no_grad():
        for s in strengths:
            s.fill_(1.0)  # make noise visible
        a, b = G(z, y, noise_mode="const"), G(z, y, noise_mode="const")
        r1, r2 = G(z, y), G(z, y)
        none = G(z, y, noise_mode="none")
        weak = G(z, y, noise_mode="const", noise_strength=0.0)
    assert torch.equal(a, b)
    assert not torch.allclose(r1, r2) and not torch.allclose(a, none)
    assert torch.allclose(weak, none, atol=1e-6)
    with pytest.raises(ValueError, match="noise_mode"):
        G(z, y, noise_mode="fixed")


def test_same_seed_same_image():
    G = make_g()
    with torch.no_grad():
        for m in G.modules():
            if isinstance(m, NoiseInjection):
                m.weight.fill_(0.5)
    imgs = []
    for _ in range(2):
        torch.manual_seed(123)
        imgs.append(G(torch.randn(3, 32), torch.tensor([0, 1, 2]), mixing_prob=0.9))
    assert torch.equal(imgs[0], imgs[1])


def test_truncation_zero_gives_class_average():
    G = make_g()
    G.w_avg.copy_(torch.randn(3, 32))
    z, y = inputs()
    _, ws = G(z, y, truncation=0.0, mixing_prob=1.0, return_ws=True)
    assert torch.allclose(ws, G.w_avg[y][:, None].expand_as(ws))
    w, w_half = G.mapping(z, y), G.mapping(z, y, truncation=0.5)
    assert torch.allclose(w_half, (w + G.w_avg[y]) / 2, atol=1e-6)


def test_ws_input_equals_mapping_path():
    G = make_g()
    z, y = inputs()
    img, ws = G(z, y, truncation=0.7, noise_mode="const", return_ws=True)
    w = G.mapping(z, y, truncation=0.7)
    assert torch.allclose(ws, w[:, None].expand(-1, G.num_ws, -1))
    assert torch.allclose(G(None, y, ws=w[:, None].repeat(1, G.num_ws, 1), noise_mode="const"), img)


def test_style_mixing_replaces_only_layers_from_cutoff():
    G = make_g()
    torch.manual_seed(5)
    z, y = inputs(n=16)
    z2 = torch.randn_like(z)
    _, ws = G(z, y, z2=z2, mixing_prob=1.0, return_ws=True)
    w, w2 = G.mapping(z, y), G.mapping(z2, y)  # same y: intra-class mixing
    cutoffs = []
    for i in range(16):
        from2 = [torch.allclose(ws[i, l], w2[i]) for l in range(G.num_ws)]
        from1 = [torch.allclose(ws[i, l], w[i]) for l in range(G.num_ws)]
        c = from2.index(True)
        assert 1 <= c < G.num_ws and all(from1[:c]) and all(from2[c:])
        cutoffs.append(c)
    assert len(set(cutoffs)) > 1  # cutoff is drawn per sample
    _, ws0 = G(z, y, z2=z2, mixing_prob=0.0, return_ws=True)
    assert torch.allclose(ws0, w[:, None].expand_as(ws0))


def test_update_w_avg_only_present_classes():
    G = make_g()
    old = torch.randn(3, 32)
    G.w_avg.copy_(old)
    w, y = torch.randn(4, 32), torch.tensor([0, 0, 2, 2])
    G.update_w_avg(w, y, beta=0.9)
    assert torch.equal(G.w_avg[1], old[1])
    assert torch.allclose(G.w_avg[0], 0.9 * old[0] + 0.1 * w[:2].mean(0), atol=1e-6)
    assert torch.allclose(G.w_avg[2], 0.9 * old[2] + 0.1 * w[2:].mean(0), atol=1e-6)


def test_rebuild_from_json_kwargs_and_safetensors(tmp_path):
    from safetensors.torch import load_file, save_file
    G = make_g()
    G.w_avg.normal_()
    save_file(G.state_dict(), str(tmp_path / "g.safetensors"))
    kwargs = json.loads(json.dumps(G.init_kwargs))
    G2 = Generator(**kwargs)
    G2.load_state_dict(load_file(str(tmp_path / "g.safetensors")))
    z, y = inputs()
    assert torch.equal(G(z, y, noise_mode="const"), G2(z, y, noise_mode="const"))
    D = make_d()
    assert count_params(Discriminator(**json.loads(json.dumps(D.init_kwargs)))) == count_params(D)


def test_every_g_parameter_gets_gradient_from_a_g_loss():
    G, D = make_g(), make_d()
    z, y = inputs(n=8)
    img, ws = G(z, y, mixing_prob=0.9, return_ws=True)
    F.softplus(-D(img, y)).mean().backward()
    missing = [n for n, p in G.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing
    assert G.conv1.noise.weight.grad.abs() > 0 and G.mapping_net.embed.weight.grad.abs().sum() > 0


def test_path_length_double_backward_through_g():
    G = make_g()
    z, y = inputs()
    img, ws = G(z, y, mixing_prob=0.9, return_ws=True)
    noise = torch.randn_like(img) / img.shape[2]
    (grad,) = torch.autograd.grad((img * noise).sum(), ws, create_graph=True)
    grad.square().sum(2).mean(1).sqrt().mean().backward()
    assert G.input.input.grad is not None and G.mapping_net.layers[0].weight.grad.abs().sum() > 0


def test_channels_last_matches():
    G, D = make_g(), make_d()
    z, y = inputs()
    img = G(z, y, noise_mode="const")
    D.eval()
    ref = D(img, y)
    G2 = make_g().to(memory_format=torch.channels_last)
    assert torch.allclose(G2(z, y, noise_mode="const"), img, atol=1e-5)
    D.to(memory_format=torch.channels_last)
    assert torch.allclose(D(img.contiguous(memory_format=torch.channels_last), y), ref, atol=1e-5)


# ---------------------------------------------------------------- discriminator

def test_discriminator_logits_features_and_projection():
    D = make_d(32).eval()  # eval: spectral-norm power iteration frozen, so calls are comparable
    img = torch.randn(6, 3, 32, 32)
    logits, feats = D(img, torch.zeros(6, dtype=torch.long), return_features=True)
    assert logits.shape == (6,)
    assert [f.shape[1:] for f in feats] == [(16, 16, 16), (32, 8, 8), (64, 4, 4), (64,)]
    other = D(img, torch.full((6,), 2))
    assert not torch.allclose(logits, other)
    # only the projection term depends on y: the difference is <embed(y1) - embed(y2), h>
    h = feats[-1]
    e = D.embed.weight
    assert torch.allclose(logits - other, (h * (e[0] - e[2])).sum(1), atol=1e-5)


def test_labelmap_d_sees_the_class_at_its_input_and_keeps_the_projection():
    D = make_d(32, d_cond="labelmap").eval()
    assert D.from_rgb.parametrizations.weight.original.shape[1] == 4   # RGB + the class map
    img = torch.randn(6, 3, 32, 32)
    y0, y2 = torch.zeros(6, dtype=torch.long), torch.full((6,), 2)
    logits, feats = D(img, y0, return_features=True)
    _, feats2 = D(img, y2, return_features=True)
    # unlike projection alone, the first block's features already differ by class
    assert not torch.allclose(feats[0], feats2[0])
    p_only = make_d(32).eval()
    assert torch.allclose(p_only(img, y0, return_features=True)[1][0], p_only(img, y2, return_features=True)[1][0])
    # R1's double backward and the label map's gradient
    real = img.clone().requires_grad_(True)
    out = D.train()(real, y0)
    (g,) = torch.autograd.grad(out.sum(), real, create_graph=True)
    g.square().sum().backward()
    assert D.label_map.embed.weight.grad is not None and D.label_map.embed.weight.grad.abs().sum() > 0
    # rebuilt from its kwargs (resume), and a bad value names the field
    assert Discriminator(**json.loads(json.dumps(D.init_kwargs))).d_cond == "labelmap"
    with pytest.raises(ConfigError, match="'d_cond'.*projection, labelmap"):
        make_d(16, d_cond="acgan")


def test_domain_head_scales_with_alpha_and_is_frozen():
    feat = TinyFeatures()
    D = make_d(domain_features=feat).eval()
    img, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 0])
    calls = feat.calls
    l0 = D(img, y, alpha=0.0)
    assert feat.calls == calls  # absent at alpha 0 (not even computed)
    l1, l2 = D(img, y, alpha=0.5), D(img, y, alpha=1.0)
    dom = D.domain_head(feat(img)).squeeze(1)
    assert not torch.allclose(l1, l0)
    assert torch.allclose(l1 - l0, 0.5 * dom, atol=1e-5) and torch.allclose(l2 - l0, dom, atol=1e-5)
    assert torch.allclose(D(img, y, alpha=torch.tensor(0.5)), l1, atol=1e-6)
    assert D.domain_embed(img).shape == (4, 8) and make_d().domain_embed(img) is None
    # frozen: not among D's parameters/state, stays in eval mode, cannot be re-enabled via D
    assert not any(p is q for p in D.parameters() for q in feat.parameters())
    assert not any(k.startswith("domain_features") for k in D.state_dict())
    D.train().requires_grad_(True)
    assert not feat.training and not any(p.requires_grad for p in feat.parameters())
    D.to(torch.float64)
    assert feat.conv.weight.dtype == torch.float64
    D.float()
    # gradients: none into the extractor, but through it to the image and into the linear head
    x = img.clone().requires_grad_(True)
    D(x, y, alpha=0.5).sum().backward()
    assert all(p.grad is None for p in feat.parameters())
    assert D.domain_head.weight.grad.abs().sum() > 0
    x2 = img.clone().requires_grad_(True)
    D.domain_embed(x2).sum().backward()
    assert x2.grad.abs().sum() > 0 and x.grad.abs().sum() > 0


def test_r1_double_backward_through_d():
    D = make_d(domain_features=TinyFeatures()).train()
    real = torch.randn(4, 3, 16, 16, requires_grad=True)
    logits = D(real, torch.tensor([0, 1, 2, 0]), alpha=0.3)
    (g,) = torch.autograd.grad(logits.sum(), real, create_graph=True)
    g.square().sum(dim=(1, 2, 3)).mean().backward()
    w = D.from_rgb.parametrizations.weight.original
    assert w.grad is not None and w.grad.abs().sum() > 0 and torch.isfinite(w.grad).all()
    assert D.embed.parametrizations.weight.original.grad.abs().sum() > 0
    assert D.domain_head.weight.grad.abs().sum() > 0


def test_minibatch_std_handles_odd_batch():
    D = make_d()
    assert D(torch.randn(3, 3, 16, 16), torch.tensor([0, 1, 2])).shape == (3,)


def test_w_avg_starts_at_the_first_batch_not_at_zero():
    # Old code: w_avg = 0.005 * mean after one update and still 27 % short after a default run, so
    # truncation psi < 1 pulled toward a shrunken class mean.
    G = make_g()
    w, y = torch.randn(4, 32) + 3.0, torch.tensor([0, 0, 2, 2])
    G.update_w_avg(w, y, beta=0.995)
    assert torch.allclose(G.w_avg[0], w[:2].mean(0), atol=1e-6)
    assert torch.allclose(G.w_avg[2], w[2:].mean(0), atol=1e-6)
    assert torch.equal(G.w_avg[1], torch.zeros(32))      # absent class: still unset
    w2 = torch.randn(2, 32)
    G.update_w_avg(w2, torch.tensor([0, 1]), beta=0.995)  # class 0 now follows the EMA, class 1 starts
    assert torch.allclose(G.w_avg[0], 0.995 * w[:2].mean(0) + 0.005 * w2[0], atol=1e-6)
    assert torch.allclose(G.w_avg[1], w2[1], atol=1e-6)
    # a constant w: the average is w itself from the first update on (old: 1 - 0.995**t of it)
    G2 = make_g()
    c = torch.full((3, 32), 2.0)
    for _ in range(300):
        G2.update_w_avg(c, torch.arange(3))
    assert torch.allclose(G2.w_avg, c, atol=1e-5)


def test_spectral_norm_forward_reads_u_v_and_power_iteration_moves_them():
    from engine.models.ops import power_iteration, sn
    torch.manual_seed(0)
    conv = sn(torch.nn.Conv2d(3, 8, 3)).train()
    sn_mod = conv.parametrizations.weight[0]
    u0 = sn_mod._u.clone()
    conv(torch.randn(1, 3, 8, 8))
    assert torch.equal(sn_mod._u, u0)                     # forward never writes the buffers
    with torch.no_grad():
        conv.parametrizations.weight.original.mul_(torch.randn(8, 3, 3, 3))
    power_iteration(conv)
    assert not torch.equal(sn_mod._u, u0)
    for _ in range(50):
        power_iteration(conv)
    with torch.no_grad():
        sigma = torch.linalg.matrix_norm(conv.parametrizations.weight.original.flatten(1), 2)
        assert torch.linalg.matrix_norm(conv.weight.flatten(1), 2).item() == pytest.approx(1.0, rel=1e-3)
    assert set(conv.state_dict()) == {"bias", "parametrizations.weight.original",
                                      "parametrizations.weight.0._u", "parametrizations.weight.0._v"}
    assert sigma > 0
