"""Conditional StyleGAN2-lite: generator and projection discriminator (pure PyTorch).

Both models are rebuilt from a plain dict of their constructor kwargs (`G.init_kwargs`, JSON-safe),
which the trainer stores next to the safetensors export:  `Generator(**json.load(f))`.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from engine.config import STYLEGAN2_D_CONDS, ConfigError
from engine.models.ops import (ConstantInput, LabelMap, MappingNetwork, MinibatchStd, ResBlock, StyledConv,
                               ToRGB, count_params, lrelu, sn)

__all__ = ["Generator", "Discriminator", "count_params", "channels_at"]

NOISE_MODES = ("random", "const", "none")


def channels_at(res: int, channel_base: int, channel_max: int) -> int:
    """Feature channels at a resolution: min(channel_base // res, channel_max), at least 1."""
    return max(1, min(channel_base // res, channel_max))


def _check_res(res: int) -> int:
    if not (isinstance(res, int) and 8 <= res <= 256 and res & (res - 1) == 0):
        raise ConfigError(f"res must be a power of two between 8 and 256, got {res!r}")
    return int(math.log2(res))


def _check_classes(num_classes: int) -> None:
    if not (isinstance(num_classes, int) and num_classes >= 1):
        raise ConfigError(f"num_classes must be an integer >= 1, got {num_classes!r}")


# ---------------------------------------------------------------- generator

class Generator(nn.Module):
    """Class-conditional StyleGAN2 generator.

    Args:
        res: output resolution, a power of two in [8, 256].
        num_classes: number of classes (labels y in [0, num_classes)).
        z_dim, w_dim, n_mlp, lr_mlp: latent sizes, mapping depth and its learning-rate multiplier.
        channel_base, channel_max: channels(res) = min(channel_base // res, channel_max).
        clamp: output clamped to [-clamp, clamp]; 0 or None disables the clamp.
        blur_kernel: 1-D FIR taps used for all up-sampling.

    Attributes:
        num_ws: number of per-layer w inputs (2 * log2(res) - 2).
        layer_names: what each w drives, e.g. "4x4 conv", "8x8 up", "8x8 conv", ..., "RxR rgb"
            (the toRGB of a resolution shares the w of the next resolution's "up" layer).
        w_avg: (num_classes, w_dim) buffer, per-class running mean of w (truncation target).
    """

    def __init__(self, res: int, num_classes: int, z_dim=512, w_dim=512, n_mlp=8, channel_base=16384,
                 channel_max=512, lr_mlp=0.01, clamp=0.9, blur_kernel=(1, 3, 3, 1)):
        super().__init__()
        log2 = _check_res(res)
        _check_classes(num_classes)
        blur_kernel = tuple(blur_kernel)
        self.init_kwargs = dict(res=res, num_classes=num_classes, z_dim=z_dim, w_dim=w_dim, n_mlp=n_mlp,
                                channel_base=channel_base, channel_max=channel_max, lr_mlp=lr_mlp,
                                clamp=clamp, blur_kernel=list(blur_kernel))
        self.res, self.num_classes, self.z_dim, self.w_dim = res, num_classes, z_dim, w_dim
        self.clamp = float(clamp) if clamp else 0.0
        ch = lambda r: channels_at(r, channel_base, channel_max)  # noqa: E731

        self.mapping_net = MappingNetwork(z_dim, w_dim, num_classes, n_mlp, lr_mlp)
        self.input = ConstantInput(ch(4))
        self.conv1 = StyledConv(ch(4), ch(4), 3, w_dim, res=4, blur_kernel=blur_kernel)
        self.to_rgb1 = ToRGB(ch(4), w_dim, upsample=False)
        self.convs, self.to_rgbs = nn.ModuleList(), nn.ModuleList()
        names = ["4x4 conv"]
        for i in range(3, log2 + 1):
            r = 2 ** i
            self.convs.append(StyledConv(ch(r // 2), ch(r), 3, w_dim, res=r, upsample=True,
                                         blur_kernel=blur_kernel))
            self.convs.append(StyledConv(ch(r), ch(r), 3, w_dim, res=r, blur_kernel=blur_kernel))
            self.to_rgbs.append(ToRGB(ch(r), w_dim, blur_kernel=blur_kernel))
            names += [f"{r}x{r} up", f"{r}x{r} conv"]
        self.layer_names = names + [f"{res}x{res} rgb"]
        self.num_ws = len(self.layer_names)                          # 2 * log2 - 2
        self.register_buffer("w_avg", torch.zeros(num_classes, w_dim))

    # -- latent space

    def mapping(self, z, y, truncation: float = 1.0):
        """z (N, z_dim), y (N,) int -> w (N, w_dim); truncation psi pulls w toward w_avg[y]."""
        w = self.mapping_net(z, y)
        return self.truncate(w, y, truncation) if truncation != 1 else w

    def truncate(self, w, y, psi: float):
        """w_avg[y] + psi * (w - w_avg[y]); w may be (N, w_dim) or (N, num_ws, w_dim)."""
        avg = self.w_avg[y].to(w.dtype)
        if w.ndim == 3:
            avg = avg[:, None]
        return avg.lerp(w, psi)

    @torch.no_grad()
    def update_w_avg(self, w, y, beta: float = 0.995) -> None:
        """Per-class EMA of w; classes absent from y keep their average (no host sync, no branches).

        A class's first batch sets its average outright instead of moving it 1 - beta of the way from
        the zero it was built with: an EMA started at 0 is still beta**t of the way to 0 after t
        updates (about 27 % after a default 5-kimg run), so truncation psi < 1 pulled toward a
        shrunken mean. "Never updated" is "the row is exactly zero", which needs no extra state, so
        exports and checkpoints keep their keys; a real mean of w is never exactly zero."""
        w = w.detach().float()
        if w.ndim == 3:
            w = w[:, 0]
        sums = torch.zeros_like(self.w_avg).index_add_(0, y, w)
        counts = torch.zeros(self.num_classes, device=w.device).index_add_(0, y, torch.ones_like(w[:, 0]))
        mean = sums / counts.clamp(min=1)[:, None]
        fresh = (self.w_avg == 0).all(dim=1, keepdim=True)
        new = torch.where(fresh, mean, self.w_avg.lerp(mean, 1 - beta))
        self.w_avg.copy_(torch.where(counts[:, None] > 0, new, self.w_avg))

    def mix_ws(self, w, w2, mixing_prob: float):
        """Per-sample style mixing: with prob `mixing_prob`, layers >= a random cutoff in [1, num_ws)
        take w2. Done with a mask (no per-sample Python loop) so it compiles and stays on device."""
        n, dev = w.shape[0], w.device
        cutoff = torch.randint(1, self.num_ws, (n,), device=dev)
        cutoff = torch.where(torch.rand(n, device=dev) < mixing_prob, cutoff, self.num_ws)
        use2 = torch.arange(self.num_ws, device=dev)[None, :] >= cutoff[:, None]   # (N, num_ws)
        return torch.where(use2[:, :, None], w2[:, None], w[:, None])

    # -- image synthesis

    def synthesis(self, ws, noise_mode: str = "random", noise_strength: float = 1.0):
        """ws (N, num_ws, w_dim) -> image (N, 3, res, res), clamped to [-clamp, clamp].

        noise_mode: "random" (fresh noise), "const" (fixed per-layer maps saved with the weights)
        or "none"; noise_strength scales the noise (the UI slider)."""
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        kw = dict(noise_mode=noise_mode, noise_strength=noise_strength)
        x = self.input(ws.shape[0])
        x = self.conv1(x, ws[:, 0], **kw)
        skip = self.to_rgb1(x, ws[:, 1])
        i = 1
        for up, conv, to_rgb in zip(self.convs[::2], self.convs[1::2], self.to_rgbs):
            x = up(x, ws[:, i], **kw)
            x = conv(x, ws[:, i + 1], **kw)
            skip = to_rgb(x, ws[:, i + 2], skip)
            i += 2
        return skip.clamp(-self.clamp, self.clamp) if self.clamp else skip

    def forward(self, z, y, *, z2=None, mixing_prob: float = 0.0, truncation: float = 1.0, ws=None,
                noise_mode: str = "random", noise_strength: float = 1.0, return_ws: bool = False):
        """Generate images of class y.

        Args:
            z: (N, z_dim) latents (ignored when `ws` is given; may be None then).
            y: (N,) int64 labels.
            z2: second latents for intra-class style mixing (same y); drawn here when None.
            mixing_prob: per-sample probability of mixing (training uses 0.9).
            truncation: psi toward the per-class w average (applied to w and w2).
            ws: (N, num_ws, w_dim) explicit per-layer w, used verbatim (no mapping, mixing or
                truncation: build them with `mapping(z, y, truncation)`).
            noise_mode, noise_strength: see `synthesis`.
            return_ws: also return the ws that drove synthesis (for path-length regularisation).
        Returns:
            img (N, 3, res, res) in [-clamp, clamp], or (img, ws) with return_ws.
        """
        if ws is None:
            w = self.mapping(z, y, truncation)
            if mixing_prob > 0:
                w2 = self.mapping(torch.randn_like(z) if z2 is None else z2, y, truncation)
                ws = self.mix_ws(w, w2, mixing_prob)
            else:
                ws = w[:, None].expand(-1, self.num_ws, -1)
        img = self.synthesis(ws, noise_mode=noise_mode, noise_strength=noise_strength)
        return (img, ws) if return_ws else img


# ---------------------------------------------------------------- discriminator

class Discriminator(nn.Module):
    """Residual spectral-norm discriminator with a class projection head and an optional domain head.

    logit = base + <embed(y), h> + alpha * domain_head(domain_features(img)).

    Args:
        res, num_classes, channel_base, channel_max, blur_kernel: as for Generator.
        mbstd_group: minibatch-std group size (reduced to a divisor of the batch when needed).
        d_cond: "projection" (the spec's: the class enters only at the head, <embed(y), h>) or
            "labelmap" (also a learned per-class map as a fourth input channel, ops.LabelMap, so every
            block sees the class from the first conv on: on the demo set it makes class-distinct
            patches in far fewer steps, see the demo preset).
        domain_features: optional FROZEN module (attribute `num_features`, input NCHW in [-1, 1] of
            any size, output (N, num_features)); only the linear head on top of it is trained.
    """

    def __init__(self, res: int, num_classes: int, channel_base=16384, channel_max=512, mbstd_group=4,
                 domain_features: nn.Module | None = None, blur_kernel=(1, 3, 3, 1), d_cond="projection"):
        super().__init__()
        log2 = _check_res(res)
        _check_classes(num_classes)
        if d_cond not in STYLEGAN2_D_CONDS:
            raise ConfigError(f"config field 'd_cond' must be one of {', '.join(STYLEGAN2_D_CONDS)}, "
                              f"got {d_cond!r}")
        blur_kernel = tuple(blur_kernel)
        self.init_kwargs = dict(res=res, num_classes=num_classes, channel_base=channel_base,
                                channel_max=channel_max, mbstd_group=mbstd_group,
                                blur_kernel=list(blur_kernel), d_cond=d_cond)
        self.res, self.num_classes, self.d_cond = res, num_classes, d_cond
        ch = lambda r: channels_at(r, channel_base, channel_max)  # noqa: E731

        self.label_map = LabelMap(num_classes, ch(4), res) if d_cond == "labelmap" else None
        self.from_rgb = sn(nn.Conv2d(3 + (self.label_map is not None), ch(res), 1))
        self.blocks = nn.ModuleList(ResBlock(ch(2 ** i), ch(2 ** (i - 1)), blur_kernel)
                                    for i in range(log2, 2, -1))
        self.mbstd = MinibatchStd(mbstd_group)
        self.final_conv = sn(nn.Conv2d(ch(4) + 1, ch(4), 3, padding=1))
        self.final_linear = sn(nn.Linear(ch(4) * 16, ch(4)))
        self.out = sn(nn.Linear(ch(4), 1))
        self.embed = sn(nn.Embedding(num_classes, ch(4)))            # projection head (Miyato & Koyama)

        # The frozen extractor is deliberately NOT a registered submodule: D.parameters(), D.state_dict(),
        # D.train() and a trainer's `for p in D.parameters(): p.requires_grad = True` never touch it, so
        # it cannot be unfrozen, optimised or saved into every checkpoint. `_apply` still moves/casts it.
        self._domain = [] if domain_features is None else [domain_features.requires_grad_(False).eval()]
        self.domain_head = None
        if domain_features is not None:
            if not hasattr(domain_features, "num_features"):
                raise ConfigError("domain_features must have a `num_features` attribute")
            self.domain_head = nn.Linear(int(domain_features.num_features), 1)

    @property
    def domain_features(self) -> nn.Module | None:
        return self._domain[0] if self._domain else None

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)      # .to(device) / .float() / channels_last reach the extractor
        for m in self._domain:
            m._apply(fn, *args, **kwargs)
        return self

    def domain_embed(self, img):
        """Frozen domain features of img (differentiable wrt img), or None without a domain head."""
        return None if self.domain_features is None else self.domain_features(img)

    def forward(self, img, y, alpha: float | torch.Tensor = 0.0, return_features: bool = False):
        """img (N, 3, res, res) in [-1, 1], y (N,) -> logits (N,) [, feats].

        feats: one activation per residual block, then feats[-1] = the final feature vector h (N, ch(4)),
            the flattened features the logit heads read (spec 2.3's `feat`; feature matching, fm_form).
        The domain term is skipped when there is no domain head or `alpha` is the Python number 0; a
        tensor alpha is always applied (no host sync, no recompiles under torch.compile as it changes).
        """
        feats = []
        x = img if self.label_map is None else torch.cat([img, self.label_map(y).to(img.dtype)], dim=1)
        x = lrelu(self.from_rgb(x))
        for block in self.blocks:
            x = block(x)
            feats.append(x)
        x = lrelu(self.final_conv(self.mbstd(x)))
        h = lrelu(self.final_linear(x.flatten(1)))
        feats.append(h)
        logits = self.out(h).squeeze(1) + (self.embed(y) * h).sum(dim=1)
        if self.domain_features is not None and (torch.is_tensor(alpha) or alpha != 0):
            dom = self.domain_head(self.domain_features(img).to(h.dtype)).squeeze(1)
            logits = logits + alpha * dom
        return (logits, feats) if return_features else logits


def generator_kwargs(cfg: dict, num_classes: int) -> dict:
    """Generator constructor arguments from a TrainConfig dict: the one mapping the trainer and the
    checkpoint loader share, so a run's checkpoints always rebuild the network they were trained with."""
    return dict(res=int(cfg["res"]), num_classes=int(num_classes), z_dim=int(cfg["z_dim"]),
                w_dim=int(cfg["w_dim"]), n_mlp=int(cfg["n_mlp"]), channel_base=int(cfg["channel_base"]),
                channel_max=int(cfg["channel_max"]), lr_mlp=float(cfg.get("lr_mlp", 0.01)),
                clamp=float(cfg.get("clamp", 0.9)))
