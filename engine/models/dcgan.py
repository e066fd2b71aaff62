"""Conditional DCGAN baseline (seed 002 and its review's fixes, as options), pure PyTorch.

G: z and a small class embedding (128, never the res*res-wide embedding the review warns about) ->
4x4 -> doubling blocks (nearest upsample + conv, or transposed conv) with BatchNorm + ReLU -> tanh.
D: spectral-normalised strided convs with LeakyReLU(0.2) and no BatchNorm (the review: BatchNorm on
top of spectral norm fights it), class conditioning by one of three heads (`d_cond`):

- "projection" (default; Miyato & Koyama 2018): logit = linear(h) + <embed(y), h>, h the summed
  features of the last 4x4 block;
- "labelmap": a learned per-class map, concatenated to the image as a fourth input channel (the
  seed's own conditioning). The map is built at most 16x16 and upsampled, so it costs
  num_classes * embed_dim + embed_dim * 256 weights at any resolution instead of num_classes * res^2;
- "acgan" (Odena et al. 2017): an unconditional logit plus an auxiliary head of class logits, trained
  with cross-entropy on reals and fakes (engine.losses.acgan_class_loss).

Options: SAGAN self-attention at 32x32 (`attention`; below 64 px, at the largest feature map under
32x32: res/2), and a multi-scale D (`multiscale`: a second D of the same layout on the image
2x average-pooled). D returns a `DOut`: the logits are SUMMED over the scales, so a multi-scale D is
one critic whose verdict adds both scales' (every loss, `acc` and the gradient penalty read one logit
per image); `scale_logits` keeps the per-scale logits for a trainer that prefers one loss per scale
(pix2pixHD).

Widths: channels at an r x r map = min(base * res / (2 r), channel_max), base = g_channels or
d_channels: the DCGAN layout where the layer next to the image has `base` channels and each halving
of the size doubles them (seed: ngf ... ngf*32 at 256 px).

D uses engine.models.ops.sn: its power iteration runs in `power_iteration(D)`, which the trainer calls
once per D update (forward never writes the spectral-norm buffers; see ops.SpectralNorm).
Both models rebuild from `init_kwargs` (a JSON-safe dict), as the StyleGAN2 models do.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.config import DCGAN_D_CONDS, DCGAN_UPSAMPLES, ConfigError
from engine.models.ops import LabelMap, count_params, sn

__all__ = ["Generator", "Discriminator", "DOut", "SelfAttention", "count_params", "channels_at",
           "attention_res", "generator_kwargs", "discriminator_kwargs", "G_UPSAMPLES", "D_CONDS"]

G_UPSAMPLES = DCGAN_UPSAMPLES  # the choices live in engine.config (one list for CLI, UI and model)
D_CONDS = DCGAN_D_CONDS


def channels_at(r: int, res: int, base: int, channel_max: int) -> int:
    """Channels of an r x r feature map in a net for `res` px: min(base * res / (2 r), channel_max)."""
    return max(1, min(base * res // (2 * r), channel_max))


def attention_res(res: int) -> int:
    """Size of the feature map that gets self-attention: 32, or res/2 below 64 px (no 32x32 map there)."""
    return min(32, res // 2)


def _check(res: int, num_classes: int, name: str, value: str, allowed: tuple[str, ...], lo: int = 16):
    if not (isinstance(res, int) and lo <= res <= 256 and res & (res - 1) == 0):
        raise ConfigError(f"config field 'res' must be a power of two between {lo} and 256 for dcgan "
                          f"(got {res!r})")
    if not (isinstance(num_classes, int) and num_classes >= 1):
        raise ConfigError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    if value not in allowed:
        raise ConfigError(f"config field '{name}' must be one of: {', '.join(allowed)} (got {value!r})")


# ---------------------------------------------------------------- shared blocks

class SelfAttention(nn.Module):
    """SAGAN self-attention (Zhang et al. 2019): x + gamma * attention(x), gamma starting at 0.

    gamma = 0 at init makes the block the identity, so the net first learns local features and mixes
    in long-range ones as gamma grows. Plain matmul + softmax (not scaled_dot_product_attention): its
    fused kernels have no double backward, which the WGAN-GP penalty needs through D.
    """

    def __init__(self, ch: int, spectral: bool = False):
        super().__init__()
        wrap = sn if spectral else (lambda m: m)
        qk = max(1, ch // 8)
        self.query = wrap(nn.Conv2d(ch, qk, 1))
        self.key = wrap(nn.Conv2d(ch, qk, 1))
        self.value = wrap(nn.Conv2d(ch, ch, 1))
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        q = self.query(x).flatten(2)                                       # (N, C/8, HW)
        k = self.key(x).flatten(2)
        v = self.value(x).flatten(2)                                       # (N, C, HW)
        attn = torch.softmax(q.transpose(1, 2) @ k, dim=-1)               # (N, HW, HW), rows sum to 1
        out = (v @ attn.transpose(1, 2)).view(n, c, h, w)
        return x + self.gamma * out


def _up(in_ch: int, out_ch: int, mode: str, bias: bool) -> nn.Module:
    """2x upsampling layer. "upsample" (nearest + 3x3 conv) avoids the checkerboard artefacts of
    stride-2 transposed convs (Odena et al. 2016, "Deconvolution and Checkerboard Artifacts");
    "transpose" is the seed's ConvTranspose2d(4, 2, 1)."""
    if mode == "transpose":
        return nn.ConvTranspose2d(in_ch, out_ch, 4, 2, 1, bias=bias)
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=bias))


