"""The `spec` preset against the researchers' cGAN spec (their seed 001), value by value.

The table is the documentation: one row per value the spec states, with its section and the spec's own
words, and the test checks the resolved `spec` config (preset over the defaults, validated) against it.
A value the spec does not state (e.g. G's widths below 4x4, D's width cap, the rotation angle) is marked
"our reading" in engine/config.py and here.
"""
import pytest

from engine import config as C

SPEC = [
    # (section, field, value, the spec's words)
    ("1.2", "res", 256, "IMAGE_SIZE = 256"),
    ("1.2", "samples_per_class_per_epoch", 1000, "balanced sampler, SAMPLES_PER_CLASS = 1000"),
    ("1.3", "batch", 8, "BATCH_SIZE = 8"),
    ("2.1", "z_dim", 512, "Z_DIM = 512"),
    ("2.2", "w_dim", 512, "MappingNetwork(w_dim=512)"),
    ("2.2", "n_mlp", 8, "MappingNetwork(n_layers=8)"),
    ("2.2", "channel_max", 512, "FMAP_BASE = 512 channels at 4x4"),
    ("2.2", "channel_base", 16384, "FMAP_BASE at 4x4; below it our reading (StyleGAN2 config-f)"),
    ("2.2", "clamp", 0.9, "output clamp +-0.9"),
    ("2.2", "clamp_reals", True, "the reals D sees are clamped the same way"),
    ("2.2", "mixing_prob", 0.9, "intra-class style mixing"),
    ("2.3", "d_channel_base", 96 * 256, "D_BASE_CH = 96 at the 256 px input"),
    ("2.3", "d_channel_max", 768, "our reading: 8 x D_BASE_CH, as 64 -> 512"),
    ("2.4", "domain_head", True, "logit = logit_base + logit_proj + alpha * logit_duet"),
    ("3.1", "loss", "bce", "BCE"),
    ("3.1", "real_label", 0.9, "one-sided label smoothing, real 0.9, fake 0.0"),
    ("3.2", "r1_gamma", 15.0, "R1_GAMMA = 15.0"),
    ("3.2", "r1_every", 8, "R1_EVERY = 8"),
    ("3.2", "r1_lazy_scale", False, "r1 = 0.5 * R1_GAMMA * r1_penalty (not x R1_EVERY)"),
    ("3.3", "stats_weight", 3e-3, "LAMBDA_STATS = 3e-3"),
    ("3.3", "stats_beta", 0.995, "RealStatsEMA(m=0.995)"),
    ("3.3", "stats_range", "unit", "statistics in [0, 1]"),
    ("3.4", "perceptual_weight", 0.01, "LAMBDA_PERCEPTUAL = 0.01"),
    ("3.4", "perceptual_form", "paired", "MSE(fake_feat, real_feat)"),
    ("3.5", "saturation_weight", 0.05, "LAMBDA_SATURATION = 0.05"),
    ("3.5", "saturation_threshold", 0.6, "clamp(fake_mean_abs - 0.6, min=0)**2"),
    ("3.5", "saturation_form", "mean_abs", "fake_mean_abs = fake.abs().mean()"),
    ("3.6", "fm_weight", 0.1, "LAMBDA_FEATURE_MATCHING = 0.1"),
    ("3.6", "fm_form", "final_mse", "MSE(fake_feat, real_feat_detach) on D's features"),
    ("3.7", "diversity_weight", 0.1, "MIXING_REG_WEIGHT = 0.1"),
    ("3.7", "diversity_form", "variance", "clamp(0.1 - fake_var, min=0)**2"),
    ("3.7", "diversity_var", 0.1, "0.1 - fake_var"),
    ("4.1", "ada_rule", "spec", "new_p = clamp(p + 0.001 * err * ADA_SPEED, 0, ADA_MAX_P), err on acc_ema"),
    ("4.1", "ada_target", 0.6, "ADA_TARGET = 0.6"),
    ("4.1", "acc_ema_beta", 0.99, "ADA_DECAY = 0.99"),
    ("4.1", "ada_speed", 0.2, "ADA_SPEED = 0.20"),
    ("4.1", "ada_p_max", 0.12, "ADA_MAX_P = 0.12"),
    ("4.1", "ada_warmup_steps", 500, "ADA_FREEZE_UNTIL = 500"),
    ("4.1", "ada_hi_acc", 0.9, "si acc_ema > 0.9"),
    ("4.1", "ada_hi_cap", 0.08, "ADA_P_CAP_IF_ACC_HI = 0.08"),
    ("4.1", "ada_ops", ["xflip", "rotate", "translate"], "flip H, rotation, translation; color 0, no cutout"),
    ("4.1", "ada_rotate_max_deg", 5.0, "rotation legere (+- quelques degres): 5 is our reading"),
    ("4.1", "ada_translate_frac", 1 / 64, "translation (quelques pixels): 4 px at 256, our reading"),
    ("4.1", "ada_interval", 1, "updated at every step"),
    ("4.2", "drift", 1e-3, "DRIFT_EPS = 1e-3"),
    ("4.3", "ema_beta", 0.9995, "ema_update(G_ema, G, decay=0.9995) at every step"),
    ("4.3", "ema_kimg", 0.0, "a decay per step, not a half-life"),
    ("4.3", "ema_rampup", 0.0, "from step 0, G_ema = a copy of G"),
    ("4.4", "alpha_on", 0.78, "ACC_GATE_HI = 0.78"),
    ("4.4", "alpha_off", 0.70, "ACC_GATE_LO = 0.70"),
    ("4.4", "alpha_max", 0.15, "ALPHA_MAX = 0.15"),
    ("4.4", "alpha_dalpha", 1e-4, "ALPHA_DALPHA = 1e-4 per step"),
    ("4.4", "alpha_tau", 400.0, "ALPHA_TAU = 400, k = 1 - exp(-1/ALPHA_TAU)"),
    ("4.4", "alpha_warmup_steps", 500, "ALPHA_FREEZE_UNTIL = 500"),
    ("4.4", "alpha_dwell", 200, "DUET_DWELL_STEPS = 200"),
    ("4.4", "alpha_stable", 0.05, "'D stable': our reading, acc_ema within 0.05 over the dwell"),
    ("4.5", "watchdog_threshold", 0.75, "fake_mean_abs > 0.75"),
    ("4.5", "watchdog_factor", 0.9, "LAMBDA_PERCEPTUAL x 0.9"),
    ("4.5", "watchdog_floor", 0.005, "floor 0.005"),
    ("4.5", "watchdog_alpha_factor", 0.95, "ALPHA_MAX x 0.95"),
    ("4.5", "watchdog_alpha_floor", 0.1, "borne >= ~0.1"),
    ("4.5", "watchdog_log_every", 50, "logged at most every 50 steps"),
    ("4.6", "grad_clip", 1.0, "clip_grad_norm 1.0"),
    ("4.6", "amp", "off", "USE_AMP = False"),
    ("4.7", "lr_min_frac", 0.01, "cosine to LR_FINAL_RATIO = 0.01"),
    ("5", "lr_g", 4e-4, "Adam(G, lr=4e-4)"),
    ("5", "lr_d", 7e-5, "Adam(D, lr=7e-5)"),
    ("5", "beta1", 0.0, "betas=(0.0, 0.99)"),
    ("5", "beta2", 0.99, "betas=(0.0, 0.99)"),
    ("5", "sample_kimg", 3.2, "SAMPLE_EVERY = 400 steps (x batch 8)"),
    ("5", "snap_kimg", 6.4, "SAVE_EVERY = 800 steps (x batch 8)"),
    ("4.3", "best_metric", "fid_domain", "cgan_best_model.pt: the best G_ema by FID on the held-out eval"),
]


