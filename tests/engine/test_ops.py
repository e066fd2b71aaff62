import torch
import torch.nn.functional as F

from engine.models.ops import (Blur, Downsample, EqualLinear, MinibatchStd, ModulatedConv2d, Upsample,
                               count_params, make_kernel, upfirdn2d)


def test_blur_preserves_constant_and_keeps_size():
    x = torch.full((2, 3, 12, 12), 0.7)
    out = Blur((1, 3, 3, 1), pad=(2, 1))(x)
    assert out.shape == x.shape
    # zero padding darkens only the border; the interior is untouched by a normalised low-pass
    assert torch.allclose(out[..., 2:-2, 2:-2], x[..., 2:-2, 2:-2], atol=1e-6)
    assert out[..., 0, 0].abs().max() < 0.7


def test_up_and_down_sampling_shapes_and_dc_gain():
    x = torch.full((1, 4, 8, 8), -0.5)
    up, down = Upsample((1, 3, 3, 1))(x), Downsample((1, 3, 3, 1))(x)
    assert up.shape == (1, 4, 16, 16) and down.shape == (1, 4, 4, 4)
    assert torch.allclose(up[..., 2:-2, 2:-2], torch.tensor(-0.5), atol=1e-6)
    assert torch.allclose(down[..., 1:-1, 1:-1], torch.tensor(-0.5), atol=1e-6)


def test_upfirdn2d_upsampling_is_a_true_convolution():
    # A stride-2 transposed conv scatters x[i] * k[a] to 2i + a: the full convolution of the
    # zero-inserted signal. A random (asymmetric) kernel catches a missing kernel flip.
    torch.manual_seed(0)
    k, x = torch.rand(4, 4), torch.randn(2, 3, 5, 6)
    ref = F.conv_transpose2d(x, k[None, None].repeat(3, 1, 1, 1), stride=2, groups=3)
    got = upfirdn2d(x, k, up=2, pad=(3, 2))
    assert got.shape == ref.shape == (2, 3, 12, 14)
    assert torch.allclose(got, ref, atol=1e-5)
    # down-sampling keeps every 2nd output of the same-size filtered image
    same = upfirdn2d(x, k, pad=(2, 1))
    assert torch.allclose(upfirdn2d(x, k, down=2, pad=(2, 1)), same[..., ::2, ::2], atol=1e-6)


def test_upfirdn2d_double_backward():
    x = torch.randn(1, 2, 6, 6, requires_grad=True)
    y = upfirdn2d(x, make_kernel((1, 3, 3, 1)) * 4, up=2, pad=(2, 1))
    (g,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
    g.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_demodulation_gives_unit_variance():
    torch.manual_seed(0)
    conv = ModulatedConv2d(64, 64, 3, style_dim=16)
    x = torch.randn(8, 64, 12, 12)
    with torch.no_grad():
        out = conv(x, torch.randn(8, 16) * 3)  # large, uneven styles: demodulation must undo them
    std = out[..., 1:-1, 1:-1].std(dim=(1, 2, 3))
    assert torch.allclose(std, torch.ones(8), atol=0.1), std
    plain = ModulatedConv2d(64, 64, 3, style_dim=16, demodulate=False)
    with torch.no_grad():
        assert plain(x, torch.randn(8, 16) * 3)[..., 1:-1, 1:-1].std() > 1.5


def test_modulated_upsample_shape():
    conv = ModulatedConv2d(8, 4, 3, style_dim=16, upsample=True)
    assert conv(torch.randn(2, 8, 5, 5), torch.randn(2, 16)).shape == (2, 4, 10, 10)


def test_equal_linear_runtime_scaling():
    lin = EqualLinear(256, 64, bias_init=1.0, lr_mul=0.01)
    assert lin.weight.std() > 50  # stored large, scaled down at run time
    eff = lin.weight * lin.scale
    assert 0.8 / 16 < eff.std() < 1.2 / 16
    assert torch.allclose(lin(torch.zeros(1, 256)), torch.ones(1, 64))


def test_minibatch_std_groups_and_channel():
    mb = MinibatchStd(group_size=4)
    x = torch.randn(6, 5, 4, 4)  # 6 not divisible by 4 -> groups of 3
    out = mb(x)
    assert out.shape == (6, 6, 4, 4)
    same = mb(torch.ones(4, 5, 4, 4))[:, -1]
    assert same.max() < 1e-3 and out[:, -1].min() > 0.3


def test_count_params():
    assert count_params(EqualLinear(3, 2)) == 8
