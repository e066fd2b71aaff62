"""Typed dataclass configs, JSON load/save, CLI flags generated from fields, validation.

One name per idea: a field `r1_gamma` is the config key, the CLI flag `--r1-gamma`, the CSV/JSON key and
the UI label. Limits live in field metadata (`range`, `choices`) so that CLI, UI and engine share them,
and `validate()` turns every bad value into a ConfigError that names the field and what is allowed.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
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
        label: str = "", offer: tuple | None = None, cli_default: str = "", pattern: str | None = None,
        allowed: str = "", widget: str = "", **kw: Any) -> Any:
    """A dataclass field with help text and limits. `range` is inclusive (lo, hi); None = unbounded.

    `label` is the short phrase a researcher reads in a form (`field_label` shows it beside the field's
    name, which stays the one name in code, CLI, CSV and config). `offer` narrows the values a form
    offers below `choices` (e.g. only the model families that run), while `choices` stays what the CLI
    lists and what the engine explains when a value is refused. `pattern` is a regular expression the
    whole (string) value must match, `allowed` what the error and --help say of it ("one of: auto, cpu,
    ..." for the one device rule, DEVICE_PATTERN). `widget` names a form widget other than the type's
    default ("slider")."""
    md = {"help": help, "range": range, "choices": choices, "label": label, "offer": offer,
          "cli_default": cli_default,  # what --help says when the real default is resolved at run time
          "pattern": pattern, "allowed": allowed, "widget": widget}
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


def _check_pattern(f: dataclasses.Field, v: Any) -> None:
    if not re.fullmatch(f.metadata["pattern"], str(v).strip()):
        raise ConfigError(f"config field '{f.name}' must be "
                          f"{f.metadata.get('allowed') or 'like ' + f.metadata['pattern']} (got {v!r})")


def check_patterns(cfg: Any) -> None:
    """The `pattern` rules of every field (validate applies them too), for a `check()` called alone."""
    for f in dataclasses.fields(cfg):
        if f.metadata.get("pattern") is not None and getattr(cfg, f.name) is not None:
            _check_pattern(f, getattr(cfg, f.name))


def validate(cfg: Any) -> Any:
    """Coerce types and check `range`/`choices` of every field; raise ConfigError on the first problem."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = _coerce(f.name, getattr(cfg, f.name), hints[f.name])
        object.__setattr__(cfg, f.name, value)
        if value is None:
            continue
        choices, rng = f.metadata.get("choices"), f.metadata.get("range")
        pattern = f.metadata.get("pattern")
        values = value if isinstance(value, list) else [value]
        for v in values:
            if choices is not None and v not in choices:
                allowed = ", ".join(str(c) for c in choices)
                raise ConfigError(f"config field '{f.name}' must be one of: {allowed} (got {v!r})")
            if pattern is not None:
                _check_pattern(f, v)
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


def renamed(cls: type, d: dict[str, Any]) -> dict[str, Any]:
    """`d` with the keys config class `cls` renamed (its RENAMED {old: new}) under their new names, so a
    config.json, report or options dict written before a rename still loads. The new name wins when a
    dict holds both."""
    old_names = getattr(cls, "RENAMED", {})
    out = {k: v for k, v in d.items() if k not in old_names}
    for old, new in old_names.items():
        if old in d and new not in d:
            out[new] = d[old]
    return out


def from_dict(cls: type[T], d: dict[str, Any], *, strict: bool = True) -> T:
    """Build and validate a config from a dict; unknown keys are an error when `strict`; a key the class
    renamed is read under its old name too (`renamed`)."""
    d = renamed(cls, d)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown and strict:
        raise ConfigError(
            f"unknown config field(s): {', '.join(unknown)}; known fields: {', '.join(sorted(names))}")
    return validate(cls(**{k: v for k, v in d.items() if k in names}))


def replaced(cfg: T, **changes: Any) -> T:
    """A copy of validated config `cfg` with `changes` (values the caller has checked, e.g. a run's
    directory), not validated again; `cfg` itself is left as it was."""
    return dataclasses.replace(cfg, **changes)


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


def field_label(f: dataclasses.Field) -> str:
    """What a generated form shows for a field: `G learning rate · lr_g` (the name alone if unlabelled)."""
    label = f.metadata.get("label") or ""
    return f"{label} · {f.name}" if label else f.name


def label_for(cls: type, name: str) -> str:
    """`field_label` of config class `cls`'s field `name`, for a form written by hand."""
    return field_label(next(f for f in dataclasses.fields(cls) if f.name == name))


def offered(f: dataclasses.Field) -> tuple | None:
    """The values a form offers for a field: its `offer` metadata, else its `choices` (None = free)."""
    return f.metadata.get("offer") or f.metadata.get("choices")


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser, cls: type, *, skip: tuple[str, ...] = ()) -> None:
    """One CLI flag per config field (`r1_gamma` -> `--r1-gamma`); values are validated later.

    A bool field takes a value (`--ada false`), or none (`--by-class` = true), and has a `--no-...` form;
    a field the class renamed (RENAMED {old: new}) also answers to its old flag (`--per-class`)."""
    hints = typing.get_type_hints(cls)
    old_flags = {new: old for old, new in getattr(cls, "RENAMED", {}).items()}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        help_ = f.metadata.get("help", "")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        extra = []
        if f.metadata.get("choices"):
            extra.append("one of " + ", ".join(map(str, f.metadata["choices"])))
        if f.metadata.get("allowed"):
            extra.append(f.metadata["allowed"])
        if f.metadata.get("range"):
            extra.append(f"range {f.metadata['range']}")
        base = _base_type(hints[f.name])
        if base is bool:
            extra.append(f"a bare {flag(f.name)} means true, --no-{flag(f.name)[2:]} false")
        shown = f.metadata.get("cli_default") or repr(default)
        help_ = f"{help_} (default {shown}{'; ' + '; '.join(extra) if extra else ''})".replace("%", "%%")
        metavar = getattr(base, "__name__", "VALUE").upper()
        # Strings on the CLI; `validate` coerces them with one set of rules for CLI, JSON and UI.
        names = [flag(f.name)] + ([flag(old_flags[f.name])] if f.name in old_flags else [])
        if base is bool:
            parser.add_argument(*names, dest=f.name, default=None, metavar=metavar, nargs="?", const="true",
                                help=help_)
            parser.add_argument("--no-" + flag(f.name)[2:], dest=f.name, action="store_const", const="false",
                                help=argparse.SUPPRESS)
        else:
            parser.add_argument(*names, dest=f.name, default=None, metavar=metavar, help=help_)


def from_args(cls: type[T], args: argparse.Namespace, base: dict[str, Any] | None = None) -> T:
    """Config from defaults <- preset (TrainConfig) <- `base` (e.g. a --config JSON) <- command-line flags.

    The preset is named by the flag, else by `base`, else `default_preset()`."""
    d = dict(base or {})
    for f in dataclasses.fields(cls):
        v = getattr(args, f.name, None)
        if v is not None:
            d[f.name] = v
    if cls is TrainConfig:
        d = {**preset_values(d.get("preset") or default_preset()), **d}
        d = resolve_section(d, args)
    return from_dict(cls, d)


def load_fields(cls: type, path: str | Path) -> dict[str, Any]:
    """The fields a config file sets (validated over the defaults), and only those, so that a preset
    can lie under the file: `to_dict(load(...))` would carry every default over the preset's values."""
    cfg = load(cls, path)
    keys = renamed(cls, json.loads(Path(path).read_text(encoding="utf-8"))).keys()
    return {k: v for k, v in to_dict(cfg).items() if k in keys}


# ----------------------------------------------------------------------------------------------
# Data preparation

SOURCES_HELP = "histosynth (built-in synthetic demo set) or folder:PATH (NCT-CRC-HE / ImageFolder tree)"


@dataclass
class PrepareConfig:
    source: str = opt("histosynth", SOURCES_HELP, label='data source')
    out: str = opt("", "output directory of the prepared data set (default: <data root>/<source>-<size>)", label='data set name')
    size: int = opt(64, "patch size in pixels (resized / centre-cropped)", range=(16, 1024), label='patch size (px)')
    per_class: int = opt(0, "patches per class: for histosynth (0 = 200); a cap for folders (0 = all)",
                         range=(0, None), label='patches per class')
    seed: int = opt(0, "seed for histosynth and the split shuffle", range=(0, 2**31 - 1), label='random seed')
    val_frac: float = opt(0.1, "fraction of each class held out for validation", range=(0.0, 0.5),
                          label="validation fraction")
    test_frac: float = opt(0.1, "fraction of each class held out for test (not used with test_source)",
                           range=(0.0, 0.5), label="test fraction")
    eval_frac: float = opt(0.1, "fraction of each class held out as the `eval` split for metrics "
                                "(FID/KID/LPIPS and the trainer's best model), disjoint from train/val/test "
                                "(seed-001 spec 1.3: loader_real_eval, a subset held apart)",
                           range=(0.0, 0.5), label="held-out eval fraction")
    test_source: str = opt("", "take the test split from this second folder instead of carving it out of "
                               "`source` (folder:PATH, e.g. CRC-VAL-HE-7K; spec 1.1): classes matched by "
                               "folder name in the main source's order, the same quality filter, stain "
                               "normalisation and resize; test_frac is then not used ('' = none)",
                           label="test split from folder")
    min_size: int = opt(0, "reject images whose short side is below this (0 = --size)", range=(0, None),
                        label="min image side (px)")
    quality_filter: bool = opt(True, "drop blurry / empty / over-saturated / blocky patches", label='drop low-quality patches')
    min_laplacian_var: float = opt(3.0, "quality: min variance of the Laplacian (blur)", range=(0, None),
                                   label="min sharpness")
    min_entropy: float = opt(1.0, "quality: min grey-level entropy in bits (empty patches)",
                             range=(0, 8), label="min entropy (bits)")
    min_tissue_ratio: float = opt(0.0, "quality: min fraction of tissue pixels (0 keeps background)",
                                  range=(0, 1), label="min tissue fraction")
    max_saturation: float = opt(0.98, "quality: max fraction of clipped (0 or 255) pixels", range=(0, 1),
                                label="max clipped fraction")
    max_blockiness: float = opt(2.5, "quality: max ratio of 8x8-boundary to interior gradients (JPEG)",
                                range=(1, None), label="max JPEG blockiness")
    max_dct_blockiness: float = opt(0.5, "quality: max excess of DCT terms zeroed on the 8x8 grid (JPEG)",
                                    range=(0, 1), label="max JPEG DCT blockiness")
    stain_norm: str = opt("none", "stain normalisation", choices=("none", "macenko", "vahadane"), label='stain normalisation')
    stain_reference: str = opt("", "reference tile for stain normalisation (an image path)", label='stain reference tile')
    workers: int = opt(0, "processes decoding images (0 = one per CPU core, at most 8; 1 = none)",
                       range=(0, 64), label="decoding processes")

    def check(self) -> None:
        if not (self.source == "histosynth" or self.source.startswith("folder:")):
            raise ConfigError(f"config field 'source' must be one of: histosynth, folder:PATH "
                              f"(got {self.source!r})")
        if self.source.startswith("folder:") and not self.source[len("folder:"):]:
            raise ConfigError("config field 'source' is folder: with no path; use folder:/path/to/root")
        if self.test_source and not (self.test_source.startswith("folder:") and self.test_source[7:]):
            raise ConfigError(f"config field 'test_source' must be empty or folder:PATH "
                              f"(got {self.test_source!r})")
        # With test_source the test split comes from the other folder: test_frac takes nothing from here.
        test = 0.0 if self.test_source else self.test_frac
        if self.val_frac + test + self.eval_frac >= 0.9:
            raise ConfigError("config fields 'val_frac' + 'test_frac' + 'eval_frac' must leave at least 10% "
                              f"for train (got {self.val_frac} + {test} + {self.eval_frac}"
                              + (", test_frac unused with test_source" if self.test_source else "") + ")")
        if self.stain_norm != "none" and not self.stain_reference:
            raise ConfigError("config field 'stain_reference' is needed when 'stain_norm' is "
                              f"{self.stain_norm!r}: give the path of a reference tile")


