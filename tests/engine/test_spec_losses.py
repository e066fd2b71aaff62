"""Issue 10, spec preset, losses and D: the seed-001 forms (hand-computed on tiny tensors), R1 without
the interval factor inside the trainer, reals clamped before D in both presets, D's own widths, and the
domain head from a timm backbone with a local checkpoint."""
import math

import pytest
import torch

from engine import config as C
from engine import losses as L
from engine.config import ConfigError, TrainConfig, validate
from engine.train.logging import Stats
from engine.train.step import GanTrainer

CPU = torch.device("cpu")
# tiny sizes over any preset: a few CPU steps take about a second
TINY = dict(res=16, batch=4, z_dim=8, w_dim=8, n_mlp=1, channel_base=64, channel_max=16,
            d_channel_base=0, d_channel_max=0, ada=False, mbstd_group=4,
            domain_head=False)  # the spec preset turns it on; the tests that need it pass a feature space


def close(a, b, tol=1e-6):
    a, b = (float(v.detach()) if torch.is_tensor(v) else float(v) for v in (a, b))
    return abs(a - b) < tol


def tiny(preset: str, **over) -> TrainConfig:
    return C.from_dict(TrainConfig, {**C.preset_values(preset), **TINY, **over})



# ---------------------------------------------------------------------------------------------- R1

def test_r1_weight_lazy_and_spec():
    assert L.r1_weight(15.0, 8, lazy_scale=True) == 15.0 / 2 * 8       # StyleGAN2: x the interval
    assert L.r1_weight(15.0, 8, lazy_scale=False) == 7.5                # spec 3.2: 0.5 * gamma
    assert L.r1_weight(15.0, 1, lazy_scale=True) == L.r1_weight(15.0, 1, lazy_scale=False)


@pytest.mark.parametrize("lazy", [True, False])
def test_trainer_adds_r1_with_or_without_the_interval_factor(lazy, monkeypatch):
    """The D objective the trainer back-propagates at an R1 step is d_loss + drift + w * r1 with
    w = gamma/2 * r1_every (lazy) or gamma/2 (spec): read back from the loss handed to the optimiser."""
    got = {}
    real_r1, real_dloss = L.r1_penalty, L.d_loss_bce
    monkeypatch.setattr(L, "r1_penalty", lambda *a: got.setdefault("r1", real_r1(*a)))
    monkeypatch.setattr(L, "d_loss_bce", lambda *a: got.setdefault("d", real_dloss(*a)))
    torch.manual_seed(0)
    T = GanTrainer(tiny("spec", r1_lazy_scale=lazy, drift=0.0, r1_gamma=10.0, r1_every=4), num_classes=3,
                   device=CPU)
    losses = []
    step = T._backward_step
    monkeypatch.setattr(T, "_backward_step", lambda loss, *a: losses.append(loss.detach()) or step(loss, *a))
    T.train_step(torch.rand(4, 3, 16, 16) * 1.6 - 0.8, torch.arange(4) % 3, 0, Stats(CPU))
    factor = 5.0 * 4 if lazy else 5.0
    assert float(got["r1"].detach()) > 0
    assert close(losses[0], got["d"] + factor * got["r1"], 1e-5)


# ---------------------------------------------------------------------------------------------- 3.3

def test_real_stats_unit_range_is_a_quarter_and_momentum():
    real = torch.tensor([-1.0, 1.0]).view(1, 1, 1, 2).expand(1, 3, 1, 2)  # per channel: mean 0, std sqrt 2
    fake = torch.zeros(1, 3, 1, 2)
    signed, unit = L.RealStatsEMA(0.995), L.RealStatsEMA(0.995, range="unit")
    for s in (signed, unit):
        s.update(real)
    # signed: (0 - 0)^2 + (0 - sqrt 2)^2 = 2; unit: reals {0, 1} (mean 0.5, std sqrt .5), fake 0.5 -> 0.5
    assert close(signed.penalty(fake), 2.0, 1e-5) and close(unit.penalty(fake), 0.5, 1e-5)
    assert close(unit.mean[0], 0.5) and close(unit.std[0], math.sqrt(0.5))
    unit.update(torch.ones(1, 3, 1, 2))  # unit 1.0, std 0: the EMA moves 1 - 0.995 of the way
    assert close(unit.mean[0], 0.5 + 0.005 * 0.5) and close(unit.std[0], 0.995 * math.sqrt(0.5))
    # checkpoints: the range round-trips; a dict from before `range` loads as signed
    d = unit.state_dict()
    back = L.RealStatsEMA()
    back.load_state_dict(d)
    assert back.range == "unit" and back.beta == 0.995 and close(back.mean[1], unit.mean[1])
    old = {k: v for k, v in signed.state_dict().items() if k != "range"}
    back.load_state_dict(old)
    assert back.range == "signed" and close(back.penalty(fake), 2.0, 1e-5)
    with pytest.raises(ValueError, match="range"):
        L.RealStatsEMA(range="percent")


