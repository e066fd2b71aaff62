"""The best model (spec 4.3/5 cgan_best_model.pt): exports/best/ kept by the trainer's quick held-out FID,
loadable by sampling / evaluate and offered by the pickers."""
import json

import numpy as np
import pytest
import torch

from engine import sampling as S
from engine.config import PrepareConfig
from engine.train import loop
from engine.train.checkpoint import export_best, load_generator_export

TINY = ["--res", "16", "--batch", "8", "--z-dim", "32", "--w-dim", "32", "--n-mlp", "2",
        "--channel-base", "256", "--channel-max", "64", "--grid-per-class", "2", "--r1-every", "2",
        "--ada-interval", "2", "--log-kimg", "0.032", "--sample-kimg", "0.032", "--snap-kimg", "0.032",
        "--keep-last", "10"]  # a checkpoint every 4 steps, all kept



@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A 32 px histosynth set with no classifier.pt (4 per class: 1 held-out eval patch each)."""
    from engine.data.prepare import prepare

    return prepare(PrepareConfig(source="histosynth", size=32, per_class=4, seed=0, quality_filter=False,
                                 workers=1, out=str(tmp_path_factory.mktemp("d") / "hs32")))


def events(run):
    p = run / "events.jsonl"
    return [json.loads(line) for line in p.read_text().splitlines()] if p.is_file() else []


def test_best_is_the_lowest_score_and_survives_resume(tmp_path, data, monkeypatch):
    scores, seen = iter([5.0, 3.0, 4.0]), []

    def scorer(cfg, data_, device):
        assert cfg.best_n == 256 and cfg.best_metric == "fid_domain"  # the defaults

        def score(G):
            seen.append({k: v.clone() for k, v in G.state_dict().items()})
            return {"score": next(scores), "n": 9, "n_real": 9}
        return score

    monkeypatch.setattr(loop, "make_best_scorer", scorer)
    run = tmp_path / "run"
    # two checkpoints (steps 4 and 8), stop, then resume for the third (step 12)
    assert loop.main(["--data", str(data), "--run-dir", str(run), *TINY, "--kimg", "0.096",
                      "--stop-after", "8"]) == 0
    best = json.loads((run / "exports" / "best" / "best.json").read_text())
    assert (best["step"], best["score"], best["metric"], best["n"]) == (8, 3.0, "fid_domain", 9)
    assert best["real_split"] == "eval" and best["eval_disjoint"] is True and best["kimg"] == pytest.approx(0.064)
    assert loop.main(["--resume", str(run)]) == 0
    assert json.loads((run / "status.json").read_text())["state"] == "finished" and len(seen) == 3
    best = json.loads((run / "exports" / "best" / "best.json").read_text())
    assert best["step"] == 8 and best["score"] == 3.0  # 4.0 at step 12 does not beat the resumed best
    assert not list((run / "exports").glob(".best.*"))  # no temp dir left behind

    # exports/best holds G_ema of step 8, the same files as the final export
    assert {p.name for p in (run / "exports" / "best").iterdir()} == \
        {"generator.safetensors", "generator.json", "best.json"}
    G, meta = S.load_generator(run, step="best")
    assert meta["kind"] == "best" and meta["step"] == 8 and meta["best"]["score"] == 3.0
    assert all(torch.equal(v, seen[1][k]) for k, v in G.state_dict().items())
    ck = torch.load(run / "checkpoints" / "step_00000008.pt", weights_only=True)["G_ema"]
    assert all(torch.equal(v, ck[k]) for k, v in G.state_dict().items())
    final, _ = S.load_generator(run)
    assert not all(torch.equal(v, final.state_dict()[k]) for k, v in G.state_dict().items())

    # the pickers offer it first, by step and score, never as the default
    choices = S.checkpoint_choices(run)
    assert choices[0]["kind"] == "best" and choices[0]["label"] == "best (step 8, FID 3)"
    assert not choices[0]["default"] and sum(e["default"] for e in choices) == 1
    assert [e["step"] for e in choices[1:]] == [12, 8, 4]
    assert S.load_generator(run, path=choices[0]["path"])[1]["kind"] == "best"


def test_failing_feature_space_logs_one_event_and_training_finishes(tmp_path, data):
    run = tmp_path / "run"
    assert not (data / "classifier.pt").exists()
    assert loop.main(["--data", str(data), "--run-dir", str(run), *TINY, "--kimg", "0.096"]) == 0
    assert json.loads((run / "status.json").read_text())["state"] == "finished"
    ev = [e for e in events(run) if e["event"] == "best_model_unavailable"]
    assert len(ev) == 1 and "classifier.pt" in ev[0]["reason"] and ev[0]["step"] == 4  # 3 checkpoints, 1 event
    assert not (run / "exports" / "best").exists() and (run / "exports" / "generator.json").is_file()
    assert all(e["kind"] != "best" for e in S.checkpoint_choices(run))
    with pytest.raises(FileNotFoundError, match="no best model"):
        S.load_generator(run, step="best")
    # best_metric off: no scoring at all, no event
    off = tmp_path / "off"
    assert loop.main(["--data", str(data), "--run-dir", str(off), *TINY, "--kimg", "0.032",
                      "--best-metric", "off"]) == 0
    assert not [e for e in events(off) if e["event"] == "best_model_unavailable"]


def test_quick_fid_equals_evaluate_fid_on_the_eval_split(monkeypatch, tmp_path):
    """The trainer's score is `evaluate --features domain --real-split eval` at equal N; `--step best` and
    `sample --step best` read exports/best."""
    from engine.__main__ import main
    from engine.data.dataset import load_prepared
    from engine.metrics.evaluate import EvalConfig, HeldOutFID, evaluate
    from tests.engine.test_metrics_evaluate import tiny_eval_setup

    run_dir, data_dir = tiny_eval_setup()  # 2 held-out eval patches per class, a `domain` classifier file
    data = load_prepared(data_dir)
    G, meta = S.load_generator(run_dir, step=4)
    q = HeldOutFID(data, n=256, res=G.res, device="cpu", batch=16)
    r = q(G)
    assert r["n"] == 18 == r["n_real"]  # best_n capped by the eval split's 18 patches
    assert r == q(G) and r["score"] > 0  # deterministic (fixed seeds, constant noise)
    report, _ = evaluate(EvalConfig(run_dir=str(run_dir), data=str(data_dir), metrics="fid", n=18, step="4",
                                    device="cpu"))
    assert report["metrics"]["fid"]["value"] == pytest.approx(r["score"], rel=1e-6)

    export_best(run_dir, G, dict(meta, step=4), {"step": 4, "metric": "fid_domain", "score": r["score"], "n": 18})
    G2, _ = load_generator_export(run_dir / "exports" / "best")
    assert all(torch.equal(v, G.state_dict()[k]) for k, v in G2.state_dict().items())
    report, _ = evaluate(EvalConfig(run_dir=str(run_dir), data=str(data_dir), metrics="fid", n=18, step="best",
                                    device="cpu"))
    assert report["checkpoint"]["kind"] == "best" and report["checkpoint"]["step"] == 4
    assert report["metrics"]["fid"]["value"] == pytest.approx(r["score"], rel=1e-6)
    out = tmp_path / "s"
    assert main(["sample", "--run-dir", str(run_dir), "--step", "best", "--seeds", "0-1", "--classes", "ADI",
                 "--out", str(out), "--device", "cpu"]) == 0
    want, _ = S.generate(G, [0], [0, 1])
    from PIL import Image
    got = np.stack([np.asarray(Image.open(p)) for p in sorted(out.glob("0000*_ADI_*.png"))])
    assert np.array_equal(got, want)
    with pytest.raises(Exception, match="'step' must be one of: latest, best"):
        EvalConfig(run_dir=str(run_dir), step="newest").check()
