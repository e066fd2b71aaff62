import io
import math

import pytest
import torch
from torch import nn

from engine import losses as L


def close(a, b, tol=1e-5):
    a, b = (float(v.detach()) if torch.is_tensor(v) else float(v) for v in (a, b))
    return abs(a - b) < tol


def test_d_loss_logistic_hand_values():
    z = torch.zeros(4)
    assert close(L.d_loss_logistic(z, z), 2 * math.log(2))
    # softplus(-1) + softplus(-1): a confident D on both sides
    assert close(L.d_loss_logistic(torch.ones(3), -torch.ones(3)), 2 * math.log(1 + math.exp(-1)))


def test_d_loss_bce_one_sided_smoothing():
    z = torch.zeros(2)
    assert close(L.d_loss_bce(z, z), 2 * math.log(2))  # at p = 0.5 the real target does not matter
    # real logit log 9 -> p = 0.9 = target: loss is the entropy of Bernoulli(0.9), fake side log 2
    real = torch.full((3,), math.log(9))
    ent = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    assert close(L.d_loss_bce(real, z), ent + math.log(2))
    # one-sided: the fake side is not smoothed, a very negative fake logit costs ~0
    assert close(L.d_loss_bce(real, torch.full((3,), -30.0)), ent)
    assert close(L.d_loss_bce(real, z, real_label=1.0), math.log(1 + 1 / 9) + math.log(2))


def test_g_loss_nonsaturating():
    logits = torch.tensor([0.0, math.log(3)])
    assert close(L.g_loss_nonsaturating(logits), (math.log(2) + math.log(4 / 3)) / 2)


def test_r1_of_linear_d_is_sum_w_squared():
    torch.manual_seed(0)
    w = torch.randn(3, 4, 4)
    x = torch.randn(5, 3, 4, 4, requires_grad=True)
    logits = (x * w).flatten(1).sum(1)  # D(x) = sum(w * x): gradient w for every sample
    assert close(L.r1_penalty(logits, x), w.pow(2).sum(), 1e-4)


def test_r1_is_differentiable_wrt_d_params():
    w = nn.Parameter(torch.tensor([1.0, 2.0]))
    x = torch.tensor([[1.0, 1.0], [2.0, 0.0]], requires_grad=True)
    logits = (x.pow(2) * w).sum(1)  # dD/dx = 2 w x
    pen = L.r1_penalty(logits, x)
    # per sample: 4 (w1^2 x1^2 + w2^2 x2^2): [4*(1+4), 4*(4+0)] -> mean 18
    assert close(pen, 18.0)
    pen.backward()
    # d/dw of mean_i 4 sum_j w_j^2 x_ij^2 = 4 * mean_i 2 w_j x_ij^2 -> [4*2*1*2.5, 4*2*2*0.5]
    assert torch.allclose(w.grad, torch.tensor([20.0, 8.0]))


def test_drift():
    assert close(L.drift_penalty(torch.tensor([1.0, -2.0, 3.0])), 14 / 3)


def test_path_length_hand_value_and_running_mean():
    torch.manual_seed(0)
    n, num_ws, h = 3, 2, 4
    ws = torch.randn(n, num_ws, h * h, requires_grad=True)
    c = 2.0
    img = c * ws.sum(1).view(n, 1, h, h)  # d sum(img * y) / d ws[n, l] = c * y[n] for every layer l
    noise = torch.randn(n, 1, h, h)
    lengths = c * noise.flatten(1).norm(dim=1)  # sqrt(mean_l |c y|^2) = c |y|
    pen, mean = L.path_length_penalty(img, ws, torch.tensor(0.0), decay=0.01, noise=noise)
    expect_mean = 0.01 * lengths.mean()
    assert close(mean, expect_mean)
    assert close(pen, (lengths - expect_mean).pow(2).mean(), 1e-4)
    assert not mean.requires_grad
    pen2, mean2 = L.path_length_penalty(img, ws, mean, decay=0.5, noise=noise)
    assert close(mean2, mean + 0.5 * (lengths.mean() - mean))


def test_feature_matching_hand_value():
    real = [torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.ones(2, 1, 2, 2)]
    fake = [torch.tensor([[0.0, 0.0], [2.0, 2.0]], requires_grad=True), torch.ones(2, 1, 2, 2)]
    # layer 1: |[1,1] - [2,3]| mean = 1.5 ; layer 2: 0 -> mean over layers 0.75
    assert close(L.feature_matching_loss(real, fake), 0.75)
    with pytest.raises(ValueError, match="equally long"):
        L.feature_matching_loss(real, fake[:1])


def test_perceptual_loss_detaches_real():
    real = torch.tensor([[0.0, 2.0], [2.0, 0.0]], requires_grad=True)
    fake = torch.tensor([[0.0, 3.0], [0.0, 3.0]], requires_grad=True)
    loss = L.perceptual_loss(real, fake)  # means [1,1] vs [0,3] -> (1 + 4) / 2
    assert close(loss, 2.5)
    loss.backward()
    assert real.grad is None and fake.grad.abs().sum() > 0


