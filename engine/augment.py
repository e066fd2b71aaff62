"""ADA for H&E patches: differentiable augmentations and the adaptive probability controller.

D sees every real and fake image through `Augment(x, p)`; because the ops are differentiable, G's
gradient passes through them, and because each op is applied with probability p < 1 the clean
distribution stays the one D can tell apart ("non-leaking", Karras et al. 2020). The ops chosen suit
H&E tissue, which has no preferred orientation: flips, 90-degree and small rotations, translation,
stain jitter in optical-density space (Tellez et al. 2018 "HED jitter") and cutout.
Written from the papers; no code taken from the NVIDIA stylegan2-ada implementation.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.config import ADA_OPS, ADA_RULES

OPS = ADA_OPS  # named in engine.config, which imports no torch, so config and CLI can list them

# Ruifrok & Johnston (2001) optical-density vectors of haematoxylin and eosin (as in scikit-image's
# rgb_from_hed). The residual is their cross product: it captures whatever the two stains don't explain.
_H = (0.650, 0.704, 0.286)
_E = (0.072, 0.990, 0.105)
_OD_EPS = 1.0 / 255.0  # darkest intensity used in log(): one uint8 step, so OD stays finite


def stain_basis() -> Tensor:
    """(3, 3) stain matrix, rows = unit OD vectors of H, E and residual: od_pixel = conc @ basis."""
    h, e = F.normalize(torch.tensor(_H), dim=0), F.normalize(torch.tensor(_E), dim=0)
    return torch.stack([h, e, F.normalize(torch.linalg.cross(h, e), dim=0)])


class Augment(nn.Module):
    """Per-sample random augmentation, each op applied with probability p * its weight.

    Args:
        xflip, yflip, rotate90, rotate, translate, stain, cutout: per-op weights (probability multipliers, >= 0).
        ops: if given, the ops that may run (names from OPS); every other op's weight is 0, so it never
            touches an image (config `ada_ops`: the spec's ADA has no colour jitter and no cutout).
        rotate_max_deg: small rotation drawn uniformly in +-rotate_max_deg (bilinear, reflection padding).
        translate_frac: shift drawn uniformly in +-translate_frac of the size, rounded to whole pixels.
        stain_sigma: H, E and residual concentrations become c * U(1-s, 1+s) + U(-s, s).
        cutout_frac: side of the square set to 0 (mid-grey), as a fraction of the image side.

    All ops work on the whole batch at once (torch.where with per-sample masks, no loop over samples
    and no host sync), so the cost is the same whatever p is; p == 0 returns x itself.
    """

    def __init__(self, xflip=1.0, yflip=1.0, rotate90=1.0, rotate=1.0, translate=1.0, stain=1.0, cutout=1.0,
                 rotate_max_deg=10.0, translate_frac=0.125, stain_sigma=0.05, cutout_frac=0.25, ops=None):
        super().__init__()
        self.weights = dict(xflip=xflip, yflip=yflip, rotate90=rotate90, rotate=rotate, translate=translate,
                            stain=stain, cutout=cutout)
        if ops is not None:
            unknown = [o for o in ops if o not in OPS]
            if unknown:
                raise ValueError(f"Augment ops must be among {', '.join(OPS)}; got {', '.join(unknown)}")
            # weight 0 = mask() returns None: the op's code (and its random draws) never runs
            self.weights = {k: (w if k in ops else 0.0) for k, w in self.weights.items()}
        for name, w in self.weights.items():
            if not w >= 0:
                raise ValueError(f"Augment weight {name} must be >= 0, got {w}")
        for name, v, lo, hi in (("rotate_max_deg", rotate_max_deg, 0, 180), ("translate_frac", translate_frac, 0, 0.5),
                                ("stain_sigma", stain_sigma, 0, 0.99), ("cutout_frac", cutout_frac, 0, 1)):
            if not lo <= v <= hi:
                raise ValueError(f"Augment {name} must be in [{lo}, {hi}], got {v}")
        self.rotate_max_deg, self.translate_frac = rotate_max_deg, translate_frac
        self.stain_sigma, self.cutout_frac = stain_sigma, cutout_frac
        basis = stain_basis()
        self.register_buffer("basis", basis, persistent=False)
        self.register_buffer("basis_inv", torch.linalg.inv(basis), persistent=False)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.weights.items())

    def forward(self, x: Tensor, p: float) -> Tensor:
        """Augment a batch x (N, 3, H, W) in [-1, 1] with probability p per op and sample."""
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"augment probability p must be in [0, 1], got {p}")
        if p == 0.0:
            return x
        n = x.shape[0]

        def mask(name):  # None when the op can never fire: skips its compute entirely
            prob = p * self.weights[name]
            return None if prob <= 0 else torch.rand(n, device=x.device) < prob

        def pick(m, new, old):
            return torch.where(m.view(-1, *([1] * (old.ndim - 1))), new, old)

        if (m := mask("xflip")) is not None:
            x = pick(m, x.flip(3), x)
        if (m := mask("yflip")) is not None:
            x = pick(m, x.flip(2), x)
        if (m := mask("rotate90")) is not None:
            if x.shape[2] != x.shape[3]:
                raise ValueError(f"rotate90 needs square images, got {x.shape[2]}x{x.shape[3]}; set its weight to 0")
            k = torch.randint(1, 4, (n,), device=x.device) * m  # 0 = not rotated
            out = x
            for j in (1, 2, 3):
                out = pick(k == j, x.rot90(j, (2, 3)), out)
            x = out
        x = self._affine(x, mask("rotate"), mask("translate"))
        if (m := mask("stain")) is not None:
            x = pick(m, self._stain(x), x)
        if (m := mask("cutout")) is not None:
            x = self._cutout(x, m)
        return x

    def _affine(self, x: Tensor, m_rot: Tensor | None, m_tr: Tensor | None) -> Tensor:
        # Rotation and translation share one resample so the image is interpolated once.
        if m_rot is None and m_tr is None:
            return x
        n, _, h, w = x.shape
        theta = torch.zeros(n, 2, 3, device=x.device)
        ang = torch.zeros(n, device=x.device)
        if m_rot is not None:
            ang = (torch.rand(n, device=x.device) * 2 - 1) * math.radians(self.rotate_max_deg) * m_rot
        theta[:, 0, 0], theta[:, 0, 1] = ang.cos(), -ang.sin()
        theta[:, 1, 0], theta[:, 1, 1] = ang.sin(), ang.cos()
        if m_tr is not None:
            # Whole-pixel shifts: with align_corners=False a shift of k px is 2k/size in grid units,
            # so a pure translation copies pixels instead of blurring them.
            for i, size in enumerate((w, h)):
                shift = ((torch.rand(n, device=x.device) * 2 - 1) * self.translate_frac * size).round()
                theta[:, i, 2] = shift * (2 / size) * m_tr
        grid = F.affine_grid(theta, [n, x.shape[1], h, w], align_corners=False)
        # Reflection padding: mirrored tissue is still plausible tissue, a black border is not.
        out = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        sel = m_rot if m_tr is None else (m_tr if m_rot is None else m_rot | m_tr)
        return torch.where(sel.view(-1, 1, 1, 1), out.to(x.dtype), x)

    def _stain(self, x: Tensor) -> Tensor:
        # Beer-Lambert: OD = -log(I) is linear in the stain concentrations, so jittering each stain's
        # amount in OD space mimics staining/scanner variation instead of a global colour shift.
        # float32 throughout: log/exp in bf16 would band the colours.
        n, s = x.shape[0], self.stain_sigma
        od = -((x.float() + 1) * 0.5).clamp(min=_OD_EPS).log()
        basis, basis_inv = self.basis.to(x.device), self.basis_inv.to(x.device)  # no-op once Augment.to(device)
        conc = torch.einsum("nchw,ck->nkhw", od, basis_inv)
        scale = 1 + (torch.rand(n, 3, 1, 1, device=x.device) * 2 - 1) * s
        shift = (torch.rand(n, 3, 1, 1, device=x.device) * 2 - 1) * s
        od = torch.einsum("nkhw,kc->nchw", conc * scale + shift, basis)
        return (torch.exp(-od) * 2 - 1).clamp(max=1.0).to(x.dtype)  # exp > 0, so only the top can overflow

    def _cutout(self, x: Tensor, m: Tensor) -> Tensor:
        n, _, h, w = x.shape
        # Python scalars only: a torch.tensor([h, w]) built on the GPU would be a host-to-device copy per call.
        cy, cx = torch.rand(n, 1, device=x.device) * h, torch.rand(n, 1, device=x.device) * w
        inside_y = (torch.arange(h, device=x.device) + 0.5 - cy).abs() < self.cutout_frac * h / 2
        inside_x = (torch.arange(w, device=x.device) + 0.5 - cx).abs() < self.cutout_frac * w / 2
        hole = inside_y[:, :, None] & inside_x[:, None, :] & m[:, None, None]
        return x * (~hole).unsqueeze(1).to(x.dtype)


SPEC_RATE = 0.001  # seed-001 spec 4.1: new_p = clamp(p + 0.001 * err * ADA_SPEED, 0, ADA_MAX_P), per step


class AdaController:
    """Adaptive augmentation probability driven by D's overfitting on reals.

    Statistic: acc = fraction of reals with D logit > 0, i.e. (1 + E[sign D(real)]) / 2, so the
    target 0.6 lives on a [0, 1] scale; above target D is overfitting, so p rises. Two rules:
      - "sign" (StyleGAN2-ADA, Karras et al. 2020): p += sign(acc - target) * images / (ada_kimg * 1000)
        on the raw accuracy of the interval, so p can go from 0 to 1 in ada_kimg kimg.
      - "spec" (seed-001 spec 4.1): per step p += 0.001 * (acc_ema - target) * speed, driven by the
        accuracy EMA (smoother, proportional to the error).
    Both count in steps: `update(..., steps=k)` applies k steps' worth of the rule, one step at a time
    (each with its own acc_ema; the interval's mean acc stands for every step's), so the result does
    not depend on how many steps lie between two updates. After each step p stays in [0, p_max]
    (p near 1 would let augmentations leak into G's output) and, while acc_ema > hi_acc, at most
    hi_cap (spec 4.1: D very sure of itself means little data, where strong augmentation leaks first).
    Warm-up: the accuracies of steps 0 .. warmup_steps - 1 never move p (spec: ADA_FREEZE_UNTIL).
    Freeze: once kimg >= freeze_kimg (if > 0), p no longer changes.
    """

    def __init__(self, target=0.6, ada_kimg=100.0, p_max=0.8, freeze_kimg=0.0, p_init=0.0, *, rule="sign",
                 speed=0.2, warmup_steps=0, hi_acc=1.0, hi_cap=1.0):
        if not ada_kimg > 0:
            raise ValueError(f"ada_kimg must be > 0, got {ada_kimg}")
        if not 0.0 <= p_max <= 1.0 or not 0.0 <= p_init <= p_max:
            raise ValueError(f"need 0 <= p_init <= p_max <= 1, got p_init={p_init}, p_max={p_max}")
        if rule not in ADA_RULES:
            raise ValueError(f"ADA rule must be one of {', '.join(ADA_RULES)}, got {rule!r}")
        if not (speed >= 0 and warmup_steps >= 0 and 0.0 <= hi_cap <= 1.0):
            raise ValueError(f"ADA needs speed >= 0, warmup_steps >= 0, 0 <= hi_cap <= 1; got speed={speed}, "
                             f"warmup_steps={warmup_steps}, hi_cap={hi_cap}")
        self.target, self.ada_kimg, self.p_max, self.freeze_kimg = target, ada_kimg, p_max, freeze_kimg
        self.rule, self.speed, self.warmup_steps = rule, float(speed), int(warmup_steps)
        self.hi_acc, self.hi_cap = float(hi_acc), float(hi_cap)
        self.p = float(p_init)

    def frozen(self, kimg: float) -> bool:
        return self.freeze_kimg > 0 and kimg >= self.freeze_kimg

    def update(self, acc: float, batch_images: int, kimg: float, *, acc_ema=None, step: int | None = None,
               steps: int = 1) -> float:
        """Apply `steps` steps' worth of the rule after `batch_images` reals gave mean accuracy `acc`.

        kimg: at the end of the interval; step: steps done at its end (the interval covers steps
        step - steps .. step - 1, counted from 0; None = past the warm-up); acc_ema: the accuracy EMA
        after each of those steps (a sequence of `steps` floats, or one float for all; needed by the
        spec rule and the hi_acc cap, ignored when None by the sign rule). Returns the new p."""
        steps = max(1, int(steps))
        if acc_ema is None:
            if self.rule == "spec":
                raise ValueError("the spec ADA rule needs acc_ema")
            emas = [None] * steps
        elif isinstance(acc_ema, (int, float)):
            emas = [float(acc_ema)] * steps
        else:
            emas = [float(e) for e in acc_ema]
            if len(emas) != steps:
                raise ValueError(f"acc_ema has {len(emas)} values for {steps} steps")
        per_step = batch_images / steps
        sign = (acc > self.target) - (acc < self.target)
        for j, e in enumerate(emas):
            later = steps - 1 - j  # steps of the interval after this one
            index = None if step is None else step - 1 - later  # this step, counted from 0
            if (index is not None and index < self.warmup_steps) or self.frozen(kimg - later * per_step / 1000):
                continue
            if self.rule == "sign":
                p = self.p + sign * per_step / (self.ada_kimg * 1000)
            else:
                p = self.p + SPEC_RATE * (e - self.target) * self.speed
            p = min(max(p, 0.0), self.p_max)
            if e is not None and e > self.hi_acc:
                p = min(p, self.hi_cap)
            self.p = p
        return self.p

    def state_dict(self) -> dict:
        return {"p": self.p}

    def load_state_dict(self, d: dict) -> None:
        self.p = float(d["p"])
