"""Reading what a user asks to sample: seeds, classes, a step (CLI flags and page text boxes share
these, so both give the same errors)."""
from __future__ import annotations

from engine.config import ConfigError

MAX_SEEDS = 10_000          # a typo like "0-99999999" must not hang the page


def parse_seeds(text: str, max_count: int = MAX_SEEDS) -> list[int]:
    """"0-7", "1,5,9" or "0-3, 10" -> [0, 1, ...] in the order given, duplicates dropped."""
    def num(part: str, v: str) -> int:
        if not (v.isascii() and v.isdigit()):
            raise ConfigError(f"seeds: cannot read {part!r}; use ranges and lists of non-negative integers "
                              "like 0-7 or 1,5,9")
        return int(v)

    seeds: list[int] = []
    for part in (p for p in str(text).replace(" ", "").split(",") if p):
        lo, _, hi = part.partition("-")
        lo, hi = num(part, lo), (num(part, hi) if "-" in part else None)
        if hi is None:
            seeds.append(lo)
        elif hi < lo:
            raise ConfigError(f"seeds: range {part!r} ends before it starts; write low-high, e.g. 0-7")
        elif hi - lo + 1 > max_count:
            raise ConfigError(f"seeds: range {part!r} has more than {max_count} seeds")
        else:
            seeds.extend(range(lo, hi + 1))
    if not seeds:
        raise ConfigError("seeds: no seed given; use ranges and lists of integers like 0-7 or 1,5,9")
    if (big := max(seeds)) >= 2**32:
        raise ConfigError(f"seeds: {big} is out of range; seeds lie in 0..{2**32 - 1}")
    out = list(dict.fromkeys(seeds))
    if len(out) > max_count:
        raise ConfigError(f"seeds: {len(out)} seeds given, at most {max_count} allowed")
    return out


def take_seeds(seeds: list[int], n: int) -> list[int]:
    """The first n seeds, continued with the next unused integers when fewer are given."""
    if n < 1:
        raise ConfigError(f"per_class must be at least 1, got {n}")
    out, nxt = list(seeds[:n]), (max(seeds) + 1 if seeds else 0)
    while len(out) < n:
        out.append(nxt)
        nxt += 1
    return out


def parse_classes(spec: str | list, class_names: list[str]) -> list[int]:
    """Class names (any case) or indices, as "ADI,TUM" or a list -> class indices; "" or "all" = all."""
    items = spec if isinstance(spec, (list, tuple)) else [s for s in str(spec).replace(" ", "").split(",") if s]
    if not items or items == ["all"]:
        return list(range(len(class_names)))
    upper = [n.upper() for n in class_names]
    out = []
    for it in items:
        s = str(it)
        if s.upper() in upper:
            out.append(upper.index(s.upper()))
        elif s.isdigit() and int(s) < len(class_names):
            out.append(int(s))
        else:
            raise ConfigError(f"classes: unknown class {s!r}; choose from {', '.join(class_names)} "
                              f"(or indices 0..{len(class_names) - 1})")
    return list(dict.fromkeys(out))


def parse_step(text: str | int | None) -> int | str | None:
    """A --step value: None / "" / "latest" -> None, "best" -> "best", else a step number."""
    if text is None or str(text).strip() in ("", "latest"):
        return None
    t = str(text).strip()
    if t == "best":
        return t
    if not t.isdigit():
        raise ConfigError(f"step must be latest, best or a step number (got {text!r})")
    return int(t)