# ----------------------------------------------------------------------------------------------
# Rules shared by every config: the compute device, the checkpoint a command reads, truncation

# One device rule for every config with a `device` field (train, evaluate, train-classifier, sample).
DEVICE_PATTERN = r"auto|cpu|mps|cuda(:\d+)?"
DEVICE_ALLOWED = "one of: auto, cpu, cuda, cuda:N, mps"
DEVICE_OFFER = ("auto", "cpu", "cuda")  # what a form offers; the CLI and a config file take the rest too


def device_opt(help: str = "compute device: auto = cuda when a GPU is visible, else cpu") -> Any:
    return opt("auto", help, pattern=DEVICE_PATTERN, allowed=DEVICE_ALLOWED, offer=DEVICE_OFFER,
               label="compute device")


# One representation of "which checkpoint" (evaluate, sample): latest | best | a step number. "-1" and
# "" are read as latest (what older reports and `sample --step` defaults wrote).
STEP_PATTERN = r"(latest|best|\d+|-1)?"
STEP_ALLOWED = "one of: latest, best, a step number"


def step_opt(help: str) -> Any:
    return opt("latest", help, pattern=STEP_PATTERN, allowed=STEP_ALLOWED, label="checkpoint step")


def canonical_step(step: str | int | None) -> str:
    """A `step` value in its one representation: "latest", "best" or the step number as text."""
    s = "" if step is None else str(step).strip()
    return "latest" if s in ("", "-1") else s


def step_arg(step: str | int | None) -> int | str | None:
    """A `step` value as engine.sampling.load_generator takes it: None (latest), "best" or a step number."""
    s = canonical_step(step)
    return None if s == "latest" else s if s == "best" else int(s)


# Truncation pulls each w toward its class's average: w_avg + truncation * (w - w_avg). 1 = none,
# 0 = the class average alone; above 1 would extrapolate away from the average (no longer truncation),
# so every command and page takes [0, 1].
TRUNCATION_RANGE = (0.0, 1.0)


def truncation_opt(default: float = 1.0) -> Any:
    return opt(default, "truncation toward the class's average w: 1 = full diversity (none), smaller = "
                        "closer to the class average (cleaner, less varied), 0 = the class average only "
                        "(StyleGAN's psi)", range=TRUNCATION_RANGE, label="truncation", widget="slider")


# ----------------------------------------------------------------------------------------------
# The in-domain classifier (`python -m engine train-classifier`, engine.metrics.classifier)

CLASSIFIER_ARCH = "resnet10t"
CLASSIFIER_FILE = "classifier.pt"  # in a prepared data set: the `domain` feature space and D's domain head


@dataclass
class ClassifierConfig:
    data: str = opt("", "prepared data set directory (from `python -m engine prepare`)", label="data set")
    out: str = opt("", f"output file (default: <data>/{CLASSIFIER_FILE})", label="output file")
    arch: str = opt(CLASSIFIER_ARCH, "timm architecture, built from scratch (pretrained=False)",
                    label="architecture")
    epochs: int = opt(10, "passes over the training split", range=(1, 10000), label="epochs")
    batch: int = opt(64, "images per step", range=(2, 4096), label="batch size")
    lr: float = opt(2e-3, "AdamW peak learning rate (linear warm-up, then cosine decay to 0)",
                    range=(1e-6, 1.0), label="learning rate")
    weight_decay: float = opt(0.05, "AdamW weight decay", range=(0.0, 1.0), label="weight decay")
    seed: int = opt(0, "seed for init, shuffling and augmentation", range=(0, 2**31 - 1), label="random seed")
    device: str = device_opt()
    split: str = opt("train", "split to train on", choices=("train", "eval"), label="training split")
    threads: int = opt(0, "torch CPU threads (0 = torch's default, every core)", range=(0, 1024),
                       label="CPU threads")

    def check(self) -> None:
        import timm

        if not self.data:
            raise ConfigError("config field 'data' is required: the directory of a prepared data set "
                              "(make one with `python -m engine prepare`)")
        if not timm.is_model(self.arch):
            raise ConfigError(f"config field 'arch' must be a timm architecture name such as resnet10t, "
                              f"resnet18 or vit_small_patch16_224 (got {self.arch!r})")


# ----------------------------------------------------------------------------------------------
# Evaluation (`python -m engine evaluate`, engine.metrics.evaluate)

DEFAULT_METRICS = "fid,kid,pr"
FEATURES_PATTERN = r"domain|inception|timm:[\w.\-/]+"
FEATURES_ALLOWED = "one of: domain, inception, timm:<name>"


@dataclass
class EvalConfig:
    # Renamed keys, read under their old names too (config.from_dict, the CLI's old flags): `per_class`
    # (a count in PrepareConfig) is the bool `by_class` here; `classifier` is the `domain` space's file,
    # named `domain_weights` as in TrainConfig.
    RENAMED = {"per_class": "by_class", "classifier": "domain_weights"}

    run_dir: str = opt("", "run directory to evaluate (runs/ID)", label="run directory")
    step: str = step_opt("checkpoint: latest (the export of a finished run, else the newest checkpoint), "
                         "best (exports/best: the best G_ema by the trainer's periodic held-out FID, spec 4.3 "
                         "cgan_best_model.pt) or a step number")
    metrics: str = opt(DEFAULT_METRICS, "comma-separated: fid, kid, pr, is, lpips, downstream, memorisation, "
                                        "stain, cas", label="metrics")
    features: str = opt("domain", "feature space: domain (the data set's classifier), inception or "
                                  "timm:<name>", pattern=FEATURES_PATTERN, allowed=FEATURES_ALLOWED,
                        label="feature space")
    by_class: bool = opt(False, "also report FID/KID/PR (and colour gaps) per class",
                         label="per-class metrics too")
    n: int = opt(2000, "generated patches in total, split evenly over the classes", range=(2, 10_000_000),
                 label="generated patches")
    n_real: int = opt(0, "real patches per split at most, evenly per class (0 = as many as generated)",
                      range=(0, 10_000_000), label="real patches per split")
    real_split: str = opt("eval", "real split FID/KID/PR/LPIPS compare against: eval = the held-out split "
                                  "kept for metrics (spec 1.3; a data set prepared before it was held out "
                                  "has its eval inside train, and the report says so)",
                          choices=("eval", "train", "val", "test"), label="real split")
    data: str = opt("", "prepared data set (empty = the one the run trained on)", label="data set")
    domain_weights: str = opt("", f"classifier file of the `domain` feature space (empty = "
                                  f"<data>/{CLASSIFIER_FILE}), as TrainConfig's domain_weights",
                              label="domain weights file")
    inception_weights: str = opt("", "FID Inception weights file (empty = the torch hub cache)",
                                 label="Inception weights file")
    timm_weights: str = opt("", "local checkpoint for timm:<name> (.safetensors or a state dict)",
                            label="timm weights file")
    lpips_net: str = opt("alex", "LPIPS trunk", choices=("alex", "vgg", "squeeze"), label="LPIPS trunk")
    lpips_weights: str = opt("", "torchvision weights of the LPIPS trunk (empty = the torch hub cache)",
                             label="LPIPS trunk weights")
    lpips_pairs: int = opt(200, "random same-class pairs per class for diversity", range=(1, 1_000_000),
                           label="diversity pairs per class")
    kid_subsets: int = opt(100, "KID random subsets", range=(1, 10_000), label="KID subsets")
    truncation: float = truncation_opt(1.0)
    seed: int = opt(0, "first seed of the generated patches; also seeds KID/PR subsets", range=(0, 2**31 - 1),
                    label="first seed")
    batch: int = opt(64, "images per forward pass", range=(1, 4096), label="batch size")
    device: str = device_opt()
    downstream_arch: str = opt(CLASSIFIER_ARCH, "timm architecture of the downstream classifiers",
                               label="downstream architecture")
    downstream_epochs: int = opt(5, "epochs of each downstream classifier", range=(1, 1000),
                                 label="downstream classifier epochs")
    memorisation_threshold: float = opt(0.5, "flag a generated patch whose distance ratio is below this",
                                        range=(0.0, 10.0), label="memorisation ratio threshold")
    memorisation_pairs: int = opt(8, "closest generated/training pairs kept for review", range=(0, 1000),
                                  label="memorisation pairs kept")
    memorisation_train_cap: int = opt(0, "training patches per class searched for nearest neighbours "
                                         "(0 = the whole train split)", range=(0, 10_000_000),
                                      label="training patches searched per class")
    job: str = opt("", "report id (default: a new timestamp); set by the background job",
                   pattern=r"([\w.\-]+)?", allowed="made of letters, digits, '.', '_' and '-'", label="report id")
    auto_classifier: bool = opt(True, "train the `domain` classifier first when its file is missing "
                                      "(false: those metrics fail, naming the command that makes it)",
                                label="train the classifier first")

    def check(self) -> None:
        if not self.run_dir:
            raise ConfigError("config field 'run_dir' is required: a run directory such as runs/ID")
        check_patterns(self)  # features, step, device, job (also when check() is called alone)
        from engine.metrics.registry import check_metrics  # lazily: the registry lists the metric modules

        try:
            check_metrics(self.metric_list)
        except ValueError as e:
            raise ConfigError(f"config field 'metrics': {e}") from None
        self.step = canonical_step(self.step)

    @property
    def step_arg(self) -> int | str | None:
        """`step` as `load_generator` takes it: None (latest), "best" or a step number."""
        return step_arg(self.step)

    @property
    def metric_list(self) -> list[str]:
        return list(dict.fromkeys(m.strip() for m in self.metrics.split(",") if m.strip()))


# ----------------------------------------------------------------------------------------------
# Sampling (`python -m engine sample`, engine.sampling)

NOISE_MODES = ("const", "random", "none")
SAMPLE_SAMPLERS = ("", "ddim", "ddpm", "dpm")  # "" = the run's own; the others are DDPM_SAMPLERS
SEEDS_MAX = 10_000  # engine.sampling.parse.MAX_SEEDS: a typo like 0-99999999 must not hang a page