@pytest.mark.parametrize("section,field,value,words", SPEC, ids=[f"{s}-{f}" for s, f, _, _ in SPEC])
def test_spec_value(section, field, value, words):
    resolved = C.preset_values("spec")
    assert field in resolved, f"spec {section} ({words}): no config field {field!r}"
    if isinstance(value, float):
        assert resolved[field] == pytest.approx(value), f"spec {section}: {words}"
    else:
        assert resolved[field] == value, f"spec {section}: {words}"
    # each field documents the section it comes from (or says that it is the spec's value)
    f = C.TrainConfig.__dataclass_fields__[field]
    assert f.metadata["help"] and f.metadata["label"]


def test_every_value_the_preset_sets_is_in_the_table():
    listed = {f for _, f, _, _ in SPEC}
    assert set(C.PRESETS["spec"]) - listed == set(), "a spec preset value without its row in the table"


def test_where_spec_and_stylegan2_differ_both_are_reachable():
    """Nothing of today's behaviour is lost: every spec value that differs from the defaults is a value of
    a field, so the stylegan2 preset keeps the other one."""
    spec, sg2 = C.preset_values("spec"), C.preset_values("stylegan2")
    differ = {k for k in spec if spec[k] != sg2[k] and k != "preset"}
    assert {"r1_lazy_scale", "ada_rule", "saturation_form", "fm_form", "diversity_form", "stats_range",
            "res", "batch", "ada_p_max"} <= differ
