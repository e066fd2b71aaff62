"""Family `mlp_gan`: the GAN basics tutorial's MLP GAN made conditional (engine.models.mlp_gan), trained
by engine.families.gan.PlainGAN with BCE on logits (one-sided label smoothing `real_label`), Adam 2e-4
(0.5, 0.999) and `d_steps` D updates per G update. Trains in seconds on a CPU at 32 px."""
from __future__ import annotations

from engine.config import MLPGANConfig
from engine.families.gan import PlainGAN
from engine.models import mlp_gan as models


class MLPGANFamily(PlainGAN):
    name = "mlp_gan"
    config_cls = MLPGANConfig
    models = models
    spectral = False


FAMILY = MLPGANFamily