@dataclass
class SampleConfig:
    run_dir: str = opt("", "run directory (runs/<id>)", label="run directory")
    step: str = step_opt("checkpoint: latest (the newest checkpoint, the export of a finished run), best "
                         "(exports/best) or a step number")
    classes: str = opt("all", "class names or indices, comma-separated, e.g. ADI,TUM (all = every class)",
                       label="classes")
    seeds: str = opt("0-7", "seeds, one column per seed: ranges and lists like 0-7 or 1,5,9. A seed names a "
                            "patch: the same (class, seed) gives the same patch on the Samples and Style "
                            "mixing pages and here", label="seeds")
    truncation: float = truncation_opt(1.0)
    noise_mode: str = opt("const", "per-layer noise: const (fixed, reproducible), random or none",
                          choices=NOISE_MODES, label="noise")
    # diffusion families (ddpm) only, named as in DDPMConfig; empty / None = the run's own defaults
    sampler: str = opt("", "ddpm sampler: ddim, ddpm or dpm (empty = the run's)", choices=SAMPLE_SAMPLERS,
                       label="sampler")
    sample_steps: int | None = opt(None, "ddpm denoising steps (empty = the run's; ddpm sampler: 0 = all T)",
                                   range=(0, 10000), label="sampling steps")
    eta: float | None = opt(None, "DDIM eta: 0 = deterministic (empty = the run's)", range=(0.0, 1.0),
                            label="DDIM eta")
    guidance: float | None = opt(None, "classifier-free guidance scale: 0 = none (empty = the run's)",
                                 range=(0.0, 50.0), label="guidance scale")
    device: str = device_opt()
    out: str = opt("", "output directory (PNGs, manifest.csv, grid.png)", label="output directory")
    real_per_class: int = opt(0, "also write real_grid.png: this many real patches per class from the eval "
                                 "split of the run's data set (config.json `data`), to compare with grid.png "
                                 "by eye (0 = none)", range=(0, SEEDS_MAX), label="real tiles per class")
    donor: str = opt("", "style mixing: donor CLASS:SEED; every sample becomes a mix (empty = none)",
                     pattern=r"(.+:\d+)?", allowed="empty or CLASS:SEED like TUM:3", label="style donor")
    crossover: int | None = opt(None, "style mixing: layers >= this from the donor (or --mix)",
                                range=(0, None), label="crossover layer")
    mix: str = opt("", "style mixing: per-layer donor weights, comma-separated (or --crossover)",
                   label="per-layer donor weights")

    def check(self) -> None:
        for name in ("run_dir", "out"):
            if not getattr(self, name):
                raise ConfigError(f"config field '{name}' is required"
                                  + (": a run directory such as runs/ID" if name == "run_dir" else
                                     ": the output directory"))
        check_patterns(self)
        self.step = canonical_step(self.step)
        if self.donor and (self.crossover is None) == (not self.mix):
            raise ConfigError("style mixing: give exactly one of --crossover K or --mix w1,w2,...")
        if self.mix:
            try:
                [float(v) for v in self.mix.split(",")]
            except ValueError:
                raise ConfigError(f"config field 'mix' must be comma-separated numbers (got {self.mix!r})") \
                    from None

    @property
    def step_arg(self) -> int | str | None:
        return step_arg(self.step)

    @property
    def mix_arg(self) -> int | list[float] | None:
        """What engine.sampling.style_mix takes: the crossover layer or the per-layer weights."""
        return self.crossover if self.crossover is not None else (
            [float(v) for v in self.mix.split(",")] if self.mix else None)


# ----------------------------------------------------------------------------------------------
# Clinician review (`python -m engine review`)

# What a reviewer is asked of every patch (engine.review.store.ANSWER_FIELDS: the answer's columns)
REVIEW_QUESTIONS = ("real_or_synthetic", "confidence", "realism", "class", "comment")


@dataclass
class StudyConfig:
    """A blinded review study (`python -m engine review create`, the Review page; engine.review.studies)."""
    RENAMED = {"psi": "truncation"}  # the one name of the idea; the study's truth table keeps a psi column
    name: str = opt("study", "a short name for the study (the id adds a random suffix)", label="study name")
    runs: list[str] = opt([], "runs to draw synthetic patches from: run ids (or run directories), each "
                              "optionally RUN@STEP with STEP latest, best or a step number", label="runs")
    step: str = step_opt("checkpoint of every run given without @STEP: latest, best or a step number")
    classes: list[str] = opt(["all"], "tissue classes to show (names, comma-separated; all = every class)",
                             label="classes")
    synthetic_per_class: int = opt(10, "synthetic patches per class and run", range=(0, 10_000),
                                   label="synthetic per class")
    real_per_class: int = opt(10, "real patches per class from each data set's held-out eval split",
                              range=(0, 10_000), label="real per class")
    seed: int = opt(0, "first seed of the synthetic patches (seed, seed+1, ...) and the seed choosing "
                       "the real ones", range=(0, 2**31 - 1), label="seed")
    truncation: float = truncation_opt(1.0)
    display_size: int = opt(256, "side in pixels of every patch shown (real and synthetic alike)",
                            range=(16, 1024), label="display size (px)")
    questions: list[str] = opt(list(REVIEW_QUESTIONS), "questions asked for every patch", choices=REVIEW_QUESTIONS,
                               label="questions")
    reviewers: int = opt(0, "reviewer tokens to make at creation (more with `invite`)", range=(0, 1000),
                         label="reviewers")
    expires_days: float = opt(0.0, "reviewer links expire after this many days (0 = never)",
                              range=(0.0, 3650.0), label="link lifetime (days)")
    instructions: str = opt("", "a note shown to reviewers above the questions", label="instructions")
    device: str = device_opt("where the generators run: auto = cuda when a GPU is visible, else cpu")

    def check(self) -> None:
        if not self.runs:
            raise ConfigError("config field 'runs' is empty; give at least one run id")
        if self.synthetic_per_class + self.real_per_class == 0:
            raise ConfigError("config fields 'synthetic_per_class' and 'real_per_class' are both 0: "
                              "the study would have no patch")
        if not self.questions:
            raise ConfigError("config field 'questions' is empty; ask at least one of: " + ", ".join(REVIEW_QUESTIONS))
        self.questions = [q for q in REVIEW_QUESTIONS if q in self.questions]  # a fixed order for every page
        check_patterns(self)
        self.step = canonical_step(self.step)


# ----------------------------------------------------------------------------------------------
# Training (`python -m engine train`)

FAMILIES = ("stylegan2", "dcgan", "mlp_gan", "ddpm")
IMPLEMENTED_FAMILIES = ("stylegan2", "dcgan", "mlp_gan", "ddpm")
# The resolutions the generator builds (engine.models.stylegan2: powers of two in [8, 256]); forms offer
# exactly these and validate() refuses anything else, so no UI can offer a size the engine rejects.
RES_CHOICES = (8, 16, 32, 64, 128, 256)
# Fields that `train --resume RUN_DIR` may change; the rest define the model and its curves.
RESUMABLE_FIELDS = ("kimg", "log_kimg", "sample_kimg", "snap_kimg", "keep_last", "workers", "device",
                    "compile", "tensorboard")


# A preset is a set of field values; resolution: preset <- --config file <- explicit flags (from_args).
PRESET_NAMES = ("spec", "stylegan2", "demo")
# ADA: the rules and ops engine.augment implements, named here (this module imports no torch)
ADA_RULES = ("sign", "spec")
# stylegan2 D's class conditioning (engine.models.stylegan2.Discriminator)
STYLEGAN2_D_CONDS = ("projection", "labelmap")
ADA_OPS = ("xflip", "yflip", "rotate90", "rotate", "translate", "stain", "cutout")