def test_trainer_builds_stats_ema_from_config():
    T = GanTrainer(tiny("spec"), num_classes=3, device=CPU)
    assert (T.stats_ema.beta, T.stats_ema.range) == (0.995, "unit")
    T = GanTrainer(tiny("stylegan2"), num_classes=3, device=CPU)
    assert (T.stats_ema.beta, T.stats_ema.range) == (0.99, "signed")


# ---------------------------------------------------------------------------------------------- 3.5

def test_saturation_mean_abs_vs_pixel():
    x = torch.tensor([0.8, 0.8, 0.8, -0.4]).view(1, 1, 2, 2)
    # mean |x| = 0.7 -> (0.7 - 0.6)^2 = 0.01; per pixel: three of (0.2)^2 over four pixels = 0.03
    assert close(L.saturation_penalty(x, 0.6, "mean_abs"), 0.01)
    assert close(L.saturation_penalty(x, 0.6, "pixel"), 0.03)
    assert close(L.saturation_penalty(x, 0.6), 0.03)  # pixel stays the default form
    # a tile with a few bright pixels but a low mean: only the per-pixel form penalises it
    y = torch.tensor([0.9, -0.9, 0.3, 0.0]).view(1, 1, 2, 2)  # mean |y| = 0.525
    assert float(L.saturation_penalty(y, 0.6, "mean_abs")) == 0.0
    assert close(L.saturation_penalty(y, 0.6, "pixel"), 2 * 0.09 / 4)
    # gradient of (mean|x| - t)^2: 2 (0.1) sign(x) / 4 on every pixel
    x = x.clone().requires_grad_(True)
    L.saturation_penalty(x, 0.6, "mean_abs").backward()
    torch.testing.assert_close(x.grad.flatten(), torch.tensor([0.05, 0.05, 0.05, -0.05]))
    with pytest.raises(ValueError, match="form"):
        L.saturation_penalty(x, 0.6, "max")


# ---------------------------------------------------------------------------------------------- 3.6

def test_feature_matching_final_mse_pairs_and_detaches_reals():
    real = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    fake = torch.tensor([[0.0, 2.0], [3.0, 6.0]], requires_grad=True)
    fm = L.feature_matching_final_mse(real, fake)
    assert close(fm, (1 + 0 + 0 + 4) / 4)
    fm.backward()
    assert real.grad is None and fake.grad is not None
    # pairs, not batch means: swapping the fakes changes it (the batch-mean form would not move)
    swapped = L.feature_matching_final_mse(real, fake.flip(0))
    assert close(swapped, (2 ** 2 + 4 ** 2 + 3 ** 2 + 2 ** 2) / 4)  # [3, 6] vs [1, 2], [0, 2] vs [3, 4]
    assert close(L.feature_matching_loss([real], [fake]), L.feature_matching_loss([real], [fake.flip(0)]))
    with pytest.raises(ValueError, match="equal shapes"):
        L.feature_matching_final_mse(real, fake[:1])


# ---------------------------------------------------------------------------------------------- 3.7

def test_variance_penalty_hand_values():
    a, b = torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 0.2)
    # per pixel, the unbiased variance of {0, 0.2} is 0.02 -> (0.1 - 0.02)^2
    assert close(L.variance_penalty(torch.cat([a, b]), 0.1), 0.08 ** 2)
    # identical images -> no spread across the batch, even though each image varies inside itself
    img = torch.tensor([-1.0, 1.0, -1.0, 1.0]).view(1, 1, 2, 2)
    assert close(L.variance_penalty(torch.cat([img, img]), 0.1), 0.01)
    # well spread batch: 0
    assert float(L.variance_penalty(torch.cat([img, -img]), 0.1)) == 0.0
    assert float(L.variance_penalty(img, 0.1)) == 0.0  # one image: nothing to measure
    x = torch.cat([a, b]).requires_grad_(True)
    L.variance_penalty(x, 0.1).backward()
    assert float(x.grad[1].sum()) < 0 < float(x.grad[0].sum())  # pushes the two images apart


