"""The GAN families with a plain G(z, y) and D(x, y): `dcgan` and `mlp_gan` (engine.families.dcgan /
engine.families.mlp_gan subclass `PlainGAN` with their models and losses).

One train_step = `d_steps` D updates (each on the step's reals and fresh fakes) then one G update,
then G_ema. Losses (engine.losses): hinge (dcgan's default), logistic (non-saturating), BCE with
one-sided label smoothing (`real_label`), WGAN-GP (critic + gp_weight x the gradient penalty); an
AC-GAN head adds its cross-entropy on reals and fakes to D and on fakes to G; dcgan's texture loss
adds Gram-matrix L1 on D's features to G. Adam with the family's lr_g / lr_d / betas (TTUR), constant
learning rates.

Randomness: the initial weights are drawn under `seed`; z and the gradient penalty's alpha come from
the family's own generator (saved in state_dict); dropout and D's input noise draw from torch's
global RNG, which the shared checkpoint saves. Samples: z of a seed is engine.sampling.generate.seed_z
(a (class, seed) pair names one patch, as for stylegan2); G_ema runs in eval mode (BatchNorm's running
statistics, copied from G by update_ema).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

from engine import losses as L
from engine.config import from_dict, to_dict, validate
from engine.images import tile, to_uint8, uint8_to_float
from engine.train.ema import ema_decay, make_ema, update_ema
from engine.train.logging import CSV_COLUMNS

CSV_NAME = "metrics_gan.csv"
# the GAN columns (the ones that do not apply, ada_p, acc_ema, alpha, r1, written empty), then extras
CSV_EXTRAS = ("d_real", "d_fake", "g_total")
STATE_VERSION = 1


def _logits(out: Any) -> torch.Tensor:
    return out.logits if hasattr(out, "logits") else out


class PlainGAN:
    """A family of G(z, y) -> [-1, 1] images and D(x, y) -> logits (or a DOut). Subclasses set `name`,
    `config_cls`, `models` (a module with Generator, Discriminator, generator_kwargs,
    discriminator_kwargs) and `spectral` (D holds spectral norms: one power iteration per D update)."""

    name = ""
    config_cls: type = object
    models: Any = None
    spectral = False
    csv_name = CSV_NAME
    csv_columns = CSV_COLUMNS + CSV_EXTRAS

    def __init__(self, cfg: Any, res: int, num_classes: int, device: str | torch.device = "cpu", *,
                 total_steps: int = 0, amp: bool = False, compile: bool = False, seed: int = 0):
        self.cfg = validate(cfg)
        self.res, self.num_classes = int(res), int(num_classes)
        self.device = torch.device(device)
        self.total_steps, self.amp, self.seed = int(total_steps), bool(amp), int(seed)
        d = to_dict(self.cfg)
        self.g_kwargs = self.models.generator_kwargs(d, self.res, self.num_classes)
        with torch.random.fork_rng(devices=[]):  # the same initial weights whatever ran before
            torch.manual_seed(self.seed)
            self.G = self.models.Generator(**self.g_kwargs)
            self.D = self.models.Discriminator(**self.models.discriminator_kwargs(d, self.res, self.num_classes))
        self.G.to(self.device).train()
        self.D.to(self.device).train()
        self.G_ema = make_ema(self.G)
        self.ema = self.G_ema  # the averaged model every sample comes from (engine.families.FamilyGenerator)
        c = self.cfg
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=c.lr_g, betas=(c.beta1, c.beta2))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=c.lr_d, betas=(c.beta1, c.beta2))
        self.gen = torch.Generator(device=self.device).manual_seed(self.seed)
        self.step, self.nimg = 0, 0

    @property
    def loss(self) -> str:
        return getattr(self.cfg, "loss", "bce")

    @classmethod
    def build(cls, cfg: Any, res: int, num_classes: int, device: str | torch.device = "cpu", **train: Any):
        return cls(cfg, res, num_classes, device, **train)

    @classmethod
    def from_state(cls, state: dict[str, Any], device: str | torch.device = "cpu", **train: Any):
        """Rebuild from a state_dict alone (its config, res and classes), e.g. for the Samples page."""
        fam = cls(from_dict(cls.config_cls, state["config"]), state["res"], state["num_classes"], device,
                  total_steps=state.get("total_steps", 0), **train)
        fam.load_state_dict(state)
        return fam

    # ------------------------------------------------------------------------------------------
    # training

    def _z(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.G.z_dim, generator=self.gen, device=self.device)

    def _d_adv(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        if self.loss == "hinge":
            return L.d_loss_hinge(real_logits, fake_logits)
        if self.loss == "logistic":
            return L.d_loss_logistic(real_logits, fake_logits)
        if self.loss == "wgan_gp":
            return L.d_loss_wgan(real_logits, fake_logits)
        return L.d_loss_bce(real_logits, fake_logits, self.cfg.real_label)

    def _g_adv(self, fake_logits: torch.Tensor) -> torch.Tensor:
        if self.loss in ("hinge", "wgan_gp"):
            return L.g_loss_hinge(fake_logits)
        return L.g_loss_nonsaturating(fake_logits)

    def _d_update(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.spectral:
            from engine.models.ops import power_iteration

            power_iteration(self.D)
        with torch.no_grad():
            fake = self.G(self._z(len(y)), y)
        out_r, out_f = self.D(x, y), self.D(fake, y)
        lr_, lf_ = _logits(out_r), _logits(out_f)
        loss = adv = self._d_adv(lr_, lf_)
        if self.loss == "wgan_gp":
            alpha = torch.rand(len(y), generator=self.gen, device=self.device)
            loss = loss + self.cfg.gp_weight * L.gradient_penalty(lambda v: _logits(self.D(v, y)), x, fake, alpha)
        if getattr(out_r, "class_logits", None) is not None:  # AC-GAN: both sides classified
            loss = loss + L.acgan_class_loss(out_r.class_logits, y) + L.acgan_class_loss(out_f.class_logits, y)
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_d.step()
        return {"d_loss": adv.detach(), "real_logits": lr_.detach(), "fake_logits": lf_.detach(),
                "fake": fake}

    def _g_update(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        self.D.requires_grad_(False)  # G's backward needs no D gradients
        try:
            fake = self.G(self._z(len(y)), y)
            out = self.D(fake, y)
            adv = self._g_adv(_logits(out))
            total = adv
            if getattr(out, "class_logits", None) is not None:
                total = total + L.acgan_class_loss(out.class_logits, y)
            tw = getattr(self.cfg, "texture_weight", 0.0)
            if tw > 0:
                with torch.no_grad():
                    real_feats = self.D(x, y).feats
                total = total + tw * L.texture_loss(real_feats, out.feats)
            self.opt_g.zero_grad(set_to_none=True)
            total.backward()
            self.opt_g.step()
        finally:
            self.D.requires_grad_(True)
        return {"g_loss": adv.detach(), "g_total": total.detach()}

    def train_step(self, images: torch.Tensor | np.ndarray, labels: torch.Tensor | Sequence[int]
                   ) -> dict[str, Any]:
        """d_steps D updates and one G update on a batch: uint8 (N, H, W, 3) or float (N, 3, H, W) in
        [-1, 1], labels (N,). Returns 0-dim tensors keyed by metrics_gan.csv column (`*_min` / `*_max`
        are extremes over the interval, the rest means) and the float learning rates."""
        dev = self.device
        if isinstance(images, np.ndarray) or images.dtype == torch.uint8:
            x = uint8_to_float(images, dev)
        else:
            x = images.to(dev, torch.float32)
        y = torch.as_tensor(labels, dtype=torch.long).to(dev)
        self.G.train()
        self.D.train()
        for _ in range(self.cfg.d_steps):
            d = self._d_update(x, y)
        g = self._g_update(x, y)
        self.step += 1
        self.nimg += len(y)
        c = self.cfg
        update_ema(self.G_ema, self.G, ema_decay(len(y), self.nimg, ema_kimg=c.ema_kimg, ema_beta=c.ema_beta,
                                                 rampup=c.ema_rampup))
        fake = d["fake"]
        return {"d_loss": d["d_loss"], "g_loss": g["g_loss"], "g_total": g["g_total"],
                "d_real": d["real_logits"].mean(), "d_fake": d["fake_logits"].mean(),
                "acc": (d["real_logits"] > 0).float().mean(),
                "real_mu": x.mean(), "real_min": x.min(), "real_max": x.max(),
                "fake_mu": fake.mean(), "fake_min": fake.min(), "fake_max": fake.max(),
                "lr_g": float(c.lr_g), "lr_d": float(c.lr_d)}

    # ------------------------------------------------------------------------------------------
    # state

    def state_dict(self) -> dict[str, Any]:
        return {"family": self.name, "version": STATE_VERSION, "config": to_dict(self.cfg), "res": self.res,
                "num_classes": self.num_classes, "total_steps": self.total_steps,
                "G": self.G.state_dict(), "D": self.D.state_dict(), "G_ema": self.G_ema.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(), "step": self.step,
                "nimg": self.nimg, "gen": self.gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("family") != self.name:
            raise ValueError(f"checkpoint is of family {state.get('family')!r}, not {self.name!r}")
        if state["res"] != self.res or state["num_classes"] != self.num_classes:
            raise ValueError(f"checkpoint does not fit this model: res / classes {state['res']} / "
                             f"{state['num_classes']} in the checkpoint, {self.res} / {self.num_classes} here")
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.G_ema.load_state_dict(state["G_ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.step, self.nimg = int(state["step"]), int(state["nimg"])
        self.gen.set_state(state["gen"].cpu())

    def export(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(G_ema's tensors, what rebuilds it): exports/generator.safetensors + generator.json."""
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.G_ema.state_dict().items()}
        meta = {"family": self.name, "kwargs": dict(self.g_kwargs), "config": to_dict(self.cfg),
                "res": self.res, "num_classes": self.num_classes, "step": self.step, "nimg": self.nimg}
        return tensors, meta

    @classmethod
    def from_export(cls, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
                    device: str | torch.device = "cpu"):
        """A family for sampling from `export()`'s output (G and G_ema both get the EMA weights)."""
        fam = cls(from_dict(cls.config_cls, meta["config"]), meta["res"], meta["num_classes"], device)
        fam.G.load_state_dict(tensors)
        fam.G_ema.load_state_dict(tensors)
        fam.step, fam.nimg = int(meta.get("step", 0)), int(meta.get("nimg", 0))
        return fam

    # ------------------------------------------------------------------------------------------
    # sampling

    def sample_defaults(self) -> dict[str, Any]:
        return {}  # no sampler options: z of the seed, G_ema

    @torch.no_grad()
    def sample(self, classes: Sequence[int], seeds: Sequence[int], *, batch: int = 64,
               progress: Callable[[int, int], None] | None = None, **options: Any) -> np.ndarray:
        """uint8 (N, H, W, 3) from G_ema (eval mode), one per (class, seed); z = seed_z(seed)."""
        from engine.sampling.generate import seed_z

        if options:
            raise ValueError(f"family {self.name} takes no sampler options (got {', '.join(options)})")
        out = []
        for i in range(0, len(classes), batch):
            z = torch.cat([seed_z(s, self.G.z_dim) for s in seeds[i:i + batch]]).to(self.device)
            y = torch.as_tensor(list(classes[i:i + batch]), dtype=torch.long, device=self.device)
            out.append(to_uint8(self.G_ema(z, y)))
            if progress is not None:
                progress(min(i + batch, len(classes)), len(classes))
        return np.concatenate(out) if out else np.zeros((0, self.res, self.res, 3), np.uint8)

    def grid(self, per_class: int = 8, *, seed: int = 0, **options: Any) -> np.ndarray:
        """One row per class; column j uses seed + j in every row (rows differ by the label alone)."""
        classes = [c for c in range(self.num_classes) for _ in range(per_class)]
        seeds = [seed + j for _ in range(self.num_classes) for j in range(per_class)]
        return tile(self.sample(classes, seeds), rows=self.num_classes)
