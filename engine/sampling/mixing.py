"""Style mixing: per-layer blends of two samples' w (StyleGAN families only)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from engine.images import to_uint8
from engine.sampling.generate import is_family, seed_z


def require_stylegan(G: nn.Module) -> None:
    """Style mixing blends per-layer styles w: a StyleGAN idea. Any other family gets this ValueError."""
    if is_family(G):
        fam = getattr(G, "family", type(G).__name__)
        raise ValueError(f"style mixing is StyleGAN-only: a {fam} generator has no per-layer styles to "
                         "blend; sample it on the Samples page or with `python -m engine sample`")


def layer_groups(G: nn.Module) -> list[dict]:
    """One entry per w input of G: [{"index", "name", "res", "group": "coarse"|"middle"|"fine"}].

    Groups split the resolution levels 4..res in thirds (log scale), which gives Karras et al.'s
    coarse 4-8 / middle 16-32 / fine 64+ at 128 and 256 px and still three groups for small models.
    """
    require_stylegan(G)
    top = int(np.log2(G.res)) - 2
    out = []
    for i, name in enumerate(G.layer_names):
        r = int(name.split("x", 1)[0])
        k = int(np.log2(r)) - 2
        group = "coarse" if 3 * k < top else "middle" if 3 * k < 2 * top else "fine"
        out.append({"index": i, "name": name, "res": r, "group": group})
    return out


def mix_weights(G: nn.Module, mix: list[float] | int) -> torch.Tensor:
    """Per-layer donor weights (num_ws,) from a list of weights or a crossover index."""
    require_stylegan(G)
    n = G.num_ws
    if isinstance(mix, (int, np.integer)) and not isinstance(mix, bool):
        if not 0 <= mix <= n:
            raise ValueError(f"mix: crossover layer must lie in 0..{n} (0 = all from the donor, "
                             f"{n} = none), got {mix}")
        return (torch.arange(n) >= int(mix)).float()
    m = torch.tensor([float(v) for v in mix])
    if m.shape != (n,):
        raise ValueError(f"mix: expected {n} per-layer weights (one per w input), got {len(m)}")
    if (m < 0).any() or (m > 1).any():
        raise ValueError("mix: per-layer weights lie in [0, 1] (0 = source, 1 = donor)")
    return m


@torch.no_grad()
def style_mix_batch(G: nn.Module, src: tuple[int, int], dst: tuple[int, int], mix: list[float] | int,
                    truncation: float = 1.0, noise_strength: float = 1.0, with_sources: bool = False
                    ) -> np.ndarray:
    """uint8 NHWC: [mixed] or, with_sources, [source, donor, mixed] from one batched forward pass."""
    dev = next(G.parameters()).device
    m = mix_weights(G, mix).to(dev)
    z = torch.cat([seed_z(src[1], G.z_dim), seed_z(dst[1], G.z_dim)]).to(dev)
    y = torch.tensor([src[0], dst[0]], dtype=torch.long, device=dev)
    w = G.mapping(z, y, truncation)                                          # (2, w_dim)
    mixed = torch.lerp(w[0:1, None], w[1:2, None], m[None, :, None])         # (1, num_ws, w_dim)
    ws = mixed if not with_sources else torch.cat([w[:, None].expand(-1, G.num_ws, -1), mixed])
    img = G.synthesis(ws, noise_mode="const", noise_strength=noise_strength)
    return to_uint8(img)


def style_mix(G: nn.Module, src: tuple[int, int], dst: tuple[int, int], mix: list[float] | int,
              truncation: float = 1.0, noise_strength: float = 1.0) -> np.ndarray:
    """Mix the styles of two samples, each given as (class_index, seed).

    mix: per-layer weight of the donor `dst` (0 = source, 1 = donor; see `layer_groups` for the
    layers), or a crossover index k (layers >= k come from the donor). Noise is the constant maps
    scaled by `noise_strength`, so all-0 weights reproduce the source and all-1 the donor.
    Returns uint8 HWC.
    """
    return style_mix_batch(G, src, dst, mix, truncation, noise_strength)[0]