# ---------------------------------------------------------------------------------------------- 3.4

def test_perceptual_paired_vs_batch_mean():
    real = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    fake = real.flip(0)
    assert float(L.perceptual_loss(real, fake)) == 0.0             # same batch mean
    assert close(L.perceptual_loss_paired(real, fake), 1.0)        # every pair differs by 1 in each of 2
    assert close(L.perceptual_loss_paired(real, real + 0.5), 0.25)


# ---------------------------------------------------------------------------------------------- 2.2

class Recorder(torch.nn.Module):
    """Stands in for D's forward: remembers the largest |pixel| of every image batch D is given."""

    def __init__(self, inner, seen):
        super().__init__()
        self.inner, self.seen = inner, seen

    def forward(self, img, *a, **k):
        self.seen.append(float(img.detach().abs().max()))
        return self.inner(img, *a, **k)


@pytest.mark.parametrize("preset", ["spec", "stylegan2"])
def test_reals_reach_d_clamped_like_g(preset):
    cfg = tiny(preset)
    assert cfg.clamp == 0.9 and cfg.clamp_reals
    T = GanTrainer(cfg, num_classes=3, device=CPU)
    seen = []
    T.D_fwd, T.D_ddp = Recorder(T.D_fwd, seen), Recorder(T.D_ddp, seen)
    real = torch.ones(4, 3, 16, 16)
    real[:, 1] = -1.0  # every real pixel beyond the clamp
    stats = Stats(CPU)
    T.train_step(real, torch.arange(4) % 3, 0, stats)  # step 0: R1 step, the eager D_ddp path too
    assert seen and max(seen) <= 0.9 + 1e-6
    assert close(max(seen), 0.9)  # the clamped reals themselves
    assert close(stats.maxs["real_max"], 0.9) and close(stats.mins["real_min"], -0.9)  # CSV after clamp

    # clamp_reals off: D sees the raw reals (the cue the clamp removes)
    T = GanTrainer(tiny(preset, clamp_reals=False), num_classes=3, device=CPU)
    seen.clear()
    T.D_fwd = Recorder(T.D_fwd, seen)
    T.train_step(real, torch.arange(4) % 3, 1, Stats(CPU))
    assert close(max(seen), 1.0)


# ---------------------------------------------------------------------------------------------- 2.3

def test_spec_widths_and_d_channels():
    from engine.models.stylegan2 import channels_at

    v = C.preset_values("spec")
    # G: 512 at 4x4 (FMAP_BASE); D: 96 on the 256 px input, doubling per downsample up to 768
    assert channels_at(4, v["channel_base"], v["channel_max"]) == 512
    assert channels_at(256, v["d_channel_base"], v["d_channel_max"]) == 96
    assert [channels_at(r, v["d_channel_base"], v["d_channel_max"]) for r in (128, 64, 32, 4)] == [
        192, 384, 768, 768]
    T = GanTrainer(tiny("stylegan2", d_channel_base=128, d_channel_max=32), num_classes=3, device=CPU)
    assert T.D.from_rgb.weight.shape[0] == 8 and T.D.final_linear.weight.shape[0] == 32  # 128 // 16; max 32
    assert T.G.input.input.shape[1] == 16  # G keeps its own widths (channel_max 16)
    T = GanTrainer(tiny("stylegan2"), num_classes=3, device=CPU)  # 0 = as wide as G (today)
    assert T.D.from_rgb.weight.shape[0] == 4 and T.D.final_linear.weight.shape[0] == 16
    with pytest.raises(ConfigError, match="'d_channel_base'"):
        tiny("stylegan2", d_channel_base=8)


def test_spec_preset_selects_the_spec_forms():
    v = C.preset_values("spec")
    assert (v["r1_lazy_scale"], v["stats_beta"], v["stats_range"], v["saturation_form"], v["fm_form"],
            v["diversity_form"], v["diversity_var"], v["perceptual_form"], v["clamp_reals"]) == (
        False, 0.995, "unit", "mean_abs", "final_mse", "variance", 0.1, "paired", True)
    d = C.to_dict(TrainConfig())  # today's behaviour stays the default
    assert (d["r1_lazy_scale"], d["stats_beta"], d["stats_range"], d["saturation_form"], d["fm_form"],
            d["diversity_form"], d["perceptual_form"]) == (
        True, 0.99, "signed", "pixel", "blocks_l1", "mode_seeking", "batch_mean")
    for name in ("saturation_form", "fm_form", "diversity_form", "perceptual_form", "stats_range"):
        with pytest.raises(ConfigError, match=f"'{name}' must be one of"):
            validate(TrainConfig(**{name: "nope"}))


