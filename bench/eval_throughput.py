"""Evaluation throughput: generated + embedded images/s for FID at 64 and 256 px. Prints ONE JSON line.

    python bench/eval_throughput.py --n 512 --batch 64                      # GPU if present
    python bench/eval_throughput.py --n 32 --batch 16 --device cpu --res 64  # smoke test

Per resolution: a randomly initialised StyleGAN2 generator (the default TrainConfig widths) makes n
patches with engine.sampling.generate, which are embedded with engine.metrics.fid.embed, and the FID
statistics are computed against a second generated set -- the same path `python -m engine evaluate`
takes. The feature space is `inception` when its weights file is on this machine (--inception-weights
or the torch hub cache), else `domain` with an untrained resnet10t classifier (same architecture and
input size as the lab's own; the speed does not depend on the weights).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from engine.config import TrainConfig  # noqa: E402
from engine.utils import device_label, pick_device  # noqa: E402


def feature_space(weights: str, device: str):
    from engine.metrics.classifier import Classifier, build_classifier
    from engine.metrics.features import DomainFeatures, describe_space, open_feature_space

    try:
        m = open_feature_space("inception", weights or None, device)
        return m, describe_space(m)
    except FileNotFoundError:
        clf = Classifier(build_classifier("resnet10t", 9), 64, [0.0] * 3, [0.5] * 3)
        m = DomainFeatures(clf).to(device)
        return m, {"space": "domain (untrained resnet10t, 64 px input)", "num_features": m.num_features}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(res: int, n: int, batch: int, device: str, space) -> dict:
    from engine.metrics.fid import embed, fid_from_features
    from engine.models.stylegan2 import Generator
    from engine.sampling import generate

    cfg = TrainConfig()
    G = Generator(res, 9, z_dim=cfg.z_dim, w_dim=cfg.w_dim, n_mlp=cfg.n_mlp, channel_base=cfg.channel_base,
                  channel_max=cfg.channel_max).to(device).eval().requires_grad_(False)
    per_class = max(1, n // 9)
    generate(G, [0], list(range(min(batch, 4))), device=device, batch=batch)  # warm-up: kernels, allocator
    embed(space, generate(G, [0], [0, 1], device=device)[0], batch, device)
    sync(device)
    t0 = time.perf_counter()
    imgs, _ = generate(G, list(range(9)), list(range(per_class)), device=device, batch=batch)
    sync(device)
    t1 = time.perf_counter()
    feats = embed(space, imgs, batch, device)
    sync(device)
    t2 = time.perf_counter()
    fid_from_features(feats, feats[::-1].copy())
    t3 = time.perf_counter()
    k = len(imgs)
    return {"n": k, "img_per_s": round(k / (t3 - t0), 2), "generate_img_per_s": round(k / (t1 - t0), 2),
            "embed_img_per_s": round(k / (t2 - t1), 2), "fid_stats_s": round(t3 - t2, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--res", default="64,256", help="comma-separated resolutions")
    ap.add_argument("--n", type=int, default=512, help="images per resolution (rounded to whole classes)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--inception-weights", default="", help="FID Inception weights (default: torch hub cache)")
    a = ap.parse_args()
    device = pick_device(a.device)
    space, desc = feature_space(a.inception_weights, device)
    out = {"bench": "eval_throughput", "device": device_label() if device != "cpu" else "cpu",
           "features": desc.get("space"), "num_features": desc.get("num_features"), "batch": a.batch,
           "torch": torch.__version__}
    for r in (int(x) for x in a.res.split(",")):
        out[f"res_{r}"] = measure(r, a.n, a.batch, device, space)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
