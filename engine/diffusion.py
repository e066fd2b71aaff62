"""Diffusion maths of the `ddpm` family: noise schedules, q_sample, the training loss, and sampling
(DDPM / DDIM / DPM-Solver++) with classifier-free guidance.

The betas are ours (three small formulas, tested against diffusers' built-in ones) and reach diffusers'
schedulers as `trained_betas`, so one array defines training and every sampler. The samplers are
diffusers' (`DDPMScheduler`, `DDIMScheduler`, `DPMSolverMultistepScheduler`): tested upstream, and the
~30-line loop here only adds what the lab needs: class labels, guidance, per-sample seeds and progress.

Conventions
- Images are float NCHW in [-1, 1]; timesteps t are integers in [0, T).
- prediction "epsilon": the model predicts the noise; "v_prediction": v = sqrt(abar) eps - sqrt(1 - abar) x0.
- Guidance scale w >= 0: out = cond + w * (cond - uncond) (Ho & Salimans' form), so w = 0 is no
  guidance at all (plain conditional output, one forward pass) and diffusers' `guidance_scale` = 1 + w.
  With the null class as the label, cond == uncond, so any w gives the unconditional output.
- Seeds: each sample draws its initial noise and every later noise from its own CPU torch.Generator
  seeded with its seed, so (class, seed, sampler options) gives the same image in any batch, on any
  device.
"""
from __future__ import annotations

import math
import os
from typing import Callable, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before diffusers is imported: see engine.models.unet
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from engine.config import DDPM_PREDICTIONS, DDPM_SAMPLERS, DDPM_SCHEDULES, ConfigError  # noqa: E402
from engine.images import to_uint8  # noqa: E402

SCHEDULES, PREDICTIONS, SAMPLERS = DDPM_SCHEDULES, DDPM_PREDICTIONS, DDPM_SAMPLERS
QUARTILES = 4  # loss_q1..loss_q4: the training loss per quarter of the timestep range
MAX_BETA = 0.999  # the cosine schedule's cap (Nichol & Dhariwal 2021): keeps the last steps finite


# ----------------------------------------------------------------------------------------------
# Schedules

def make_betas(schedule: str, timesteps: int = 1000) -> torch.Tensor:
    """beta_t for t = 0..T-1, float64.

    linear: Ho et al.'s 1e-4 .. 0.02, scaled by 1000 / T so any T keeps the same curve (at T = 1000
    diffusers' "linear"); quadratic: DDPM's "quad", linspace(sqrt(1e-4), sqrt(0.02))**2 (diffusers'
    "scaled_linear"); cosine: alpha_bar(s) = cos((s + 0.008) / 1.008 * pi / 2)**2, betas capped at 0.999
    (diffusers' "squaredcos_cap_v2")."""
    T = int(timesteps)
    scale = 1000.0 / T
    lo, hi = 1e-4 * scale, min(0.02 * scale, MAX_BETA)
    if schedule == "linear":
        return torch.linspace(lo, hi, T, dtype=torch.float64)
    if schedule == "quadratic":
        return torch.linspace(math.sqrt(lo), math.sqrt(hi), T, dtype=torch.float64) ** 2
    if schedule == "cosine":
        def abar(s: float) -> float:
            return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2
        return torch.tensor([min(1 - abar((i + 1) / T) / abar(i / T), MAX_BETA) for i in range(T)],
                            dtype=torch.float64)
    raise ConfigError(f"config field 'schedule' must be one of: {', '.join(SCHEDULES)} (got {schedule!r})")


