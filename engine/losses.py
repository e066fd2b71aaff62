"""Adversarial losses and regularisers for the GAN trainers.

Every function is pure: tensors in, a scalar tensor out, no weights (the caller multiplies by the
config's weight). Logits are cast to float32 first so the losses stay accurate under bf16/fp16 autocast.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, autograd

# ---------------------------------------------------------------------------- adversarial losses


def d_loss_logistic(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Logistic D loss: softplus(-D(real)) + softplus(D(fake)), each averaged over the batch."""
    return F.softplus(-real_logits.float()).mean() + F.softplus(fake_logits.float()).mean()


def d_loss_bce(real_logits: Tensor, fake_logits: Tensor, real_label: float = 0.9) -> Tensor:
    """BCE D loss with one-sided label smoothing: reals target `real_label`, fakes keep target 0.

    Only the real side is smoothed (Salimans et al. 2016): smoothing the fake side would reward G
    for samples D already rejects.
    """
    real, fake = real_logits.float(), fake_logits.float()
    return (F.binary_cross_entropy_with_logits(real, torch.full_like(real, real_label))
            + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))


def g_loss_nonsaturating(fake_logits: Tensor) -> Tensor:
    """Non-saturating G loss softplus(-D(G(z))): strong gradients while D still rejects the fakes."""
    return F.softplus(-fake_logits.float()).mean()


# ---------------------------------------------------------------------------- D regularisers


def r1_penalty(real_logits: Tensor, real_img: Tensor) -> Tensor:
    """R1: mean over the batch of ||d D(x)/dx||^2 at the reals (real_img must require grad).

    The caller weights it by gamma/2 and, for lazy regularisation, applies it only every `r1_every`
    D steps multiplied by `r1_every`: the expected gradient then equals applying it every step while
    costing one double-backward per `r1_every` steps (StyleGAN2, section 4 "lazy regularization").
    """
    # Summing the logits gives every sample its own gradient in one backward, since D(x_i) depends
    # only on x_i (minibatch-std couples samples slightly; accepted, as in every StyleGAN2 port).
    (grad,) = autograd.grad(real_logits.float().sum(), real_img, create_graph=True)
    return grad.float().pow(2).flatten(1).sum(1).mean()


def r1_weight(gamma: float, every: int, lazy_scale: bool = True) -> float:
    """The factor on `r1_penalty` at a step where R1 is applied (every `every` D steps).

    lazy_scale True (StyleGAN2 "lazy regularization"): gamma/2 * every, so the expected gradient is
    that of R1 at every step. False (seed-001 spec 3.2): 0.5 * gamma, not multiplied by the interval,
    so R1 every 8 steps is 1/8 of the regularisation strength of R1 at every step.
    """
    return 0.5 * gamma * (every if lazy_scale else 1)


def drift_penalty(real_logits: Tensor) -> Tensor:
    """Drift: mean(D(real)^2), keeps D's logits near 0 (ProGAN's epsilon_drift)."""
    return real_logits.float().pow(2).mean()


# ---------------------------------------------------------------------------- G regularisers


