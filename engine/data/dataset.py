"""Reading a prepared data set: the memory-mapped cache, torch Dataset, balanced sampler, demo set.

The trainer's fast path skips the Dataset: take index batches from BalancedClassSampler, gather
`data.images[np.sort(idx)]` from the memmap, move the uint8 batch to the device and call
`uint8_to_float` there (4x less host-to-device traffic than float32).
"""
from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from engine.config import ConfigError
from engine.images import to_uint8, uint8_to_float
from engine.data.classes import SPLITS
from engine.utils import default_demo_dir, read_json



def _prepare_hint(path: Path) -> str:
    return f"python -m engine prepare --source histosynth --size 64 --out {path}"


class PreparedData:
    """A prepared data set directory (see engine.data.prepare), opened without reading the pixels.

    Attributes: root, info (dataset.json), class_names, size, images ((N,H,W,3) uint8 memmap),
    labels ((N,) int64), splits ({"train","val","test","eval"} -> index arrays), eval_disjoint.

    The four splits partition the patches; a set prepared before `eval` was held out (no
    "eval_disjoint" in dataset.json) still loads, with its eval a subset of train (eval_disjoint False).
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().resolve()
        if not (self.root / "dataset.json").is_file():
            what = "does not exist" if not self.root.exists() else "is not a prepared data set (no dataset.json)"
            raise FileNotFoundError(f"data set {self.root} {what}; make one with: {_prepare_hint(self.root)}")
        self.info: dict = read_json(self.root / "dataset.json", None)
        try:
            if not isinstance(self.info, dict):
                raise ValueError("dataset.json is not valid JSON")
            self.class_names: list[str] = list(self.info["class_names"])
            self.size: int = int(self.info["size"])
            self.images: np.ndarray = np.load(self.root / "images.npy", mmap_mode="r")
            self.labels: np.ndarray = np.load(self.root / "labels.npy").astype(np.int64)
            self.splits: dict[str, np.ndarray] = {
                s: np.load(self.root / "splits" / f"{s}.npy").astype(np.int64) for s in SPLITS}
        except (OSError, KeyError, ValueError) as e:
            raise ConfigError(f"data set {self.root} is incomplete or damaged ({e}); prepare it again with: "
                              f"{_prepare_hint(self.root)}") from None
        n = len(self.labels)
        if self.images.shape != (n, self.size, self.size, 3) or self.images.dtype != np.uint8:
            raise ConfigError(f"data set {self.root}: images.npy has shape {self.images.shape} "
                              f"{self.images.dtype}, expected ({n}, {self.size}, {self.size}, 3) uint8; "
                              f"prepare it again with: {_prepare_hint(self.root)}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def eval_disjoint(self) -> bool:
        """True when `eval` is held out (disjoint from train); False for sets prepared before that."""
        return bool(self.info.get("eval_disjoint", False))

    @property
    def synthetic(self) -> bool:
        return bool(self.info.get("synthetic", False))

    def split_counts(self) -> dict[str, dict[str, int]]:
        """{split: {class name: number of patches}} computed from the arrays (not trusted from JSON)."""
        return {s: {name: int(k) for name, k in zip(self.class_names,
                                                   np.bincount(self.labels[idx], minlength=self.num_classes))}
                for s, idx in self.splits.items()}

    def __repr__(self) -> str:
        return f"PreparedData({self.root}, {len(self.labels)} x {self.size}px, {self.num_classes} classes)"


def load_prepared(path: str | os.PathLike) -> PreparedData:
    """Open a prepared data set; FileNotFoundError / ConfigError naming the path and the prepare command."""
    return PreparedData(path)


def real_tiles(data_dir: str | os.PathLike | PreparedData, class_name: str, n: int, seed: int = 0,
               split: str = "eval", size: int | None = None) -> np.ndarray:
    """Up to `n` real patches of one class from a prepared data set, as a (k, H, W, 3) uint8 array
    (k = min(n, what the split holds of that class)).

    The default split is `eval`, the real side every metric compares generated patches with, so the
    tiles a user judges by eye are the ones the numbers are about. A seeded choice (the same tiles for the
    same arguments, whatever else is asked), in data-set order; only those k patches are read from the
    memory map. `size` resizes them as the trainer does (bilinear, antialiased), e.g. to a generator's
    res, so that real and generated patches are compared at the same scale. ConfigError for a class or
    split the data set does not have.
    """
    data = data_dir if isinstance(data_dir, PreparedData) else load_prepared(data_dir)
    if split not in data.splits:
        raise ConfigError(f"split must be one of: {', '.join(SPLITS)} (got {split!r})")
    if class_name not in data.class_names:
        raise ConfigError(f"class {class_name!r} is not in data set {data.root} "
                          f"(classes: {', '.join(data.class_names)})")
    idx = data.splits[split]
    idx = idx[data.labels[idx] == data.class_names.index(class_name)]
    k = max(0, min(int(n), len(idx)))
    rng = np.random.default_rng([int(seed), zlib.crc32(class_name.encode("utf-8", "backslashreplace"))])
    pick = np.sort(rng.choice(idx, k, replace=False)) if k else idx[:0]
    tiles = np.array(data.images[pick], dtype=np.uint8).reshape(k, data.size, data.size, 3)
    if size is None or size == data.size or k == 0:
        return tiles
    x = torch.nn.functional.interpolate(uint8_to_float(tiles), size=(size, size), mode="bilinear",
                                        antialias=True, align_corners=False)
    return to_uint8(x)


class PatchDataset(torch.utils.data.Dataset):
    """One split of a PreparedData: item i -> (float32 (3,H,W) in [-1, 1], class index)."""

    def __init__(self, data: PreparedData, split: str = "train"):
        if split not in data.splits:
            raise ConfigError(f"split must be one of: {', '.join(SPLITS)} (got {split!r})")
        self.data, self.split = data, split
        self.indices = data.splits[split]
        self.labels = data.labels[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = np.array(self.data.images[self.indices[i]])  # copy out of the read-only memmap
        return uint8_to_float(img[None])[0], int(self.labels[i])


class BalancedClassSampler(torch.utils.data.Sampler[int]):
    """Each epoch yields exactly `samples_per_class_per_epoch` positions of every class present in
    `labels`, shuffled together. A class smaller than that is repeated in whole shuffled passes (so its
    patches appear equally often) before a partial one; deterministic for (seed, epoch).

    Positions index `labels`, i.e. a PatchDataset of the same split.
    """

    def __init__(self, labels: np.ndarray | torch.Tensor, samples_per_class_per_epoch: int, seed: int = 0):
        if samples_per_class_per_epoch < 1:
            raise ConfigError("samples_per_class_per_epoch must be at least 1 "
                              f"(got {samples_per_class_per_epoch})")
        labels = np.asarray(labels)
        self.by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
        self.k, self.seed, self.epoch = int(samples_per_class_per_epoch), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.k * len(self.by_class)

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        picks = []
        for idx in self.by_class:
            reps = -(-self.k // len(idx))
            picks.append(np.concatenate([rng.permutation(idx) for _ in range(reps)])[:self.k])
        order = np.concatenate(picks) if picks else np.zeros(0, np.int64)
        return iter(rng.permutation(order).tolist())


# ----------------------------------------------------------------------------------------------
# The built-in demo set

def ensure_demo(size: int = 64, per_class: int = 200, seed: int = 0,
                progress: Callable[[int, int, str], None] | None = None) -> Path:
    """The histosynth demo set at default_demo_dir(size); prepared once, again only if it is missing,
    damaged or was made with another per_class / seed."""
    from engine.config import PrepareConfig
    from engine.data.prepare import prepare
    from engine.data.sources import HISTOSYNTH_PER_CLASS

    out = default_demo_dir(size)
    try:
        cfg = load_prepared(out).info.get("config", {})
        per_class_made = cfg.get("per_class") or HISTOSYNTH_PER_CLASS
        made = (cfg.get("source"), cfg.get("size"), per_class_made, cfg.get("seed"))
        if made == ("histosynth", size, per_class, seed):
            return out
    except (FileNotFoundError, ConfigError):
        pass
    # One process: the demo is a few seconds of work, and ensure_demo runs inside the Streamlit server,
    # where a spawn pool started from the script thread was seen to hang.
    return prepare(PrepareConfig(source="histosynth", size=size, per_class=per_class, seed=seed, out=str(out),
                                 workers=1), progress)
