"""The in-domain classifier: a small timm network trained from scratch on a prepared data set.

It serves three purposes: the frozen `domain` feature space (engine.metrics.features), the GAN
discriminator's domain head, and the downstream "does the sample look like its class" check.
`python -m engine train-classifier --data DIR --out FILE` trains it; the file holds tensors and
primitives only, so `torch.load(weights_only=True)` reads it. Its `meta` is also written beside it as
JSON (`classifier.json`), so the pages can show a classifier's state without loading torch weights.
With `--progress-file` the command is a background job of the data set (engine.jobs.classifier).

Default architecture `resnet10t` (timm): a ResNet with a 3-conv stem and one basic block per stage,
~4.9 M parameters and 512-d penultimate features. It trains about 2x faster than resnet18 on a CPU at
64 px and, since the domain head runs it on every D forward, it is also cheaper inside the GAN.
"""
from __future__ import annotations

import argparse
import io
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.config import (CLASSIFIER_ARCH, CLASSIFIER_FILE, ClassifierConfig, ConfigError, add_arguments,
                           from_args, validate)
from engine.data.dataset import load_prepared
from engine.images import uint8_to_float
from engine.utils import atomic_write_bytes, atomic_write_json, pick_device

DEFAULT_ARCH = CLASSIFIER_ARCH
FILE_NAME = CLASSIFIER_FILE
Progress = Callable[[int, int, str], None]


# ----------------------------------------------------------------------------------------------
# Model

def build_classifier(arch: str, num_classes: int) -> nn.Module:
    """A timm network with random init (never a download) and a `num_classes` head."""
    import timm

    return timm.create_model(arch, pretrained=False, num_classes=num_classes)


class Classifier(nn.Module):
    """A timm net plus the input handling it was trained with.

    Takes float NCHW in [-1, 1] of any size: resized to `size` (antialiased bilinear, so a 256 px
    sample is compared at the scale the classifier learned) and normalised by the training split's
    per-channel mean/std. `forward` gives logits, `features` the penultimate (pooled) features.
    """

    def __init__(self, net: nn.Module, size: int, mean, std):
        super().__init__()
        self.net, self.size = net, int(size)
        self.num_features = int(net.num_features)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()  # G may hand bf16 under autocast; resize and normalise in fp32
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True,
                              align_corners=False)
        return (x - self.mean) / self.std

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_head(self.net.forward_features(self.prepare(x)), pre_logits=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.prepare(x))


# ----------------------------------------------------------------------------------------------
# Training helpers

def dihedral(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random element of the square's symmetry group per sample: x-flip, y-flip and transpose, each
    with prob 1/2, give all 8 flips/90-degree rotations uniformly (tissue has no preferred orientation)."""
    bits = torch.rand(3, x.shape[0], 1, 1, 1, generator=gen, device=gen.device).to(x.device) < 0.5
    x = torch.where(bits[0], x.flip(3), x)
    x = torch.where(bits[1], x.flip(2), x)
    return torch.where(bits[2], x.transpose(2, 3), x).contiguous()  # where() keeps the transposed strides


def channel_stats(images, idx: np.ndarray, limit: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean/std in [-1, 1] space over (a sorted subset of) the training images."""
    sub = np.sort(idx[np.linspace(0, len(idx) - 1, min(limit, len(idx))).astype(np.int64)])
    x = uint8_to_float(np.ascontiguousarray(images[sub]))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)  # a flat channel must not divide by zero
    return x.mean(dim=(0, 2, 3)).tolist(), std.tolist()


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """LR factor: linear warm-up (AdamW from scratch is unstable in its first steps), then cosine to 0.
    (Not the trainer's engine.train.step.cosine_lr, which has no warm-up and a floor.)"""
    return min(1.0, (step + 1) / warmup) * 0.5 * (1.0 + math.cos(math.pi * step / total))


def batches(images, idx: np.ndarray, batch: int, device: str):
    """uint8 batches from the (memory-mapped) image array, read in sorted order for the page cache."""
    for i in range(0, len(idx), batch):
        sel = np.sort(idx[i:i + batch])
        yield sel, torch.from_numpy(np.ascontiguousarray(images[sel])).to(device, non_blocking=True)


