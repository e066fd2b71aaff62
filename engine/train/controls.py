"""Training-time feedback controls: the domain-head alpha gate and the saturation watchdog.

Both are plain Python (floats and ints, no tensors) so their state_dicts survive
torch.load(weights_only=True) and updating them never syncs the GPU.
"""
from __future__ import annotations


class AlphaGate:
    """Gates D's domain head (logit = base + proj + alpha * domain) on D's accuracy EMA.

    The frozen domain features make D stronger, so the head is only opened once D is winning
    comfortably (acc_ema >= on) and closed again when it is not (acc_ema <= off). Between off and
    on the state is kept (hysteresis), and a state must last `dwell` updates before it may switch,
    so noise in acc_ema cannot make the gate flicker. alpha follows the state smoothly: each update
    moves it by tau * (target - alpha), clipped to +-dalpha, toward alpha_max (on) or 0 (off).
    After freeze_kimg (if > 0) neither the state nor alpha changes.
    """

    def __init__(self, on=0.78, off=0.70, alpha_max=0.5, tau=0.05, dalpha=0.01, dwell=50, freeze_kimg=0.0):
        if not off < on:
            raise ValueError(f"AlphaGate needs off < on, got off={off}, on={on}")
        if not (alpha_max >= 0 and 0 < tau <= 1 and dalpha > 0 and dwell >= 0):
            raise ValueError(f"AlphaGate needs alpha_max >= 0, 0 < tau <= 1, dalpha > 0, dwell >= 0; "
                             f"got alpha_max={alpha_max}, tau={tau}, dalpha={dalpha}, dwell={dwell}")
        self.on, self.off, self.alpha_max, self.tau, self.dalpha = on, off, alpha_max, tau, dalpha
        self.dwell, self.freeze_kimg = int(dwell), freeze_kimg
        self.alpha, self.enabled, self.in_state = 0.0, False, 0  # in_state: updates spent in the current state

    def update(self, acc_ema: float, kimg: float) -> float:
        """One control step; returns the alpha to use for the next D/G steps."""
        if self.freeze_kimg > 0 and kimg >= self.freeze_kimg:
            return self.alpha
        self.in_state += 1
        if self.in_state >= self.dwell:
            if not self.enabled and acc_ema >= self.on:
                self.enabled, self.in_state = True, 0
            elif self.enabled and acc_ema <= self.off:
                self.enabled, self.in_state = False, 0
        target = self.alpha_max if self.enabled else 0.0
        step = max(-self.dalpha, min(self.dalpha, self.tau * (target - self.alpha)))
        self.alpha += step
        return self.alpha

    def force_off(self) -> None:
        """Close the gate now (saturation watchdog); alpha then decays to 0 at the usual rate."""
        self.enabled, self.in_state = False, 0

    def state_dict(self) -> dict:
        return {"alpha": self.alpha, "enabled": self.enabled, "in_state": self.in_state, "alpha_max": self.alpha_max}

    def load_state_dict(self, d: dict) -> None:
        # alpha_max is state, not just config: the watchdog lowers it during the run.
        self.alpha, self.enabled = float(d["alpha"]), bool(d["enabled"])
        self.in_state, self.alpha_max = int(d["in_state"]), float(d["alpha_max"])


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
