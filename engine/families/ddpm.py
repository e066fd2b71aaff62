"""Family `ddpm`: a class-conditional DDPM trained with label dropout for classifier-free guidance.

One step: flip / rotate-90 augmentation, t ~ U{0..T-1}, x_t = q_sample(x0, t, eps), labels replaced by
the null class with probability cond_drop, MSE on eps (or v), AdamW with warm-up then cosine LR,
gradient clipping, accumulation over `batch_gpu` chunks, bf16 autocast on CUDA, EMA of the weights.

Randomness: the weights are drawn at build time under `seed`; every per-step draw (augmentation, t,
noise, label drop) comes from the family's own generator, saved in state_dict, so a resumed run draws
what the straight run would have. Dropout (0 in the demo preset) draws from torch's global RNG, which the
shared checkpoint saves (engine.train.checkpoint.rng_state).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import torch

from engine.config import DDPMConfig, from_dict, to_dict, validate
from engine.diffusion import Diffusion, quartile_means, sample as diffusion_sample
from engine.images import tile, uint8_to_float
from engine.models.unet import build_unet, denoise, null_class
from engine.train.ema import ema_decay, make_ema, update_ema

CSV_NAME = "metrics_diffusion.csv"
CSV_COLUMNS = ("epoch", "step", "kimg", "loss", "loss_q1", "loss_q2", "loss_q3", "loss_q4", "lr",
               "grad_norm", "img_per_s", "time_s")
STATE_VERSION = 1
# Config fields that define the network and its training target: a state saved under other values
# cannot be loaded (the rest, e.g. lr or sampler defaults, may change on resume).
MODEL_FIELDS = ("channels", "channel_mult", "layers_per_block", "attention_res", "attention_head_dim",
                "schedule", "prediction", "timesteps")


def dihedral(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Apply symmetry k[i] in 0..7 of the square to image i of NCHW x: rotate by 90 deg x (k % 4), then
    mirror left-right when k >= 4. k = 0 is the identity. Square images only."""
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"dihedral augmentation needs square images, got {tuple(x.shape[-2:])}")
    # Each symmetry on the whole batch, kept where k says: no boolean indexing, so no host sync on a GPU
    # (7 extra copies of the batch cost less than 7 waits for the device).
    out = x
    k = k.to(x.device).view(-1, 1, 1, 1)
    for s in range(1, 8):
        y = torch.rot90(x, s % 4, dims=(2, 3))
        out = torch.where(k == s, y.flip(3) if s >= 4 else y, out)
    return out


def lr_at(step: int, *, lr: float, warmup_steps: int, total_steps: int, lr_min_frac: float) -> float:
    """Learning rate of step `step` (0-based): linear warm-up to lr over warmup_steps, then cosine decay
    to lr * lr_min_frac at total_steps (total_steps <= warm-up: lr stays flat after the warm-up)."""
    if warmup_steps > 0 and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    span = total_steps - warmup_steps
    if span <= 0:
        return lr
    p = min(1.0, (step - warmup_steps) / span)
    return lr * (lr_min_frac + (1 - lr_min_frac) * 0.5 * (1 + math.cos(math.pi * p)))