@torch.no_grad()
def evaluate_classifier(model: nn.Module, images, labels: np.ndarray, idx: np.ndarray, num_classes: int,
             device: str, batch: int = 256) -> tuple[float | None, list[list[int]]]:
    """Accuracy and confusion matrix (rows = true class, columns = predicted) on `idx`."""
    conf = torch.zeros(num_classes * num_classes, dtype=torch.int64)
    model.eval()
    for sel, x in batches(images, idx, batch, device):
        pred = model(uint8_to_float(x)).argmax(1).cpu()
        conf += torch.bincount(torch.from_numpy(labels[sel]) * num_classes + pred,
                               minlength=num_classes * num_classes)
    conf = conf.view(num_classes, num_classes)
    acc = float(conf.diag().sum() / conf.sum()) if len(idx) else None
    return acc, conf.tolist()


def format_confusion(confusion: list[list[int]], class_names: list[str]) -> str:
    """The confusion matrix as a text table: rows = true class, columns = predicted class."""
    w = max(5, *(len(c) for c in class_names), *(len(str(v)) for r in confusion for v in r)) + 1
    head = "true\\pred".ljust(w) + "".join(c.rjust(w) for c in class_names)
    rows = [c.ljust(w) + "".join(str(v).rjust(w) for v in r) for c, r in zip(class_names, confusion)]
    return "\n".join([head, *rows])


# ----------------------------------------------------------------------------------------------
# Train / save / load

def train_classifier(data_dir, out=None, *, arch: str = DEFAULT_ARCH, epochs: int = 10, batch: int = 64,
                     lr: float = 2e-3, weight_decay: float = 0.05, seed: int = 0, device: str = "auto",
                     split: str = "train", progress: Progress | None = None) -> dict:
    """Train the classifier on a prepared data set's `split`, evaluate on `val`, save to `out`.

    Args:
        data_dir: prepared data set directory (engine.data.dataset.load_prepared).
        out: output file; None or "" -> <data_dir>/classifier.pt.
        progress: optional callback progress(done_steps, total_steps, message).
    Returns:
        The saved `meta` dict (arch, num_classes, class_names, size, mean, std, val_acc, confusion, ...)
        plus "out" (the file written).
    """
    cfg = validate(ClassifierConfig(data=str(data_dir), out=str(out or ""), arch=arch, epochs=epochs,
                                    batch=batch, lr=lr, weight_decay=weight_decay, seed=seed,
                                    device=device, split=split))
    data_dir = Path(cfg.data)
    out = Path(cfg.out) if cfg.out else data_dir / FILE_NAME
    data = load_prepared(data_dir)
    names = list(data.class_names)
    K, size = len(names), int(data.size)
    labels = np.asarray(data.labels, dtype=np.int64)
    train_idx, val_idx = data.splits[cfg.split], data.splits["val"]
    if len(train_idx) < 2:
        raise ConfigError(f"split '{cfg.split}' of {data_dir} has {len(train_idx)} images; "
                          "the classifier needs at least 2")

    dev = pick_device(cfg.device)
    t0 = time.time()
    model, mean, std, bs = _fit(data.images, labels, train_idx, K, arch=cfg.arch, epochs=cfg.epochs,
                                batch=cfg.batch, lr=cfg.lr, weight_decay=cfg.weight_decay, seed=cfg.seed,
                                dev=dev, progress=progress)

    val_acc, confusion = evaluate_classifier(model, data.images, labels, val_idx, K, dev)
    meta = {"arch": cfg.arch, "num_classes": K, "class_names": names, "size": size,
            "mean": mean, "std": std, "val_acc": val_acc, "val_n": int(len(val_idx)),
            "confusion": confusion, "data_dir": str(data_dir.resolve()), "split": cfg.split,
            "train_n": int(len(train_idx)), "epochs": cfg.epochs, "batch": bs, "lr": cfg.lr,
            "weight_decay": cfg.weight_decay, "seed": cfg.seed, "device": dev,
            "train_s": round(time.time() - t0, 2)}
    state = {k: v.detach().cpu() for k, v in model.net.state_dict().items()}
    buf = io.BytesIO()
    torch.save({"state_dict": state, "meta": meta}, buf)
    atomic_write_bytes(out, buf.getvalue())
    atomic_write_json(meta_path(out), meta)  # after the weights: a sidecar never announces a missing file
    return {**meta, "out": str(out)}


def meta_path(path: str | Path) -> Path:
    """The JSON copy of a classifier file's meta (val_acc, confusion, arch ...): <file>.json."""
    return Path(path).with_suffix(".json")


