"""Typed dataclass configs, JSON load/save, CLI flags generated from fields, validation.

One name per idea: a field `r1_gamma` is the config key, the CLI flag `--r1-gamma`, the CSV/JSON key and
the UI label. Limits live in field metadata (`range`, `choices`) so that CLI, UI and engine share them,
and `validate()` turns every bad value into a ConfigError that names the field and what is allowed.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from engine.utils import atomic_write_json

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value is wrong; the message names the field and the allowed values (shown verbatim)."""


def opt(default: Any, help: str = "", *, range: tuple | None = None, choices: tuple | None = None,
        **kw: Any) -> Any:
    """A dataclass field with help text and limits. `range` is inclusive (lo, hi); None = unbounded."""
    md = {"help": help, "range": range, "choices": choices}
    if isinstance(default, (list, dict, tuple)):
        return field(default_factory=lambda: type(default)(default), metadata=md, **kw)
    return field(default=default, metadata=md, **kw)


def _base_type(tp: Any) -> Any:
    """Optional[X] / X | None -> X."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return tp


def _allows_none(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)


def _coerce(name: str, value: Any, tp: Any) -> Any:
    if value is None:
        if _allows_none(tp):
            return None
        raise ConfigError(f"config field '{name}' must not be empty")
    base = _base_type(tp)
    try:
        if base is bool:
            if isinstance(value, str):
                low = value.strip().lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            if isinstance(value, (bool, int)) and value in (0, 1):
                return bool(value)
            raise ValueError
        if base is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            if isinstance(value, bool):
                raise ValueError
            return int(value)
        if base is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if base is str:
            return str(value)
        if typing.get_origin(base) in (list, tuple) or base in (list, tuple):
            if isinstance(value, str):
                value = [v for v in value.split(",") if v.strip()]
            args = typing.get_args(base)
            inner = args[0] if args else str
            return [_coerce(name, v, inner) for v in value]
        if typing.get_origin(base) is dict or base is dict:
            if isinstance(value, str):
                value = json.loads(value)
            if not isinstance(value, dict):
                raise ValueError
            return dict(value)
    except (TypeError, ValueError, json.JSONDecodeError):
        tname = getattr(base, "__name__", str(base))
        raise ConfigError(f"config field '{name}' must be of type {tname} (got {value!r})") from None
    return value


def validate(cfg: Any) -> Any:
    """Coerce types and check `range`/`choices` of every field; raise ConfigError on the first problem."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = _coerce(f.name, getattr(cfg, f.name), hints[f.name])
        object.__setattr__(cfg, f.name, value)
        if value is None:
            continue
        choices, rng = f.metadata.get("choices"), f.metadata.get("range")
        values = value if isinstance(value, list) else [value]
        for v in values:
            if choices is not None and v not in choices:
                allowed = ", ".join(str(c) for c in choices)
                raise ConfigError(f"config field '{f.name}' must be one of: {allowed} (got {v!r})")
            if rng is not None:
                lo, hi = rng
                if (lo is not None and v < lo) or (hi is not None and v > hi):
                    lo_s = "-inf" if lo is None else lo
                    hi_s = "inf" if hi is None else hi
                    raise ConfigError(
                        f"config field '{f.name}' must be between {lo_s} and {hi_s} (got {v!r})")
    check = getattr(cfg, "check", None)
    if callable(check):
        check()  # cross-field rules of the concrete config
    return cfg


def from_dict(cls: type[T], d: dict[str, Any], *, strict: bool = True) -> T:
    """Build and validate a config from a dict; unknown keys are an error when `strict`."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown and strict:
        raise ConfigError(
            f"unknown config field(s): {', '.join(unknown)}; known fields: {', '.join(sorted(names))}")
    return validate(cls(**{k: v for k, v in d.items() if k in names}))


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def save(cfg: Any, path: str | Path) -> None:
    atomic_write_json(path, to_dict(cfg))


def load(cls: type[T], path: str | Path) -> T:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"config file {p} is not valid JSON: {e}") from None
    return from_dict(cls, d)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser, cls: type, *, skip: tuple[str, ...] = ()) -> None:
    """One CLI flag per config field (`r1_gamma` -> `--r1-gamma`); values are validated later."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        help_ = f.metadata.get("help", "")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        extra = []
        if f.metadata.get("choices"):
            extra.append("one of " + ", ".join(map(str, f.metadata["choices"])))
        if f.metadata.get("range"):
            extra.append(f"range {f.metadata['range']}")
        help_ = f"{help_} (default {default!r}{'; ' + '; '.join(extra) if extra else ''})"
        base = _base_type(hints[f.name])
        metavar = getattr(base, "__name__", "VALUE").upper()
        # Strings on the CLI; `validate` coerces them with one set of rules for CLI, JSON and UI.
        parser.add_argument(flag(f.name), dest=f.name, default=None, metavar=metavar, help=help_)


