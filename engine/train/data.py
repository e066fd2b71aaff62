"""Training batches from a prepared data set: balanced over classes, resumable to the exact image.

The balanced sampler's order is a pure function of (seed, epoch), so the position in the stream is
just (epoch, pos) and a resumed run continues with the very next image. Every rank walks the same
global stream and takes its own slice of each global batch (per-rank batch = batch // world_size).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.config import ConfigError, TrainConfig

DEMO_PER_CLASS = 200  # histosynth patches per class when the demo set is prepared on demand


def training_data_dir(cfg: TrainConfig) -> str:
    """cfg.data, or when it is empty the histosynth demo at cfg.res, prepared on demand: the value of
    `data` the trainer records in config.json (engine.train.loop resolves it once, into a copy)."""
    if cfg.data:
        return cfg.data
    from engine.data.dataset import ensure_demo

    size = min(max(cfg.res, 32), 256)  # histosynth renders 32-256 px; other sizes are resized by Batches
    return str(ensure_demo(size=size, per_class=DEMO_PER_CLASS, seed=0))


def load_training_data(cfg: TrainConfig):
    """The prepared data set named by cfg.data (empty: the histosynth demo, training_data_dir).
    The config is read, never changed."""
    from engine.data.dataset import load_prepared

    path = Path(training_data_dir(cfg))
    if not (path / "dataset.json").is_file():
        raise ConfigError(f"config field 'data': {path} is not a prepared data set (no dataset.json); "
                          f"make one with `python -m engine prepare --out {path}` or leave it empty "
                          "for the histosynth demo")
    data = load_prepared(path)
    if len(data.splits["train"]) == 0:
        raise ConfigError(f"config field 'data': {path} has no training images")
    return data


class Batches:
    """Global batches from the train split: (float NCHW in [-1, 1] on device, int64 labels)."""

    def __init__(self, data, cfg: TrainConfig, *, rank: int = 0, world_size: int = 1,
                 device: torch.device | str = "cpu"):
        from engine.data.dataset import BalancedClassSampler

        self.data, self.batch, self.res = data, cfg.batch, cfg.res
        self.rank, self.per_rank = rank, cfg.batch // world_size
        self.device = torch.device(device)
        self.channels_last = cfg.channels_last
        self.train_idx = np.asarray(data.splits["train"], dtype=np.int64)
        labels = np.asarray(data.labels)[self.train_idx]
        # 0 = the mean class size, so that an epoch shows about as many images as the train split has
        spc = cfg.samples_per_class_per_epoch or max(1, round(len(labels) / len(np.unique(labels))))
        self.sampler = BalancedClassSampler(labels, spc, cfg.seed)
        self.epoch, self.pos, self._order = 0, 0, None
        self.pool = ThreadPoolExecutor(cfg.workers) if cfg.workers > 0 else None
        self.queue: list = []  # (future of the host batch, stream position after it)
        self.consumed = (0, 0)

    # -- the index stream
    def _epoch_order(self) -> np.ndarray:
        if self._order is None:
            self.sampler.set_epoch(self.epoch)
            self._order = self.train_idx[np.fromiter(iter(self.sampler), dtype=np.int64)]
        return self._order

    def _next_indices(self) -> np.ndarray:
        out = []
        need = self.batch
        while need:
            order = self._epoch_order()
            take = order[self.pos:self.pos + need]
            out.append(take)
            need -= len(take)
            self.pos += len(take)
            if self.pos >= len(order):
                self.epoch, self.pos, self._order = self.epoch + 1, 0, None
        idx = np.concatenate(out)
        return idx[self.rank * self.per_rank:(self.rank + 1) * self.per_rank]

    @property
    def epoch_float(self) -> float:
        """Epochs completed by the batches consumed so far (CSV `epoch`)."""
        epoch, pos = self.consumed
        return epoch + pos / max(1, len(self.sampler))

    # -- loading
    def _load(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        imgs = torch.from_numpy(np.ascontiguousarray(self.data.images[idx]))
        labels = torch.from_numpy(np.asarray(self.data.labels)[idx].astype(np.int64))
        if self.device.type == "cuda":
            imgs, labels = imgs.pin_memory(), labels.pin_memory()
        return imgs, labels

    def _submit(self) -> None:
        idx = self._next_indices()
        fut = self.pool.submit(self._load, idx) if self.pool else idx
        self.queue.append((fut, (self.epoch, self.pos)))

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        from engine.images import uint8_to_float

        while len(self.queue) < (2 if self.pool else 1):
            self._submit()
        fut, self.consumed = self.queue.pop(0)
        imgs, labels = fut.result() if self.pool else self._load(fut)
        if self.pool:
            self._submit()  # gather the next batch while this one trains
        # uint8 crosses to the device (4x less traffic than float); the conversion runs there
        x = uint8_to_float(imgs.to(self.device, non_blocking=True))
        if x.shape[-1] != self.res:
            x = F.interpolate(x, size=(self.res, self.res), mode="bilinear", antialias=True,
                              align_corners=False)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, labels.to(self.device, non_blocking=True)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    # -- resume
    def state_dict(self) -> dict:
        return {"epoch": int(self.consumed[0]), "pos": int(self.consumed[1])}

    def load_state_dict(self, d: dict) -> None:
        self.queue.clear()
        self.epoch, self.pos, self._order = int(d["epoch"]), int(d["pos"]), None
        self.consumed = (self.epoch, self.pos)