def missing_message(path: str | Path, what: str = "classifier") -> str:
    """Why a classifier file is needed, and the exact command that makes it."""
    path = Path(path)
    data = str(path.parent) if (path.parent / "dataset.json").is_file() else "DIR"
    hint = "" if data != "DIR" else " (DIR = a prepared data set from `python -m engine prepare`)"
    return (f"{what} file not found: {path}. Train it with "
            f"`python -m engine train-classifier --data {data} --out {path}`{hint}. Without it, GAN "
            "training runs with the domain head off (alpha 0) and metrics can use the `inception` "
            "or `timm:<name>` feature spaces.")


def load_classifier(path, device: str = "cpu") -> tuple[Classifier, dict]:
    """Load a `train-classifier` file as (Classifier in eval mode on `device`, meta).

    The Classifier takes float NCHW in [-1, 1] of any size (see Classifier). Raises
    FileNotFoundError (with the command that makes the file) or ValueError (unreadable file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(missing_message(path))
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        meta = ckpt["meta"]
        net = build_classifier(meta["arch"], int(meta["num_classes"]))
        net.load_state_dict(ckpt["state_dict"])
        model = Classifier(net, meta["size"], meta["mean"], meta["std"])
    except Exception as e:  # a truncated, foreign or mismatched file: say which and how to fix it
        raise ValueError(f"{path} is not a readable classifier file ({type(e).__name__}: {e}); "
                         f"retrain it with `python -m engine train-classifier --data DIR --out {path}`"
                         ) from None
    return model.to(pick_device(device)).eval(), meta


# ----------------------------------------------------------------------------------------------
# CLI

def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m engine train-classifier",
        description="Train the in-domain classifier (domain feature space, D's domain head, downstream "
                    "check) on a prepared data set; prints val accuracy and the confusion matrix.")
    add_arguments(parser, ClassifierConfig)
    # Job plumbing, not configuration (as for `prepare`): how the Data page follows the training.
    parser.add_argument("--progress-file", metavar="FILE.json",
                        help="also report {state, done, total, message} in this JSON file (for background jobs)")
    parser.add_argument("--after-job", metavar="ID",
                        help="first wait for this data preparation job (engine.jobs.prepare) to finish")
    args = parser.parse_args(argv)
    report = None
    if args.progress_file:
        import signal
        import threading

        from engine.jobs.core import StatusWriter

        report = StatusWriter(args.progress_file, every_s=0.5)
        report.set("running", force=True, done=0, total=0, message="starting")
        if threading.current_thread() is threading.main_thread():  # a stop (SIGTERM) ends it `stopped`
            signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        cfg = from_args(ClassifierConfig, args)
        if args.after_job:
            _wait_for_preparation(args.after_job, report)
        if report is not None:  # the ETA counts from here, not from the wait behind a preparation
            report.set("running", force=True, done=0, total=0, message="loading the data set",
                       train_started_at=time.time())
        meta = train_with_bar(cfg, None if report is None else lambda d, t, m: report.set(
            "running", force=d == t, done=d, total=t, message=m))
    except BaseException as e:
        if report is not None:
            _report_end(report, e)
        if isinstance(e, (FileNotFoundError, ConfigError)):  # the message names the data set / field to fix
            print(f"error: {e}", file=sys.stderr)
            return 2
        raise
    if report is not None:
        acc = "n/a" if meta["val_acc"] is None else f"{meta['val_acc']:.3f}"
        report.set("finished", force=True, out=meta["out"], val_acc=meta["val_acc"],
                   message=f"held-out accuracy {acc} ({meta['val_n']} val images) in {meta['train_s']:.0f} s")
    acc = "n/a (empty val split)" if meta["val_acc"] is None else f"{meta['val_acc']:.4f}"
    print(f"{meta['arch']} on {meta['train_n']} {meta['split']} images, {meta['epochs']} epochs, "
          f"{meta['train_s']:.1f} s on {meta['device']}")
    print(f"val accuracy: {acc} ({meta['val_n']} images)")
    print("confusion matrix (rows = true class, columns = predicted):")
    print(format_confusion(meta["confusion"], meta["class_names"]))
    print(f"saved {meta['out']}")
    return 0


def train_with_bar(cfg: ClassifierConfig, also: Progress | None = None) -> dict:
    """train_classifier(cfg) with a tqdm bar on stderr; `also` gets every progress call too (a job's
    progress file)."""
    from tqdm import tqdm

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    bar = tqdm(unit="step", file=sys.stderr, dynamic_ncols=True, desc="train-classifier", mininterval=1.0)

    def progress(done: int, total: int, msg: str) -> None:
        bar.total = total
        bar.set_postfix_str(msg, refresh=False)
        bar.update(done - bar.n)
        if also is not None:
            also(done, total, msg)

    try:
        kw = {k: v for k, v in asdict(cfg).items() if k not in ("data", "out", "threads")}
        return train_classifier(cfg.data, cfg.out or None, **kw, progress=progress)
    finally:
        bar.close()


def _wait_for_preparation(job_id: str, report=None, every_s: float = 1.0) -> None:
    """Block until data preparation job `job_id` ends; FileNotFoundError unless it finished (then there
    is nothing to train on: the classifier is queued behind its data set)."""
    from engine.jobs import prepare as data_jobs

    while (s := data_jobs.prepare_status(job_id)).state in data_jobs.ACTIVE:
        if report is not None:
            report.set("queued", done=0, total=0, message=f"waiting for the preparation of {Path(s.out).name}")
        time.sleep(every_s)
    if s.state != "finished":
        raise FileNotFoundError(f"the preparation of {s.out} ended {s.state} ({s.message}); "
                                "no classifier was trained")


def _report_end(report, e: BaseException) -> None:
    if isinstance(e, (SystemExit, KeyboardInterrupt)):
        report.set("stopped", force=True, message="stopped; no classifier was written")
    else:  # ours are one sentence naming the field or path; anything else gets its type too
        ours = isinstance(e, (ConfigError, FileNotFoundError, ValueError))
        report.set("failed", force=True, message=str(e) if ours else f"{type(e).__name__}: {e}")


# ----------------------------------------------------------------------------------------------
# Training on given arrays (downstream check: real vs synthetic training sets)

def fit_classifier(images: np.ndarray, labels: np.ndarray, num_classes: int, *, arch: str = DEFAULT_ARCH,
                   epochs: int = 10, batch: int = 64, lr: float = 2e-3, weight_decay: float = 0.05,
                   seed: int = 0, device: str = "auto", progress: Progress | None = None) -> Classifier:
    """Train a Classifier from scratch on uint8 NHWC `images` with int `labels` (same recipe as
    `train_classifier`: AdamW, warm-up + cosine, dihedral augmentation, bf16 on CUDA).

    Returns the model in eval mode; score it with `evaluate_classifier(model, images, labels, idx, K, device)`.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) < 2:
        raise ValueError(f"a classifier needs at least 2 training images (got {len(labels)})")
    model = _fit(images, labels, np.arange(len(labels)), num_classes, arch=arch, epochs=epochs,
                 batch=batch, lr=lr, weight_decay=weight_decay, seed=seed, dev=pick_device(device),
                 progress=progress)[0]
    return model.eval()


