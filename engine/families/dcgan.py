"""Family `dcgan`: the seed-002 conditional DCGAN with its review's fixes (engine.models.dcgan), trained
by engine.families.gan.PlainGAN: hinge loss by default (or logistic, BCE with label smoothing, WGAN-GP),
TTUR Adam, projection / label-map / AC-GAN conditioning, optional texture loss; spectral norm in D
(one power iteration per D update)."""
from __future__ import annotations

from engine.config import DCGANConfig
from engine.families.gan import PlainGAN
from engine.models import dcgan as models


class DCGANFamily(PlainGAN):
    name = "dcgan"
    config_cls = DCGANConfig
    models = models
    spectral = True


FAMILY = DCGANFamily
