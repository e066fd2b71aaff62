import io

import pytest
import torch

from engine.augment import OPS, AdaController, Augment, stain_basis


def only(op, **kw):
    """Augment with a single op enabled."""
    return Augment(**{o: float(o == op) for o in OPS}, **kw)


def batch(n=8, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


def multiset(x):
    return x.flatten(2).sort(dim=2).values


def test_p0_is_identity():
    x = batch()
    assert Augment()(x, 0.0) is x
    with pytest.raises(ValueError, match="p must be in"):
        Augment()(x, 1.5)


def test_flips_exact_at_p1():
    x = batch()
    assert torch.equal(only("xflip")(x, 1.0), x.flip(3))
    assert torch.equal(only("yflip")(x, 1.0), x.flip(2))


def test_rot90_changes_image_keeps_pixel_multiset():
    torch.manual_seed(0)
    x = batch()
    y = only("rotate90")(x, 1.0)
    assert y.shape == x.shape
    for i in range(len(x)):  # each sample is x rotated by 1, 2 or 3 quarter turns, never left as is
        assert any(torch.equal(y[i], x[i].rot90(k, (1, 2))) for k in (1, 2, 3))
    assert torch.equal(multiset(y), multiset(x))


def test_flips_and_rot90_together_preserve_multiset():
    torch.manual_seed(1)
    x = batch(16)
    y = Augment(rotate=0, translate=0, stain=0, cutout=0)(x, 1.0)
    assert not torch.equal(y, x)
    assert torch.equal(multiset(y), multiset(x))


def test_per_sample_probability():
    torch.manual_seed(0)
    x = batch(400, 4)
    y = only("xflip")(x, 0.5)
    flipped = (y == x.flip(3)).flatten(1).all(1)
    kept = (y == x).flatten(1).all(1)
    assert torch.all(flipped | kept)
    assert 0.4 < flipped.float().mean() < 0.6  # per sample, not one coin for the batch
    y = Augment(**{o: 0.0 for o in OPS[1:]}, xflip=0.5)(x, 0.5)  # op weight multiplies p: 0.25 of the samples
    assert 0.15 < (y == x.flip(3)).flatten(1).all(1).float().mean() < 0.35


def test_small_rotation_keeps_shape_and_changes_image():
    torch.manual_seed(0)
    x = batch(4, 16)
    y = only("rotate", rotate_max_deg=30.0)(x, 1.0)
    assert y.shape == x.shape and not torch.allclose(y, x)
    assert y.min() >= x.min() - 1e-6 and y.max() <= x.max() + 1e-6  # bilinear + reflection: convex combinations


def test_translation_moves_whole_pixels():
    torch.manual_seed(0)
    x = batch(4, 16)
    y = only("translate", translate_frac=0.25)(x, 1.0)
    assert y.shape == x.shape
    # whole-pixel shift with reflection: every output value is an input value of that sample
    for i in range(len(x)):
        d = (y[i].flatten()[:, None] - x[i].flatten()[None]).abs().min(1).values
        assert d.max() < 1e-5
    assert not torch.equal(y, x)


def test_stain_basis_is_unit_and_invertible():
    b = stain_basis()
    assert torch.allclose(b.norm(dim=1), torch.ones(3))
    assert abs(torch.linalg.det(b)) > 0.1


def test_stain_jitter_range_grad_and_roundtrip():
    torch.manual_seed(0)
    x = batch(6, 8).requires_grad_()
    y = only("stain", stain_sigma=0.2)(x, 1.0)
    assert y.min() >= -1 and y.max() <= 1
    assert not torch.allclose(y, x)
    y.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # sigma 0: RGB -> OD -> stains -> OD -> RGB is the identity (away from the log clamp at black)
    x0 = batch(2, 8).clamp(min=-0.95)
    assert torch.allclose(only("stain", stain_sigma=0.0)(x0, 1.0), x0, atol=1e-5)


def test_cutout_zeroes_a_square():
    torch.manual_seed(0)
    x = batch(8, 16).abs() + 0.1  # no zeros before
    y = only("cutout", cutout_frac=0.25)(x, 1.0)
    holes = (y == 0).all(1)  # (N, H, W)
    area = holes.flatten(1).sum(1)
    assert torch.all(area > 0) and torch.all(area <= 16)  # at most a 4x4 square, clipped at the border
    assert torch.equal(y[~holes.unsqueeze(1).expand_as(y)], x[~holes.unsqueeze(1).expand_as(x)])


def test_full_pipeline_differentiable_and_keeps_dtype():
    torch.manual_seed(0)
    x = batch(4, 16).requires_grad_()
    y = Augment()(x, 1.0)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad.abs().sum() > 0
    assert Augment()(batch(2, 16).bfloat16(), 1.0).dtype == torch.bfloat16


def test_bad_augment_args():
    with pytest.raises(ValueError, match="translate_frac"):
        Augment(translate_frac=0.9)
    with pytest.raises(ValueError, match="xflip"):
        Augment(xflip=-1)
    with pytest.raises(ValueError, match="square"):
        only("rotate90")(torch.zeros(1, 3, 4, 8), 1.0)


def test_ada_step_size_direction_and_hold():
    ada = AdaController(target=0.6, ada_kimg=100.0, p_max=0.8)
    step = 32 / (100.0 * 1000)
    assert ada.update(0.9, 32, kimg=0.0) == pytest.approx(step)
    assert ada.update(0.9, 32, kimg=0.0) == pytest.approx(2 * step)
    assert ada.update(0.6, 32, kimg=0.0) == pytest.approx(2 * step)  # at target: no move
    assert ada.update(0.1, 32, kimg=0.0) == pytest.approx(step)  # sign only: size independent of |acc - target|
    assert ada.update(0.1, 64, kimg=0.0) == 0.0  # floored at 0


def test_ada_speed_cap_and_freeze():
    ada = AdaController(ada_kimg=1.0, p_max=1.0)
    for i in range(100):  # 100 x 10 images = 1 kimg = ada_kimg: p goes from 0 to 1
        ada.update(1.0, 10, kimg=i * 0.01)
    assert ada.p == pytest.approx(1.0)
    capped = AdaController(ada_kimg=1.0, p_max=0.3)
    for _ in range(200):
        capped.update(1.0, 10, kimg=0.0)
    assert capped.p == 0.3
    frozen = AdaController(ada_kimg=1.0, freeze_kimg=5.0)
    frozen.update(1.0, 100, kimg=4.9)
    assert frozen.update(1.0, 100, kimg=5.0) == pytest.approx(0.1)
    assert frozen.update(0.0, 100, kimg=9.0) == pytest.approx(0.1)


def test_ada_state_dict_weights_only():
    ada = AdaController(p_init=0.25)
    ada.update(1.0, 1000, kimg=0.0)
    buf = io.BytesIO()
    torch.save(ada.state_dict(), buf)
    buf.seek(0)
    other = AdaController()
    other.load_state_dict(torch.load(buf, weights_only=True))
    assert other.p == ada.p == pytest.approx(0.26)
    with pytest.raises(ValueError, match="p_max"):
        AdaController(p_max=1.5)


def test_ops_not_listed_never_change_the_image():
    # the spec's set (xflip, rotate, translate) with the rotation and shift at 0: whatever fires, every
    # sample is x flipped, so yflip, rotate90, stain and cutout never touched it
    torch.manual_seed(0)
    x = batch(16, 16)
    aug = Augment(ops=["xflip", "rotate", "translate"], rotate_max_deg=0.0, translate_frac=0.0)
    assert {k for k, w in aug.weights.items() if w > 0} == {"xflip", "rotate", "translate"}
    assert torch.allclose(aug(x, 1.0), x.flip(3), atol=1e-5)
    assert torch.equal(Augment(ops=[])(x, 1.0), x)  # no op: D sees the images as they are
    for op in OPS:  # one op listed: it changes the image, and the others do not add to it
        torch.manual_seed(1)
        y = Augment(ops=[op])(x, 1.0)
        torch.manual_seed(1)
        assert torch.equal(y, only(op)(x, 1.0)) and not torch.equal(y, x), op
    with pytest.raises(ValueError, match="ops must be among"):
        Augment(ops=["xflip", "blur"])


def test_ada_ops_field_names_and_validation():
    from engine import config as C
    from engine.augment import ADA_RULES
    from engine.config import ConfigError, TrainConfig

    assert C.ADA_OPS == OPS and C.ADA_RULES == ADA_RULES  # config repeats them (it imports no torch)
    assert C.validate(TrainConfig()).ada_ops == list(OPS)  # default: every op, as before ada_ops
    assert C.validate(TrainConfig(ada_ops="xflip,rotate")).ada_ops == ["xflip", "rotate"]  # the CLI form
    with pytest.raises(ConfigError, match=r"'ada_ops' must be one of: xflip, yflip, .* \(got 'blur'\)"):
        C.validate(TrainConfig(ada_ops="xflip,blur"))


def test_spec_rule_drive_warmup_and_cap():
    # spec 4.1: per step p += 0.001 * (acc_ema - 0.6) * 0.2, in [0, 0.12]; none before step 500;
    # at most 0.08 while acc_ema > 0.9
    ada = AdaController(target=0.6, p_max=0.12, rule="spec", speed=0.2, warmup_steps=500, hi_acc=0.9, hi_cap=0.08)
    assert ada.update(0.95, 8 * 500, kimg=4.0, acc_ema=0.95, step=500, steps=500) == 0.0  # steps 0..499
    assert ada.update(0.95, 8, kimg=4.008, acc_ema=0.95, step=501) == pytest.approx(0.001 * 0.35 * 0.2)
    # each step's own acc_ema drives it: 0.001 * 0.2 * ((0.7 - 0.6) + (0.5 - 0.6) + (0.8 - 0.6))
    p0 = ada.p
    ada.update(0.7, 24, kimg=4.032, acc_ema=[0.7, 0.5, 0.8], step=504, steps=3)
    assert ada.p - p0 == pytest.approx(0.001 * 0.2 * 0.2)
    hi = AdaController(p_max=0.12, rule="spec", hi_acc=0.9, hi_cap=0.08, p_init=0.1)
    assert hi.update(0.95, 8, 0.0, acc_ema=0.95) == 0.08  # above 0.9: capped at once
    for _ in range(10000):
        hi.update(0.95, 8, 0.0, acc_ema=0.95)
    assert hi.p == 0.08
    for _ in range(10000):  # D less sure: p may rise again, up to p_max
        hi.update(0.89, 8, 0.0, acc_ema=0.89)
    assert hi.p == 0.12
    with pytest.raises(ValueError, match="needs acc_ema"):
        AdaController(rule="spec").update(0.9, 8, 0.0)


def test_sign_rule_counts_steps_and_warmup():
    one, four = AdaController(ada_kimg=1.0, warmup_steps=6), AdaController(ada_kimg=1.0, warmup_steps=6)
    for s in range(1, 13):
        one.update(0.9, 8, s * 0.008, step=s)
        if s % 4 == 0:
            four.update(0.9, 32, s * 0.008, step=s, steps=4)
    assert one.p == pytest.approx(four.p) == pytest.approx(6 * 8 / 1000)  # steps 6..11 moved p