def test_stats_penalty_hand_value():
    fake = torch.tensor([0.0, 2.0]).view(1, 1, 1, 2)  # mean 1, std (unbiased) sqrt 2
    assert close(L.stats_penalty(fake, [0.0], [1.0]), 1 + (math.sqrt(2) - 1) ** 2)
    assert close(L.stats_penalty(fake, [1.0], [math.sqrt(2)]), 0.0)


def test_real_stats_ema_update_penalty_and_state(tmp_path):
    ema = L.RealStatsEMA(beta=0.5, channels=1)
    fake = torch.tensor([0.0, 2.0]).view(1, 1, 1, 2).requires_grad_()
    assert close(ema.penalty(fake), 0.0)  # no reals seen yet
    ema.update(torch.tensor([1.0, 3.0]).view(1, 1, 1, 2))  # first batch initialises: mean 2, std sqrt 2
    assert close(ema.mean[0], 2.0) and close(ema.std[0], math.sqrt(2))
    ema.update(torch.zeros(1, 1, 1, 2))  # mean 0, std 0 -> halfway
    assert close(ema.mean[0], 1.0) and close(ema.std[0], math.sqrt(2) / 2)
    pen = ema.penalty(fake)
    assert close(pen, (math.sqrt(2) - math.sqrt(2) / 2) ** 2)
    pen.backward()
    assert fake.grad.abs().sum() > 0
    buf = io.BytesIO()
    torch.save(ema.state_dict(), buf)
    buf.seek(0)
    other = L.RealStatsEMA(beta=0.9, channels=1)
    other.load_state_dict(torch.load(buf, weights_only=True))
    assert other.count == 2 and other.beta == 0.5 and close(other.penalty(fake.detach()), pen)


def test_saturation_penalty():
    assert close(L.saturation_penalty(torch.tensor([0.5, -0.6, 0.1])), 0.0)
    # relu(|x| - 0.6): [0, 0.1, 0.3, 0] -> squares 0.01 + 0.09 over 4 pixels
    assert close(L.saturation_penalty(torch.tensor([0.5, -0.7, 0.9, 0.2])), 0.025)


def test_diversity_penalty_hand_value():
    fake = torch.tensor([[0.0, 0.0], [1.0, 3.0]]).view(2, 1, 1, 2)
    z = torch.tensor([[0.0], [4.0]])
    # both pairs (0,1), (1,0): d_z 4, d_img mean(|1|, |3|) = 2 -> ratio 0.5
    assert close(L.diversity_penalty(fake, z, tau=1.0), 0.5)
    assert close(L.diversity_penalty(fake, z, tau=0.2), 0.0)  # diverse enough: no penalty
    assert close(L.diversity_penalty(fake, z, y=torch.tensor([0, 1]), tau=1.0), 0.0)  # no same-class pair
    # collapsed G (same image for different z) gets the largest penalty, tau, and a bounded gradient
    same = torch.zeros(2, 1, 1, 2, requires_grad=True)
    pen = L.diversity_penalty(same + torch.tensor([0.0, 1e-3]).view(1, 1, 1, 2), z, tau=0.2)
    assert 0.19 < pen.item() <= 0.2 + 1e-6
    pen.backward()
    assert torch.isfinite(same.grad).all() and same.grad.abs().max() < 1.0


class TinyG(nn.Module):
    def __init__(self, z_dim=4, num_ws=2, res=4):
        super().__init__()
        self.num_ws, self.res = num_ws, res
        self.map = nn.Linear(z_dim, z_dim)
        self.syn = nn.Linear(num_ws * z_dim, 3 * res * res)

    def forward(self, z):
        ws = torch.tanh(self.map(z)).unsqueeze(1).repeat(1, self.num_ws, 1)
        img = torch.tanh(2 * self.syn(ws.flatten(1))).view(-1, 3, self.res, self.res)
        return img, ws


class TinyD(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 16, 1)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        return self.fc(h.flatten(1)).squeeze(1), [h]


def test_gradients_reach_g_through_every_g_loss_term():
    torch.manual_seed(0)
    G, D = TinyG(), TinyD()
    domain = nn.Linear(48, 5).requires_grad_(False)  # stands in for the frozen domain features
    z, real = torch.randn(6, 4), torch.rand(6, 3, 4, 4) * 2 - 1
    stats = L.RealStatsEMA()
    stats.update(real)
    real_logits, real_feats = D(real)

    def terms():
        img, ws = G(z)
        logits, feats = D(img)
        yield "g_adv", L.g_loss_nonsaturating(logits)
        yield "fm", L.feature_matching_loss(real_feats, feats)
        yield "perceptual", L.perceptual_loss(domain(real.flatten(1)), domain(img.flatten(1)))
        yield "stats", stats.penalty(img)
        yield "saturation", L.saturation_penalty(img, threshold=0.1)
        yield "diversity", L.diversity_penalty(img, z)
        yield "path_length", L.path_length_penalty(img, ws, torch.tensor(0.0))[0]

    names = []
    for name, loss in terms():
        G.zero_grad()
        loss.backward(retain_graph=True)
        grads = [p.grad for p in G.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), name
        assert sum(g.abs().sum() for g in grads) > 0, name
        names.append(name)
    assert len(names) == 7
