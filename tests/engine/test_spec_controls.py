"""Issue 10, spec preset, controllers (seed-001 spec 4.1 ADA, 4.4 alpha gate, 4.5 watchdog): the ADA
warm-up, cap and acc_ema drive (hand-computed), the gate counted in steps with its stability rule, the
results independent of ada_interval, and the defaults (= the stylegan2 preset) as before."""
import math

import pytest
import torch

from engine import config as C
from engine.config import TrainConfig
from engine.train.controls import AlphaGate, acc_ema_path
from engine.train.logging import Stats
from engine.train.step import GanTrainer

CPU = torch.device("cpu")
# tiny model over any preset: building a trainer takes well under a second
TINY = dict(res=16, batch=8, z_dim=8, w_dim=8, n_mlp=1, channel_base=64, channel_max=16,
            d_channel_base=0, d_channel_max=0, domain_head=False)



def trainer(preset="spec", domain=True, **over) -> GanTrainer:
    cfg = C.from_dict(TrainConfig, {**C.preset_values(preset), **TINY, **over})
    T = GanTrainer(cfg, num_classes=3, device=CPU)
    if not domain:
        return T
    # The gate runs only with a domain head; update_controls asks only whether there is one, so a
    # stand-in (D.domain_features reads D._domain) spares these tests a trained classifier.
    T.D._domain = [torch.nn.Identity()]
    assert T.D.domain_features is not None
    return T


def feed(T: GanTrainer, acc: float, k: int, step: int, fake_abs: float = 0.5) -> None:
    """What k training steps of batch 8 leave in the accumulators, then the controller update."""
    n = T.cfg.batch * k
    T.ctrl = torch.tensor([acc * n, float(n), fake_abs * k, float(k)])
    T.update_controls(step, step * T.cfg.batch / 1000)


def test_spec_preset_controller_values():
    spec = C.preset_values("spec")
    assert (spec["ada_rule"], spec["acc_ema_beta"], spec["ada_speed"], spec["ada_p_max"]) == ("spec", 0.99, 0.2, 0.12)
    assert (spec["ada_warmup_steps"], spec["ada_hi_acc"], spec["ada_hi_cap"]) == (500, 0.9, 0.08)
    assert spec["ada_ops"] == ["xflip", "rotate", "translate"] and spec["ada_interval"] == 1
    assert (spec["alpha_warmup_steps"], spec["alpha_dwell"], spec["alpha_tau"], spec["alpha_dalpha"],
            spec["alpha_max"], spec["alpha_stable"]) == (500, 200, 400.0, 1e-4, 0.15, 0.05)
    T = trainer()
    assert {k for k, w in T.augment.weights.items() if w > 0} == {"xflip", "rotate", "translate"}
    assert T.gate.k == pytest.approx(1 - math.exp(-1 / 400))


def test_defaults_keep_the_former_controllers():
    d = C.validate(TrainConfig())
    assert C.preset_values("stylegan2") == {**C.to_dict(d), "preset": "stylegan2"}
    assert (d.ada_rule, d.ada_warmup_steps, d.ada_hi_acc, d.alpha_warmup_steps, d.alpha_stable) == \
        ("sign", 0, 1.0, 0, 1.0)
    assert d.acc_ema_beta ** 4 == pytest.approx(0.9)  # 0.9 per 4-step update, as before
    T = trainer("stylegan2")
    assert all(w == 1.0 for w in T.augment.weights.values())  # every op, as before ada_ops
    T.acc_ema = 0.5
    feed(T, 0.9, 4, 400)
    assert T.acc_ema == pytest.approx(0.9 * 0.5 + 0.1 * 0.9)
    assert T.ada.p == pytest.approx(32 / (100.0 * 1000))  # sign rule on the raw accuracy, 32 images


def test_acc_ema_closed_form_and_drive_hand_computed():
    assert acc_ema_path(None, 0.8, 0.99, 3) == [0.8, 0.8, 0.8]  # the first value is the accuracy itself
    T = trainer()
    T.acc_ema = 0.7
    feed(T, 0.9, 2, 1000)  # two steps of accuracy 0.9, past the warm-up
    e1 = 0.99 * 0.7 + 0.01 * 0.9                # 0.702
    e2 = 0.99 ** 2 * 0.7 + (1 - 0.99 ** 2) * 0.9  # 0.70398
    assert (e1, e2) == (pytest.approx(0.702), pytest.approx(0.70398))
    assert T.acc_ema == pytest.approx(0.70398)
    # spec 4.1, per step: p += 0.001 * (acc_ema - 0.6) * 0.2, each step with its own acc_ema
    assert T.ada.p == pytest.approx(0.001 * 0.2 * ((0.702 - 0.6) + (0.70398 - 0.6)))  # 4.1196e-5
    assert T.ada.p == pytest.approx(4.1196e-5)


def test_ada_and_alpha_warmup_500_steps():
    T = trainer()
    feed(T, 0.95, 499, 499)  # steps 0..498
    assert T.ada.p == 0.0 and T.gate.alpha == 0.0 and not T.gate.enabled
    feed(T, 0.95, 1, 500)  # step 499: its accuracy may not move p; step 500 may use a non-zero alpha
    assert T.ada.p == 0.0
    assert T.gate.enabled and T.gate.alpha == pytest.approx(1e-4)  # the first step, clipped to dalpha
    feed(T, 0.95, 1, 501)  # step 500: the first accuracy to move p
    assert T.ada.p == pytest.approx(0.001 * (0.95 - 0.6) * 0.2)
    assert T.gate.alpha == pytest.approx(2e-4)
    assert T.row_extras()["alpha"] == T.gate.alpha and T.row_extras()["ada_p"] == T.ada.p


