"""Training-time feedback controls: the accuracy EMA, the domain-head alpha gate, the saturation watchdog.

Both are plain Python (floats and ints, no tensors) so their state_dicts survive
torch.load(weights_only=True) and updating them never syncs the GPU.
"""
from __future__ import annotations

import math
from collections import deque


def acc_ema_path(prev: float | None, acc: float, beta: float, steps: int) -> list[float]:
    """acc_ema after each of `steps` steps whose accuracy was `acc` (an interval's mean stands for each
    of its steps), with decay `beta` per step: e_j = beta**j * prev + (1 - beta**j) * acc, so the last
    value is beta**k * prev + (1 - beta**k) * acc whatever the number of updates it took. The first
    value of a run (prev None) is acc itself (no bias toward 0)."""
    if prev is None:
        return [float(acc)] * steps
    return [beta ** j * prev + (1 - beta ** j) * acc for j in range(1, steps + 1)]


class AlphaGate:
    """Gates D's domain head (logit = base + proj + alpha * domain) on D's accuracy EMA, in steps.

    The frozen domain features make D stronger, so the head is only opened once D is winning
    comfortably and steadily, and closed again when it is not (seed-001 spec 4.4). One `update` is one
    training step:
      - warm-up: for the first `warmup_steps` steps (counted from 0) alpha is 0 and the gate stays shut.
      - on when acc_ema >= on and D is stable, off when acc_ema <= off; between them the state is kept
        (hysteresis), and a state must last `dwell` steps before it may switch, so noise in acc_ema
        cannot make the gate flicker.
      - stable: acc_ema (its value after each step) moved less than `stable` over the last `dwell`
        steps, max - min < stable, and at least `dwell` steps were seen (with dwell 0: always).
        stable >= 1 turns the rule off (acc_ema lies in [0, 1]).
      - alpha follows the state: each step it moves by k * (target - alpha) with k = 1 - exp(-1/tau),
        i.e. a time constant of tau steps, clipped to +-dalpha, toward alpha_max (on) or 0 (off).
    After freeze_kimg (if > 0) neither the state nor alpha changes.
    """

    def __init__(self, on=0.78, off=0.70, alpha_max=0.5, tau=78.0, dalpha=0.0025, dwell=200, freeze_kimg=0.0,
                 *, warmup_steps=0, stable=1.0):
        if not off < on:
            raise ValueError(f"AlphaGate needs off < on, got off={off}, on={on}")
        if not (alpha_max >= 0 and tau > 0 and dalpha > 0 and dwell >= 0 and warmup_steps >= 0 and stable >= 0):
            raise ValueError(f"AlphaGate needs alpha_max >= 0, tau > 0, dalpha > 0, dwell >= 0, "
                             f"warmup_steps >= 0, stable >= 0; got alpha_max={alpha_max}, tau={tau}, "
                             f"dalpha={dalpha}, dwell={dwell}, warmup_steps={warmup_steps}, stable={stable}")
        self.on, self.off, self.alpha_max, self.tau, self.dalpha = on, off, alpha_max, tau, dalpha
        self.dwell, self.freeze_kimg = int(dwell), freeze_kimg
        self.warmup_steps, self.stable_band = int(warmup_steps), float(stable)
        self.k = 1.0 - math.exp(-1.0 / tau)  # smoothing per step
        self.alpha, self.enabled, self.in_state = 0.0, False, 0  # in_state: steps spent in the current state
        # acc_ema after each of the last `dwell` steps, for the stability rule (kept only when it is on)
        self.history: deque[float] = deque(maxlen=max(1, self.dwell))

    def stable(self) -> bool:
        """D is stable (see the class doc)."""
        if self.stable_band >= 1:
            return True
        if len(self.history) < max(1, self.dwell):
            return False
        return max(self.history) - min(self.history) < self.stable_band

    def update(self, acc_ema: float, kimg: float, *, step: int | None = None) -> float:
        """One training step; `step`: the steps done once it is over (None = past the warm-up).
        Returns the alpha to use for the next step."""
        if self.freeze_kimg > 0 and kimg >= self.freeze_kimg:
            return self.alpha
        if self.stable_band < 1:
            self.history.append(float(acc_ema))
        self.in_state += 1
        if step is not None and step < self.warmup_steps:  # the next step, `step`, is still in the warm-up
            self.alpha, self.enabled = 0.0, False
            return self.alpha
        if self.in_state >= self.dwell:
            if not self.enabled and acc_ema >= self.on and self.stable():
                self.enabled, self.in_state = True, 0
            elif self.enabled and acc_ema <= self.off:
                self.enabled, self.in_state = False, 0
        target = self.alpha_max if self.enabled else 0.0
        self.alpha += max(-self.dalpha, min(self.dalpha, self.k * (target - self.alpha)))
        return self.alpha

    def force_off(self) -> None:
        """Close the gate now (saturation watchdog); alpha then decays to 0 at the usual rate."""
        self.enabled, self.in_state = False, 0

    def state_dict(self) -> dict:
        return {"alpha": self.alpha, "enabled": self.enabled, "in_state": self.in_state,
                "alpha_max": self.alpha_max, "history": list(self.history)}

    def load_state_dict(self, d: dict) -> None:
        # alpha_max is state, not just config: the watchdog lowers it during the run.
        self.alpha, self.enabled = float(d["alpha"]), bool(d["enabled"])
        self.in_state, self.alpha_max = int(d["in_state"]), float(d["alpha_max"])
        # Checkpoints from before the gate counted in steps have no history (the stability window
        # then fills again, dwell steps) and an in_state counted in controller updates.
        self.history.clear()
        self.history.extend(float(v) for v in d.get("history", ()))