@dataclass
class TrainConfig:
    """Every training default in one place. Defaults give a CPU demo at 32-64 px in minutes (about
    8 img/s on one CPU thread at 64 px); for a GPU run at 128-256 px raise channel_base/channel_max
    (16384/512 is StyleGAN2's config-f), batch and kimg.

    G_ema: `ema_kimg` > 0 sets a half-life in kimg; with 0, `ema_beta` is the decay per step. Either
    way the half-life is capped at `ema_rampup` x images shown so far (0 = no cap)."""
    # run
    preset: str = opt("stylegan2", "named set of field values, under --config and flags: spec = the "
                                   "seed-001 cGAN spec, stylegan2 = the StyleGAN2-ADA recipe (these "
                                   "defaults), demo = the CPU first run (a tiny net at 32 px, 75 kimg: about 10 min on 2 cores); default: spec "
                                   "on a GPU, demo on a CPU-only machine", choices=PRESET_NAMES,
                      label="preset", cli_default="by device, see above")
    family: str = opt("stylegan2", "model family (only implemented ones run)", choices=FAMILIES,
                      offer=IMPLEMENTED_FAMILIES, label="model family")
    # The family's own section (FAMILY_SECTIONS): config.json carries it nested, {"ddpm": {...}}, its
    # flags are the section's field names (--channels 32), and `resolve_section` fills it from the family
    # preset of the same name under the given values. A run of another family leaves it empty.
    ddpm: dict[str, Any] = opt({}, "the ddpm family's section (DDPMConfig: U-Net, schedule, optimiser, "
                                   "sampler); flags are its field names, e.g. --channels 32; empty = "
                                   "the family's preset", label="ddpm section")
    dcgan: dict[str, Any] = opt({}, "the dcgan family's section (DCGANConfig: G/D widths, conditioning, loss, "
                                    "optimiser); flags are its field names, e.g. --d-cond acgan; empty = "
                                    "the family's preset", label="dcgan section")
    mlp_gan: dict[str, Any] = opt({}, "the mlp_gan family's section (MLPGANConfig: hidden sizes, dropout, "
                                      "d_steps, optimiser); flags are its field names, e.g. --d-steps 2; "
                                      "empty = the family's preset", label="mlp_gan section")
    data: str = opt("", "prepared data set directory (python -m engine prepare); empty = the built-in "
                        "histosynth demo at --res, prepared on demand", label="data set")
    run_dir: str = opt("", "run directory (empty = <runs root>/<date>-<time>-<family>)",
                       label="run directory")
    res: int = opt(64, "image resolution in pixels", choices=RES_CHOICES, label="image size (px)")
    batch: int = opt(16, "images per step over all GPUs (split evenly across ranks)", range=(2, 65536),
                     label="batch size")
    kimg: float = opt(5.0, "training length in thousands of real images shown to D", range=(0.001, 1e6),
                      label="training length")
    seed: int = opt(0, "random seed (a CPU run is reproducible bit for bit)", range=(0, 2**31 - 1),
                    label="random seed")
    device: str = device_opt()
    # model
    z_dim: int = opt(512, "latent z size (and class-embedding size)", range=(1, 4096), label="latent z size")
    w_dim: int = opt(512, "intermediate latent w size", range=(1, 4096), label="latent w size")
    n_mlp: int = opt(8, "mapping-network layers", range=(1, 16), label="mapping layers")
    lr_mlp: float = opt(0.01, "mapping-network learning-rate multiplier (StyleGAN2: 0.01)",
                        range=(1e-4, 1.0), label="mapping lr multiplier")
    channel_base: int = opt(2048, "channels at a resolution = min(channel_base // res, channel_max); "
                                  "16384 is StyleGAN2's config-f", range=(8, 1 << 20), label="channel budget")
    channel_max: int = opt(128, "maximum channels per layer (StyleGAN2: 512)", range=(1, 4096),
                           label="max channels per layer")
    clamp: float = opt(0.9, "generator output clamp: images lie in [-clamp, clamp]", range=(0.1, 1.0),
                       label="output clamp")
    mixing_prob: float = opt(0.9, "probability of intra-class style mixing per sample", range=(0.0, 1.0),
                             label="style-mixing probability")
    mbstd_group: int = opt(4, "minibatch-std group size in D", range=(1, 64), label="minibatch-std group")
    d_channel_base: int = opt(0, "D's channels at a resolution = min(d_channel_base // res, "
                                 "d_channel_max); 0 = channel_base (D as wide as G). Spec 2.3: "
                                 "D_BASE_CH = 96 at the input resolution", range=(0, 1 << 22),
                              label="D channel budget")
    d_channel_max: int = opt(0, "D's maximum channels per layer; 0 = channel_max (spec 2.3)",
                             range=(0, 4096), label="D max channels per layer")
    d_cond: str = opt("projection", "D's class conditioning: projection = the class enters at the head "
                                    "only, logit + <embed(y), h> (Miyato & Koyama; spec 2.3); labelmap = "
                                    "also a learned per-class map as a 4th input channel, so D's first "
                                    "conv already sees the class (the dcgan family's option; the demo's: "
                                    "class-distinct patches in far fewer steps)", choices=STYLEGAN2_D_CONDS,
                      label="D class conditioning")
    clamp_reals: bool = opt(True, "D sees the reals clamped to [-clamp, clamp] like G's output (when "
                                  "clamp < 1): spec 2.2 clamps G at 0.9, and 0.7-6.3 % of real pixels "
                                  "per class lie beyond +-0.9, a cue G can never match; the CSV's "
                                  "real_* columns are then after the clamp", label="clamp the reals too")
    # adversarial loss and regularisers
    loss: str = opt("logistic", "D loss: non-saturating logistic or BCE with label smoothing",
                    choices=("logistic", "bce"), label="D loss")
    real_label: float = opt(0.9, "BCE real label (one-sided smoothing)", range=(0.5, 1.0),
                            label="BCE real label")
    r1_gamma: float = opt(15.0, "R1 weight gamma (0 = off)", range=(0.0, None), label="R1 weight")
    r1_every: int = opt(8, "apply R1 every N D steps, scaled by N when r1_lazy_scale (lazy "
                           "regularisation)", range=(1, 1000), label="R1 every N steps")
    r1_lazy_scale: bool = opt(True, "multiply R1 by r1_every (StyleGAN2's lazy scaling: gamma/2 * N * r1 "
                                    "every N steps); false = spec 3.2's 0.5 * gamma * r1 every N steps, "
                                    "not multiplied by the interval", label="R1 lazy scaling")
    drift: float = opt(1e-3, "drift penalty weight on real logits squared", range=(0.0, None),
                       label="drift penalty")
    pl_weight: float = opt(0.0, "path-length regularisation weight (0 = off)", range=(0.0, None),
                           label="path-length weight")
    pl_every: int = opt(4, "apply path length every N G steps, scaled by N", range=(1, 1000),
                        label="path length every N steps")
    pl_decay: float = opt(0.01, "EMA decay of the mean path length", range=(0.0, 1.0),
                          label="path-length EMA decay")
    fm_weight: float = opt(0.1, "feature-matching weight (D features, real vs fake batch means)",
                           range=(0.0, None), label="feature-matching weight")
    fm_form: str = opt("blocks_l1", "feature matching: blocks_l1 = L1 between real and fake batch means "
                                    "of every D block's features, averaged over blocks; final_mse = spec "
                                    "3.6's MSE(fake_feat, real_feat.detach()) on D's final feature vector "
                                    "(before the logit), fake i vs real i of the same class",
                       choices=("blocks_l1", "final_mse"), label="feature-matching form")
    perceptual_weight: float = opt(0.01, "perceptual loss weight in the domain-feature space "
                                         "(only with the domain head)", range=(0.0, None),
                                   label="perceptual weight")
    perceptual_form: str = opt("batch_mean", "perceptual loss: batch_mean = MSE between the batch-mean "
                                             "embeddings of fakes and reals; paired = spec 3.4's "
                                             "MSE(fake_feat, real_feat), fake i vs real i of the same "
                                             "class", choices=("batch_mean", "paired"),
                               label="perceptual form")
    stats_weight: float = opt(3e-3, "real-statistics EMA penalty weight", range=(0.0, None),
                              label="real-statistics weight")
    stats_beta: float = opt(0.99, "momentum of the reals' per-channel mean/std EMA per step (spec 3.3: "
                                  "RealStatsEMA(m=0.995))", range=(0.0, 0.9999),
                            label="real-statistics EMA momentum")
    stats_range: str = opt("signed", "range the real-statistics penalty computes its statistics in, for "
                                     "reals and fakes: signed = [-1, 1]; unit = [0, 1] (x * 0.5 + 0.5, "
                                     "spec 3.3; 1/4 of the signed penalty)", choices=("signed", "unit"),
                           label="real-statistics range")
    saturation_weight: float = opt(0.05, "saturation penalty weight", range=(0.0, None),
                                   label="saturation penalty")
    saturation_threshold: float = opt(0.6, "saturation penalty starts at |fake| above this",
                                      range=(0.0, 1.0), label="saturation threshold")
    saturation_form: str = opt("pixel", "saturation penalty: pixel = mean(relu(|fake| - threshold)^2) per "
                                        "pixel (also > 0 on real tiles); mean_abs = spec 3.5's "
                                        "clamp(mean|fake| - threshold, min=0)^2 on the batch mean",
                               choices=("pixel", "mean_abs"), label="saturation form")
    diversity_weight: float = opt(0.1, "batch-diversity (mode-seeking) penalty weight",
                                  range=(0.0, None), label="diversity weight")
    diversity_tau: float = opt(0.2, "diversity hinge: pairs whose image distance per unit latent distance "
                                    "is below this are penalised", range=(0.0, 10.0), label="diversity hinge")
    diversity_form: str = opt("mode_seeking", "batch-diversity term: mode_seeking = hinged mode-seeking "
                                              "ratio (diversity_tau); variance = spec 3.7's mixing "
                                              "regularisation clamp(diversity_var - var(fake), min=0)^2, "
                                              "var over the batch of the flattened fakes, averaged over "
                                              "pixels", choices=("mode_seeking", "variance"),
                              label="diversity form")
    diversity_var: float = opt(0.1, "variance form: batches whose fakes vary less than this across the "
                                    "batch are penalised (spec 3.7: 0.1)", range=(0.0, 4.0),
                               label="diversity variance floor")
    # ADA
    ada: bool = opt(True, "adaptive discriminator augmentation (H&E-aware)",
                    label="adaptive augmentation (ADA)")
    ada_target: float = opt(0.6, "ADA target for acc = fraction of real logits > 0", range=(0.0, 1.0),
                            label="ADA target accuracy")
    ada_rule: str = opt("sign", "how acc moves ADA p: sign = StyleGAN2-ADA, p += sign(acc - ada_target) x "
                                "images / (ada_kimg x 1000) on the raw accuracy of each controller interval; "
                                "spec = seed-001 spec 4.1, per step p += 0.001 x (acc_ema - ada_target) x "
                                "ada_speed, on the accuracy EMA", choices=ADA_RULES, label="ADA rule")
    ada_kimg: float = opt(100.0, "ADA speed of the sign rule: kimg for p to move from 0 to 1",
                          range=(0.001, None), label="ADA speed (kimg)")
    ada_speed: float = opt(0.2, "ADA speed of the spec rule: p += 0.001 x (acc_ema - ada_target) x this, "
                                "per step (spec 4.1 ADA_SPEED = 0.20)", range=(0.0, None),
                           label="ADA speed (spec rule)")
    ada_p_max: float = opt(0.8, "ADA cap on p (spec 4.1 ADA_MAX_P = 0.12)", range=(0.0, 1.0), label="ADA max p")
    ada_warmup_steps: int = opt(0, "no ADA adaptation before this step: the accuracies of steps 0 .. N-1 "
                                   "never move p (spec 4.1 ADA_FREEZE_UNTIL = 500; 0 = adapt from the "
                                   "first step). ada_freeze_kimg is the opposite: a freeze after",
                                range=(0, None), label="ADA warm-up (steps)")
    ada_hi_acc: float = opt(1.0, "while acc_ema > this, ADA p is capped at ada_hi_cap (spec 4.1: 0.9); "
                                 "1.0 = never (acc_ema cannot exceed 1)", range=(0.0, 1.0),
                            label="ADA cap above acc_ema")
    ada_hi_cap: float = opt(0.08, "the cap on ADA p while acc_ema > ada_hi_acc (spec 4.1 "
                                  "ADA_P_CAP_IF_ACC_HI = 0.08)", range=(0.0, 1.0),
                            label="ADA p cap when D is sure")
    ada_freeze_kimg: float = opt(0.0, "freeze ADA p after this many kimg (0 = never)",
                                 range=(0.0, None), label="freeze ADA after (kimg)")
    ada_ops: list[str] = opt(list(ADA_OPS), "augmentations D's inputs may go through, comma-separated: "
                                            "xflip (horizontal flip), yflip, rotate90 (quarter turns), rotate "
                                            "(up to ada_rotate_max_deg), translate (up to ada_translate_frac), "
                                            "stain (H&E stain jitter), cutout; an op not listed never touches "
                                            "an image (spec 4.1: xflip, rotate, translate; colour jitter and "
                                            "cutout off)", choices=ADA_OPS, label="ADA augmentations",
                             cli_default=",".join(ADA_OPS))
    ada_rotate_max_deg: float = opt(10.0, "ADA small rotation: angle drawn in +-this many degrees (spec 4.1: "
                                          "'a few degrees', no number)", range=(0.0, 180.0),
                                    label="ADA max rotation (deg)")
    ada_translate_frac: float = opt(0.125, "ADA translation: shift drawn in +-this fraction of the image "
                                           "side, whole pixels (spec 4.1: 'a few pixels', no number)",
                                    range=(0.0, 0.5), label="ADA max shift (fraction)")
    ada_interval: int = opt(4, "steps between two controller updates (ADA, acc_ema, alpha gate, watchdog; "
                               "one host sync each). Every rule counts steps: an interval of k steps "
                               "applies k steps' worth of it, the interval's mean acc standing for each "
                               "step's, so p, acc_ema and alpha do not depend on it otherwise; the "
                               "watchdog checks the interval's mean |fake| once. Spec 4.1/4.4/4.5: every "
                               "step, 1",
                            range=(1, 1000), label="controller interval")
    acc_ema_beta: float = opt(0.9 ** 0.25, "decay per step of acc_ema, the EMA of acc: over k steps of mean "
                                           "acc a, acc_ema = beta^k x acc_ema + (1 - beta^k) x a (its first "
                                           "value is a). Spec 4.1 ADA_DECAY = 0.99; default 0.9^(1/4) = 0.974, "
                                           "the stylegan2 rule's 0.9 per 4-step update", range=(0.0, 0.9999),
                              label="accuracy EMA decay (per step)")
    # domain head and its alpha gate
    domain_head: bool = opt(False, "add the frozen domain-feature head to D (needs a classifier)",
                            label="domain head in D")
    domain_features: str = opt("", "feature space of the domain head and the perceptual loss (spec 2.4 / "
                                   "3.4, the PathoDuet head): empty or `domain` = the lab's classifier "
                                   "(domain_weights, else <data>/classifier.pt); a path = that "
                                   "classifier.pt; timm:<name> = a timm backbone with the local "
                                   "checkpoint domain_weights (e.g. PathoDuet weights; nothing is "
                                   "downloaded)", label="domain feature space")
    domain_weights: str = opt("", "local weights of the domain feature space: the checkpoint "
                                  "(.safetensors or torch state dict) for timm:<name>, or a classifier.pt "
                                  "for `domain` (spec 2.4)", label="domain weights file")
    alpha_on: float = opt(0.78, "gate turns on when acc_ema >= this and D is stable (alpha_stable) "
                                "(spec 4.4 ACC_GATE_HI = 0.78)", range=(0.0, 1.0), label="gate on at acc")
    alpha_off: float = opt(0.70, "gate turns off when acc_ema <= this (spec 4.4 ACC_GATE_LO = 0.70)",
                           range=(0.0, 1.0), label="gate off at acc")
    alpha_max: float = opt(0.5, "largest alpha of the domain logit (spec 4.4 ALPHA_MAX = 0.15)",
                           range=(0.0, 10.0), label="max domain alpha")
    alpha_tau: float = opt(78.0, "time constant of alpha, in steps: each step alpha moves by k x (target - "
                                 "alpha), k = 1 - exp(-1/alpha_tau), clipped to +-alpha_dalpha (spec 4.4 "
                                 "ALPHA_TAU = 400; 78 = the stylegan2 rule's 0.05 per 4-step update); > 0",
                           range=(0.0, None), label="alpha time constant (steps)")
    alpha_dalpha: float = opt(0.0025, "largest alpha change per step (spec 4.4 ALPHA_DALPHA = 1e-4; 0.0025 "
                                      "= the stylegan2 rule's 0.01 per 4-step update); > 0", range=(0.0, 1.0),
                              label="max alpha change per step")
    alpha_dwell: int = opt(200, "steps the gate stays in a state before it may switch (spec 4.4 "
                                "DUET_DWELL_STEPS = 200), also the window of alpha_stable",
                           range=(0, None), label="gate dwell (steps)")
    alpha_warmup_steps: int = opt(0, "alpha is 0 and the gate stays off for steps 0 .. N-1 (spec 4.4 "
                                     "ALPHA_FREEZE_UNTIL = 500; 0 = none). alpha_freeze_kimg is the "
                                     "opposite: a freeze after", range=(0, None), label="alpha warm-up (steps)")
    alpha_stable: float = opt(1.0, "'D stable', needed for the gate to turn on (spec 4.4): acc_ema, taken "
                                   "after each step, moved less than this over the last alpha_dwell steps "
                                   "(max - min < alpha_stable, with at least alpha_dwell steps seen; with "
                                   "alpha_dwell 0 always stable). The spec gives no number (our "
                                   "reading: 0.05); 1.0 = no stability rule (acc_ema lies in [0, 1])",
                              range=(0.0, 1.0), label="gate stability band")
    alpha_freeze_kimg: float = opt(0.0, "freeze alpha after this many kimg (0 = never)",
                                   range=(0.0, None), label="freeze alpha after (kimg)")
    watchdog_threshold: float = opt(0.75, "saturation watchdog fires when mean |fake| exceeds this",
                                    range=(0.0, 1.0), label="watchdog threshold")
    watchdog_factor: float = opt(0.9, "each watchdog firing multiplies the perceptual weight by this "
                                      "(seed-001 spec 4.5: 0.9), down to watchdog_floor; in (0, 1]",
                                 range=(0.0, 1.0), label="watchdog perceptual factor")
    watchdog_floor: float = opt(0.005, "the watchdog never takes the perceptual weight below this "
                                       "(spec 4.5: 0.005; a smaller configured weight is left as is)",
                                range=(0.0, None), label="watchdog perceptual floor")
    watchdog_alpha_factor: float = opt(0.95, "each watchdog firing multiplies alpha_max by this "
                                             "(spec 4.5: 0.95), down to watchdog_alpha_floor; in (0, 1]",
                                       range=(0.0, 1.0), label="watchdog alpha_max factor")
    watchdog_alpha_floor: float = opt(0.1, "the watchdog never takes alpha_max below this (spec 4.5: "
                                           "0.1; a smaller configured alpha_max is left as is)",
                                      range=(0.0, None), label="watchdog alpha_max floor")
    watchdog_log_every: int = opt(50, "steps between two logged watchdog events (it still acts at "
                                      "every firing; spec 4.5: 50)", range=(1, None),
                                  label="watchdog log every (steps)")
    # EMA generator and optimisers
    ema_kimg: float = opt(0.0, "G_ema half-life in kimg (0 = use ema_beta per step instead)",
                          range=(0.0, None), label="G_ema half-life (kimg)")
    ema_beta: float = opt(0.9995, "G_ema decay per step, used when ema_kimg is 0",
                          range=(0.0, 0.999999), label="G_ema decay")
    ema_rampup: float = opt(0.05, "cap the G_ema half-life at this fraction of images shown so far, so "
                                  "short runs are not dominated by the initial weights (0 = off)",
                            range=(0.0, 1.0), label="G_ema ramp-up")
    lr_g: float = opt(4e-4, "G learning rate (Adam)", range=(0.0, 1.0), label="G learning rate")
    lr_d: float = opt(7e-5, "D learning rate (Adam)", range=(0.0, 1.0), label="D learning rate")
    beta1: float = opt(0.0, "Adam beta1", range=(0.0, 0.9999), label="Adam beta1")
    beta2: float = opt(0.99, "Adam beta2", range=(0.0, 0.9999), label="Adam beta2")
    grad_clip: float = opt(1.0, "gradient-norm clip for G and D (0 = off)", range=(0.0, None),
                           label="gradient clip")
    lr_min_frac: float = opt(0.01, "cosine schedule floor as a fraction of the start lr",
                             range=(0.0, 1.0), label="lr floor fraction")
    # speed
    amp: str = opt("auto", "mixed precision on a GPU (auto = bf16 when supported; CPU runs fp32)",
                   choices=("auto", "bf16", "fp16", "off"), label="mixed precision")
    compile: bool = opt(False, "torch.compile the G and D forward passes (GPU)", label="torch.compile")
    channels_last: bool = opt(False, "channels-last memory format (GPU)", label="channels-last memory")
    workers: int = opt(1, "background threads gathering batches (0 = in the loop)", range=(0, 16),
                       label="loader threads")
    # data sampling and outputs
    samples_per_class_per_epoch: int = opt(0, "images per class per epoch of the balanced sampler "
                                               "(0 = the sampler's default)", range=(0, None),
                                           label="samples per class per epoch")
    log_kimg: float = opt(0.1, "kimg between metrics_gan.csv rows", range=(0.001, None),
                          label="log every (kimg)")
    tensorboard: bool = opt(True, "also write the metrics_gan.csv rows and the resolved config as "
                                  "TensorBoard events in the run directory (`tensorboard --logdir runs/`)",
                            label="TensorBoard events")
    sample_kimg: float = opt(1.0, "kimg between sample grids", range=(0.001, None), label="grid every (kimg)")
    snap_kimg: float = opt(1.0, "kimg between checkpoints", range=(0.001, None),
                           label="checkpoint every (kimg)")
    keep_last: int = opt(3, "checkpoints kept (the newest ones)", range=(1, None), label="checkpoints kept")
    best_metric: str = opt("fid_domain", "the best model (seed-001 spec 4.3/5 cgan_best_model.pt): at each "
                                         "checkpoint a quick FID of G_ema's patches against the held-out "
                                         "`eval` split in the `domain` feature space (<data>/classifier.pt); "
                                         "the lowest so far is kept as exports/best/ with its step and score. "
                                         "off = none. Without the classifier the run goes on without a best "
                                         "model (one event in events.jsonl)",
                           choices=("fid_domain", "off"), label="best model by")
    best_n: int = opt(256, "generated patches of the quick FID at each checkpoint (spec 4.3), evenly per "
                           "class, at most the size of the eval split; small, so it stays cheap on a CPU",
                      range=(2, 100_000), label="best-model FID patches")
    grid_per_class: int = opt(8, "samples per class (columns) in the sample grids", range=(1, 64),
                              label="grid columns per class")

    def check(self) -> None:
        if self.family not in IMPLEMENTED_FAMILIES:
            raise ConfigError(f"config field 'family' = {self.family!r} is not implemented yet; "
                              f"implemented: {', '.join(IMPLEMENTED_FAMILIES)}")
        if self.family in FAMILY_SECTIONS:  # the section's own rules (ConfigError names its field)
            from_dict(FAMILY_SECTIONS[self.family][0], getattr(self, self.family))
        if self.channel_base < self.res:
            raise ConfigError(f"config field 'channel_base' must be at least 'res' ({self.res}) so "
                              f"every layer has a channel (got {self.channel_base})")
        if 0 < self.d_channel_base < self.res:
            raise ConfigError(f"config field 'd_channel_base' must be 0 (= channel_base) or at least "
                              f"'res' ({self.res}) so every D layer has a channel (got {self.d_channel_base})")
        if self.domain_features == "inception":
            # its uint8 quantisation has no gradient: a perceptual loss through it would not reach G
            raise ConfigError("config field 'domain_features' cannot be inception (not differentiable: it "
                              "quantises to uint8); use empty/domain, a classifier.pt path or timm:<name>")
        g = min(self.mbstd_group, self.batch)
        if self.family == "stylegan2" and self.batch % g:  # D's minibatch-std groups: StyleGAN2's alone
            raise ConfigError(f"config field 'batch' must be a multiple of 'mbstd_group' "
                              f"({self.mbstd_group}) (got {self.batch})")
        # Ranges are inclusive, so the open lower ends live here: 0 passed validation and then the
        # gate or watchdog raised a bare ValueError when the run started.
        for name in ("alpha_tau", "alpha_dalpha", "watchdog_threshold", "watchdog_factor",
                     "watchdog_alpha_factor"):
            if getattr(self, name) <= 0:
                hi = self.__dataclass_fields__[name].metadata["range"][1]  # alpha_tau (steps): no upper end
                upper = "" if hi is None else f" and at most {hi}"
                raise ConfigError(f"config field '{name}' must be above 0.0{upper} "
                                  f"(got {getattr(self, name)!r})")
        if self.alpha_off >= self.alpha_on:
            raise ConfigError(f"config fields 'alpha_off' ({self.alpha_off}) must be below "
                              f"'alpha_on' ({self.alpha_on}) for the gate's hysteresis")