def from_args(cls: type[T], args: argparse.Namespace, base: dict[str, Any] | None = None) -> T:
    """Config from defaults <- `base` (e.g. a --config JSON) <- flags given on the command line."""
    d = dict(base or {})
    for f in dataclasses.fields(cls):
        v = getattr(args, f.name, None)
        if v is not None:
            d[f.name] = v
    return from_dict(cls, d)


# ----------------------------------------------------------------------------------------------
# Data preparation

SOURCES_HELP = "histosynth (built-in synthetic demo set) or folder:PATH (NCT-CRC-HE / ImageFolder tree)"


@dataclass
class PrepareConfig:
    source: str = opt("histosynth", SOURCES_HELP)
    out: str = opt("", "output directory of the prepared data set (default: <data root>/<source>-<size>)")
    size: int = opt(64, "patch size in pixels (resized / centre-cropped)", range=(16, 1024))
    per_class: int = opt(200, "patches per class for histosynth; cap per class for folders (0 = all)",
                         range=(0, None))
    seed: int = opt(0, "seed for histosynth and the split shuffle", range=(0, 2**31 - 1))
    val_frac: float = opt(0.1, "fraction of each class held out for validation", range=(0.0, 0.5))
    test_frac: float = opt(0.1, "fraction of each class held out for test", range=(0.0, 0.5))
    eval_frac: float = opt(0.1, "fraction of train kept aside as the `eval` subset for metrics",
                           range=(0.0, 0.5))
    min_size: int = opt(0, "reject images whose short side is below this (0 = --size)", range=(0, None))
    quality_filter: bool = opt(True, "drop blurry / empty / over-saturated / blocky patches")
    min_laplacian_var: float = opt(5.0, "quality: min variance of the Laplacian (blur)", range=(0, None))
    min_entropy: float = opt(2.0, "quality: min grey-level entropy in bits (empty patches)",
                             range=(0, 8))
    min_tissue_ratio: float = opt(0.0, "quality: min fraction of tissue pixels (0 keeps background)",
                                  range=(0, 1))
    max_saturation: float = opt(0.98, "quality: max fraction of clipped (0 or 255) pixels", range=(0, 1))
    max_blockiness: float = opt(3.0, "quality: max ratio of 8x8-boundary to interior gradients (JPEG)",
                                range=(1, None))
    max_dct_blockiness: float = opt(0.9, "quality: max share of zeroed high-frequency 8x8 DCT terms",
                                    range=(0, 1))
    stain_norm: str = opt("none", "stain normalisation", choices=("none", "macenko", "vahadane"))
    stain_reference: str = opt("", "reference tile for stain normalisation (an image path)")

    def check(self) -> None:
        if not (self.source == "histosynth" or self.source.startswith("folder:")):
            raise ConfigError(f"config field 'source' must be one of: histosynth, folder:PATH "
                              f"(got {self.source!r})")
        if self.source.startswith("folder:") and not self.source[len("folder:"):]:
            raise ConfigError("config field 'source' is folder: with no path; use folder:/path/to/root")
        if self.val_frac + self.test_frac >= 0.9:
            raise ConfigError("config fields 'val_frac' + 'test_frac' must leave at least 10% for train "
                              f"(got {self.val_frac} + {self.test_frac})")
        if self.stain_norm != "none" and not self.stain_reference:
            raise ConfigError("config field 'stain_reference' is needed when 'stain_norm' is "
                              f"{self.stain_norm!r}: give the path of a reference tile")