class Diffusion:
    """One schedule and prediction target: q_sample, training targets and losses, schedulers.

    Args:
        schedule: linear, cosine or quadratic.
        timesteps: T.
        prediction: epsilon or v_prediction.
    """

    def __init__(self, schedule: str = "cosine", timesteps: int = 1000, prediction: str = "epsilon"):
        if prediction not in PREDICTIONS:
            raise ConfigError(f"config field 'prediction' must be one of: {', '.join(PREDICTIONS)} "
                              f"(got {prediction!r})")
        self.schedule, self.T, self.prediction = schedule, int(timesteps), prediction
        self.betas = make_betas(schedule, self.T)
        self.alphas_cumprod = torch.cumprod(1.0 - self.betas, dim=0)  # float64: abar_t in (0, 1]
        self._coef: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def from_config(cls, cfg) -> "Diffusion":
        return cls(cfg.schedule, cfg.timesteps, cfg.prediction)

    def _sqrt_ab(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """sqrt(abar_t), sqrt(1 - abar_t) as float32 (N, 1, 1, 1) on t's device (tables cached there)."""
        if t.device not in self._coef:
            ab = self.alphas_cumprod
            self._coef[t.device] = (ab.sqrt().float().to(t.device), (1 - ab).sqrt().float().to(t.device))
        a, s = self._coef[t.device]
        return a[t].view(-1, 1, 1, 1), s[t].view(-1, 1, 1, 1)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise (the forward process, diffusers' add_noise)."""
        a, s = self._sqrt_ab(t)
        return a * x0 + s * noise

    def target(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """What the model must output at x_t: the noise, or v = sqrt(abar) noise - sqrt(1 - abar) x0."""
        if self.prediction == "epsilon":
            return noise
        a, s = self._sqrt_ab(t)
        return a * noise - s * x0

    def losses(self, model_fn: Callable, x0: torch.Tensor, t: torch.Tensor, y: torch.Tensor,
               noise: torch.Tensor) -> torch.Tensor:
        """Per-sample MSE (N,) between model_fn(x_t, t, y) and the target (the seed's plain MSE)."""
        out = model_fn(self.q_sample(x0, t, noise), t, y)
        return (out.float() - self.target(x0, t, noise)).pow(2).mean(dim=(1, 2, 3))

    def quartile(self, t: torch.Tensor) -> torch.Tensor:
        """Which quarter of [0, T) each timestep lies in: 0 (least noise) .. 3 (most)."""
        return (t * QUARTILES) // self.T

    def scheduler(self, sampler: str = "ddim"):
        """A fresh diffusers scheduler for `sampler` on this schedule (fresh: DPM-Solver keeps state)."""
        from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

        common = dict(num_train_timesteps=self.T, trained_betas=self.betas.float().numpy(),
                      prediction_type=self.prediction)
        if sampler == "ddpm":
            # ancestral sampling; predicted x0 clipped to the image range as in Ho et al.
            return DDPMScheduler(**common, variance_type="fixed_small", clip_sample=True)
        if sampler == "ddim":
            # "trailing" spacing starts at t = T - 1 (pure noise); diffusers' default "leading" would
            # start at T - T/steps, where the cosine schedule still leaves some signal.
            return DDIMScheduler(**common, clip_sample=True, set_alpha_to_one=True,
                                 timestep_spacing="trailing")
        if sampler == "dpm":
            # thresholding with sample_max_value 1 = the predicted x0 clipped to [-1, 1], as clip_sample
            # does for the other two: without it an imperfect model's x0 at the noisiest steps (abar ~ 1e-9
            # at t = T - 1 under the cosine schedule) blows up through the multistep extrapolation (seen
            # on the demo net: saturated noise). lambda_min_clipped -5.1: diffusers' advice for the cosine
            # schedule, it skips its last few degenerate timesteps.
            return DPMSolverMultistepScheduler(
                **common, algorithm_type="dpmsolver++", solver_order=2, timestep_spacing="trailing",
                thresholding=True, sample_max_value=1.0,
                lambda_min_clipped=-5.1 if self.schedule == "cosine" else -math.inf)
        raise ConfigError(f"config field 'sampler' must be one of: {', '.join(SAMPLERS)} (got {sampler!r})")


def quartile_means(per_sample: torch.Tensor, q: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Mean loss and sample count per timestep quartile, as 0-dim tensors (no host sync); the mean of
    an empty quartile is NaN, so a log interval averages the steps with nanmean (or weights by count)."""
    per_sample = per_sample.detach().float()
    means, counts = [], []
    for k in range(QUARTILES):
        m = (q == k).float()
        n = m.sum()
        means.append((per_sample * m).sum() / n)  # 0/0 = NaN for an empty quartile
        counts.append(n)
    return means, counts


# ----------------------------------------------------------------------------------------------
# Sampling

def resolve_classes(classes: Sequence[int] | torch.Tensor, null: int) -> torch.Tensor:
    """int64 labels; -1 (or None) means unconditional and becomes the null class index `null`."""
    ys = [null if (c is None or int(c) < 0) else int(c) for c in (classes.tolist() if torch.is_tensor(classes)
                                                                   else classes)]
    for c in ys:
        if c > null:
            raise ValueError(f"class index {c} out of range: the model has {null} classes (0..{null - 1}), "
                             f"{null} or -1 = unconditional")
    return torch.tensor(ys, dtype=torch.long)


@torch.no_grad()
def sample_tensor(model, diffusion: Diffusion, classes: Sequence[int] | torch.Tensor, seeds: Sequence[int], *,
                  sampler: str = "ddim", steps: int | None = None, eta: float = 0.0, guidance: float = 0.0,
                  batch: int = 64, progress: Callable[[int, int], None] | None = None,
                  amp: bool = False, res: int | None = None) -> torch.Tensor:
    """Denoise from per-sample seeded noise to float images (N, 3, H, W) in [-1, 1], on the model's device.

    Args:
        model: a UNet2DModel from engine.models.unet.build_unet (its last class index is the null class).
        diffusion: the Diffusion the model was trained with (schedule, T, prediction).
        classes: one class index per sample; -1 = unconditional (the null class).
        seeds: one int per sample; the same (class, seed, options) give the same image in any batch.
        sampler: ddim, ddpm or dpm (DPM-Solver++ 2M).
        steps: denoising steps (None or 0: 25 for ddim / dpm, all T for ddpm).
        eta: DDIM noise (0 = deterministic); ignored by the other samplers.
        guidance: classifier-free guidance scale w (0 = none, see the module docstring).
        batch: samples per forward pass (guidance doubles the pass internally).
        progress: called as progress(done, total) after every denoising step of every batch.
        amp: bf16 autocast for the U-Net on CUDA (ignored on the CPU).
        res: image size (default: the model's sample_size).
    """
    from engine.models.unet import denoise, null_class

    if len(classes) != len(seeds):
        raise ValueError(f"one seed per sample: {len(classes)} classes but {len(seeds)} seeds")
    if guidance < 0:
        raise ValueError(f"guidance scale must be >= 0 (0 = none), got {guidance}")
    device = next(model.parameters()).device
    null = null_class(model)
    y_all = resolve_classes(classes, null)
    res = int(res or model.config.sample_size)
    if not steps:
        steps = diffusion.T if sampler == "ddpm" else 25
    steps = min(int(steps), diffusion.T)
    chunks = [range(i, min(i + batch, len(seeds))) for i in range(0, len(seeds), max(1, batch))]
    total, done = steps * len(chunks), 0
    was_training = model.training
    model.eval()
    use_amp = bool(amp) and device.type == "cuda"
    out = []
    try:
        for idx in chunks:
            sched = diffusion.scheduler(sampler)
            sched.set_timesteps(steps, device=device)
            gens = [torch.Generator().manual_seed(int(seeds[i])) for i in idx]
            # Noise drawn on the CPU from each sample's generator: the same numbers on any device.
            x = torch.cat([torch.randn(1, 3, res, res, generator=g) for g in gens]).to(device)
            x = x * sched.init_noise_sigma
            y = y_all[list(idx)].to(device)
            for t in sched.timesteps:
                xin = sched.scale_model_input(x, t)
                tt = t.to(device).expand(len(idx)) if torch.is_tensor(t) else torch.full((len(idx),), int(t), device=device)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                    if guidance > 0:
                        both = denoise(model, torch.cat([xin, xin]), torch.cat([tt, tt]),
                                       torch.cat([y, torch.full_like(y, null)])).float()
                        cond, uncond = both.chunk(2)
                        eps = cond + guidance * (cond - uncond)
                    else:
                        eps = denoise(model, xin, tt, y).float()
                kw = {"eta": float(eta)} if sampler == "ddim" else {}
                x = sched.step(eps, t, x, generator=gens, **kw).prev_sample
                done += 1
                if progress is not None:
                    progress(done, total)
            out.append(x.clamp(-1, 1))
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, 3, res, res, device=device)


def sample(model, diffusion: Diffusion, classes: Sequence[int] | torch.Tensor, seeds: Sequence[int],
           **options) -> np.ndarray:
    """`sample_tensor` as uint8 images (N, H, W, 3) on the host: what pages, grids and exports use."""
    return to_uint8(sample_tensor(model, diffusion, classes, seeds, **options))
