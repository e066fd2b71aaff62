"""Throughput of a plain G + D training step of the `dcgan` and `mlp_gan` models: one JSON line per family.

    python bench/gan_model_throughput.py                              # both, 32 px, batch 32, CPU, demo presets
    python bench/gan_model_throughput.py --family dcgan --preset spec --res 64 --device cuda

The step is the models' own, outside the shared loop (which does not run these families yet): per G
update, `d_steps` D updates (fresh fakes, the preset's loss: hinge / BCE / WGAN-GP with its penalty,
AC-GAN class loss, spectral-norm power iteration) and one G update, Adam with the preset's learning
rates, on synthetic images (no data loading, no G_ema, no logging). img/s counts real images shown to
D, as kimg does.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from engine import losses as L  # noqa: E402
from engine.config import dcgan_preset_values, mlp_gan_preset_values  # noqa: E402
from engine.models import dcgan, mlp_gan  # noqa: E402
from engine.models.ops import count_params, power_iteration  # noqa: E402

NUM_CLASSES = 9


def build(family: str, preset: str, res: int, device):
    cfg = dcgan_preset_values(preset) if family == "dcgan" else mlp_gan_preset_values(preset)
    mod = dcgan if family == "dcgan" else mlp_gan
    G = mod.Generator(**mod.generator_kwargs(cfg, res, NUM_CLASSES)).to(device)
    D = mod.Discriminator(**mod.discriminator_kwargs(cfg, res, NUM_CLASSES)).to(device)
    return cfg, G, D


def make_step(family: str, cfg: dict, G, D):
    betas = (cfg["beta1"], cfg["beta2"])
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg["lr_g"], betas=betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg["lr_d"], betas=betas)
    loss = cfg.get("loss", "bce")

    def d_out(img, y):  # (logits, class logits or None)
        out = D(img, y)
        return (out.logits, out.class_logits) if family == "dcgan" else (out, None)

    def d_loss(r, f):
        if loss == "hinge":
            return L.d_loss_hinge(r, f)
        if loss == "wgan_gp":
            return L.d_loss_wgan(r, f)
        if loss == "logistic":
            return L.d_loss_logistic(r, f)
        return L.d_loss_bce(r, f, real_label=cfg["real_label"])

    def g_loss(f):
        return L.g_loss_hinge(f) if loss in ("hinge", "wgan_gp") else L.g_loss_nonsaturating(f)

    def step(real, y):
        for _ in range(cfg["d_steps"]):
            if family == "dcgan":
                power_iteration(D)
            with torch.no_grad():
                fake = G(torch.randn(real.shape[0], G.z_dim, device=real.device), y)
            (r, rc), (f, fc) = d_out(real, y), d_out(fake, y)
            ld = d_loss(r, f)
            if loss == "wgan_gp":
                ld = ld + cfg["gp_weight"] * L.gradient_penalty(lambda x: d_out(x, y)[0], real, fake)
            if rc is not None:
                ld = ld + L.acgan_class_loss(rc, y) + L.acgan_class_loss(fc, y)
            opt_d.zero_grad(set_to_none=True)
            ld.backward()
            opt_d.step()
        D.requires_grad_(False)
        f, fc = d_out(G(torch.randn(real.shape[0], G.z_dim, device=real.device), y), y)
        lg = g_loss(f) + (L.acgan_class_loss(fc, y) if fc is not None else 0)
        opt_g.zero_grad(set_to_none=True)
        lg.backward()
        opt_g.step()
        D.requires_grad_(True)
        return ld.detach(), lg.detach()

    return step


def bench(family: str, args) -> dict:
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    torch.manual_seed(0)
    cfg, G, D = build(family, args.preset, args.res, device)
    step = make_step(family, cfg, G, D)
    real = torch.rand(args.batch, 3, args.res, args.res, device=device) * 2 - 1
    y = torch.arange(args.batch, device=device) % NUM_CLASSES

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step(real, y)
    sync()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step(real, y)
    sync()
    dt = time.perf_counter() - t0
    img_s = args.steps * cfg["d_steps"] * args.batch / dt
    return {"bench": "gan_model_throughput", "family": family, "preset": args.preset, "res": args.res,
            "batch": args.batch, "device": str(device), "d_steps": cfg["d_steps"],
            "loss": cfg.get("loss", "bce"), "g_params": count_params(G), "d_params": count_params(D),
            "steps": args.steps, "img_per_s": round(img_s, 1), "s_per_kimg": round(1000 / img_s, 2),
            "threads": torch.get_num_threads() if device.type == "cpu" else None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--family", default="dcgan,mlp_gan", help="comma-separated: dcgan, mlp_gan")
    p.add_argument("--preset", default="demo", help="the family preset (demo, spec)")
    p.add_argument("--res", type=int, default=32)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=20, help="timed G updates (after --warmup)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    args = p.parse_args(argv)
    for family in args.family.split(","):
        print(json.dumps(bench(family.strip(), args)), flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
