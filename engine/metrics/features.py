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


# ----------------------------------------------------------------------------------------------
# `inception` and `timm:<name>`: offline only (the lab never downloads), weights from a local file or the hub cache.
# Every space below (and DomainFeatures) is tagged by `describe_space` with its weights' hash, so a
# report says exactly which network measured it.

import torch.nn.functional as F  # noqa: E402  (appended section; the module's head is not ours to edit)

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"


def hub_checkpoints_dir() -> Path:
    """Where torch.hub keeps downloaded weights: $TORCH_HOME/hub/checkpoints (~/.cache/torch/...)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def inception_missing_message(path=None) -> str:
    """The one sentence shown when the FID Inception weights are not on this machine."""
    where = f"{path} does not exist; " if path else ""
    return (f"Inception weights not found: {where}put {INCEPTION_FILE} (the torch-fidelity FID Inception "
            f"from github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}) in "
            f"{hub_checkpoints_dir()} ($TORCH_HOME/hub/checkpoints) or pass --inception-weights PATH; "
            "the `domain` feature space works offline.")


def find_weights(path, file_name: str, missing: Callable[[object], str]) -> Path:
    """A user-given weights file, else `file_name` in the hub cache; FileNotFoundError(missing(...))."""
    p = Path(path).expanduser() if path else hub_checkpoints_dir() / file_name
    if not p.is_file():
        raise FileNotFoundError(missing(path or None))
    return p


def load_state_dict_file(path) -> dict:
    """Tensors from .safetensors or a torch file, never unpickling code; unwraps {"state_dict": ...}."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    sd = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "teacher"):  # common wrappers of released checkpoints
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    return sd


def file_sha256(path, chunk: int = 1 << 22) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class InceptionFeatures(nn.Module):
    """torch-fidelity's FID InceptionV3 (2048-d pool features; the standard FID/KID space).

    Input float NCHW in [-1, 1] of any size; quantised to uint8 (exact for images that came from uint8)
    and resized by torch-fidelity to 299 px with TF1-compatible bilinear interpolation, as in the
    reference FID code, so values are comparable with papers.
    """

    name = "inception"
    resize_mode = "uint8 -> 299 px, TF1-compatible bilinear (torch-fidelity)"

    def __init__(self, weights):
        super().__init__()
        import io

        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        # torch-fidelity reads the file with weights_only=False; hand it a re-serialised copy of a
        # dict we loaded safely, so no pickle from disk is ever executed.
        buf = io.BytesIO()
        torch.save(load_state_dict_file(weights), buf)
        buf.seek(0)
        self.net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                               feature_extractor_weights_path=buf)
        self.num_features, self.size = 2048, 299

    def _both(self, x: torch.Tensor):
        x = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return self.net(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._both(x)[0].float()

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The 1008 ImageNet logits (unbiased) used by the Inception Score."""
        return self._both(x)[1].float()

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both from one pass (embedding for FID and IS together costs one Inception forward)."""
        f, logits = self._both(x)
        return f.float(), logits.float()


def load_inception_features(path=None, device: str = "cpu") -> InceptionFeatures:
    """The `inception` space from `path` or the hub cache; FileNotFoundError with the promised sentence."""
    p = find_weights(path, INCEPTION_FILE, inception_missing_message)
    m = InceptionFeatures(p).to(device).eval()
    m.weights_path = str(p)
    return m


class TimmFeatures(nn.Module):
    """Pooled pre-logit features of a timm backbone (e.g. a pathology foundation model) with local weights.

    Input float NCHW in [-1, 1]; resized (antialiased bilinear) to the model's input size and normalised
    with its pretrained mean/std.
    """

    def __init__(self, arch: str, weights):
        super().__init__()
        import timm

        self.net = timm.create_model(arch, pretrained=False, num_classes=0)
        sd = load_state_dict_file(weights)
        # A full checkpoint carries a classifier head the headless model lacks: drop only those keys.
        own = self.net.state_dict()
        missing, _ = self.net.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)
        if missing:
            raise ValueError(f"{weights} does not fit timm model {arch!r}: {len(missing)} missing keys "
                             f"(first: {missing[0]})")
        freeze_as_buffers(self.net).eval()
        cfg = getattr(self.net, "pretrained_cfg", {}) or {}
        self.size = int((cfg.get("input_size") or (3, 224, 224))[-1])
        mean, std = cfg.get("mean", (0.485, 0.456, 0.406)), cfg.get("std", (0.229, 0.224, 0.225))
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self.name, self.num_features = f"timm:{arch}", int(self.net.num_features)
        self.resize_mode = f"bilinear (antialias) to {self.size} px, timm mean/std"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.float() + 1) / 2
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        return self.net((x - self.mean) / self.std).float()


def timm_missing_message(arch: str, path=None, flag: str = "--timm-weights") -> str:
    """`flag`: the option of the command that asked (evaluate --timm-weights, train --domain-weights)."""
    got = f"{path} does not exist" if path else "no weights file given"
    return (f"timm:{arch} needs a local checkpoint ({got}): pass {flag} PATH (.safetensors or a "
            "torch state dict); nothing is downloaded. The `domain` feature space works offline.")


def open_feature_space(space: str, weights=None, device: str = "cpu", *, weights_flag: str = "--timm-weights"
                       ) -> nn.Module:
    """Any feature space by name: `domain` (weights = classifier.pt), `inception` (weights = the FID
    Inception file or None for the hub cache) or `timm:<name>` (weights = a local checkpoint).

    The module gets `weights_path` and `resize_mode` attributes for reports. Missing weights raise
    FileNotFoundError with a message saying which file and where to put it.
    """
    if space == "inception":
        return load_inception_features(weights, device)
    if space.startswith("timm:"):
        import timm

        arch = space[5:]
        if not timm.is_model(arch):
            raise ValueError(f"unknown timm architecture {arch!r} in feature space {space!r}")
        if not weights or not Path(weights).expanduser().is_file():
            raise FileNotFoundError(timm_missing_message(arch, weights, weights_flag))
        m = TimmFeatures(arch, Path(weights).expanduser()).to(device).eval()
        m.weights_path = str(weights)
        return m
    if space == "domain":
        if not weights:
            raise FileNotFoundError(missing_message("<data set>/classifier.pt", "domain classifier"))
        m = load_domain_features(weights, device)
        m.weights_path = str(weights)
        m.resize_mode = f"bilinear (antialias) to {m.size} px, training mean/std"
        return m
    raise ValueError(f"unknown feature space {space!r}; use domain, inception or timm:<name>")


def describe_space(m: nn.Module) -> dict:
    """What a report records about a feature space: name, dims, input size, resize mode, weights + hash."""
    path = getattr(m, "weights_path", None)
    return {"space": getattr(m, "name", type(m).__name__), "num_features": int(m.num_features),
            "input_size": int(getattr(m, "size", 0) or 0), "resize_mode": getattr(m, "resize_mode", ""),
            "weights": path, "weights_sha256": file_sha256(path)[:16] if path and Path(path).is_file() else None}


FEATURE_SPACES["inception"] = load_inception_features