# ----------------------------------------------------------------------------------------------
# Presets: the values each one sets; a field a preset does not name keeps its TrainConfig default.

SPEC_KIMG_PER_STEP = 8 / 1000  # spec 5: batch 8, so N steps = N * 0.008 kimg

PRESETS: dict[str, dict[str, Any]] = {
    # The researchers' seed-001 cGAN spec, value by value and in its semantics (the ADA
    # rule, warm-ups and the gate counted in steps are options of the trainer, set here).
    "spec": {
        "res": 256,                        # 1.2 IMAGE_SIZE = 256
        "samples_per_class_per_epoch": 1000,  # 1.2 SAMPLES_PER_CLASS = 1000
        "batch": 8,                        # 1.3 / 5 BATCH_SIZE = 8
        "z_dim": 512,                      # 2.1 Z_DIM = 512
        "w_dim": 512,                      # 2.2 MappingNetwork(w_dim=512)
        "n_mlp": 8,                        # 2.2 MappingNetwork(n_layers=8)
        "clamp": 0.9,                      # 2.2 output clamp +-0.9
        "mixing_prob": 0.9,                # 2.2 STYLE_MIX_PROB = 0.9 (intra-class)
        # Widths, on our formula channels(res) = min(base // res, max). G (2.2): the spec fixes only the
        # 4x4 width, const (1, FMAP_BASE = 512, 4, 4), so max 512; below it, our reading is StyleGAN2's
        # config-f curve (base 16384): 512 up to 32 px, then halving, 64 at 256 px (halving from the
        # 4x4 on, base 2048, would leave G 8 channels at 256 px, far thinner than D's 96 there).
        "channel_base": 16384,             # 2.2 FMAP_BASE = 512 at 4x4 (our reading below it)
        "channel_max": 512,                # 2.2 FMAP_BASE = 512
        # D (2.3): D_BASE_CH = 96 channels on the 256 px input, doubling at each stride-2 block:
        # 96 * 256 = 24576. The cap is our reading: the spec's "96 vs 64 in the simpler versions" is
        # the DCGAN-style D whose 64 doubles up to 8x = 512; 8 x 96 = 768 (reached at 32 px).
        "d_channel_base": 96 * 256,        # 2.3 D_BASE_CH = 96 at the 256 px input
        "d_channel_max": 8 * 96,           # 2.3 our reading: 8 x D_BASE_CH, as 64 -> 512
        "clamp_reals": True,               # 2.2 the reals D sees are clamped like G's output
        "loss": "bce",                     # 3.1 BCE with one-sided label smoothing ...
        "real_label": 0.9,                 # 3.1 ... real label 0.9
        "r1_gamma": 15.0,                  # 3.2 R1_GAMMA = 15.0
        "r1_every": 8,                     # 3.2 R1 every 8 steps ...
        "r1_lazy_scale": False,            # 3.2 ... as 0.5 * R1_GAMMA * r1, not x R1_EVERY
        "stats_weight": 3e-3,              # 3.3 LAMBDA_STATS = 3e-3
        "stats_beta": 0.995,               # 3.3 RealStatsEMA(m=0.995)
        "stats_range": "unit",             # 3.3 statistics of reals and fakes in [0, 1]
        # 2.4 the PathoDuet head: the domain head in D (and with it the perceptual loss); it needs the data
        # set's classifier.pt or domain_features timm:<name> + domain_weights (the error says how).
        "domain_head": True,               # 2.4 logit = base + proj + alpha * duet
        "perceptual_weight": 0.01,         # 3.4 LAMBDA_PERCEPTUAL = 0.01
        "perceptual_form": "paired",       # 3.4 MSE(fake_feat, real_feat)
        "saturation_weight": 0.05,         # 3.5 LAMBDA_SATURATION = 0.05
        "saturation_threshold": 0.6,       # 3.5 clamp(mean|fake| - 0.6, min=0) ...
        "saturation_form": "mean_abs",     # 3.5 ... on fake.abs().mean()
        "fm_weight": 0.1,                  # 3.6 LAMBDA_FEATURE_MATCHING = 0.1
        "fm_form": "final_mse",            # 3.6 MSE(fake_feat, real_feat_detach) on D.base's features
        "diversity_weight": 0.1,           # 3.7 MIXING_REG_WEIGHT = 0.1
        "diversity_form": "variance",      # 3.7 clamp(0.1 - fake_var, min=0)**2 ...
        "diversity_var": 0.1,              # 3.7 ... v = 0.1
        "ada_target": 0.6,                 # 4.1 ADA_TARGET = 0.6
        "ada_p_max": 0.12,                 # 4.1 ADA_MAX_P = 0.12
        "ada_rule": "spec",                # 4.1 new_p = clamp(p + 0.001 * (acc_ema - ADA_TARGET) * ADA_SPEED)
        "ada_speed": 0.2,                  # 4.1 ADA_SPEED = 0.20
        "acc_ema_beta": 0.99,              # 4.1 ADA_DECAY = 0.99 (acc_ema, per step)
        "ada_warmup_steps": 500,           # 4.1 ADA_FREEZE_UNTIL = 500
        "ada_hi_acc": 0.9,                 # 4.1 si acc_ema > 0.9 ...
        "ada_hi_cap": 0.08,                # 4.1 ... ADA_P_CAP_IF_ACC_HI = 0.08
        "ada_ops": ["xflip", "rotate", "translate"],  # 4.1 flip H, rotation, translation; color=0.0
        "ada_rotate_max_deg": 5.0,         # 4.1 rotation legere (+- quelques degres): 5 is our reading
        "ada_translate_frac": 1 / 64,      # 4.1 translation (quelques pixels): 4 px at 256, our reading
        "ada_interval": 1,                 # 4.1 / 4.4 / 4.5 the controllers run at every step
        "drift": 1e-3,                     # 4.2 DRIFT_EPS = 1e-3
        "ema_beta": 0.9995,                # 4.3 ema_update(decay=0.9995) ...
        "ema_kimg": 0.0,                   # 4.3 ... a decay per step, not a half-life ...
        "ema_rampup": 0.0,                 # 4.3 ... from step 0 (no ramp-up)
        "alpha_on": 0.78,                  # 4.4 ACC_GATE_HI = 0.78
        "alpha_off": 0.70,                 # 4.4 ACC_GATE_LO = 0.70
        "alpha_max": 0.15,                 # 4.4 ALPHA_MAX = 0.15
        "alpha_dalpha": 1e-4,              # 4.4 ALPHA_DALPHA = 1e-4 per step
        "alpha_tau": 400.0,                # 4.4 ALPHA_TAU = 400, k = 1 - exp(-1/ALPHA_TAU) per step
        "alpha_warmup_steps": 500,         # 4.4 ALPHA_FREEZE_UNTIL = 500
        "alpha_dwell": 200,                # 4.4 DUET_DWELL_STEPS = 200
        "alpha_stable": 0.05,              # 4.4 "D stable": our reading, acc_ema within 0.05 over the dwell
        "watchdog_threshold": 0.75,        # 4.5 fake_mean_abs > 0.75
        "watchdog_factor": 0.9,            # 4.5 LAMBDA_PERCEPTUAL x 0.9 ...
        "watchdog_floor": 0.005,           # 4.5 ... floor 0.005
        "watchdog_alpha_factor": 0.95,     # 4.5 ALPHA_MAX x 0.95 ...
        "watchdog_alpha_floor": 0.1,       # 4.5 ... floor ~0.1
        "watchdog_log_every": 50,          # 4.5 logged at most every 50 steps
        "grad_clip": 1.0,                  # 4.6 gradient clipping 1.0
        "amp": "off",                      # 4.6 USE_AMP = False
        "lr_min_frac": 0.01,               # 4.7 LR_FINAL_RATIO = 0.01 (cosine)
        "lr_g": 4e-4,                      # 5 LR_G = 4e-4
        "lr_d": 7e-5,                      # 5 LR_D = 7e-5
        "beta1": 0.0,                      # 5 BETAS = (0.0, 0.99)
        "beta2": 0.99,                     # 5 BETAS = (0.0, 0.99)
        "sample_kimg": 400 * SPEC_KIMG_PER_STEP,  # 5 SAMPLE_EVERY = 400 steps = 3.2 kimg at batch 8
        "snap_kimg": 800 * SPEC_KIMG_PER_STEP,    # 5 SAVE_EVERY = 800 steps = 6.4 kimg at batch 8
    },
    # The StyleGAN2-ADA recipe as the trainer runs it today: the TrainConfig defaults.
    "stylegan2": {},
    # The CPU demo, chosen by measurement with bench/demo_quality.py (10 min budget, 2 threads, the lab's
    # 2-core machine; CAS = share of G_ema patches the data set's real-trained classifier puts in the
    # conditioned class; target mean >= 0.80, no class below 0.50). What decided it: on 2 CPU cores the
    # number of steps is what counts, so the net is tiny (G 16-32 channels, z = w = 128, 2 mapping layers:
    # ~140 img/s instead of ~26), the learning rates are StyleGAN2's low-resolution 2e-3 for G and D (the
    # spec's D rate 7e-5 is for runs of 10^5 steps; in 1000 steps D hardly learns), R1 gamma 0.1 (15 x 8
    # lazy is a 32 px D held flat), and D sees the class at its input (d_cond labelmap: in the dcgan family
    # labelmap vs projection was CAS 0.91 vs 0.67 at 15 kimg; here +0.05 in one trial). Checkpoints every
    # 5 kimg: each one also scores the best model. Measured (one thread, 4 min): the stylegan2 defaults at
    # 32 px 6 kimg CAS 0.24; tiny 15 kimg 0.54, 30 kimg 0.68; the 64 px defaults (5 kimg) 0.17. This preset
    # with 100 kimg stopped at 85 kimg after 10 min on 2 threads: CAS 0.90, lowest class DEB 0.72; with
    # kimg 75 (and the ada_ops below) it finishes in 526 s at CAS 0.89, lowest class DEB 0.59.
    "demo": {"res": 32, "kimg": 75.0, "snap_kimg": 5.0,
             "channel_base": 512, "channel_max": 32, "z_dim": 128, "w_dim": 128, "n_mlp": 2,
             "lr_g": 2e-3, "lr_d": 2e-3, "r1_gamma": 0.1, "d_cond": "labelmap",
             # ADA p climbs to ~0.45 on these 1800 patches; with the stain jitter and cutout among its ops
             # MUS (pink fibres) fell to 0.49; without them (as spec 4.1) two seeds gave MUS 0.66 and 0.58
             "ada_ops": ["xflip", "yflip", "rotate90", "rotate", "translate"]},
}


