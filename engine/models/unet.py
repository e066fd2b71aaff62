"""The `ddpm` family's denoiser: diffusers' `UNet2DModel`, built from a DDPMConfig, never from the hub.

Why diffusers and not our own U-Net: `UNet2DModel` already is the seed-004 network (residual blocks with
GroupNorm and scale-shift time conditioning, self-attention at chosen resolutions and in the middle,
sinusoidal time embedding, nearest-upsample + conv so no checkerboard artefacts) plus the class
embedding we need, it is tested upstream, works under torch.compile, and its schedulers (engine.diffusion)
read the same conventions. What we add: the mapping from our config fields, the null class for
classifier-free guidance, and the offline switch.

The class embedding has `num_classes + 1` rows: the last index is the *null class* (no label), what
training substitutes with probability `cond_drop` and what the unconditional half of guidance reads.
"""
from __future__ import annotations

import math
import os

# Set before diffusers (and huggingface_hub) are imported: the lab runs with no network, and a model
# built from a config has nothing to fetch; offline mode makes any accidental hub call fail at once
# instead of hanging on a timeout. setdefault: a user who really wants the hub can still say so.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import torch  # noqa: E402
from diffusers import UNet2DModel  # noqa: E402

from engine.config import ConfigError  # noqa: E402


def null_class(model: UNet2DModel) -> int:
    """Index of the null (unconditional) class of a model built by `build_unet`."""
    return int(model.config.num_class_embeds) - 1


def norm_groups(widths: list[int], most: int = 32) -> int:
    """GroupNorm groups: the largest count <= `most` that divides every width (32 for the usual widths;
    fewer for the tiny test and demo nets, whose 8-16 channels would not split into 32 groups)."""
    g = 0
    for w in widths:
        g = math.gcd(g, int(w))
    return max(d for d in range(1, most + 1) if g % d == 0)


def unet_kwargs(cfg, res: int, num_classes: int) -> dict:
    """The UNet2DModel constructor arguments for a DDPMConfig at `res` px with `num_classes` classes.

    Level i works at res / 2**i; it gets attention when that size is in `cfg.attention_res` (the seed:
    16). The middle block always has attention (seed 004: ResidualBlock + Attention + ResidualBlock)."""
    mult = [int(m) for m in cfg.channel_mult]
    levels = len(mult)
    if res % (2 ** (levels - 1)) or res // (2 ** (levels - 1)) < 2:
        raise ConfigError(f"config field 'channel_mult' has {levels} levels, too many for res {res}: "
                          f"the lowest level would be {res / 2 ** (levels - 1):g} px (at least 2 px); "
                          f"use at most {int(math.log2(res))} levels")
    widths = [int(cfg.channels) * m for m in mult]
    attn = {int(r) for r in cfg.attention_res}
    sizes = [res // 2 ** i for i in range(levels)]
    down = tuple("AttnDownBlock2D" if s in attn else "DownBlock2D" for s in sizes)
    up = tuple("AttnUpBlock2D" if s in attn else "UpBlock2D" for s in reversed(sizes))
    groups = norm_groups(widths)
    return dict(
        sample_size=res, in_channels=3, out_channels=3,
        block_out_channels=tuple(widths), layers_per_block=int(cfg.layers_per_block),
        down_block_types=down, up_block_types=up, mid_block_type="UNetMidBlock2D", add_attention=True,
        attention_head_dim=int(cfg.attention_head_dim), dropout=float(cfg.dropout),
        norm_num_groups=groups,
        # with scale-shift the attention blocks get no GroupNorm unless told: keep the seed's norm there
        attn_norm_num_groups=groups,
        resnet_time_scale_shift="scale_shift",  # h = norm(h) * (1 + scale(t, y)) + shift(t, y), seed 004
        time_embedding_type="positional", flip_sin_to_cos=True, freq_shift=0,  # sinusoidal embedding
        class_embed_type=None, num_class_embeds=int(num_classes) + 1,  # + 1: the null class (guidance)
    )


def build_unet(cfg, res: int, num_classes: int) -> UNet2DModel:
    """A freshly initialised U-Net for DDPMConfig `cfg` (the torch global RNG draws its weights).

    Args:
        cfg: engine.config.DDPMConfig (channels, channel_mult, layers_per_block, attention_res,
            attention_head_dim, dropout).
        res: image size in pixels (square).
        num_classes: real classes; the model gets one more embedding row, the null class.
    Returns:
        A `UNet2DModel` in train mode; call it as `model(x, t, class_labels=y, return_dict=False)[0]`.
    """
    return UNet2DModel(**unet_kwargs(cfg, res, num_classes))


def denoise(model, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The model output (eps or v, by the run's prediction) for noisy images x at timesteps t, labels y."""
    return model(x, t, class_labels=y, return_dict=False)[0]


def param_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
