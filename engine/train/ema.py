"""Exponential moving average of the generator's weights (G_ema), the model every sample comes from.

The decay is expressed as a half-life in images so that it means the same at any batch size: after
`half_life` images the old weights count for one half. With a ramp-up, the half-life is capped at a
fraction of the images shown so far; otherwise a short run's G_ema would still be mostly the random
initial weights (the same reason stylegan2-ada has `ema_rampup`).
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn


def ema_half_life_img(batch: int, ema_kimg: float, ema_beta: float) -> float:
    """Half-life in images: `ema_kimg` * 1000 when set, else the one a per-step `ema_beta` implies."""
    if ema_kimg > 0:
        return ema_kimg * 1000.0
    if ema_beta <= 0:
        return 0.0
    return batch * math.log(0.5) / math.log(ema_beta)


def ema_decay(batch: int, nimg: int, *, ema_kimg: float = 0.0, ema_beta: float = 0.9995,
              rampup: float = 0.05) -> float:
    """Per-step decay beta of G_ema after `nimg` images were shown (beta 0 = plain copy)."""
    half_life = ema_half_life_img(batch, ema_kimg, ema_beta)
    if rampup > 0:
        half_life = min(half_life, nimg * rampup)
    if half_life <= 0:
        return 0.0
    return 0.5 ** (batch / half_life)


def make_ema(model: nn.Module) -> nn.Module:
    """A frozen copy of `model` in eval mode."""
    ema = copy.deepcopy(model).eval()
    ema.requires_grad_(False)
    return ema


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, beta: float) -> None:
    """ema <- beta * ema + (1 - beta) * model for parameters; buffers (e.g. w_avg) are copied."""
    ema_p = [p for p in ema.parameters()]
    src_p = [p.detach() for p in model.parameters()]
    if ema_p:
        torch._foreach_lerp_(ema_p, src_p, 1.0 - beta)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)