def default_preset() -> str:
    """`spec` on a machine with a GPU, `demo` on a CPU-only one: the one rule the CLI and the Train
    page share. torch is imported here only, so `engine.config` stays light."""
    import torch

    return "spec" if torch.cuda.is_available() else "demo"


def preset_values(name: str) -> dict[str, Any]:
    """Every TrainConfig field as preset `name` sets it (its values over the defaults), validated."""
    if name not in PRESETS:
        raise ConfigError(f"config field 'preset' must be one of: {', '.join(PRESET_NAMES)} (got {name!r})")
    return to_dict(from_dict(TrainConfig, {**PRESETS[name], "preset": name}))


# ----------------------------------------------------------------------------------------------
# Family `ddpm` (engine.families.ddpm): class-conditional diffusion, the family's own section.

DDPM_SCHEDULES = ("linear", "cosine", "quadratic")
DDPM_PREDICTIONS = ("epsilon", "v_prediction")
DDPM_SAMPLERS = ("ddim", "ddpm", "dpm")
# Fields named like TrainConfig's because they are the same idea (one name per idea); a CLI or form that
# shows both sections lists them once (add_arguments(..., skip=DDPM_SHARED_FIELDS)) and copies the value.
DDPM_SHARED_FIELDS = ("grad_clip", "ema_kimg", "ema_rampup", "lr_min_frac")