def _fit(images: np.ndarray, labels: np.ndarray, idx: np.ndarray, num_classes: int, *, arch: str,
         epochs: int, batch: int, lr: float, weight_decay: float, seed: int, dev: str,
         progress: Progress | None) -> tuple[Classifier, list, list, int]:
    """The one training recipe (AdamW, warm-up + cosine, dihedral augmentation, bf16 on CUDA) on
    `images[idx]`. Returns (model, channel mean, channel std, batch size used)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    gen = torch.Generator(dev if dev.startswith("cuda") else "cpu").manual_seed(seed)
    mean, std = channel_stats(images, idx)
    model = Classifier(build_classifier(arch, num_classes), images.shape[1], mean, std).to(dev)
    opt_ = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    # Full batches only: a batch of 1 breaks BatchNorm. A split smaller than one batch is used whole.
    bs = min(batch, len(idx))
    per_epoch = len(idx) // bs
    total = epochs * per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt_, lambda s: warmup_cosine(s, total, max(1, min(100, total // 20))))
    amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev.startswith("cuda"))
    step = 0
    for epoch in range(epochs):
        model.train()
        for sel, x in batches(images, rng.permutation(idx)[:per_epoch * bs], bs, dev):
            y = torch.from_numpy(labels[sel]).to(dev)
            with amp:
                loss = F.cross_entropy(model(dihedral(uint8_to_float(x), gen)), y)
            opt_.zero_grad(set_to_none=True)
            loss.backward()
            opt_.step()
            sched.step()
            step += 1
            if progress is not None:
                progress(step, total, f"epoch {epoch + 1}/{epochs} loss {loss.item():.3f}")
    return model, mean, std, bs