def path_length_penalty(fake_img: Tensor, ws: Tensor, mean_pl: Tensor, decay: float = 0.01,
                        noise: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Path-length regulariser (StyleGAN2): keeps ||J_w^T y|| constant across w.

    Args:
        fake_img: G's output (N, C, H, W), built from `ws` with grad enabled.
        ws: (N, num_ws, w_dim) latents that produced `fake_img` (requires grad).
        mean_pl: running mean of the path lengths (0-dim tensor; keep it in the checkpoint).
        decay: EMA rate of the running mean.
        noise: the random image-space direction y; drawn when None (given by tests).
    Returns:
        (penalty, new_mean_pl): penalty = mean((|J^T y| - a)^2), new_mean_pl detached.
    """
    if noise is None:
        # Dividing by sqrt(H*W) makes the lengths independent of the resolution.
        noise = torch.randn_like(fake_img) / math.sqrt(fake_img.shape[2] * fake_img.shape[3])
    (grad,) = autograd.grad((fake_img * noise).sum(), ws, create_graph=True)
    lengths = grad.float().pow(2).sum(2).mean(1).sqrt()
    # The running mean is updated from the detached lengths: it is a target, not a trained quantity.
    new_mean = mean_pl.detach() + decay * (lengths.detach().mean() - mean_pl.detach())
    return (lengths - new_mean).pow(2).mean(), new_mean


def feature_matching_loss(real_feats: Sequence[Tensor], fake_feats: Sequence[Tensor]) -> Tensor:
    """Feature matching (Salimans et al. 2016): L1 between batch means of D's features, averaged over layers.

    Each layer's features are averaged over the batch only (positions and channels kept), so G is
    pushed to match the first moment of every feature map; reals are detached (D is not trained here).
    """
    if len(real_feats) != len(fake_feats) or not real_feats:
        raise ValueError(f"feature_matching_loss needs two equally long non-empty feature lists, "
                         f"got {len(real_feats)} and {len(fake_feats)}")
    terms = [(f.float().mean(0) - r.detach().float().mean(0)).abs().mean() for r, f in zip(real_feats, fake_feats)]
    return torch.stack(terms).mean()


def feature_matching_final_mse(real_feat: Tensor, fake_feat: Tensor) -> Tensor:
    """Feature matching as the seed-001 spec 3.6 writes it: MSE(fake_feat, real_feat.detach()) on D's
    FINAL feature vector (the flattened features before the logit head, Discriminator feats[-1]).

    Pairs fake i with real i: the trainer generates fakes with the reals' labels, so a pair shares its
    class. Elementwise mean over the batch and the features (nn.MSELoss's default reduction).
    """
    return paired_mse(real_feat, fake_feat)


def paired_mse(real: Tensor, fake: Tensor) -> Tensor:
    """MSE(fake, real.detach()), fake i against real i, elementwise mean: the spec's FM and perceptual form."""
    if real.shape != fake.shape:
        raise ValueError(f"paired MSE needs equal shapes, got {tuple(real.shape)} and {tuple(fake.shape)}")
    return (fake.float() - real.detach().float()).pow(2).mean()


def perceptual_loss(real_emb: Tensor, fake_emb: Tensor) -> Tensor:
    """MSE between the batch-mean embeddings of reals (detached) and fakes in the domain-feature space.

    Matching batch means (not pairs) because fakes have no paired real: this is a first-moment
    feature-statistics loss in the frozen classifier's space.
    """
    return (fake_emb.float().mean(0) - real_emb.detach().float().mean(0)).pow(2).mean()


def perceptual_loss_paired(real_emb: Tensor, fake_emb: Tensor) -> Tensor:
    """The seed-001 spec 3.4 form MSE(fake_feat, real_feat): fake i against real i (same class label,
    since fakes are generated with the reals' labels), elementwise mean; reals detached (no_grad)."""
    return paired_mse(real_emb, fake_emb)


def _channel_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    x = x.float().transpose(0, 1).flatten(1)  # (C, N*H*W)
    return x.mean(1), x.std(1)


def stats_penalty(fake: Tensor, mean: Tensor | Sequence[float], std: Tensor | Sequence[float]) -> Tensor:
    """Squared error between the fakes' per-channel mean/std and target ones, averaged over channels."""
    mean = torch.as_tensor(mean, dtype=torch.float32, device=fake.device)
    std = torch.as_tensor(std, dtype=torch.float32, device=fake.device)
    f_mean, f_std = _channel_stats(fake)
    return ((f_mean - mean).pow(2) + (f_std - std).pow(2)).mean()


STATS_RANGES = ("signed", "unit")


class RealStatsEMA:
    """EMA of the reals' per-channel mean and std; `penalty(fake)` pulls the fakes' colour stats to it.

    `range` is where the statistics are computed: "signed" = the images' own [-1, 1]; "unit" = [0, 1]
    (x * 0.5 + 0.5 for reals and fakes alike, seed-001 spec 3.3). The unit range halves every mean
    offset and std, so the same images give 1/4 of the signed penalty.
    The stats stay on the reals' device (no host sync per step); `state_dict` converts them to plain
    float lists so checkpoints load with torch.load(weights_only=True).
    """

    def __init__(self, beta: float = 0.99, channels: int = 3, range: str = "signed"):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"RealStatsEMA beta must be in [0, 1), got {beta}")
        if range not in STATS_RANGES:
            raise ValueError(f"RealStatsEMA range must be one of {STATS_RANGES}, got {range!r}")
        self.beta, self.channels, self.range = beta, channels, range
        self.mean: Tensor | None = None
        self.std: Tensor | None = None
        self.count = 0

    def _to_range(self, x: Tensor) -> Tensor:
        return x.float() * 0.5 + 0.5 if self.range == "unit" else x

    @torch.no_grad()
    def update(self, real: Tensor) -> None:
        mean, std = _channel_stats(self._to_range(real))
        if self.mean is None:  # first batch initialises: no bias toward an arbitrary start value
            self.mean, self.std = mean.clone(), std.clone()
        else:
            self.mean = self.mean.to(mean.device).lerp_(mean, 1.0 - self.beta)
            self.std = self.std.to(std.device).lerp_(std, 1.0 - self.beta)
        self.count += 1

    def penalty(self, fake: Tensor) -> Tensor:
        """stats_penalty against the EMA; 0 (still in fake's graph) before the first update."""
        if self.mean is None:
            return fake.float().sum() * 0.0
        self.mean, self.std = self.mean.to(fake.device), self.std.to(fake.device)  # once after a resume
        return stats_penalty(self._to_range(fake), self.mean, self.std)

    def state_dict(self) -> dict:
        return {"beta": self.beta, "count": self.count, "range": self.range,
                "mean": None if self.mean is None else [float(v) for v in self.mean.tolist()],
                "std": None if self.std is None else [float(v) for v in self.std.tolist()]}

    def load_state_dict(self, d: dict) -> None:
        self.beta, self.count = float(d["beta"]), int(d["count"])
        # checkpoints from before `range` hold signed statistics (the only range there was then)
        self.range = str(d.get("range", "signed"))
        self.mean = None if d["mean"] is None else torch.tensor(d["mean"], dtype=torch.float32)
        self.std = None if d["std"] is None else torch.tensor(d["std"], dtype=torch.float32)


SATURATION_FORMS = ("pixel", "mean_abs")


def saturation_penalty(fake: Tensor, threshold: float = 0.6, form: str = "pixel") -> Tensor:
    """Discourages fakes drifting into G's output clamp, where the clamp would stop their gradient.

    form "pixel": mean(relu(|fake| - threshold)^2), per pixel (it also penalises real tiles: 0.005-0.022
    per class on real crops at 0.6). "mean_abs" (seed-001 spec 3.5): clamp(mean|fake| - threshold,
    min=0)^2, one scalar on the batch mean |fake|, 0 while the batch's mean |pixel| stays below it.
    """
    if form == "mean_abs":
        return F.relu(fake.float().abs().mean() - threshold).pow(2)
    if form != "pixel":
        raise ValueError(f"saturation_penalty form must be one of {SATURATION_FORMS}, got {form!r}")
    return F.relu(fake.float().abs() - threshold).pow(2).mean()


def diversity_penalty(fake: Tensor, z: Tensor, y: Tensor | None = None, tau: float = 0.2,
                      eps: float = 1e-8) -> Tensor:
    """Batch-diversity penalty: mean over pairs of relu(tau - d_img / d_z), in [0, tau].

    The mode-seeking ratio of MSGAN (Mao et al. 2019), hinged as in DSGAN (Yang et al. 2019). MSGAN's
    d_z / d_img explodes at the start of training, when G's outputs are nearly identical (d_img ~ 0):
    a 0.1-weighted term then dominated the adversarial loss with gradients ~1/d_img^2. The hinge keeps
    a constant gradient 1/d_z while G collapses distinct latents onto similar images and is 0 once
    images differ by at least `tau` per unit of latent distance (real same-class patches: ~0.2-0.4).
    Pairs are (i, i+1 mod N): O(N) memory even at 256 px. Distances are mean absolute differences.
    With labels `y`, only same-class pairs count (the conditional setting); 0 if there are none.
    """
    fake2, z2 = fake.roll(1, 0), z.roll(1, 0)
    d_img = (fake.float() - fake2.float()).abs().flatten(1).mean(1)
    d_z = (z.detach().float() - z2.detach().float()).abs().flatten(1).mean(1)
    ratio = torch.relu(tau - d_img / (d_z + eps))
    if y is None:
        return ratio.mean()
    same = (y == y.roll(1, 0)).float()  # masked mean: no host sync to count the pairs
    return (ratio * same).sum() / same.sum().clamp(min=1.0)


def variance_penalty(fake: Tensor, v: float = 0.1) -> Tensor:
    """Mixing regularisation of the seed-001 spec 3.7: clamp(v - var(fake), min=0)^2.

    Our reading of "on aplatit fake en (B, -1), on calcule la variance globale": the variance over the
    batch (dim 0, unbiased as torch's .var) of each flattened pixel, averaged over the pixels, i.e. how
    much the batch's images differ from one another. (The variance of all elements at once would also
    count the spread of pixels within a single image, which a collapsed batch has too.) 0 once the
    images differ enough; with fewer than 2 images there is no spread to measure and it is 0.
    """
    flat = fake.float().flatten(1)
    if flat.shape[0] < 2:
        return flat.sum() * 0.0
    return F.relu(v - flat.var(dim=0).mean()).pow(2)


# ---------------------------------------------------------------------------- hinge, Wasserstein, AC-GAN


def d_loss_hinge(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Hinge D loss (Lim & Ye 2017; SAGAN, BigGAN): mean(relu(1 - D(real))) + mean(relu(1 + D(fake))).

    0 once every real logit is >= 1 and every fake one <= -1: D stops pushing beyond the margin, which
    keeps its logits bounded without a drift term."""
    return F.relu(1.0 - real_logits.float()).mean() + F.relu(1.0 + fake_logits.float()).mean()


def g_loss_hinge(fake_logits: Tensor) -> Tensor:
    """Hinge G loss: -mean(D(G(z))), unbounded below (G is not clipped at the margin, D is)."""
    return -fake_logits.float().mean()


def d_loss_wgan(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Wasserstein critic loss (Arjovsky et al. 2017): mean(D(fake)) - mean(D(real)); add the gradient
    penalty, without it the critic is unbounded."""
    return fake_logits.float().mean() - real_logits.float().mean()


def g_loss_wgan(fake_logits: Tensor) -> Tensor:
    """Wasserstein G loss: -mean(D(G(z))), the same form as g_loss_hinge."""
    return g_loss_hinge(fake_logits)


def gradient_penalty(critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor,
                     alpha: Tensor | None = None, eps: float = 1e-12) -> Tensor:
    """WGAN-GP penalty (Gulrajani et al. 2017): mean over the batch of (||d D(x_hat)/d x_hat||_2 - 1)^2.

    x_hat = alpha * real + (1 - alpha) * fake, one alpha ~ U[0, 1) per sample. The norm is over the whole
    sample (C*H*W). Seed 002's `gradients.norm(2, dim=1)` on (N, C, H, W) gradients takes it over the
    channels only, one norm per pixel, which constrains a different quantity; flattening first fixes it.
    The graph is kept (create_graph) so the penalty trains D. The caller multiplies by gp_weight.

    Args:
        critic: x -> (N,) logits, e.g. `lambda x: D(x, y).logits` (the labels of the reals).
        real, fake: (N, ...) samples of equal shape; fake is detached here.
        alpha: (N,) interpolation weights; drawn when None (given by tests).
        eps: added under the square root, so the norm has a gradient where it is 0.
    """
    if real.shape != fake.shape:
        raise ValueError(f"gradient_penalty needs reals and fakes of one shape, got {tuple(real.shape)} "
                         f"and {tuple(fake.shape)}")
    n = real.shape[0]
    if alpha is None:
        alpha = torch.rand(n, device=real.device)
    alpha = alpha.to(real.dtype).view(n, *([1] * (real.dim() - 1)))
    x_hat = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    (grad,) = autograd.grad(critic(x_hat).float().sum(), x_hat, create_graph=True)
    norm = (grad.float().flatten(1).pow(2).sum(1) + eps).sqrt()
    return (norm - 1.0).pow(2).mean()


def acgan_class_loss(class_logits: Tensor, labels: Tensor) -> Tensor:
    """AC-GAN auxiliary loss (Odena et al. 2017): cross-entropy of D's class logits against the labels.

    D minimises it on reals and fakes, G on its fakes (both sides are asked for the right class)."""
    return F.cross_entropy(class_logits.float(), labels.long())


# ---------------------------------------------------------------------------- texture


def gram_matrix(x: Tensor) -> Tensor:
    """(N, C, H, W) -> (N, C, C) Gram matrices F F^T / (C*H*W), F the (C, H*W) features (Gatys et al.)."""
    n, c, h, w = x.shape
    f = x.float().reshape(n, c, h * w)
    return f @ f.transpose(1, 2) / (c * h * w)


def texture_loss(real_feats: Sequence[Tensor], fake_feats: Sequence[Tensor], paired: bool = False) -> Tensor:
    """Gram-matrix texture loss on D's feature maps: L1 between real and fake Grams, averaged over layers.

    paired False (default): the batch-mean Gram of the reals against that of the fakes, the texture
    statistics of the batch (a fake has no real it should copy). paired True: fake i against real i, the
    seed-002 review's F.l1_loss(gram(fake), gram(real)) (the trainer gives pairs the same class). Only 4-D
    maps are used; reals are detached.
    """
    pairs = [(r, f) for r, f in zip(real_feats, fake_feats) if r.dim() == 4]
    if len(real_feats) != len(fake_feats) or not pairs:
        raise ValueError(f"texture_loss needs two equally long feature lists with (N, C, H, W) maps, "
                         f"got {len(real_feats)} and {len(fake_feats)}")
    terms = []
    for r, f in pairs:
        gr, gf = gram_matrix(r.detach()), gram_matrix(f)
        if not paired:
            gr, gf = gr.mean(0), gf.mean(0)
        terms.append((gf - gr).abs().mean())
    return torch.stack(terms).mean()