@dataclass
class DDPMConfig:
    """The `ddpm` family: U-Net widths and depth, noise schedule, optimiser, EMA and sampler defaults.

    Run length, batch, resolution, seed, device, mixed precision and compile stay TrainConfig's. EMA is a
    half-life in kimg like the GANs' (independent of the batch size): the seed's ema_decay = 0.999 per
    step at batch 8 is a half-life of 8 * ln 0.5 / ln 0.999 = 5.54 kimg. Guidance scale w: the model
    output is cond + w * (cond - uncond), so 0 = none (plain conditional, one forward pass); diffusers'
    `guidance_scale` is 1 + w."""
    # model (engine.models.unet, diffusers UNet2DModel)
    channels: int = opt(128, "U-Net base width: level i has channels x channel_mult[i] channels (seed: 192)",
                        range=(8, 1024), label="U-Net base channels")
    channel_mult: list[int] = opt([1, 2, 3, 4], "width multiplier per resolution level, one level per "
                                                "entry, each after the first halves the size (seed: 1,2,3,4)",
                                  range=(1, 16), label="channel multipliers")
    layers_per_block: int = opt(2, "residual blocks per level (seed: num_res_blocks = 2)", range=(1, 8),
                                label="residual blocks per level")
    attention_res: list[int] = opt([16], "image sizes (px) of the levels with self-attention (seed: 16); "
                                         "the middle block always has it", range=(1, 256),
                                   label="attention at sizes (px)")
    attention_head_dim: int = opt(64, "channels per attention head; must divide every level's width",
                                  range=(1, 1024), label="attention head width")
    dropout: float = opt(0.1, "dropout in the residual blocks (seed: 0.1)", range=(0.0, 0.9),
                         label="dropout")
    # diffusion (engine.diffusion)
    schedule: str = opt("cosine", "noise schedule of the betas (seed: cosine, recommended)",
                        choices=DDPM_SCHEDULES, label="noise schedule")
    prediction: str = opt("v_prediction", "what the U-Net predicts: the noise (epsilon, the seed's) or v "
                                          "= sqrt(abar) eps - sqrt(1 - abar) x0. v is the default: on the "
                                          "demo net after 800 CPU steps, epsilon's samples had the wrong "
                                          "colours (its x0 estimate at the noisiest steps divides by "
                                          "sqrt(abar) ~ 5e-5 under the cosine schedule) and DPM-Solver "
                                          "disagreed with DDIM; v's had the data's mean colour and DDIM 20 / "
                                          "DPM 10 / DDIM 100 agreed within 4 grey levels",
                          choices=DDPM_PREDICTIONS, label="prediction target")
    timesteps: int = opt(1000, "diffusion steps T of training (seed: 1000)", range=(10, 10000),
                         label="diffusion steps T")
    cond_drop: float = opt(0.1, "probability that a training label is replaced by the null class, so one "
                                "model also learns the unconditional output classifier-free guidance needs",
                           range=(0.0, 1.0), label="label drop (for guidance)")
    dihedral: bool = opt(True, "random flips and 90-degree rotations of the training images (the 8 "
                               "symmetries of a square; pathology patches have no orientation)",
                         label="flip / rotate-90 augmentation")
    # optimiser (AdamW, betas 0.9 / 0.999)
    lr: float = opt(2e-4, "AdamW learning rate after the warm-up (seed: 2e-4)", range=(0.0, 1.0),
                    label="learning rate")
    warmup_steps: int = opt(500, "steps of linear learning-rate warm-up from 0, then cosine decay",
                            range=(0, None), label="lr warm-up (steps)")
    lr_min_frac: float = opt(0.1, "cosine decay floor as a fraction of lr, reached at the last step",
                             range=(0.0, 1.0), label="lr floor fraction")
    weight_decay: float = opt(0.0, "AdamW decoupled weight decay", range=(0.0, 1.0), label="weight decay")
    grad_clip: float = opt(1.0, "gradient-norm clip (0 = off; seed: 1.0)", range=(0.0, None),
                           label="gradient clip")
    batch_gpu: int = opt(0, "images per forward/backward chunk; the step accumulates gradients over "
                            "chunks of the batch (0 = the whole batch at once)", range=(0, 65536),
                         label="chunk per pass (accumulation)")
    ema_kimg: float = opt(5.54, "EMA half-life of the weights in kimg (5.54 = the seed's 0.999 per step "
                                "at batch 8; 0 = no averaging, the EMA model copies the weights)",
                          range=(0.0, None), label="EMA half-life (kimg)")
    ema_rampup: float = opt(0.05, "cap the EMA half-life at this fraction of the images shown so far, so "
                                  "a short run's EMA is not the initial weights (0 = off)",
                            range=(0.0, 1.0), label="EMA ramp-up")
    # sampling defaults (grids during training, the Samples page and the sample CLI)
    sampler: str = opt("ddim", "sampler: ddim (eta, steps), ddpm (ancestral, up to T steps) or dpm "
                               "(DPM-Solver++ 2M, steps)", choices=DDPM_SAMPLERS, label="sampler")
    sample_steps: int = opt(25, "denoising steps of the sampler (ddpm: 0 = all T)", range=(0, 10000),
                            label="sampling steps")
    eta: float = opt(0.0, "DDIM eta: 0 = deterministic, 1 = as much noise as DDPM", range=(0.0, 1.0),
                     label="DDIM eta")
    guidance: float = opt(1.0, "classifier-free guidance scale w: cond + w * (cond - uncond); 0 = none",
                          range=(0.0, 50.0), label="guidance scale")

    def check(self) -> None:
        if not self.channel_mult:
            raise ConfigError("config field 'channel_mult' needs at least one level (e.g. 1,2,3,4)")
        for r in self.attention_res:
            if r & (r - 1):
                raise ConfigError(f"config field 'attention_res' holds image sizes, powers of two "
                                  f"(got {r})")
        for m in self.channel_mult:
            if (self.channels * m) % self.attention_head_dim:
                raise ConfigError(f"config field 'attention_head_dim' ({self.attention_head_dim}) must "
                                  f"divide every level's width channels x channel_mult (got "
                                  f"{self.channels} x {m})")


DDPM_PRESETS: dict[str, dict[str, Any]] = {
    # The researchers' DDPM notebook (seed 004, DiffusionConfig 128x128) value by value; its batch 8, 128 px and
    # use_fp16 = False are TrainConfig's (batch, res, amp). Warm-up length and the cosine floor are not
    # in the seed: ours.
    "spec": {"channels": 192, "channel_mult": [1, 2, 3, 4], "layers_per_block": 2, "attention_res": [16],
             "dropout": 0.1, "schedule": "cosine", "prediction": "epsilon", "timesteps": 1000, "lr": 2e-4,
             "grad_clip": 1.0,
             "ema_kimg": 5.54, "ema_rampup": 0.0},
    # A CPU demo net (1.2 M parameters; on one CPU thread at 32 px: ~57 img/s training at batch 16, ~160
    # U-Net image evaluations/s sampling, so DDIM 20 steps with guidance ~4 img/s). 800 steps of batch 16
    # on histosynth-32 (~4 min) give class-distinct patches in the data's colours (v prediction); not
    # tuned further.
    "demo": {"channels": 32, "channel_mult": [1, 2, 2], "layers_per_block": 1, "attention_res": [16],
             "attention_head_dim": 32, "dropout": 0.0, "lr": 1e-3, "warmup_steps": 100, "ema_kimg": 0.5,
             "sample_steps": 20},
}


def ddpm_preset_values(name: str) -> dict[str, Any]:
    """Every DDPMConfig field as DDPM preset `name` sets it (its values over the defaults), validated."""
    if name not in DDPM_PRESETS:
        raise ConfigError(f"ddpm preset must be one of: {', '.join(DDPM_PRESETS)} (got {name!r})")
    return to_dict(from_dict(DDPMConfig, DDPM_PRESETS[name]))


# ----------------------------------------------------------------------------------------------
# Families `dcgan` and `mlp_gan` (engine.models.dcgan / engine.models.mlp_gan): their own sections.
# Run length, batch, resolution, seed, device, amp and compile stay TrainConfig's. Fields named like
# TrainConfig's are the same idea (one name per idea): `real_label` is the one-sided label smoothing
# (target of the reals), `loss` the adversarial loss, `lr_g`/`lr_d`/`beta1`/`beta2` Adam's, `ema_kimg`/
# `ema_beta`/`ema_rampup` G_ema's with TrainConfig's semantics (ema_kimg > 0: half-life in kimg; 0: ema_beta
# per step, and ema_beta 0 = G_ema is a plain copy). A CLI or form showing both sections lists them once
# (add_arguments(..., skip=DCGAN_SHARED_FIELDS)) and copies the value.

DCGAN_UPSAMPLES = ("upsample", "transpose")
DCGAN_D_CONDS = ("projection", "labelmap", "acgan")
DCGAN_LOSSES = ("hinge", "logistic", "bce", "wgan_gp")
DCGAN_SHARED_FIELDS = ("z_dim", "loss", "d_cond", "real_label", "lr_g", "lr_d", "beta1", "beta2", "ema_kimg",
                       "ema_beta", "ema_rampup", "channel_max")
MLP_GAN_SHARED_FIELDS = ("z_dim", "real_label", "lr_g", "lr_d", "beta1", "beta2", "ema_kimg", "ema_beta",
                         "ema_rampup")


@dataclass
class DCGANConfig:
    """The `dcgan` family: the seed-002 cGAN with its review's fixes as options (engine.models.dcgan).

    Widths: an r x r map has min(base * res / (2 r), channel_max) channels, base = g_channels or
    d_channels (the seed's ngf ... ngf*32 at 256 px). `d_steps` D updates per G update (WGAN-GP
    papers use 5)."""
    # model
    z_dim: int = opt(100, "latent z size (DCGAN: 100)", range=(1, 4096), label="latent z size")
    embed_dim: int = opt(128, "class-embedding size, concatenated to z in G (the review: 128, not the "
                              "res*res-wide embedding); also sizes D's label-map embedding",
                         range=(1, 1024), label="class-embedding size")
    g_channels: int = opt(64, "G channels next to the image (res/2 map); doubling at each halving of "
                              "the size up to channel_max (seed: ngf)", range=(1, 4096), label="G base channels")
    d_channels: int = opt(64, "D channels of its first (res/2) map; doubling at each halving up to "
                              "channel_max (seed: ndf)", range=(1, 4096), label="D base channels")
    channel_max: int = opt(512, "maximum channels per layer, G and D", range=(1, 4096),
                           label="max channels per layer")
    g_upsample: str = opt("upsample", "G's 2x upsampling: nearest upsample + 3x3 conv (no checkerboard "
                                      "artefacts) or the seed's transposed conv 4x4 stride 2",
                          choices=DCGAN_UPSAMPLES, label="G upsampling")
    d_cond: str = opt("projection", "D's class conditioning: projection (Miyato & Koyama), labelmap (a "
                                    "learned per-class map as a 4th input channel, the seed's) or acgan "
                                    "(auxiliary classifier head, cross-entropy on reals and fakes)",
                      choices=DCGAN_D_CONDS, label="D class conditioning")
    attention: bool = opt(False, "SAGAN self-attention at the 32x32 map of G and D (res/2 below 64 px)",
                          label="self-attention")
    multiscale: bool = opt(False, "a second D on the image downsampled 2x; its logit is added to the "
                                  "first's", label="multi-scale D")
    # losses
    loss: str = opt("hinge", "adversarial loss: hinge, logistic (non-saturating), bce (with one-sided "
                             "label smoothing real_label, the seed's) or wgan_gp (Wasserstein + gradient "
                             "penalty)", choices=DCGAN_LOSSES, label="adversarial loss")
    gp_weight: float = opt(10.0, "WGAN-GP gradient-penalty weight lambda (loss wgan_gp only)",
                           range=(0.0, None), label="gradient-penalty weight")
    real_label: float = opt(0.9, "BCE target of the reals, one-sided label smoothing (loss bce only; the "
                                 "seed: smoothing 0.1)", range=(0.5, 1.0), label="BCE real label")
    texture_weight: float = opt(0.0, "weight of the Gram-matrix texture loss on D's features in G's "
                                     "objective (0 = off)", range=(0.0, None), label="texture-loss weight")
    d_steps: int = opt(1, "D updates per G update", range=(1, 100), label="D steps per G step")
    # optimiser (Adam) and G_ema; TTUR (Heusel et al. 2017): D learns 4x faster than G
    lr_g: float = opt(1e-4, "G learning rate (Adam; TTUR 1e-4)", range=(0.0, 1.0), label="G learning rate")
    lr_d: float = opt(4e-4, "D learning rate (Adam; TTUR 4e-4)", range=(0.0, 1.0), label="D learning rate")
    beta1: float = opt(0.0, "Adam beta1", range=(0.0, 0.9999), label="Adam beta1")
    beta2: float = opt(0.9, "Adam beta2", range=(0.0, 0.9999), label="Adam beta2")
    ema_kimg: float = opt(10.0, "G_ema half-life in kimg (0 = use ema_beta per step instead)",
                          range=(0.0, None), label="G_ema half-life (kimg)")
    ema_beta: float = opt(0.999, "G_ema decay per step, used when ema_kimg is 0 (0 = G_ema copies G)",
                          range=(0.0, 1.0), label="G_ema decay per step")
    ema_rampup: float = opt(0.05, "cap the G_ema half-life at this fraction of images shown so far "
                                  "(0 = no cap)", range=(0.0, 1.0), label="G_ema ramp-up")

    def check(self) -> None:
        if self.loss == "wgan_gp" and self.gp_weight <= 0:
            raise ConfigError("config field 'gp_weight' must be above 0 when 'loss' is wgan_gp (a WGAN "
                              f"critic without its penalty is unbounded) (got {self.gp_weight!r})")