def test_ada_p_capped_at_008_while_acc_ema_above_09():
    T = trainer()
    feed(T, 0.99, 500, 500)  # the warm-up
    for s in range(501, 5001, 100):  # steps of a sure D: p would climb to 0.12 without the cap
        feed(T, 0.99, 100, s + 99)
        assert T.ada.p <= 0.08
    assert T.ada.p == 0.08 and T.acc_ema > 0.9
    for s in range(5100, 20000, 100):  # D less sure (acc_ema 0.85 < 0.9): the cap goes, p_max stays
        feed(T, 0.85, 100, s)
    assert T.acc_ema < 0.9 and T.ada.p == 0.12


def _trajectory(k: int) -> list[tuple]:
    # warm-ups and dwell short, acc_ema fast, so the gate opens and closes in a few hundred steps
    T = trainer(ada_interval=k, ada_warmup_steps=8, alpha_warmup_steps=8, alpha_dwell=8, alpha_tau=10.0,
                alpha_dalpha=0.01, acc_ema_beta=0.9, ada_speed=50.0)
    blocks = [0.5] + [0.95] * 30 + [0.6] * 10 + [0.9] * 20  # accuracy of each 4-step block
    out, step = [], 0
    for acc in blocks:
        for _ in range(4 // k):
            step += k
            feed(T, acc, k, step)
        out.append((T.ada.p, T.acc_ema, T.gate.alpha, T.gate.enabled))
    return out


def test_results_do_not_depend_on_ada_interval():
    one, two, four = _trajectory(1), _trajectory(2), _trajectory(4)
    assert any(e for *_, e in one) and not one[35][3]  # the gate opened, and closed in the 0.6 blocks
    assert max(p for p, *_ in one) > 0.05 and max(a for _, _, a, _ in one) > 0.05
    for other in (two, four):
        for a, b in zip(one, other):
            assert a[:3] == pytest.approx(b[:3], abs=1e-9) and a[3] == b[3]


def test_gate_needs_a_stable_d():
    def spec_gate(**kw):
        return AlphaGate(on=0.78, off=0.70, alpha_max=0.15, tau=400.0, dalpha=1e-4, dwell=200,
                         warmup_steps=500, **kw)

    gate, unruled = spec_gate(stable=0.05), spec_gate(stable=1.0)
    step = 0
    for _ in range(20):  # acc_ema >= on all along, but moving by 0.1: D not stable
        for e in [0.9] * 50 + [0.8] * 50:
            step += 1
            gate.update(e, 0.0, step=step)
            unruled.update(e, 0.0, step=step)
    assert not gate.enabled and gate.alpha == 0.0
    assert unruled.enabled and unruled.alpha > 0  # the same run without the stability rule
    s0 = step
    while step < s0 + 199:  # flat from here; the window still holds the last 0.8
        step += 1
        gate.update(0.9, 0.0, step=step)
    assert not gate.enabled and gate.stable() is False
    step += 1
    gate.update(0.9, 0.0, step=step)  # the last 200 steps all 0.9: stable, and on
    assert gate.enabled and gate.alpha == pytest.approx(1e-4)
    for _ in range(999):  # 1e-4 per step (the smoothing asks for more: k * 0.15 = 3.7e-4)
        gate.update(0.9, 0.0)
    assert gate.alpha == pytest.approx(0.1)
    for _ in range(20000):  # then the time constant: toward alpha_max
        gate.update(0.9, 0.0)
    assert gate.alpha == pytest.approx(0.15, abs=1e-4)
    gate.update(0.7, 0.0)  # off at <= 0.70 (the dwell has passed long ago); no stability asked
    assert not gate.enabled


def test_watchdog_acts_after_the_g_update_and_forces_the_gate_off():
    T = trainer(domain=False, watchdog_threshold=1e-6, watchdog_log_every=1, perceptual_weight=0.01)
    T.gate.enabled, T.gate.alpha = True, 0.05
    stats = Stats(CPU)
    torch.manual_seed(0)
    before = [p.detach().clone() for p in T.G.parameters()]
    T.train_step(torch.rand(8, 3, 16, 16) * 1.6 - 0.8, torch.arange(8) % 3, 0, stats)
    assert any(not torch.equal(a, b) for a, b in zip(before, T.G.parameters()))  # G has been updated
    assert T.perceptual_scale == 1.0  # nothing lowered inside the step ...
    events = []
    T.update_controls(1, 0.008, on_event=events.append)  # ... the controllers run after it
    assert events and events[0]["step"] == 1
    assert T.perceptual_scale == pytest.approx(0.9) and T.gate.alpha_max == pytest.approx(0.15 * 0.95)
    assert not T.gate.enabled


def test_spec_watchdog_hundred_firings_stop_at_the_floors():
    T = trainer(perceptual_weight=0.01)
    for s in range(1, 101):  # ada_interval 1: one check per step, each above 0.75
        feed(T, 0.8, 1, s, fake_abs=0.9)
    assert T.watchdog.events == 100
    assert T.cfg.perceptual_weight * T.perceptual_scale == pytest.approx(0.005)
    assert T.gate.alpha_max == pytest.approx(0.1)
