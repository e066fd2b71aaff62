"""The GAN basics tutorial's MLP GAN (seed 003), made class-conditional; the lab's teaching model.

G: cat(z, embed(y)) -> [Linear -> LeakyReLU(0.2) -> BatchNorm1d] per hidden size -> Linear -> tanh,
reshaped to (3, res, res). D: cat(flattened image, embed(y)) -> [Linear -> LeakyReLU(0.2) -> Dropout]
per hidden size -> Linear -> one logit. The tutorial's final Sigmoid + BCELoss becomes a logit + BCE
with logits (engine.losses.d_loss_bce / g_loss_nonsaturating): the same loss, without the overflow of
log(sigmoid) once D is confident.

The conditioning is ours (the tutorial is unconditional): the conditional-GAN recipe of Mirza &
Osindero 2014, a label embedding concatenated to the input of each network.

BatchNorm momentum: the tutorial's PyTorch code writes BatchNorm1d(momentum=0.8), a literal port of its
Keras BatchNormalization(momentum=0.8). The two mean opposite things: Keras keeps 0.8 of the running
statistics per step, PyTorch keeps 0.2 (its momentum is the weight of the new batch). `bn_momentum` is
in PyTorch's sense; 0.2 is what the Keras original meant. It only matters in eval mode (G_ema, samples).

Sizes: the last layer of G has hidden[-1] * 3 * res^2 weights (512 hidden: 1.6 M at 32 px, 25 M at
128 px, 100 M at 256 px); the model is for 16-64 px, where it trains in seconds on a CPU.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from engine.config import ConfigError
from engine.models.ops import count_params

__all__ = ["Generator", "Discriminator", "count_params", "generator_kwargs", "discriminator_kwargs"]


def _check(res: int, num_classes: int, hidden, name: str) -> None:
    if not (isinstance(res, int) and 8 <= res <= 256 and res & (res - 1) == 0):
        raise ConfigError(f"config field 'res' must be a power of two between 8 and 256 for mlp_gan "
                          f"(got {res!r})")
    if not (isinstance(num_classes, int) and num_classes >= 1):
        raise ConfigError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    if not hidden or any(int(h) < 1 for h in hidden):
        raise ConfigError(f"config field '{name}' needs at least one hidden size >= 1 (got {list(hidden)!r})")


class Generator(nn.Module):
    """Conditional MLP generator: z (N, z_dim), y (N,) -> images (N, 3, res, res) in [-1, 1].

    Args:
        res: output resolution (power of two, 8..256); num_classes: labels y in [0, num_classes).
        z_dim: latent size (tutorial: 100); embed_dim: class-embedding size concatenated to z.
        g_hidden: hidden layer sizes (tutorial: 128, 256, 512).
        bn_momentum: BatchNorm1d momentum in PyTorch's sense (see the module docstring).
    """

    def __init__(self, res: int, num_classes: int, z_dim: int = 100, embed_dim: int = 16,
                 g_hidden=(128, 256, 512), bn_momentum: float = 0.2):
        super().__init__()
        _check(res, num_classes, g_hidden, "g_hidden")
        g_hidden = [int(h) for h in g_hidden]
        self.init_kwargs = dict(res=res, num_classes=num_classes, z_dim=z_dim, embed_dim=embed_dim,
                                g_hidden=g_hidden, bn_momentum=float(bn_momentum))
        self.res, self.num_classes, self.z_dim = res, num_classes, z_dim
        self.embed = nn.Embedding(num_classes, embed_dim)
        layers, prev = [], z_dim + embed_dim
        for h in g_hidden:  # the tutorial's order: Linear, LeakyReLU, then BatchNorm
            layers += [nn.Linear(prev, h), nn.LeakyReLU(0.2), nn.BatchNorm1d(h, momentum=bn_momentum)]
            prev = h
        layers += [nn.Linear(prev, 3 * res * res), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        x = self.net(torch.cat([z, self.embed(y).to(z.dtype)], dim=1))
        return x.view(-1, 3, self.res, self.res)


class Discriminator(nn.Module):
    """Conditional MLP discriminator: img (N, 3, res, res), y (N,) -> logits (N,).

    Args:
        res, num_classes, embed_dim: as for Generator (D has its own embedding).
        d_hidden: hidden layer sizes (tutorial: 512, 256).
        dropout: dropout after each hidden layer (the tutorial's advice to slow a too-strong D; 0 = none).
        d_noise: std of Gaussian noise added to D's input in train mode (instance noise, Sonderby et
            al. 2017: blurs the real/fake supports so a strong D still gives G gradients); 0 = none.
    """

    def __init__(self, res: int, num_classes: int, embed_dim: int = 16, d_hidden=(512, 256),
                 dropout: float = 0.3, d_noise: float = 0.0):
        super().__init__()
        _check(res, num_classes, d_hidden, "d_hidden")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"config field 'dropout' must be between 0.0 and 1.0 (exclusive) (got {dropout!r})")
        d_hidden = [int(h) for h in d_hidden]
        self.init_kwargs = dict(res=res, num_classes=num_classes, embed_dim=embed_dim, d_hidden=d_hidden,
                                dropout=float(dropout), d_noise=float(d_noise))
        self.res, self.num_classes, self.d_noise = res, num_classes, float(d_noise)
        self.embed = nn.Embedding(num_classes, embed_dim)
        layers, prev = [], 3 * res * res + embed_dim
        for h in d_hidden:
            layers += [nn.Linear(prev, h), nn.LeakyReLU(0.2)] + ([nn.Dropout(dropout)] if dropout > 0 else [])
            prev = h
        layers.append(nn.Linear(prev, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, img: Tensor, y: Tensor) -> Tensor:
        x = img.flatten(1)
        if self.training and self.d_noise > 0:
            x = x + self.d_noise * torch.randn_like(x)
        return self.net(torch.cat([x, self.embed(y).to(x.dtype)], dim=1)).squeeze(1)


def generator_kwargs(cfg: dict, res: int, num_classes: int) -> dict:
    """Generator arguments from an MLPGANConfig dict and the run's res (trainer and loader share it)."""
    return dict(res=int(res), num_classes=int(num_classes), z_dim=int(cfg["z_dim"]),
                embed_dim=int(cfg["embed_dim"]), g_hidden=[int(h) for h in cfg["g_hidden"]],
                bn_momentum=float(cfg["bn_momentum"]))


def discriminator_kwargs(cfg: dict, res: int, num_classes: int) -> dict:
    """Discriminator arguments from an MLPGANConfig dict and the run's res."""
    return dict(res=int(res), num_classes=int(num_classes), embed_dim=int(cfg["embed_dim"]),
                d_hidden=[int(h) for h in cfg["d_hidden"]], dropout=float(cfg["dropout"]),
                d_noise=float(cfg["d_noise"]))