def test_trainer_uses_the_configured_forms(monkeypatch):
    """spec forms reach the G objective: final-feature MSE on D's final vector, variance, mean_abs."""
    calls = {}

    def spy(name, fn):
        monkeypatch.setattr(L, name, lambda *a, **k: calls.setdefault(name, (a, k)) and fn(*a, **k))

    for name in ("feature_matching_final_mse", "variance_penalty", "saturation_penalty",
                 "feature_matching_loss", "diversity_penalty"):
        spy(name, getattr(L, name))
    T = GanTrainer(tiny("spec"), num_classes=3, device=CPU)
    T.train_step(torch.rand(4, 3, 16, 16) * 2 - 1, torch.arange(4) % 3, 1, Stats(CPU))
    assert "feature_matching_loss" not in calls and "diversity_penalty" not in calls
    real_feat, fake_feat = calls["feature_matching_final_mse"][0]
    assert real_feat.shape == fake_feat.shape == (4, 16)  # D's final vector h, ch(4) = 16
    assert calls["variance_penalty"][0][1] == 0.1
    assert calls["saturation_penalty"][0][2] == "mean_abs"


# ---------------------------------------------------------------------------------------------- 2.4

def test_domain_head_from_a_timm_backbone_with_a_local_checkpoint(tmp_path):
    import timm
    from safetensors.torch import save_file

    from engine.metrics.features import TimmFeatures

    torch.manual_seed(0)
    full = timm.create_model("test_resnet", pretrained=False, num_classes=5)
    path = tmp_path / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in full.state_dict().items()}, str(path))
    cfg = tiny("spec", domain_head=True, domain_features="timm:test_resnet", domain_weights=str(path))
    T = GanTrainer(cfg, num_classes=3, device=CPU)
    feat = T.D.domain_features
    assert isinstance(feat, TimmFeatures) and T.D.domain_head.in_features == feat.num_features
    assert not any(p.requires_grad for p in feat.parameters())
    before = {k: v.clone() for k, v in feat.state_dict().items()}
    T.gate.alpha = 0.1
    T.alpha_t.fill_(0.1)
    stats = Stats(CPU)
    T.train_step(torch.rand(4, 3, 16, 16) * 2 - 1, torch.arange(4) % 3, 1, stats)
    assert float(stats.sums["g_perc"]) > 0                       # the perceptual loss ran in that space
    assert T.D.domain_head.weight.grad is not None                # the head trains ...
    assert all(torch.equal(v, before[k]) for k, v in feat.state_dict().items())  # ... the backbone not
    assert not any(k.startswith("_domain") or "net." in k for k in T.D.state_dict())


def test_domain_feature_space_errors(tmp_path, data_dir):
    with pytest.raises(ConfigError) as e:
        GanTrainer(tiny("spec", domain_head=True, domain_features="timm:test_resnet"), num_classes=3,
                   device=CPU)
    msg = str(e.value)
    assert "'domain_weights'" in msg and "--domain-weights PATH" in msg and "nothing is downloaded" in msg
    assert "--domain-features domain" in msg  # what works without it
    with pytest.raises(ConfigError, match="does not exist"):
        GanTrainer(tiny("spec", domain_head=True, domain_features="timm:test_resnet",
                        domain_weights=str(tmp_path / "no.safetensors")), num_classes=3, device=CPU)
    with pytest.raises(ConfigError, match="'domain_features'.*unknown timm architecture"):
        GanTrainer(tiny("spec", domain_head=True, domain_features="timm:no_such_net_xyz",
                        domain_weights=str(data_dir / "dataset.json")), num_classes=3, device=CPU)
    # empty / `domain`: <data>/classifier.pt, or domain_weights when given; the error names the file
    with pytest.raises(ConfigError, match="'domain_features'.*classifier.pt.*train-classifier"):
        GanTrainer(tiny("spec", domain_head=True), num_classes=3, device=CPU, data_dir=str(data_dir))
    with pytest.raises(ConfigError, match="'domain_weights'.*mine.pt"):
        GanTrainer(tiny("spec", domain_head=True, domain_features="domain",
                        domain_weights=str(tmp_path / "mine.pt")), num_classes=3, device=CPU)
    with pytest.raises(ConfigError, match="'domain_features' cannot be inception"):
        tiny("spec", domain_features="inception")
