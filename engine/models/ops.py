"""Building blocks for the StyleGAN2-lite models, pure PyTorch (no compiled extensions).

Everything here is autograd-friendly to second order (R1 and path-length penalties differentiate
through it twice), free of data-dependent Python control flow (torch.compile) and accepts
channels_last inputs.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _SpectralNorm

SQRT2 = math.sqrt(2.0)


def count_params(m: nn.Module) -> int:
    """Number of elements in all parameters of `m` (trainable or not)."""
    return sum(p.numel() for p in m.parameters())


def lrelu(x: torch.Tensor) -> torch.Tensor:
    # sqrt(2) restores the variance that leaky ReLU (slope 0.2) removes, so equalised-LR layers keep
    # unit-variance activations at init.
    return F.leaky_relu(x, 0.2) * SQRT2


# ---------------------------------------------------------------- FIR resampling (upfirdn2d)

def make_kernel(k) -> torch.Tensor:
    """2-D FIR kernel from a 1-D (separable) or 2-D list, normalised to sum 1."""
    k = torch.as_tensor(k, dtype=torch.float32)
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    return k / k.sum()


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1,
              pad: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Upsample by zero insertion, pad (negative = crop), convolve with `kernel`, keep every `down`-th pixel.

    Output size per axis: (H * up + pad0 + pad1 - k + 1) // down (rounded up).
    Applied to every channel independently (depthwise conv), so the cost is small next to the convs.
    """
    n, c, h, w = x.shape
    if up > 1:
        # each pixel followed by (up - 1) zeros along both axes
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, (0, up - 1, 0, 0, 0, up - 1))
        x = x.reshape(n, c, h * up, w * up)
    x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
    # conv2d is a correlation; flip to get a true convolution (matters only for asymmetric kernels)
    k = kernel.flip([0, 1]).to(x.dtype)[None, None].repeat(c, 1, 1, 1)
    return F.conv2d(x, k, stride=down, groups=c)


class Blur(nn.Module):
    """FIR low-pass filter with explicit padding; `up` scales the kernel to keep the DC gain after
    zero-insertion upsampling (zeros dilute the signal by up**2)."""

    def __init__(self, kernel, pad: tuple[int, int], up: int = 1):
        super().__init__()
        self.register_buffer("kernel", make_kernel(kernel) * up ** 2, persistent=False)
        self.pad = tuple(pad)

    def forward(self, x):
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """2x (or `factor`x) FIR upsampling, output exactly factor * input size."""

    def __init__(self, kernel, factor: int = 2):
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_kernel(kernel) * factor ** 2, persistent=False)
        p = self.kernel.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x):
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class Downsample(nn.Module):
    """FIR-filtered `factor`x downsampling, output exactly input size / factor."""

    def __init__(self, kernel, factor: int = 2):
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_kernel(kernel), persistent=False)
        p = self.kernel.shape[0] - factor
        self.pad = ((p + 1) // 2, p // 2)

    def forward(self, x):
        return upfirdn2d(x, self.kernel, down=self.factor, pad=self.pad)


# ---------------------------------------------------------------- equalised learning rate

class PixelNorm(nn.Module):
    """Normalise each vector to unit second moment (mapping-network input)."""

    def forward(self, x):
        return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate: weights stored N(0, 1/lr_mul^2) and scaled at run
    time, so Adam's per-parameter step is the same relative size for every layer; `lr_mul` < 1
    slows a layer down (mapping network)."""

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True, bias_init: float = 0.0,
                 lr_mul: float = 1.0, activation: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), bias_init / lr_mul)) if bias else None
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x):
        b = self.bias * self.lr_mul if self.bias is not None else None
        x = F.linear(x, self.weight * self.scale, b)
        return lrelu(x) if self.activation else x

    def extra_repr(self):
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, lr_mul={self.lr_mul}"


# ---------------------------------------------------------------- generator blocks

class ModulatedConv2d(nn.Module):
    """Style-modulated conv with optional weight demodulation and blurred 2x upsampling.

    Uses the per-sample scaling form (x * s -> shared-weight conv -> * d) rather than a grouped conv
    with per-sample weights: it is mathematically identical for demodulation, keeps one ordinary conv
    (fast with channels_last / autocast, compiles cleanly) and does not grow weights with the batch.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, style_dim: int,
                 demodulate: bool = True, upsample: bool = False, blur_kernel=(1, 3, 3, 1)):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel_size, kernel_size))
        self.scale = 1 / math.sqrt(in_ch * kernel_size ** 2)
        # bias 1: styles start around 1, so modulation initially leaves the conv unchanged
        self.modulation = EqualLinear(style_dim, in_ch, bias_init=1.0)
        self.demodulate, self.upsample = demodulate, upsample
        self.padding = kernel_size // 2
        if upsample:
            # transposed conv (stride 2) gives 2H + k - 2 pixels; the blur crops back to exactly 2H
            p = (len(blur_kernel) - 2) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + 1, p // 2 + 1), up=2)

    def forward(self, x, style):
        s = self.modulation(style)                                   # (N, in)
        w = self.weight * self.scale                                 # (out, in, k, k)
        x = x * s[:, :, None, None].to(x.dtype)
        if self.upsample:
            x = F.conv_transpose2d(x, w.transpose(0, 1).to(x.dtype), stride=2)
            x = self.blur(x)
        else:
            x = F.conv2d(x, w.to(x.dtype), padding=self.padding)
        if self.demodulate:
            # ||w * s||^2 over (in, k, k) per (sample, out) = (s^2) @ sum_k(w^2)^T; rescales each output
            # channel to unit variance for unit-variance input without building per-sample weights.
            d = torch.rsqrt(s.square() @ w.square().sum(dim=(2, 3)).t() + 1e-8)   # (N, out)
            x = x * d[:, :, None, None].to(x.dtype)
        return x


