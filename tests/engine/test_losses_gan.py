"""Hinge / Wasserstein / gradient-penalty / AC-GAN / texture losses and the balance note (dcgan, mlp_gan)."""
import math

import pytest
import torch
import torch.nn.functional as F

from engine import losses as L
from engine.train.balance import balance_note


def close(a, b, tol=1e-5):
    a, b = (float(v.detach()) if torch.is_tensor(v) else float(v) for v in (a, b))
    return abs(a - b) < tol


def test_hinge_hand_values():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    # real: relu(1-2)=0, relu(1-0.5)=0.5 -> 0.25; fake: relu(1-2)=0, relu(1+0)=1 -> 0.5
    assert close(L.d_loss_hinge(real, fake), 0.75)
    assert close(L.d_loss_hinge(torch.full((3,), 1.0), torch.full((3,), -1.0)), 0.0)  # at the margins
    assert close(L.g_loss_hinge(torch.tensor([1.0, -3.0])), 1.0)


def test_wgan_hand_values():
    real, fake = torch.tensor([3.0, 1.0]), torch.tensor([0.5, -0.5])
    assert close(L.d_loss_wgan(real, fake), 0.0 - 2.0)
    assert close(L.g_loss_wgan(fake), 0.0)
    assert close(L.g_loss_wgan(torch.tensor([2.0, 4.0])), -3.0)


def linear_critic(w):
    return lambda x: (x * w).flatten(1).sum(1)  # D(x) = <w, x>: its gradient is w everywhere


def test_gradient_penalty_of_linear_critic():
    torch.manual_seed(0)
    real, fake = torch.randn(4, 3, 4, 4), torch.randn(4, 3, 4, 4)
    w = torch.randn(3, 4, 4)
    w1 = (w / w.norm()).requires_grad_(True)
    assert close(L.gradient_penalty(linear_critic(w1), real, fake), 0.0, 1e-6)   # 1-Lipschitz: 0
    w2 = (2 * w / w.norm()).requires_grad_(True)
    gp = L.gradient_penalty(linear_critic(w2), real, fake)
    assert close(gp, (2 - 1) ** 2, 1e-5)                                          # weight * (2-1)^2
    assert close(10.0 * gp, 10.0, 1e-4)
    # d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w|| = w at ||w|| = 2: the penalty trains the critic
    (grad,) = torch.autograd.grad(gp, w2)
    assert torch.allclose(grad, w2.detach(), atol=1e-5)


def test_gradient_penalty_norm_is_over_the_whole_sample():
    # The seed's norm(2, dim=1) on (N, C, H, W) would give one norm per pixel (here 1/4 each, penalty
    # 0.5625); over the flattened sample the norm is 1 and the penalty 0.
    w = torch.full((1, 2, 2), 0.5)  # ||w|| = 1 over the 4 entries
    x = torch.randn(3, 1, 2, 2)
    assert close(L.gradient_penalty(linear_critic(w), x, x.flip(0)), 0.0, 1e-6)


def test_gradient_penalty_uses_alpha_and_checks_shapes():
    seen = []

    def critic(x):
        seen.append(x.detach().clone())
        return x.flatten(1).sum(1)

    real, fake = torch.ones(2, 1, 1, 1), torch.zeros(2, 1, 1, 1)
    L.gradient_penalty(critic, real, fake, alpha=torch.tensor([0.25, 1.0]))
    assert torch.allclose(seen[0].flatten(), torch.tensor([0.25, 1.0]))
    with pytest.raises(ValueError, match="one shape"):
        L.gradient_penalty(critic, real, torch.zeros(3, 1, 1, 1))


def test_acgan_class_loss():
    logits = torch.zeros(4, 9)
    assert close(L.acgan_class_loss(logits, torch.arange(4)), math.log(9))
    right = F.one_hot(torch.arange(4), 9).float() * 50
    assert close(L.acgan_class_loss(right, torch.arange(4)), 0.0)


def test_gram_matrix_hand_values():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 2, 1, 2)  # C=2, H=1, W=2
    expect = torch.tensor([[5.0, 11.0], [11.0, 25.0]]) / 4     # F F^T / (C*H*W)
    assert torch.allclose(L.gram_matrix(x)[0], expect)


def test_texture_loss():
    torch.manual_seed(0)
    feats = [torch.randn(3, 4, 8, 8), torch.randn(3, 8, 4, 4), torch.randn(3, 16)]  # 2-D ones are skipped
    for paired in (False, True):
        assert close(L.texture_loss(feats, [f.clone() for f in feats], paired=paired), 0.0)
    fake = [(2 * f).requires_grad_(True) for f in feats]
    loss = L.texture_loss(feats, fake)
    assert float(loss.detach()) > 0
    loss.backward()
    assert fake[0].grad.abs().sum() > 0 and fake[2].grad is None  # reaches the fakes' maps only
    with pytest.raises(ValueError):
        L.texture_loss(feats, feats[:1])


# ---------------------------------------------------------------------------- balance note


def test_balance_note_d_too_strong():
    n = 60
    d = [1.4 * math.exp(-i / 8) for i in range(n)]             # D's loss collapsing to ~0
    g = [0.7 + 4 * i / n for i in range(n)]                  # G's growing
    note = balance_note(d, g)
    assert note is not None and "D too strong" in note
    for remedy in ("lr_d", "d_steps", "real_label", "d_noise"):
        assert remedy in note


def test_balance_note_g_too_strong():
    n = 60
    d = [1.4 + 2 * i / n for i in range(n)]
    g = [0.7 * math.exp(-i / 8) for i in range(n)]
    note = balance_note(d, g)
    assert note is not None and "G too strong" in note and "D too strong" not in note


def test_balance_note_balanced_and_short_or_empty():
    torch.manual_seed(0)
    noise = (torch.rand(100) - 0.5).tolist()
    d = [2 * math.log(2) + 0.1 * e for e in noise]
    g = [math.log(2) - 0.1 * e for e in noise]
    assert balance_note(d, g) is None
    assert balance_note([0.01] * 3, [5.0] * 3) is None          # too few points to judge
    # empty CSV cells and NaN are skipped: the same D-too-strong curve still reads as such
    d2 = [0.01] * 30 + ["", None, float("nan")]
    g2 = [3.0] * 30 + [1.0, 1.0, 1.0]
    assert "D too strong" in balance_note(d2, g2)
    assert balance_note([], []) is None


def test_balance_note_one_side_winning_outright():
    # no collapse to 0, but G's loss stays at ~4 (D(G(z)) ~ 0.02) while D beats chance: D too strong
    d, g = [0.6 + 0.05 * (i % 3) for i in range(40)], [4.0 + 0.1 * (i % 2) for i in range(40)]
    assert "D too strong" in balance_note(d, g)
    # the mirror image: D's loss ~3.5 (it calls fakes real) while G's is below ln 2
    assert "G too strong" in balance_note([3.5] * 40, [0.4] * 40)
