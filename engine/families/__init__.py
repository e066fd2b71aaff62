"""The family seam: what every model family (stylegan2, dcgan, mlp_gan, ddpm) gives the shared parts.

The training loop, jobs, run directory, checkpoints, exports, grids, the Samples page and Evaluate are
shared; a family only brings its models, its optimisation step, its state, its sampler and its metrics
CSV. A family module defines one class implementing `Family` and names it `FAMILY`; `get(name)`
imports it on demand, so importing this package stays cheap (no diffusers unless `ddpm` is used).
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np
import torch

# family name -> module defining FAMILY (engine.train.family_loop trains them); stylegan2 has its own loop
MODULES = {"ddpm": "engine.families.ddpm", "dcgan": "engine.families.dcgan", "mlp_gan": "engine.families.mlp_gan"}


@runtime_checkable
class Family(Protocol):
    """One model family. Instances hold the models, optimiser(s), EMA and the family's own RNG."""

    name: str                      # the `--family` value
    csv_name: str                  # metrics file in the run directory, e.g. metrics_diffusion.csv
    csv_columns: tuple[str, ...]   # its columns in order; the loop fills epoch, step, kimg, img_per_s, time_s
    step: int                      # optimisation steps done
    nimg: int                      # training images shown

    @classmethod
    def build(cls, cfg: Any, res: int, num_classes: int, device: str | torch.device, **train: Any
              ) -> "Family":
        """Models from the family's config section; `train` carries shared options (total_steps, amp,
        compile, seed) with defaults, so a test builds a family from its section alone."""

    def train_step(self, images: torch.Tensor | np.ndarray, labels: torch.Tensor | Sequence[int]
                   ) -> dict[str, Any]:
        """One optimisation step on a batch; returns scalars keyed by CSV column (0-dim tensors or floats:
        the loop converts them when it logs, so a GPU step does not wait on the host)."""

    def state_dict(self) -> dict[str, Any]:
        """The full training state (tensors and primitives only: torch.load(weights_only=True) reads it)."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what state_dict returned; the next train_step continues the same run."""

    def sample(self, classes: Sequence[int], seeds: Sequence[int], *,
               progress: Callable[[int, int], None] | None = None, **options: Any) -> np.ndarray:
        """uint8 images (N, H, W, 3) from the averaged (EMA) model, one per (class, seed)."""

    def grid(self, per_class: int = 8, *, seed: int = 0, **options: Any) -> np.ndarray:
        """uint8 HWC grid, one row per class, fixed seeds and a fast sampler (training grids)."""


class FamilyGenerator(torch.nn.Module):
    """A family's averaged (EMA) model as the rest of the lab uses a generator: `.res`, `.num_classes`,
    `.family`, `.sample(classes, seeds, progress=None, **sampler options) -> uint8` and
    `.sample_options(**overrides)` (the options a sample is drawn with, for reports and manifests).
    engine.sampling.generate dispatches here for anything with a `sample` method. An nn.Module over the
    family's EMA network, so .parameters(), .eval() and the device work as on a StyleGAN2 G; moving it
    to another device is not supported (load it on the device it is used on)."""

    def __init__(self, fam: Any):
        super().__init__()
        self.net = fam.ema
        self.fam = fam  # not a Module: a plain attribute
        self.res, self.num_classes, self.family = int(fam.res), int(fam.num_classes), fam.name

    def sample_options(self, **overrides: Any) -> dict[str, Any]:
        """The family's sampler defaults (its config) with the given non-None overrides."""
        base = dict(self.fam.sample_defaults()) if hasattr(self.fam, "sample_defaults") else {}
        return {**base, **{k: v for k, v in overrides.items() if v is not None}}

    def sample(self, classes: Sequence[int], seeds: Sequence[int], *,
               progress: Callable[[int, int], None] | None = None, batch: int = 64, **options: Any
               ) -> np.ndarray:
        return self.fam.sample(list(classes), list(seeds), progress=progress, batch=batch,
                               **self.sample_options(**options))

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        raise TypeError(f"family {self.family!r} samples per (class, seed): call .sample(classes, seeds, "
                        "**options) or engine.sampling.generate")


def get(name: str) -> type:
    """The Family class of family `name` (imports its module)."""
    if name not in MODULES:
        raise KeyError(f"model family {name!r} has no family module; known: {', '.join(MODULES)}")
    return importlib.import_module(MODULES[name]).FAMILY