@dataclass
class MLPGANConfig:
    """The `mlp_gan` family: the GAN basics tutorial's MLP GAN made conditional (engine.models.mlp_gan).

    BCE on logits (engine.losses.d_loss_bce, the real and fake terms summed: 2 ln 2 = 1.39 at the
    equilibrium D = 1/2, where the tutorial, which halves it, prints 0.69)."""
    z_dim: int = opt(100, "latent z size (tutorial: 100)", range=(1, 4096), label="latent z size")
    embed_dim: int = opt(16, "class-embedding size, concatenated to z in G and to the flattened image "
                             "in D", range=(1, 1024), label="class-embedding size")
    g_hidden: list[int] = opt([128, 256, 512], "G hidden layer sizes (tutorial: 128,256,512)",
                              range=(1, 16384), label="G hidden sizes")
    d_hidden: list[int] = opt([512, 256], "D hidden layer sizes (tutorial: 512,256)", range=(1, 16384),
                              label="D hidden sizes")
    bn_momentum: float = opt(0.2, "G's BatchNorm1d momentum in PyTorch's sense (weight of the new batch): "
                                  "0.2 = the tutorial's Keras momentum 0.8; its PyTorch port writes 0.8",
                             range=(0.0, 1.0), label="BatchNorm momentum")
    dropout: float = opt(0.3, "dropout after each D hidden layer (slows a too-strong D; 0 = none, the "
                              "tutorial's code)", range=(0.0, 0.9), label="D dropout")
    d_noise: float = opt(0.0, "std of Gaussian noise added to D's inputs, reals and fakes, while training "
                              "(instance noise; 0 = none)", range=(0.0, 2.0), label="D input noise")
    d_steps: int = opt(1, "D updates per G update (the tutorial's balance example: 2)", range=(1, 100),
                       label="D steps per G step")
    real_label: float = opt(1.0, "BCE target of the reals; below 1 = one-sided label smoothing (e.g. 0.9)",
                            range=(0.5, 1.0), label="BCE real label")
    lr_g: float = opt(2e-4, "G learning rate (Adam; tutorial 2e-4)", range=(0.0, 1.0), label="G learning rate")
    lr_d: float = opt(2e-4, "D learning rate (Adam; tutorial 2e-4 for both; lower it when D is too strong)",
                      range=(0.0, 1.0), label="D learning rate")
    beta1: float = opt(0.5, "Adam beta1 (tutorial 0.5)", range=(0.0, 0.9999), label="Adam beta1")
    beta2: float = opt(0.999, "Adam beta2 (tutorial 0.999)", range=(0.0, 0.9999), label="Adam beta2")
    ema_kimg: float = opt(0.5, "G_ema half-life in kimg (0 = use ema_beta per step instead)",
                          range=(0.0, None), label="G_ema half-life (kimg)")
    ema_beta: float = opt(0.999, "G_ema decay per step, used when ema_kimg is 0 (0 = G_ema copies G)",
                          range=(0.0, 1.0), label="G_ema decay per step")
    ema_rampup: float = opt(0.05, "cap the G_ema half-life at this fraction of images shown so far "
                                  "(0 = no cap)", range=(0.0, 1.0), label="G_ema ramp-up")

    def check(self) -> None:
        for name in ("g_hidden", "d_hidden"):
            if not getattr(self, name):
                raise ConfigError(f"config field '{name}' needs at least one hidden size (e.g. 512,256)")


DCGAN_PRESETS: dict[str, dict[str, Any]] = {
    # The researchers' DCGAN review (seed 002), its "Suggested Improved Architecture" and fixes. Its
    # ngf/ndf are not in the seed: 64 is DCGAN's, our reading; channel_max 2048 keeps its ngf*32 at 4x4
    # (at 256 px: G 52 M, D 45 M parameters).
    "spec": {"g_upsample": "transpose",      # ImprovedGenerator: ConvTranspose2d throughout
             "embed_dim": 128,               # 1. nn.Embedding(num_classes, 128)
             "d_cond": "labelmap",           # ImprovedDiscriminator: label map as the (nc+1)-th channel
             "attention": True,              # 2. / improved arch: SelfAttention at 32x32 (G's 128x128 one: not ours)
             "loss": "hinge",                # 3C. hinge loss
             "real_label": 0.9,              # the seed's label smoothing 0.1 (used with loss bce)
             "g_channels": 64, "d_channels": 64, "channel_max": 2048,
             "lr_g": 1e-4, "lr_d": 4e-4,     # 7A. TTUR
             "beta1": 0.0, "beta2": 0.9,     # 7A. betas=(0.0, 0.9)
             "ema_kimg": 0.0, "ema_beta": 0.999, "ema_rampup": 0.0},  # 7C. EMA(decay=0.999) per step
    # A CPU demo at 32 px (G 0.56 M, D 0.20 M parameters; ~370 img/s for a G+D step at batch 32 on one
    # CPU thread, bench/gan_model_throughput.py). labelmap: in one 60 s run each on histosynth (seed 0,
    # ~25 kimg) both heads gave class-distinct colours, but projection collapsed within a class (pixel
    # std across z 0.07 vs 0.13 for labelmap; reals 0.19). One seed each: a weak signal, not a tuning.
    "demo": {"g_channels": 32, "d_channels": 32, "channel_max": 128, "d_cond": "labelmap", "ema_kimg": 0.5},
}

MLP_GAN_PRESETS: dict[str, dict[str, Any]] = {
    # The researchers' GAN tutorial (seed 003), its PyTorch code value by value; its batch_size 64 is
    # TrainConfig's batch. Conditioning (embed_dim) is ours: the tutorial's GAN is unconditional.
    "spec": {"z_dim": 100,                   # latent_dim = 100
             "g_hidden": [128, 256, 512],    # Linear 128, 256, 512
             "d_hidden": [512, 256],         # Linear 512, 256
             "bn_momentum": 0.8,             # BatchNorm1d(..., momentum=0.8), as the PyTorch code writes it
             "dropout": 0.0, "d_noise": 0.0,  # the code's D has neither
             "d_steps": 1,                   # one D update per G update (2 in its balance example)
             "real_label": 1.0,              # valid = torch.ones(...)
             "lr_g": 2e-4, "lr_d": 2e-4,     # learning_rate = 0.0002
             "beta1": 0.5, "beta2": 0.999,   # betas=(0.5, 0.999)
             "ema_kimg": 0.0, "ema_beta": 0.0},  # no EMA: samples from G itself
    # The CPU demo (seconds at 32 px): the defaults, with the tutorial's one-sided label smoothing. With
    # real_label 1.0, D won outright in a 45 s run on histosynth (g_loss ~4, class colours uncorrelated
    # with the reals' at 0.07-0.15); 0.9 kept the losses near the equilibrium (correlation 0.80). One seed.
    "demo": {"real_label": 0.9},
}


def _family_preset(cls: type, presets: dict[str, dict[str, Any]], family: str, name: str) -> dict[str, Any]:
    if name not in presets:
        raise ConfigError(f"config field 'preset' must be one of: {', '.join(presets)} for family {family} "
                          f"(got {name!r})")
    return to_dict(from_dict(cls, presets[name]))


def dcgan_preset_values(name: str) -> dict[str, Any]:
    """Every DCGANConfig field as DCGAN preset `name` sets it (its values over the defaults), validated."""
    return _family_preset(DCGANConfig, DCGAN_PRESETS, "dcgan", name)


def mlp_gan_preset_values(name: str) -> dict[str, Any]:
    """Every MLPGANConfig field as MLP GAN preset `name` sets it (its values over the defaults), validated."""
    return _family_preset(MLPGANConfig, MLP_GAN_PRESETS, "mlp_gan", name)


# ----------------------------------------------------------------------------------------------
# Family sections: TrainConfig field <family> holds the section of a family that has one.

# family -> (section class, its presets, the fields it shares with TrainConfig: the same idea, one flag)
FAMILY_SECTIONS: dict[str, tuple[type, dict[str, dict[str, Any]], tuple[str, ...]]] = {
    "ddpm": (DDPMConfig, DDPM_PRESETS, DDPM_SHARED_FIELDS),
    "dcgan": (DCGANConfig, DCGAN_PRESETS, DCGAN_SHARED_FIELDS),
    "mlp_gan": (MLPGANConfig, MLP_GAN_PRESETS, MLP_GAN_SHARED_FIELDS),
}


def resolve_section(d: dict[str, Any], args: argparse.Namespace | None = None) -> dict[str, Any]:
    """TrainConfig dict `d` with its family's section whole: the family preset named like d["preset"]
    (a preset the family lacks, e.g. stylegan2: the section's defaults), then d's own section values
    (a --config file, the Train page's form, a resumed run's config.json), then the section's flags
    given in `args`, shared ones (--grad-clip) included. Other families' dicts are left as they are."""
    fam = d.get("family") or "stylegan2"
    if fam not in FAMILY_SECTIONS:
        return d
    cls, presets, shared = FAMILY_SECTIONS[fam]
    own = d.get(fam) or {}
    if isinstance(own, str):  # --ddpm '{"channels": 32}'
        own = _coerce(fam, own, dict)
    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
             if args is not None and getattr(args, f.name, None) is not None}
    preset = d.get("preset") or default_preset()
    section = {**presets.get(preset, {}), **own, **flags}
    out = {**d, fam: to_dict(from_dict(cls, section))}
    # A shared flag is the section's value; TrainConfig's field of that name keeps its preset value (it
    # is StyleGAN2's, and may not even allow the section's: --loss hinge for dcgan).
    base = preset_values(preset)
    for k in shared:
        if k in flags:
            out[k] = base[k]
    return out


def section(cfg: "TrainConfig") -> Any:
    """The validated section dataclass of cfg's family (e.g. DDPMConfig), None for a family without one."""
    if cfg.family not in FAMILY_SECTIONS:
        return None
    return from_dict(FAMILY_SECTIONS[cfg.family][0], getattr(cfg, cfg.family) or {})


def add_section_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of every family section's fields, each name once, except those TrainConfig has (shared:
    the same idea, one flag; resolve_section copies its value into the section)."""
    taken = {f.name for f in dataclasses.fields(TrainConfig)}
    for cls, _presets, _shared in FAMILY_SECTIONS.values():
        names = tuple(f.name for f in dataclasses.fields(cls))
        add_arguments(parser, cls, skip=tuple(n for n in names if n in taken))
        taken.update(names)
