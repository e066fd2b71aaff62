"""Frozen feature spaces: `domain` (the engine's own classifier) now; `inception` and `timm:<name>` later.

A feature space is an nn.Module with `num_features` that maps float NCHW images in [-1, 1] of any size
to (N, num_features). It is frozen but differentiable wrt its input, so the GAN's perceptual loss and
D's domain head can backpropagate into G through it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from engine.metrics.classifier import Classifier, load_classifier, missing_message


def freeze_as_buffers(module: nn.Module) -> nn.Module:
    """Turn every parameter into a buffer holding the same (detached) tensor.

    Why not just requires_grad_(False): GAN loops toggle `D.requires_grad_(True/False)` and build D's
    optimiser from `D.parameters()`; either would silently unfreeze or update a sub-module's
    parameters. Buffers are still moved by .to(), saved in state_dict and used by forward, but are
    invisible to both.
    """
    for m in module.modules():
        for name, p in list(m._parameters.items()):
            if p is not None:
                del m._parameters[name]
                m.register_buffer(name, p.detach().requires_grad_(False))
    return module


class DomainFeatures(nn.Module):
    """Penultimate features of a trained in-domain classifier, frozen.

    Input float NCHW in [-1, 1], any size (resized inside to the classifier's training size with
    antialiased bilinear interpolation and normalised as in training). Output (N, num_features) fp32.
    Holds no trainable parameters and stays in eval mode (BatchNorm statistics never move), even when
    a parent module calls .train().
    """

    name = "domain"

    def __init__(self, classifier: Classifier, meta: dict | None = None):
        super().__init__()
        self.classifier = freeze_as_buffers(classifier)
        self.meta = dict(meta or {})
        self.num_features = classifier.num_features
        self.size = classifier.size
        super().train(False)

    def train(self, mode: bool = True) -> "DomainFeatures":
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(x).float()

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits for the same input (class names in meta["class_names"])."""
        return self.classifier(x).float()


def load_domain_features(path, device: str = "cpu") -> DomainFeatures:
    """The `domain` feature space from a `train-classifier` file.

    A missing file raises FileNotFoundError naming it and the exact
    `python -m engine train-classifier --data DIR --out PATH` command.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(missing_message(path, "domain classifier"))
    model, meta = load_classifier(path, device)
    return DomainFeatures(model, meta)


# name -> loader(path, device) -> frozen module with num_features. Issue 6 adds `inception`, `timm:<name>`.
FEATURE_SPACES: dict[str, Callable[..., nn.Module]] = {"domain": load_domain_features}


def load_feature_space(space: str, path, device: str = "cpu") -> nn.Module:
    """Look a feature space up by name; ValueError listing the known ones otherwise."""
    if space not in FEATURE_SPACES:
        raise ValueError(f"unknown feature space {space!r}; known: {', '.join(FEATURE_SPACES)}")
    return FEATURE_SPACES[space](path, device)