class NoiseInjection(nn.Module):
    """Adds per-pixel noise scaled by a learned strength, initialised at 0 (noise is off until G
    learns to use it)."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x, noise):
        return x + self.weight.to(x.dtype) * noise.to(x.dtype)


class StyledConv(nn.Module):
    """ModulatedConv2d + noise + bias + leaky ReLU; holds a fixed noise map for noise_mode='const'."""

    def __init__(self, in_ch, out_ch, kernel_size, style_dim, res: int, upsample=False,
                 blur_kernel=(1, 3, 3, 1)):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, kernel_size, style_dim, upsample=upsample,
                                    blur_kernel=blur_kernel)
        self.noise = NoiseInjection()
        self.bias = nn.Parameter(torch.zeros(out_ch))
        # saved with the weights so an exported G renders the same 'const' images after a reload
        self.register_buffer("noise_const", torch.randn(1, 1, res, res))

    def forward(self, x, style, noise_mode: str = "random", noise_strength: float = 1.0):
        x = self.conv(x, style)
        if noise_mode == "random":
            n, _, h, w = x.shape
            x = self.noise(x, torch.randn(n, 1, h, w, device=x.device, dtype=x.dtype) * noise_strength)
        elif noise_mode == "const":
            x = self.noise(x, self.noise_const * noise_strength)
        return lrelu(x + self.bias[None, :, None, None].to(x.dtype))


class ToRGB(nn.Module):
    """1x1 modulated conv to RGB (no demodulation) added to the FIR-upsampled skip image."""

    def __init__(self, in_ch, style_dim, upsample=True, blur_kernel=(1, 3, 3, 1)):
        super().__init__()
        self.upsample = Upsample(blur_kernel) if upsample else None
        self.conv = ModulatedConv2d(in_ch, 3, 1, style_dim, demodulate=False)
        # Start near grey: at N(0, 1) the summed skip outputs have std ~1-2 (growing with depth), so a
        # +-0.9 output clamp would saturate half the pixels at step 0 and trip the saturation watchdog.
        with torch.no_grad():
            self.conv.weight.mul_(0.1)
        self.bias = nn.Parameter(torch.zeros(3))

    def forward(self, x, style, skip=None):
        out = self.conv(x, style) + self.bias[None, :, None, None].to(x.dtype)
        if skip is not None:
            out = out + self.upsample(skip)
        return out


class ConstantInput(nn.Module):
    """Learned 4x4 input tensor, shared by all samples."""

    def __init__(self, channels: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, n: int):
        return self.input.expand(n, -1, -1, -1)


class MappingNetwork(nn.Module):
    """z, y -> w: zc = z + embed(y), second-moment normalisation, n_mlp x (EqualLinear + lrelu)."""

    def __init__(self, z_dim, w_dim, num_classes, n_mlp=8, lr_mul=0.01):
        super().__init__()
        self.embed = nn.Embedding(num_classes, z_dim)
        nn.init.normal_(self.embed.weight)  # same scale as z, so class and noise carry equal weight
        self.norm = PixelNorm()
        dims = [z_dim] + [w_dim] * n_mlp
        self.layers = nn.Sequential(*[EqualLinear(dims[i], dims[i + 1], lr_mul=lr_mul, activation=True)
                                      for i in range(n_mlp)])

    def forward(self, z, y):
        return self.layers(self.norm(z + self.embed(y)))


# ---------------------------------------------------------------- discriminator blocks

LABELMAP_MAX = 16  # the label map is learned at most 16x16, then upsampled


class LabelMap(nn.Module):
    """Learned per-class map (N, 1, res, res): embedding -> linear to an m x m map (m <= 16) -> upsampled;
    a D concatenates it to the image as a fourth input channel (`d_cond` labelmap, dcgan and stylegan2).

    The dcgan review's fix of the seed's nn.Embedding(num_classes, res * res): a small embedding and a
    projection to a coarse map, which a class-wide cue does not need finer than 16x16."""

    def __init__(self, num_classes: int, embed_dim: int, res: int):
        super().__init__()
        self.res, self.m = res, min(res, LABELMAP_MAX)
        self.embed = nn.Embedding(num_classes, embed_dim)
        self.proj = nn.Linear(embed_dim, self.m * self.m)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        lmap = F.leaky_relu(self.proj(self.embed(y)), 0.2).view(-1, 1, self.m, self.m)
        return F.interpolate(lmap, size=(self.res, self.res), mode="nearest") if self.m < self.res else lmap


class SpectralNorm(_SpectralNorm):
    """torch's spectral-norm parametrization with a forward that never writes its buffers.

    torch's own forward runs the power iteration in place on `_u`/`_v` on every train-mode call. Under
    torch.compile that in-place update becomes part of the graph and the backward of an earlier D call
    in the same step (fake, then real) finds its saved vector modified ("modified by an inplace
    operation: [torch.FloatTensor [3]]", the from_rgb conv). Here forward only reads u and v, and
    the power iteration is a separate step, `power_iteration(model)`, which the trainer runs once per
    D update outside any compiled region, so eager and compiled training do exactly the same thing.
    Buffers and state_dict keys are torch's (`parametrizations.weight.0._u` ...), so checkpoints of
    either kind load into the other."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if weight.ndim == 1:
            return F.normalize(weight, dim=0, eps=self.eps)
        weight_mat = self._reshape_weight_to_matrix(weight)
        u = self._u.clone(memory_format=torch.contiguous_format)
        v = self._v.clone(memory_format=torch.contiguous_format)
        return weight / torch.vdot(u, torch.mv(weight_mat, v))

    @torch.no_grad()
    def iterate(self, weight: torch.Tensor) -> None:
        if weight.ndim > 1:
            self._power_method(self._reshape_weight_to_matrix(weight), self.n_power_iterations)


def sn(module: nn.Module) -> nn.Module:
    """Spectral normalisation of `module.weight` (parametrization API: u/v are buffers, works with
    double backward and torch.compile). u/v move only in `power_iteration`, never in forward."""
    parametrize.register_parametrization(module, "weight", SpectralNorm(module.weight))
    return module


@torch.no_grad()
def power_iteration(model: nn.Module) -> None:
    """One power-iteration step of every SpectralNorm in `model` (in place on u/v; call it outside
    compiled code, before the forwards of a D update, never between a forward and its backward)."""
    for m in model.modules():
        if parametrize.is_parametrized(m, "weight"):
            plist = m.parametrizations.weight
            for p in plist:
                if isinstance(p, SpectralNorm):
                    p.iterate(plist.original)


class DownConv(nn.Module):
    """Blur then strided conv (anti-aliased 2x downsampling), spectral-normalised."""

    def __init__(self, in_ch, out_ch, kernel_size, blur_kernel=(1, 3, 3, 1), bias=True):
        super().__init__()
        p = (len(blur_kernel) - 2) + (kernel_size - 1)
        self.blur = Blur(blur_kernel, pad=((p + 1) // 2, p // 2))
        self.conv = sn(nn.Conv2d(in_ch, out_ch, kernel_size, stride=2, bias=bias))

    def forward(self, x):
        return self.conv(self.blur(x))


class ResBlock(nn.Module):
    """D residual block: conv3x3 -> blurred stride-2 conv3x3, plus a blurred 1x1 skip; halves the size."""

    def __init__(self, in_ch, out_ch, blur_kernel=(1, 3, 3, 1)):
        super().__init__()
        self.conv1 = sn(nn.Conv2d(in_ch, in_ch, 3, padding=1))
        self.conv2 = DownConv(in_ch, out_ch, 3, blur_kernel)
        self.skip = DownConv(in_ch, out_ch, 1, blur_kernel, bias=False)

    def forward(self, x):
        out = self.conv2(lrelu(self.conv1(x)))
        # 1/sqrt(2) keeps the variance of the sum of two branches near that of one
        return (lrelu(out) + self.skip(x)) / SQRT2


class MinibatchStd(nn.Module):
    """Appends the mean std of features across a group of samples, so D can see low diversity."""

    def __init__(self, group_size: int = 4, num_channels: int = 1):
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x):
        n, c, h, w = x.shape
        # largest group <= group_size that divides the batch (shapes are static, so this compiles)
        g = min(self.group_size, n)
        while n % g:
            g -= 1
        f = self.num_channels
        y = x.reshape(g, n // g, f, c // f, h, w).float()
        y = (y - y.mean(dim=0)).square().mean(dim=0)
        y = (y + 1e-8).sqrt().mean(dim=(2, 3, 4))                   # (n/g, f)
        y = y.reshape(1, n // g, f, 1, 1).repeat(g, 1, 1, h, w).reshape(n, f, h, w)
        return torch.cat([x, y.to(x.dtype)], dim=1)
