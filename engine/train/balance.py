"""The GAN basics tutorial's balance reading of the loss curves (seed 003, section IV), for mlp_gan.

"If L_D goes to zero too fast, the discriminator is too strong": G then gets saturated gradients and
stays stuck. The reverse, G's loss going to zero while D's grows, means D no longer tells reals from
fakes, gives G no useful feedback, and G may collapse onto a few modes. `balance_note` reads the
metrics_gan.csv columns d_loss and g_loss and says which, if either, with the tutorial's remedies
named by their config fields. Pure Python (no torch), so the Train page can call it on every refresh.

Scale: BCE / non-saturating logistic losses as the GAN families log them (d_loss = real + fake terms,
2 ln 2 = 1.39 at the equilibrium D = 1/2; g_loss = softplus(-D(G(z))), ln 2 = 0.69 there). Hinge or
Wasserstein losses live on other scales; the note is not meant for them.
"""
from __future__ import annotations

import math
from typing import Sequence

LOW = 0.2   # a loss this close to 0 has "collapsed": D ~ 0.9 on reals and ~0.1 on fakes, or D(G(z)) ~ 0.82
HIGH = 3.0  # a loss this high means the other side wins outright: g_loss 3 = D(G(z)) ~ 0.05 on average
EQ_D, EQ_G = 2 * math.log(2), math.log(2)  # the losses at the equilibrium D = 1/2 (chance)

D_TOO_STRONG = ("D too strong: D's loss is at {d_now:.3g} while G's {g_move} {g_now:.3g} (means of the "
                "last {w} logs), so G's gradients saturate and it stops learning. The tutorial's remedies: "
                "a lower D learning rate (lr_d), fewer D updates per G update so G gets more steps "
                "(d_steps 1), one-sided label smoothing (real_label 0.9), noise on D's input (d_noise, "
                "e.g. 0.1) or more dropout in D (dropout).")
G_TOO_STRONG = ("G too strong / D too weak: G's loss is at {g_now:.3g} while D's {d_move} {d_now:.3g} "
                "(means of the last {w} logs): D no longer tells reals from fakes, its feedback is no use "
                "to G and G risks mode collapse. The tutorial's remedies: more D updates per G update "
                "(d_steps 2, its example), a higher D or lower G learning rate (lr_d, lr_g), less dropout "
                "or input noise in D (dropout, d_noise), no label smoothing (real_label 1.0).")


def _finite_pairs(d_loss: Sequence, g_loss: Sequence) -> list[tuple[float, float]]:
    out = []
    for d, g in zip(d_loss, g_loss):
        try:
            d, g = float(d), float(g)
        except (TypeError, ValueError):  # empty CSV cells, None
            continue
        if math.isfinite(d) and math.isfinite(g):
            out.append((d, g))
    return out


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def balance_note(d_loss: Sequence, g_loss: Sequence, window: int = 20, low: float = LOW, high: float = HIGH,
                 min_points: int = 8) -> str | None:
    """A short note when one network overpowers the other, else None (balanced, or too few points).

    The means of the last `window` logged values (w = min(window, n // 2)) are compared with those of
    the w before them. "D too strong": D's loss collapsed (<= `low`) while G's rose, or G's is >= `high`
    while D still beats chance (d_loss < 2 ln 2). "G too strong / D too weak": the mirror image, G's
    loss <= `low` while D's rose, or D's >= `high` while G's is below ln 2.

    Args:
        d_loss, g_loss: the curves, oldest first, one value per log (non-numbers and NaN are skipped).
        window: logs averaged at each end; min_points: fewer usable logs give None.
        low, high: the thresholds, on the BCE scale of the module docstring.
    """
    pairs = _finite_pairs(d_loss, g_loss)
    if len(pairs) < max(2, min_points):
        return None
    w = max(1, min(window, len(pairs) // 2))
    recent, before = pairs[-w:], pairs[-2 * w:-w]
    d_now, g_now = _mean([d for d, _ in recent]), _mean([g for _, g in recent])
    d_then, g_then = _mean([d for d, _ in before]), _mean([g for _, g in before])
    if (d_now <= low and g_now > g_then) or (g_now >= high and d_now < EQ_D):
        move = f"rose from {g_then:.3g} to" if g_now > g_then else "stays at"
        return D_TOO_STRONG.format(d_now=d_now, g_now=g_now, g_move=move, w=w)
    if (g_now <= low and d_now > d_then) or (d_now >= high and g_now < EQ_G):
        move = f"rose from {d_then:.3g} to" if d_now > d_then else "stays at"
        return G_TOO_STRONG.format(d_now=d_now, g_now=g_now, d_move=move, w=w)
    return None
