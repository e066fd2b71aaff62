"""Every config in engine.config: documented fields, one device rule, one `step`, one truncation range,
renamed keys still read under their old names (old config.json / reports / flags)."""
import argparse
import dataclasses

import pytest

from engine import config as C
from engine.config import ClassifierConfig, ConfigError, EvalConfig, PrepareConfig, SampleConfig, TrainConfig

CONFIGS = (PrepareConfig, TrainConfig, EvalConfig, ClassifierConfig, SampleConfig)
REQUIRED = {EvalConfig: {"run_dir": "x"}, ClassifierConfig: {"data": "x"}, SampleConfig: {"run_dir": "x", "out": "y"}}


def _make(cls, **kw):
    return C.from_dict(cls, {**REQUIRED.get(cls, {}), **kw})


@pytest.mark.parametrize("cls", CONFIGS)
def test_every_field_has_help_and_a_label_of_its_own(cls):
    fields = dataclasses.fields(cls)
    for f in fields:
        assert f.metadata.get("help") and f.metadata.get("label"), f.name
    labels = [f.metadata["label"] for f in fields]
    assert len(set(labels)) == len(labels)
    assert C.label_for(cls, fields[0].name) == f"{fields[0].metadata['label']} · {fields[0].name}"
    _make(cls)  # the defaults (and the required values) validate


@pytest.mark.parametrize("cls", [c for c in CONFIGS if "device" in {f.name for f in dataclasses.fields(c)}])
def test_one_device_rule_for_every_config(cls):
    for ok in ("auto", "cpu", "cuda", "cuda:1", "mps"):
        assert _make(cls, device=ok).device == ok
    with pytest.raises(ConfigError, match=r"config field 'device' must be one of: auto, cpu, cuda, cuda:N, mps "
                                          r"\(got 'gpu'\)"):
        _make(cls, device="gpu")
    f = next(f for f in dataclasses.fields(cls) if f.name == "device")
    assert C.offered(f) == C.DEVICE_OFFER  # a form offers the common ones


def test_step_has_one_representation():
    for cls in (EvalConfig, SampleConfig):
        assert [_make(cls, step=s).step for s in ("latest", "best", 12, " 7 ", "-1", "")] == \
            ["latest", "best", "12", "7", "latest", "latest"]  # -1 / "": what older files and flags said
        assert [_make(cls, step=s).step_arg for s in ("latest", "best", "12")] == [None, "best", 12]
        with pytest.raises(ConfigError, match="'step' must be one of: latest, best, a step number"):
            _make(cls, step="newest")


def test_truncation_is_one_name_with_one_range():
    for cls in (EvalConfig, SampleConfig):
        f = next(f for f in dataclasses.fields(cls) if f.name == "truncation")
        assert f.metadata["range"] == C.TRUNCATION_RANGE == (0.0, 1.0)
        assert _make(cls, truncation=0).truncation == 0.0
        with pytest.raises(ConfigError, match="'truncation' must be between 0.0 and 1.0"):
            _make(cls, truncation=1.5)
    assert not [f for c in CONFIGS for f in dataclasses.fields(c) if f.name == "psi"]


def test_renamed_eval_keys_still_load(tmp_path):
    import json

    old = {"run_dir": "runs/a", "per_class": True, "classifier": "/x/classifier.pt", "step": "-1"}
    cfg = C.from_dict(EvalConfig, old)  # a report's "config" from before the rename
    assert (cfg.by_class, cfg.domain_weights, cfg.step) == (True, "/x/classifier.pt", "latest")
    assert C.from_dict(EvalConfig, {**old, "by_class": False}).by_class is False  # the new name wins
    f = tmp_path / "eval.json"
    f.write_text(json.dumps(old))
    assert C.load_fields(EvalConfig, f)["by_class"] is True
    # `per_class` stays the count it is in PrepareConfig
    assert next(f for f in dataclasses.fields(PrepareConfig) if f.name == "per_class").type == "int"


def test_generated_cli_takes_bools_bare_negated_and_under_old_names():
    p = argparse.ArgumentParser()
    C.add_arguments(p, EvalConfig)
    flags = {a for action in p._actions for a in action.option_strings}
    assert {C.flag(f.name) for f in dataclasses.fields(EvalConfig)} <= flags  # one flag per field
    cfg = C.from_args(EvalConfig, p.parse_args(["--run-dir", "r", "--by-class", "--no-auto-classifier"]))
    assert cfg.by_class is True and cfg.auto_classifier is False
    old = C.from_args(EvalConfig, p.parse_args(["--run-dir", "r", "--per-class", "--classifier", "c.pt"]))
    assert old.by_class is True and old.domain_weights == "c.pt"
    assert C.from_args(EvalConfig, p.parse_args(["--run-dir", "r", "--by-class", "false"])).by_class is False


def test_sample_style_mixing_needs_one_of_crossover_or_mix():
    assert _make(SampleConfig, donor="TUM:2", crossover=2).mix_arg == 2
    assert _make(SampleConfig, donor="TUM:2", mix="0,1,0.5").mix_arg == [0.0, 1.0, 0.5]
    for kw in ({}, {"crossover": 2, "mix": "1"}):
        with pytest.raises(ConfigError, match="exactly one of --crossover K or --mix"):
            _make(SampleConfig, donor="TUM:2", **kw)
    with pytest.raises(ConfigError, match="'donor' must be empty or CLASS:SEED"):
        _make(SampleConfig, donor="TUM")
    with pytest.raises(ConfigError, match="'out' is required"):
        C.from_dict(SampleConfig, {"run_dir": "x"})


def test_names_that_meant_two_things_are_apart():
    from engine.metrics import classifier, evaluate
    from engine.train import step

    # the trainer's cosine_lr (a floor, segments) and the classifier's warm-up cosine are two functions
    assert hasattr(step, "cosine_lr") and not hasattr(classifier, "cosine_lr") and hasattr(classifier, "warmup_cosine")
    # `evaluate` is the report of a run; the classifier's accuracy on a split is evaluate_classifier
    assert hasattr(evaluate, "evaluate") and not hasattr(classifier, "evaluate")
    assert evaluate.EvalConfig is EvalConfig and classifier.ClassifierConfig is ClassifierConfig  # one home


def test_the_trainer_takes_the_device_rule_too(monkeypatch):
    import torch

    from engine.train import loop

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert loop.resolve(C.validate(TrainConfig(device="auto")))[0] == torch.device("cpu")
    with pytest.raises(ConfigError, match="'device' is 'cuda:1' but no GPU is visible"):
        loop.resolve(C.validate(TrainConfig(device="cuda:1")))  # accepted by the rule, refused without a GPU