def lower(value: float, factor: float, floor: float) -> float:
    """value * factor, but not below `floor` (nor raised to it when value already lies below)."""
    return max(min(value, floor), value * factor)


class SaturationWatchdog:
    """Detects G drifting into its output clamp (mean |fake| > threshold), seed-001 spec 4.5.

    `check` returns an event dict at every firing; the trainer then lowers the perceptual weight and
    gate.alpha_max with `lower_weights` (x factor / x alpha_factor, never below floor / alpha_floor),
    calls gate.force_off() and logs the event when its "log" entry is true: at most once every
    `log_every` steps, so a lasting saturation does not flood events.jsonl. The domain head and
    perceptual loss are the usual culprits: they reward saturated colours the frozen classifier finds
    very "H&E-like". The floors matter: x0.5 with no floor took the perceptual weight from 0.01 to 1e-5
    in ten firings, and it stayed there in every later checkpoint.
    """

    def __init__(self, threshold=0.75, factor=0.9, floor=0.005, alpha_factor=0.95, alpha_floor=0.1,
                 log_every=50):
        if not (0 < threshold and 0 < factor <= 1 and 0 < alpha_factor <= 1 and floor >= 0
                and alpha_floor >= 0 and log_every >= 1):
            raise ValueError(f"SaturationWatchdog needs threshold > 0, 0 < factor <= 1, "
                             f"0 < alpha_factor <= 1, floors >= 0, log_every >= 1; got threshold="
                             f"{threshold}, factor={factor}, alpha_factor={alpha_factor}, floor={floor}, "
                             f"alpha_floor={alpha_floor}, log_every={log_every}")
        self.threshold, self.factor, self.floor = threshold, factor, floor
        self.alpha_factor, self.alpha_floor, self.log_every = alpha_factor, alpha_floor, int(log_every)
        self.events, self.last_log_step = 0, None

    def check(self, fake_abs_mean: float, step: int) -> dict | None:
        """An event dict if mean |fake| is above the threshold, else None; "log" says whether this
        firing is to be logged (none in the `log_every` steps after the last logged one)."""
        fake_abs_mean = float(fake_abs_mean)
        if fake_abs_mean <= self.threshold:
            return None
        self.events += 1
        log = self.last_log_step is None or step - self.last_log_step >= self.log_every
        if log:
            self.last_log_step = int(step)
        return {"step": int(step), "fake_abs_mean": fake_abs_mean, "events": self.events, "log": log}

    def lower_weights(self, perceptual_weight: float, alpha_max: float) -> tuple[float, float]:
        """(perceptual weight, alpha_max) after one firing."""
        return (lower(perceptual_weight, self.factor, self.floor),
                lower(alpha_max, self.alpha_factor, self.alpha_floor))

    def state_dict(self) -> dict:
        return {"events": self.events, "last_log_step": self.last_log_step}

    def load_state_dict(self, d: dict) -> None:
        self.events = int(d["events"])
        last = d.get("last_log_step", d.get("last_step"))  # "last_step": checkpoints before the floors
        self.last_log_step = None if last is None else int(last)
