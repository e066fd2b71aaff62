"""engine.families.ddpm: the family seam on a tiny U-Net (CPU): step, loss going down, exact state round
trip, accumulation, LR schedule, augmentation, EMA, grids and the config section."""
from __future__ import annotations

import dataclasses
import io
import math

import numpy as np
import pytest
import torch

from engine.config import (DDPM_PRESETS, DDPM_SHARED_FIELDS, ConfigError, DDPMConfig, TrainConfig,
                           ddpm_preset_values, from_dict)
from engine.families import Family, get
from engine.families.ddpm import CSV_COLUMNS, DDPMFamily, dihedral, lr_at
from engine.models.unet import unet_kwargs

TINY = dict(channels=8, channel_mult=[1, 2], layers_per_block=1, attention_res=[8], attention_head_dim=8,
            dropout=0.0, timesteps=100, warmup_steps=0, lr=2e-3, ema_kimg=0.01, ema_rampup=0.0)


def tiny(seed: int = 0, **kw) -> DDPMFamily:
    return DDPMFamily(DDPMConfig(**{**TINY, **kw}), 8, 3, "cpu", seed=seed)


def batch(n: int = 6):
    """Smooth class-coloured images: easy to denoise, so a few steps visibly lower the loss."""
    y = torch.arange(n) % 3
    base = torch.tensor([[0.8, -0.5, 0.2], [-0.6, 0.7, -0.2], [0.1, 0.1, 0.9]])[y]
    ramp = torch.linspace(-0.3, 0.3, 8).view(1, 1, 1, 8).expand(1, 1, 8, 8)
    return (base.view(n, 3, 1, 1) + ramp).clamp(-1, 1), y


