import io

import pytest
import torch

from engine.train.controls import AlphaGate, SaturationWatchdog


def roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_gate_switches_on_only_after_dwell():
    gate = AlphaGate(dwell=3)  # one update = one step
    assert gate.update(0.9, 0.0) == 0.0 and not gate.enabled
    gate.update(0.9, 0.0)
    assert not gate.enabled  # 2 steps in the off state: too early
    gate.update(0.9, 0.0)
    assert gate.enabled and gate.alpha == pytest.approx(gate.dalpha) == 0.0025  # first step clipped to dalpha
    assert AlphaGate(dwell=0).update(0.78, 0.0) > 0  # exactly `on` switches on


def test_gate_defaults_approximate_the_former_per_update_rule():
    # the stylegan2 defaults keep the per-update rule (tau 0.05, dalpha 0.01 per 4-step update, dwell 50
    # updates) now that the gate counts steps, so runs of that preset keep their curves
    gate = AlphaGate()
    assert (1 - gate.k) ** 4 == pytest.approx(0.95, abs=1e-4) and 4 * gate.dalpha == 0.01
    assert gate.dwell == 200


def test_gate_hysteresis_between_off_and_on():
    gate = AlphaGate(dwell=0)
    gate.update(0.75, 0.0)
    assert not gate.enabled  # below on: stays off
    gate.update(0.8, 0.0)
    assert gate.enabled
    for acc in (0.75, 0.71, 0.77):  # between off and on: stays on
        gate.update(acc, 0.0)
        assert gate.enabled
    gate.update(0.70, 0.0)
    assert not gate.enabled


def test_gate_dwell_also_delays_switching_off():
    gate = AlphaGate(dwell=2)
    for _ in range(2):
        gate.update(0.9, 0.0)
    assert gate.enabled
    gate.update(0.5, 0.0)
    assert gate.enabled  # only 1 step in the on state
    gate.update(0.5, 0.0)
    assert not gate.enabled


def test_gate_alpha_rate_limits():
    import math

    gate = AlphaGate(alpha_max=0.5, tau=20.0, dalpha=0.01, dwell=0)
    prev = 0.0
    for _ in range(500):
        a = gate.update(0.9, 0.0)
        assert 0 <= a - prev <= 0.01 + 1e-12 and a <= 0.5
        prev = a
    assert a > 0.45  # converges toward alpha_max
    # small gap: the smoothing term, not the clip, sets the step: (1 - exp(-1/tau)) * (0.1 - 0)
    small = AlphaGate(alpha_max=0.1, tau=20.0, dalpha=0.01, dwell=0)
    assert small.update(0.9, 0.0) == pytest.approx((1 - math.exp(-1 / 20)) * 0.1)
    # off: alpha decays toward 0 at most dalpha per step
    gate.update(0.1, 0.0)
    assert not gate.enabled and prev - gate.alpha == pytest.approx(0.01)
    with pytest.raises(ValueError, match="tau > 0"):
        AlphaGate(tau=0)
    AlphaGate(tau=400.0)  # a time constant in steps: no upper bound (it used to be a fraction <= 1)


def test_gate_freeze_and_force_off():
    gate = AlphaGate(dwell=0, freeze_kimg=2.0)
    gate.update(0.9, 1.0)
    alpha = gate.alpha
    assert gate.update(0.9, 2.0) == alpha and gate.update(0.1, 3.0) == alpha and gate.enabled
    gate = AlphaGate(dwell=5)
    for _ in range(5):
        gate.update(0.9, 0.0)
    gate.force_off()
    assert not gate.enabled
    gate.update(0.9, 0.0)
    assert not gate.enabled  # dwell restarts after a forced switch


def test_gate_state_dict_weights_only():
    gate = AlphaGate(dwell=1, stable=0.05)
    for _ in range(4):
        gate.update(0.9, 0.0)
    gate.alpha_max *= 0.5
    other = AlphaGate(dwell=1, stable=0.05)
    other.load_state_dict(roundtrip(gate.state_dict()))
    assert (other.alpha, other.enabled, other.in_state, other.alpha_max, list(other.history)) == \
        (gate.alpha, gate.enabled, gate.in_state, gate.alpha_max, list(gate.history))
    assert other.update(0.9, 0.0) == gate.update(0.9, 0.0)
    # a checkpoint from before the gate counted steps: alpha, enabled, in_state, alpha_max only
    old = AlphaGate()
    old.load_state_dict({"alpha": 0.2, "enabled": True, "in_state": 7, "alpha_max": 0.4})
    assert (old.alpha, old.enabled, old.in_state, old.alpha_max, len(old.history)) == (0.2, True, 7, 0.4, 0)
    with pytest.raises(ValueError, match="off < on"):
        AlphaGate(on=0.7, off=0.8)


def test_watchdog_fires_above_threshold_only():
    dog = SaturationWatchdog(threshold=0.75, log_every=1)
    assert dog.check(0.5, 1) is None and dog.check(0.75, 2) is None
    ev = dog.check(0.8, 3)
    assert ev == {"step": 3, "fake_abs_mean": 0.8, "events": 1, "log": True}
    assert dog.check(torch.tensor(0.9), 4)["events"] == 2  # a 0-dim tensor is accepted too


def test_watchdog_acts_every_firing_but_logs_every_50_steps_and_state():
    dog = SaturationWatchdog()
    assert dog.log_every == 50
    logged = [s for s in range(100, 300, 4) if dog.check(0.9, s)["log"]]
    assert logged == [100, 152, 204, 256] and dog.events == 50
    other = SaturationWatchdog()
    other.load_state_dict(roundtrip(dog.state_dict()))
    assert other.check(0.9, 305)["log"] is False and other.check(0.9, 306)["log"] is True
    old = SaturationWatchdog()
    old.load_state_dict({"events": 3, "last_step": 10})  # a checkpoint from before log_every
    assert (old.events, old.last_log_step) == (3, 10)


def test_watchdog_hundred_firings_leave_weights_at_their_floors():
    # Old behaviour: x0.5 with no floor, 0.01 -> 1e-5 and alpha_max 0.5 -> 5e-4 in ten firings.
    dog = SaturationWatchdog()
    assert (dog.factor, dog.floor, dog.alpha_factor, dog.alpha_floor) == (0.9, 0.005, 0.95, 0.1)
    perc, amax = 0.01, 0.5
    perc1, amax1 = dog.lower_weights(perc, amax)
    assert (perc1, amax1) == (pytest.approx(0.009), pytest.approx(0.475))
    for s in range(100):
        assert dog.check(0.9, s) is not None
        perc, amax = dog.lower_weights(perc, amax)
    assert perc == 0.005 and amax == 0.1
    # a value configured below its floor is never raised to it
    assert dog.lower_weights(0.001, 0.05) == (0.001, 0.05)
    with pytest.raises(ValueError, match="factor"):
        SaturationWatchdog(factor=0)