class DDPMFamily:
    """The `ddpm` family (engine.families.Family).

    Args:
        cfg: DDPMConfig (validated here).
        res: image size in px; num_classes: real classes (the model adds the null class).
        device: where the models live.
        total_steps: run length in steps, for the cosine LR (0 = flat after the warm-up).
        amp: bf16 autocast on CUDA (the CPU always runs fp32).
        compile: torch.compile the U-Net's training forward (GPU).
        seed: initial weights and the family's generator.
    """

    name = "ddpm"
    csv_name = CSV_NAME
    csv_columns = CSV_COLUMNS

    def __init__(self, cfg: DDPMConfig, res: int, num_classes: int, device: str | torch.device = "cpu", *,
                 total_steps: int = 0, amp: bool = True, compile: bool = False, seed: int = 0):
        self.cfg = validate(cfg)
        self.res, self.num_classes = int(res), int(num_classes)
        self.device = torch.device(device)
        self.total_steps, self.amp, self.seed = int(total_steps), bool(amp), int(seed)
        self.diffusion = Diffusion.from_config(cfg)
        with torch.random.fork_rng(devices=[]):  # the same initial weights whatever ran before
            torch.manual_seed(self.seed)
            self.model = build_unet(cfg, self.res, self.num_classes)
        self.model.to(self.device).train()
        self.ema = make_ema(self.model)
        self.null = null_class(self.model)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, betas=(0.9, 0.999),
                                     weight_decay=cfg.weight_decay)
        self.gen = torch.Generator(device=self.device).manual_seed(self.seed)
        self.fwd = torch.compile(self.model) if compile else self.model
        self.step, self.nimg = 0, 0

    @classmethod
    def build(cls, cfg: DDPMConfig, res: int, num_classes: int, device: str | torch.device = "cpu",
              **train: Any) -> "DDPMFamily":
        return cls(cfg, res, num_classes, device, **train)

    @classmethod
    def from_state(cls, state: dict[str, Any], device: str | torch.device = "cpu", **train: Any
                   ) -> "DDPMFamily":
        """Rebuild from a state_dict alone (its config, res and classes), e.g. for the Samples page."""
        fam = cls(from_dict(DDPMConfig, state["config"]), state["res"], state["num_classes"], device,
                  total_steps=state.get("total_steps", 0), **train)
        fam.load_state_dict(state)
        return fam

    # ------------------------------------------------------------------------------------------
    # training

    def _model_fn(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return denoise(self.fwd, x, t, y)

    def train_step(self, images: torch.Tensor | np.ndarray, labels: torch.Tensor | Sequence[int]
                   ) -> dict[str, Any]:
        """One AdamW step on a batch: uint8 (N, H, W, 3) or float (N, 3, H, W) in [-1, 1], labels (N,).

        Returns 0-dim tensors loss, loss_q1..loss_q4 (mean per timestep quartile, NaN when a quartile
        got no sample this step), n_q1..n_q4 (their sample counts) and grad_norm (before clipping), and
        the float lr used by this step."""
        cfg, dev, g = self.cfg, self.device, self.gen
        if isinstance(images, np.ndarray) or images.dtype == torch.uint8:
            x0 = uint8_to_float(images, dev)
        else:
            x0 = images.to(dev, torch.float32)
        y = torch.as_tensor(labels, dtype=torch.long).to(dev)
        B = x0.shape[0]
        # every draw up front, for the whole batch, so the chunking (batch_gpu) changes no random number
        if cfg.dihedral:
            x0 = dihedral(x0, torch.randint(0, 8, (B,), generator=g, device=dev))
        t = torch.randint(0, self.diffusion.T, (B,), generator=g, device=dev)
        noise = torch.randn(x0.shape, generator=g, device=dev)
        if cfg.cond_drop > 0:
            drop = torch.rand(B, generator=g, device=dev) < cfg.cond_drop
            y = torch.where(drop, torch.full_like(y, self.null), y)
        lr = lr_at(self.step, lr=cfg.lr, warmup_steps=cfg.warmup_steps, total_steps=self.total_steps,
                   lr_min_frac=cfg.lr_min_frac)
        for pg in self.opt.param_groups:
            pg["lr"] = lr
        self.model.train()
        chunk = cfg.batch_gpu or B
        use_amp = self.amp and dev.type == "cuda"
        per = []
        for i in range(0, B, chunk):
            sl = slice(i, i + chunk)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                losses = self.diffusion.losses(self._model_fn, x0[sl], t[sl], y[sl], noise[sl])
            # sum / B: the chunks' gradients add up to the gradient of the whole batch's mean
            (losses.sum() / B).backward()
            per.append(losses.detach())
        params = [p for p in self.model.parameters() if p.grad is not None]
        clip = cfg.grad_clip if cfg.grad_clip > 0 else math.inf  # inf: measure the norm, clip nothing
        grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.step += 1
        self.nimg += B
        update_ema(self.ema, self.model, ema_decay(B, self.nimg, ema_kimg=cfg.ema_kimg, ema_beta=0.0,
                                                   rampup=cfg.ema_rampup))
        per_t = torch.cat(per)
        means, counts = quartile_means(per_t, self.diffusion.quartile(t))
        out: dict[str, Any] = {"loss": per_t.mean(), "lr": lr, "grad_norm": grad_norm.detach()}
        for k in range(4):
            out[f"loss_q{k + 1}"], out[f"n_q{k + 1}"] = means[k], counts[k]
        return out

    # ------------------------------------------------------------------------------------------
    # state

    def state_dict(self) -> dict[str, Any]:
        """Model, EMA, AdamW, step, images shown, the generator's state and what rebuilds the family.
        The LR schedule is a pure function of the step, so it has no state of its own."""
        return {"family": self.name, "version": STATE_VERSION, "config": to_dict(self.cfg),
                "res": self.res, "num_classes": self.num_classes, "total_steps": self.total_steps,
                "model": self.model.state_dict(), "ema": self.ema.state_dict(),
                "opt": self.opt.state_dict(), "step": self.step, "nimg": self.nimg,
                "gen": self.gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("family") != self.name:
            raise ValueError(f"checkpoint is of family {state.get('family')!r}, not {self.name!r}")
        saved = state["config"]
        diff = [f"{k}: {saved.get(k)!r} in the checkpoint, {getattr(self.cfg, k)!r} here"
                for k in MODEL_FIELDS if saved.get(k) != getattr(self.cfg, k)]
        if state["res"] != self.res or state["num_classes"] != self.num_classes:
            diff.append(f"res / classes: {state['res']} / {state['num_classes']} in the checkpoint, "
                        f"{self.res} / {self.num_classes} here")
        if diff:
            raise ValueError("checkpoint does not fit this model: " + "; ".join(diff))
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])
        self.step, self.nimg = int(state["step"]), int(state["nimg"])
        self.gen.set_state(state["gen"].cpu())

    def export(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(EMA weights, what rebuilds the net): for exports/generator.safetensors + generator.json."""
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.ema.state_dict().items()}
        meta = {"family": self.name, "config": to_dict(self.cfg), "res": self.res,
                "num_classes": self.num_classes, "step": self.step, "nimg": self.nimg}
        return tensors, meta

    @classmethod
    def from_export(cls, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
                    device: str | torch.device = "cpu") -> "DDPMFamily":
        """A family for sampling from `export()`'s output (the EMA weights serve as model and EMA)."""
        fam = cls(from_dict(DDPMConfig, meta["config"]), meta["res"], meta["num_classes"], device)
        fam.model.load_state_dict(tensors)
        fam.ema.load_state_dict(tensors)
        fam.step, fam.nimg = int(meta.get("step", 0)), int(meta.get("nimg", 0))
        return fam

    # ------------------------------------------------------------------------------------------
    # sampling

    def sample(self, classes: Sequence[int], seeds: Sequence[int], *, sampler: str | None = None,
               steps: int | None = None, eta: float | None = None, guidance: float | None = None,
               batch: int = 64, progress: Callable[[int, int], None] | None = None,
               use_ema: bool = True) -> np.ndarray:
        """uint8 (N, H, W, 3), one image per (class, seed); options default to the config's sampler,
        sample_steps, eta and guidance (see engine.diffusion.sample_tensor)."""
        cfg = self.cfg
        return diffusion_sample(
            self.ema if use_ema else self.model, self.diffusion, classes, seeds,
            sampler=sampler or cfg.sampler, steps=cfg.sample_steps if steps is None else steps,
            eta=cfg.eta if eta is None else eta, guidance=cfg.guidance if guidance is None else guidance,
            batch=batch, progress=progress, amp=self.amp)

    def sample_defaults(self) -> dict[str, Any]:
        """The sampler options `sample` uses when none are given (the config's), by their option names."""
        c = self.cfg
        return {"sampler": c.sampler, "steps": c.sample_steps, "eta": c.eta, "guidance": c.guidance}

    def grid(self, per_class: int = 8, *, seed: int = 0, **options: Any) -> np.ndarray:
        """One row per class; column j uses seed + j in every row (the same noise across classes, so a
        row differs from the next by the label alone). DDIM with the config's steps unless overridden."""
        opts = {"sampler": "ddim", "steps": self.cfg.sample_steps or 25, "eta": 0.0, **options}
        classes = [c for c in range(self.num_classes) for _ in range(per_class)]
        seeds = [seed + j for _ in range(self.num_classes) for j in range(per_class)]
        return tile(self.sample(classes, seeds, **opts), rows=self.num_classes)


FAMILY = DDPMFamily