def test_family_seam_and_csv_columns():
    fam = tiny()
    assert get("ddpm") is DDPMFamily and isinstance(fam, Family)
    assert fam.csv_name == "metrics_diffusion.csv"
    assert CSV_COLUMNS == ("epoch", "step", "kimg", "loss", "loss_q1", "loss_q2", "loss_q3", "loss_q4",
                           "lr", "grad_norm", "img_per_s", "time_s")  # DESIGN's metrics_diffusion.csv
    x, y = batch()
    out = fam.train_step(x, y)
    assert {"loss", "loss_q1", "loss_q2", "loss_q3", "loss_q4", "lr", "grad_norm"} <= set(out)
    assert sum(int(out[f"n_q{k}"]) for k in range(1, 5)) == 6
    assert fam.step == 1 and fam.nimg == 6 and math.isfinite(float(out["loss"]))
    uint8 = ((x.permute(0, 2, 3, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    assert math.isfinite(float(fam.train_step(uint8, y.tolist())["loss"]))  # uint8 NHWC batches too


def test_a_few_steps_lower_the_loss_on_a_fixed_batch():
    fam = tiny(cond_drop=0.0, dihedral=False)
    x, y = batch()
    g = torch.Generator().manual_seed(0)
    t = torch.randint(0, 100, (64,), generator=g)
    noise = torch.randn(64, 3, 8, 8, generator=g)
    xs, ys = x.repeat(11, 1, 1, 1)[:64], y.repeat(11)[:64]

    def fixed_loss():
        with torch.no_grad():
            return float(fam.diffusion.losses(fam._model_fn, xs, t, ys, noise).mean())

    before = fixed_loss()
    for _ in range(40):
        fam.train_step(x, y)
    assert fixed_loss() < 0.7 * before


def test_state_round_trip_weights_only_then_identical_step():
    a = tiny(dropout=0.1)
    x, y = batch()
    for _ in range(3):
        a.train_step(x, y)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    b = DDPMFamily(DDPMConfig(**{**TINY, "dropout": 0.1}), 8, 3, "cpu", seed=99)  # other initial weights
    b.load_state_dict(state)
    assert b.step == 3 and b.nimg == 18
    torch.manual_seed(5)  # dropout draws from the global RNG, which the shared checkpoint restores
    oa = a.train_step(x, y)
    torch.manual_seed(5)
    ob = b.train_step(x, y)
    assert float(oa["loss"]) == float(ob["loss"]) and float(oa["grad_norm"]) == float(ob["grad_norm"])
    for m_a, m_b in ((a.model, b.model), (a.ema, b.ema)):
        for (k, p), q in zip(m_a.state_dict().items(), m_b.state_dict().values()):
            assert torch.equal(p, q), k
    c = DDPMFamily.from_state(state)
    assert c.step == 3 and torch.equal(c.gen.get_state(), state["gen"])


def test_load_refuses_a_state_of_another_model():
    state = tiny().state_dict()
    with pytest.raises(ValueError, match="channels"):
        DDPMFamily(DDPMConfig(**{**TINY, "channels": 16, "attention_head_dim": 16}), 8, 3).load_state_dict(state)
    with pytest.raises(ValueError, match="res / classes"):
        DDPMFamily(DDPMConfig(**TINY), 8, 4).load_state_dict(state)


def test_accumulation_over_chunks_gives_the_same_step():
    x, y = batch()
    whole, chunked = tiny(lr=0.5), tiny(lr=0.5, batch_gpu=2)
    # SGD so the update is lr * grad: Adam's first update is lr * sign(grad), and the conv biases
    # before a GroupNorm have a zero gradient up to float noise, whose sign is arbitrary
    for fam in (whole, chunked):
        fam.opt = torch.optim.SGD(fam.model.parameters(), lr=0.5)
    lw, lc = whole.train_step(x, y), chunked.train_step(x, y)
    assert abs(float(lw["loss"]) - float(lc["loss"])) < 1e-5
    assert float(lc["grad_norm"]) == pytest.approx(float(lw["grad_norm"]), rel=1e-5)
    moved = 0.0
    for p, q, p0 in zip(whole.model.parameters(), chunked.model.parameters(), tiny().model.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)
        moved = max(moved, (p - p0).abs().max().item())
    assert moved > 1e-3  # the step did change the weights


def test_lr_warm_up_then_cosine():
    kw = dict(lr=1.0, warmup_steps=10, total_steps=110, lr_min_frac=0.1)
    assert lr_at(0, **kw) == pytest.approx(0.1) and lr_at(9, **kw) == pytest.approx(1.0)
    assert lr_at(10, **kw) == pytest.approx(1.0) and lr_at(60, **kw) == pytest.approx(0.55)
    assert lr_at(110, **kw) == pytest.approx(0.1) and lr_at(500, **kw) == pytest.approx(0.1)
    assert lr_at(50, lr=1.0, warmup_steps=10, total_steps=0, lr_min_frac=0.1) == 1.0


def test_dihedral_gives_eight_distinct_pixel_permutations():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    assert torch.equal(dihedral(x, torch.tensor([0, 0])), x)
    outs = [dihedral(x[:1], torch.tensor([k]))[0] for k in range(8)]
    assert len({tuple(o.flatten().tolist()) for o in outs}) == 8
    for o in outs:
        assert torch.equal(o.flatten().sort().values, x[0].flatten().sort().values)
    mixed = dihedral(x, torch.tensor([1, 6]))  # a different symmetry per image
    assert torch.equal(mixed[0], outs[1]) and torch.equal(mixed[1], dihedral(x[1:], torch.tensor([6]))[0])


def test_ema_half_life():
    x, y = batch()
    copy_, slow = tiny(ema_kimg=0.0), tiny(ema_kimg=100.0)
    copy_.train_step(x, y)
    slow.train_step(x, y)
    for p, q in zip(copy_.model.parameters(), copy_.ema.parameters()):
        assert torch.equal(p, q)  # half-life 0: the EMA model is the model
    moved = [(p - q).abs().max().item() for p, q in zip(slow.model.parameters(), slow.ema.parameters())]
    assert max(moved) > 1e-4  # a long half-life keeps the EMA near the initial weights


def test_grid_and_sample_from_the_family():
    fam = tiny()
    g = fam.grid(2, steps=2)
    assert g.dtype == np.uint8 and g.shape == (3 * 10 + 2, 2 * 10 + 2, 3)
    a = fam.sample([0, 2], [7, 8], sampler="ddim", steps=3, guidance=0.5)
    b = fam.sample([2], [8], sampler="ddim", steps=3, guidance=0.5)
    assert a.shape == (2, 8, 8, 3) and np.abs(a[1].astype(int) - b[0].astype(int)).max() <= 1


def test_ddpm_config_presets_and_checks():
    for name in DDPM_PRESETS:
        assert ddpm_preset_values(name)["timesteps"] == 1000
    spec = from_dict(DDPMConfig, DDPM_PRESETS["spec"])
    kw = unet_kwargs(spec, 128, 9)  # the seed's net at 128 px, without building its ~100 M weights
    assert kw["block_out_channels"] == (192, 384, 576, 768) and kw["layers_per_block"] == 2
    assert kw["down_block_types"] == ("DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D")
    assert kw["up_block_types"][0] == "AttnUpBlock2D" and kw["num_class_embeds"] == 10
    assert kw["resnet_time_scale_shift"] == "scale_shift" and kw["dropout"] == 0.1
    assert from_dict(DDPMConfig, {"channel_mult": "1,2,2"}).channel_mult == [1, 2, 2]  # CLI form
    with pytest.raises(ConfigError, match="attention_head_dim"):
        from_dict(DDPMConfig, {"channels": 48, "attention_head_dim": 32})
    with pytest.raises(ConfigError, match="powers of two"):
        from_dict(DDPMConfig, {"attention_res": [12]})
    with pytest.raises(ConfigError, match="too many for res"):
        unet_kwargs(DDPMConfig(**TINY), 2, 3)
    # the only names shared with TrainConfig are the ones declared shared (the same idea)
    train = {f.name for f in dataclasses.fields(TrainConfig)}
    assert {f.name for f in dataclasses.fields(DDPMConfig)} & train == set(DDPM_SHARED_FIELDS)


def test_export_round_trip_through_safetensors(tmp_path):
    from safetensors.torch import load_file, save_file

    fam = tiny(prediction="v_prediction")
    x, y = batch()
    assert math.isfinite(float(fam.train_step(x, y)["loss"]))
    tensors, meta = fam.export()
    save_file(tensors, tmp_path / "generator.safetensors")
    back = DDPMFamily.from_export(load_file(tmp_path / "generator.safetensors"), meta)
    assert back.cfg.prediction == "v_prediction" and back.step == 1
    np.testing.assert_array_equal(back.sample([1], [3], steps=2), fam.sample([1], [3], steps=2))


def test_resume_mid_run_gives_the_same_losses_and_ema():
    """The issue's resume test at the family level: 6 steps straight = 3 + save / fresh process-like
    rebuild / load + 3, identical losses and EMA weights on the CPU (batches from a seeded stream)."""
    cfg = dict(dropout=0.1, warmup_steps=2, ema_kimg=0.02)

    def batches():
        g = torch.Generator().manual_seed(7)
        while True:
            yield torch.rand(4, 3, 8, 8, generator=g) * 2 - 1, torch.randint(0, 3, (4,), generator=g)

    torch.manual_seed(1)
    straight, it = DDPMFamily(DDPMConfig(**{**TINY, **cfg}), 8, 3, total_steps=6), batches()
    want = [float(straight.train_step(*next(it))["loss"]) for _ in range(6)]

    torch.manual_seed(1)
    first, it = DDPMFamily(DDPMConfig(**{**TINY, **cfg}), 8, 3, total_steps=6), batches()
    got = [float(first.train_step(*next(it))["loss"]) for _ in range(3)]
    buf = io.BytesIO()
    torch.save({"family": first.state_dict(), "torch_rng": torch.get_rng_state()}, buf)
    del first
    torch.manual_seed(12345)  # whatever a new process would have
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    resumed = DDPMFamily.from_state(ckpt["family"])
    torch.set_rng_state(ckpt["torch_rng"])  # the shared checkpoint's part (dropout draws from it)
    got += [float(resumed.train_step(*next(it))["loss"]) for _ in range(3)]
    assert got == want
    for p, q in zip(straight.ema.state_dict().values(), resumed.ema.state_dict().values()):
        assert torch.equal(p, q)