class UpBlock(nn.Module):
    """G block: 2x up -> BatchNorm -> ReLU (the conv has no bias: BatchNorm's shift replaces it)."""

    def __init__(self, in_ch: int, out_ch: int, mode: str):
        super().__init__()
        self.up = _up(in_ch, out_ch, mode, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.up(x)))


class DownBlock(nn.Module):
    """D block: spectral-norm conv 4x4 stride 2 -> LeakyReLU(0.2); halves the size, no BatchNorm."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = sn(nn.Conv2d(in_ch, out_ch, 4, 2, 1))

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(self.conv(x), 0.2)


def _dcgan_init(m: nn.Module) -> None:
    """DCGAN's init (Radford et al. 2016): conv weights N(0, 0.02), BatchNorm scale N(1, 0.02)."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


# ---------------------------------------------------------------- generator

class Generator(nn.Module):
    """Class-conditional DCGAN generator: cat(z, embed(y)) -> (N, 3, res, res) in [-1, 1].

    Args:
        res: output resolution, a power of two in [16, 256].
        num_classes: number of classes (labels y in [0, num_classes)).
        z_dim: latent size; embed_dim: class-embedding size concatenated to z (review: 128).
        g_channels, channel_max: widths, channels_at(r, res, g_channels, channel_max).
        g_upsample: "upsample" (nearest + conv) or "transpose" (transposed conv), see `_up`.
        attention: SAGAN self-attention after the block that makes the attention_res(res) map.
    BatchNorm makes a sample depend on its batch in train mode; sample from G_ema in eval mode, whose
    running statistics the EMA update copies from G (engine.train.ema.update_ema copies buffers).
    """

    def __init__(self, res: int, num_classes: int, z_dim: int = 100, embed_dim: int = 128,
                 g_channels: int = 64, channel_max: int = 512, g_upsample: str = "upsample",
                 attention: bool = False):
        super().__init__()
        _check(res, num_classes, "g_upsample", g_upsample, G_UPSAMPLES)
        self.init_kwargs = dict(res=res, num_classes=num_classes, z_dim=z_dim, embed_dim=embed_dim,
                                g_channels=g_channels, channel_max=channel_max, g_upsample=g_upsample,
                                attention=bool(attention))
        self.res, self.num_classes, self.z_dim = res, num_classes, z_dim
        ch = lambda r: channels_at(r, res, g_channels, channel_max)  # noqa: E731

        self.embed = nn.Embedding(num_classes, embed_dim)
        # 1x1 -> 4x4 as DCGAN does: a transposed conv on the latent is a dense layer to a 4x4 map
        self.input = nn.ConvTranspose2d(z_dim + embed_dim, ch(4), 4, 1, 0, bias=False)
        self.input_bn = nn.BatchNorm2d(ch(4))
        layers: list[nn.Module] = []
        for i in range(3, int(math.log2(res))):       # feature maps 8x8 ... res/2 x res/2
            r = 2 ** i
            layers.append(UpBlock(ch(r // 2), ch(r), g_upsample))
            if attention and r == attention_res(res):
                layers.append(SelfAttention(ch(r)))
        self.blocks = nn.Sequential(*layers)
        self.to_rgb = _up(ch(res // 2), 3, g_upsample, bias=True)  # the last doubling makes the image
        self.apply(_dcgan_init)

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        """z (N, z_dim), y (N,) int -> images (N, 3, res, res) in [-1, 1]."""
        h = torch.cat([z, self.embed(y).to(z.dtype)], dim=1)[:, :, None, None]
        x = F.relu(self.input_bn(self.input(h)))
        return torch.tanh(self.to_rgb(self.blocks(x)))


# ---------------------------------------------------------------- discriminator

class DOut(NamedTuple):
    """What the Discriminator returns.

    logits: (N,) adversarial logits, summed over the scales.
    class_logits: (N, num_classes) of the AC-GAN head (summed over the scales), else None.
    feats: every block's feature map (N, C, r, r), first scale then second (texture / feature matching).
    scale_logits: the per-scale adversarial logits, [(N,)] or [(N,), (N,)].
    """
    logits: Tensor
    class_logits: Tensor | None
    feats: list[Tensor]
    scale_logits: list[Tensor]


class ScaleD(nn.Module):
    """One scale of D: (label map) -> DownBlocks to 4x4 (attention at attention_res) -> sum pool -> heads."""

    def __init__(self, res: int, num_classes: int, d_channels: int, channel_max: int, d_cond: str,
                 embed_dim: int, attention: bool):
        super().__init__()
        self.d_cond = d_cond
        ch = lambda r: channels_at(r, res, d_channels, channel_max)  # noqa: E731
        self.label_map = LabelMap(num_classes, embed_dim, res) if d_cond == "labelmap" else None
        layers, in_ch = [], 3 + (d_cond == "labelmap")
        for i in range(int(math.log2(res)) - 1, 1, -1):  # maps res/2 ... 4
            r = 2 ** i
            layers.append(DownBlock(in_ch, ch(r)))
            if attention and r == attention_res(res):
                layers.append(SelfAttention(ch(r), spectral=True))
            in_ch = ch(r)
        self.blocks = nn.ModuleList(layers)
        self.out = sn(nn.Linear(ch(4), 1))
        self.embed = sn(nn.Embedding(num_classes, ch(4))) if d_cond == "projection" else None
        self.cls = sn(nn.Linear(ch(4), num_classes)) if d_cond == "acgan" else None

    def forward(self, img: Tensor, y: Tensor) -> tuple[Tensor, Tensor | None, list[Tensor]]:
        x = img
        if self.label_map is not None:
            x = torch.cat([x, self.label_map(y).to(x.dtype)], dim=1)
        feats = []
        for block in self.blocks:
            x = block(x)
            if isinstance(block, DownBlock):
                feats.append(x)
        h = x.sum(dim=(2, 3))  # global sum pooling (Miyato & Koyama), (N, ch(4))
        logits = self.out(h).squeeze(1)
        if self.embed is not None:
            logits = logits + (self.embed(y) * h).sum(dim=1)
        return logits, (self.cls(h) if self.cls is not None else None), feats


class Discriminator(nn.Module):
    """Class-conditional spectral-norm DCGAN discriminator: D(img, y) -> DOut (see the module docstring).

    Args:
        res, num_classes, embed_dim: as for Generator (embed_dim sizes the label map's embedding).
        d_channels, channel_max: widths, channels_at(r, res, d_channels, channel_max), per scale.
        d_cond: "projection" | "labelmap" | "acgan" class conditioning.
        attention: SAGAN self-attention (spectral-normalised) at attention_res of each scale.
        multiscale: add a second D on the image 2x average-pooled; logits summed.
    """

    def __init__(self, res: int, num_classes: int, d_channels: int = 64, channel_max: int = 512,
                 d_cond: str = "projection", embed_dim: int = 128, attention: bool = False,
                 multiscale: bool = False):
        super().__init__()
        _check(res, num_classes, "d_cond", d_cond, D_CONDS)
        self.init_kwargs = dict(res=res, num_classes=num_classes, d_channels=d_channels,
                                channel_max=channel_max, d_cond=d_cond, embed_dim=embed_dim,
                                attention=bool(attention), multiscale=bool(multiscale))
        self.res, self.num_classes, self.d_cond = res, num_classes, d_cond
        sizes = [res, res // 2] if multiscale else [res]
        self.scales = nn.ModuleList(ScaleD(r, num_classes, d_channels, channel_max, d_cond, embed_dim,
                                           attention) for r in sizes)

    def forward(self, img: Tensor, y: Tensor) -> DOut:
        """img (N, 3, res, res) in [-1, 1], y (N,) int -> DOut."""
        scale_logits, class_logits, feats = [], [], []
        x = img
        for i, D in enumerate(self.scales):
            if i:  # the review's downsampler; count_include_pad=False keeps the border unbiased
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            logit, cls, f = D(x, y)
            scale_logits.append(logit)
            feats.extend(f)
            if cls is not None:
                class_logits.append(cls)
        logits = scale_logits[0] if len(scale_logits) == 1 else torch.stack(scale_logits).sum(0)
        cls_sum = None
        if class_logits:
            cls_sum = class_logits[0] if len(class_logits) == 1 else torch.stack(class_logits).sum(0)
        return DOut(logits, cls_sum, feats, scale_logits)


# ---------------------------------------------------------------- from a config

def generator_kwargs(cfg: dict, res: int, num_classes: int) -> dict:
    """Generator arguments from a DCGANConfig dict and the run's res: the one mapping the trainer and the
    checkpoint loader share, so a run's checkpoints rebuild the network they were trained with."""
    return dict(res=int(res), num_classes=int(num_classes), z_dim=int(cfg["z_dim"]),
                embed_dim=int(cfg["embed_dim"]), g_channels=int(cfg["g_channels"]),
                channel_max=int(cfg["channel_max"]), g_upsample=str(cfg["g_upsample"]),
                attention=bool(cfg["attention"]))


def discriminator_kwargs(cfg: dict, res: int, num_classes: int) -> dict:
    """Discriminator arguments from a DCGANConfig dict and the run's res."""
    return dict(res=int(res), num_classes=int(num_classes), d_channels=int(cfg["d_channels"]),
                channel_max=int(cfg["channel_max"]), d_cond=str(cfg["d_cond"]),
                embed_dim=int(cfg["embed_dim"]), attention=bool(cfg["attention"]),
                multiscale=bool(cfg["multiscale"]))
