"""Data throughput: prepared uint8 cache -> float tensors in [-1, 1] on the device, at 64 and 256 px.

Prepares a small histosynth set per size in a temp dir, then for --seconds per size draws balanced
index batches, gathers them from the memory-mapped cache, moves the uint8 batch to the device and
converts it there (the trainer's fast path). Prints ONE JSON line.

    python bench/data_throughput.py --batch 64 --seconds 5
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.config import PrepareConfig  # noqa: E402
from engine.data.dataset import BalancedClassSampler, load_prepared  # noqa: E402
from engine.images import uint8_to_float  # noqa: E402
from engine.data.prepare import prepare  # noqa: E402
from engine.utils import device_label, pick_device  # noqa: E402


def measure(root: Path, batch: int, seconds: float, device: str) -> dict:
    data = load_prepared(root)
    train = data.splits["train"]
    sampler = BalancedClassSampler(data.labels[train], samples_per_class_per_epoch=4 * batch, seed=0)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    pin = device.startswith("cuda")

    def batches():
        epoch = 0
        while True:
            sampler.set_epoch(epoch)
            order = np.fromiter(sampler, dtype=np.int64)
            for i in range(0, len(order) - batch + 1, batch):
                yield np.sort(train[order[i:i + batch]])  # sorted: sequential reads from the memmap
            epoch += 1

    def step(idx: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(data.images[idx]))
        return uint8_to_float(x.pin_memory() if pin else x, device)

    it = batches()
    for _ in range(3):  # warm-up: page cache, CUDA context, allocator
        step(next(it))
    sync()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        y = step(next(it))
        n += 1
    sync()
    dt = time.perf_counter() - t0
    assert y.shape == (batch, 3, data.size, data.size) and float(y.min()) >= -1 and float(y.max()) <= 1
    return {"batches_per_s": round(n / dt, 2), "images_per_s": round(n * batch / dt, 1), "batches": n,
            "cache_images": int(len(data.labels))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=5.0, help="measuring time per size")
    ap.add_argument("--per-class", type=int, default=0,
                    help="histosynth patches per class to prepare (default: enough for 2 batches per class)")
    ap.add_argument("--sizes", default="64,256")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = pick_device(args.device)
    per_class = args.per_class or max(16, 2 * args.batch // 9)
    results, prep_s = {}, {}
    with tempfile.TemporaryDirectory(prefix="histogen-bench-") as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            t0 = time.perf_counter()
            root = prepare(PrepareConfig(source="histosynth", size=size, per_class=per_class, seed=0,
                                         out=str(Path(tmp) / f"h{size}")))
            prep_s[str(size)] = round(time.perf_counter() - t0, 2)
            results[str(size)] = measure(root, args.batch, args.seconds, device)
    print(json.dumps({"bench": "data_throughput", "device": device, "device_name": device_label(),
                      "batch": args.batch, "seconds": args.seconds, "prepare_s": prep_s, "results": results}))


if __name__ == "__main__":
    main()
