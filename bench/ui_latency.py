"""Style-mixing render latency: what one slider move costs on the Style mixing page.

A randomly initialised Generator of realistic size (TrainConfig defaults for z_dim, w_dim, n_mlp,
channel_base, channel_max; 9 classes) per resolution; loading is excluded. Times `style_mix` (the mixed
image alone) and `style_mix_batch(with_sources=True)` (source | donor | mixed: what the page renders per
rerun), median of --repeats after a warm-up. Prints ONE JSON line.
Target: < 1 s at 128 px on a 2-core CPU, < 100 ms on a GPU.

    python bench/ui_latency.py --sizes 64,128,256 --repeats 5
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.config import TrainConfig  # noqa: E402
from engine.models.stylegan2 import Generator, count_params  # noqa: E402
from engine.sampling import style_mix, style_mix_batch  # noqa: E402
from engine.utils import device_label, pick_device  # noqa: E402


def median_ms(fn, repeats: int, sync) -> tuple[float, float]:
    """Median wall ms and median process-CPU ms of fn(); the CPU time tells a slow render apart from a
    busy machine (on a shared box wall time >> CPU time / threads)."""
    fn()  # warm-up: allocator, CUDA context / kernels, CPU thread pool
    sync()
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        sync()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return round(1000 * statistics.median(wall), 2), round(1000 * statistics.median(cpu), 2)


def measure(res: int, repeats: int, device: str) -> dict:
    cfg = TrainConfig()
    torch.manual_seed(0)
    G = Generator(res, 9, z_dim=cfg.z_dim, w_dim=cfg.w_dim, n_mlp=cfg.n_mlp, channel_base=cfg.channel_base,
                  channel_max=cfg.channel_max, clamp=cfg.clamp).to(device).eval().requires_grad_(False)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    mix = G.num_ws // 2  # a crossover in the middle; the cost does not depend on the weights
    one, one_cpu = median_ms(lambda: style_mix(G, (0, 0), (8, 1), mix, truncation=0.7), repeats, sync)
    panel, panel_cpu = median_ms(lambda: style_mix_batch(G, (0, 0), (8, 1), mix, truncation=0.7,
                                                         with_sources=True), repeats, sync)
    return {"style_mix_ms": one, "panel_ms": panel, "style_mix_cpu_ms": one_cpu, "panel_cpu_ms": panel_cpu,
            "params_M": round(count_params(G) / 1e6, 2), "num_ws": G.num_ws}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="64,128,256", help="resolutions, comma separated")
    p.add_argument("--repeats", type=int, default=5, help="timed renders per size (median reported)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = pick_device(a.device)
    results = {str(r): measure(int(r), a.repeats, device) for r in a.sizes.split(",")}
    target_ms = 100.0 if device.startswith("cuda") else 1000.0
    ok = results.get("128", {}).get("panel_ms", 0.0) < target_ms if "128" in results else None
    print(json.dumps({"bench": "ui_latency", "device": device_label(), "torch_threads": torch.get_num_threads(),
                      "repeats": a.repeats, "results": results, "target_128px_ms": target_ms,
                      "meets_target_128px": ok}))


if __name__ == "__main__":
    main()
