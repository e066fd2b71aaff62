"""Quality of the `demo` preset after a fixed wall time on the CPU. Prints ONE JSON line.

    python bench/demo_quality.py                              # the demo's budget: 10 min, 2 threads
    python bench/demo_quality.py --minutes 2 --set res=16     # a quicker look, any field overridable

What a first-time user gets: the histosynth demo set at the preset's resolution (prepared once, as the
app does), the `demo` preset as resolved on a CPU-only machine, trained by the real training loop
(`engine.train.loop.train`) until it finishes or --minutes of wall time have passed (then it is stopped
through its `stop` file, like the Stop button, and the checkpoint written then is evaluated). The data
set's real-trained classifier (`classifier.pt`, trained first when missing; its time is not counted)
then judges G_ema's patches: CAS per class (share assigned to the conditioned class) and KID per class
in the same `domain` space against the train split -- the `evaluate` command's own metrics.

Target: mean CAS >= 0.80 over the 9 classes and no class below 0.50 (a first run must show class-distinct
tissue, not blobs a real-trained classifier cannot tell apart).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TARGET_MEAN, TARGET_MIN = 0.80, 0.50


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="wall-time budget of the training run")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (the target: 2 cores)")
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a TrainConfig field (repeatable)")
    ap.add_argument("--per-class", type=int, default=100, help="generated patches per class to judge")
    ap.add_argument("--work", default="", help="runs + data root (default: a temporary directory; the "
                                               "demo set and its classifier are reused when it is kept)")
    args = ap.parse_args(argv)

    work = Path(args.work or tempfile.mkdtemp(prefix="demo_quality_"))
    os.environ.setdefault("HISTOGEN_DATA", str(work / "data"))
    os.environ.setdefault("HISTOGEN_RUNS", str(work / "runs"))
    import torch

    torch.set_num_threads(args.threads)
    from engine import config as C
    from engine.metrics.classifier import FILE_NAME, train_classifier
    from engine.metrics.evaluate import EvalConfig, evaluate
    from engine.train.data import load_training_data
    from engine.train.loop import default_run_dir, train

    overrides = dict(s.split("=", 1) for s in args.set)
    cfg = C.from_dict(C.TrainConfig, {**C.preset_values(args.preset), **overrides, "device": "cpu"})
    data = load_training_data(cfg)  # the demo set at the preset's resolution, as the app prepares it
    clf_path = Path(data.root) / FILE_NAME
    clf = None
    if not clf_path.is_file():
        t = time.perf_counter()
        meta = train_classifier(data.root, device="cpu")
        clf = {"val_acc": meta["val_acc"], "train_s": round(time.perf_counter() - t, 1)}
    cfg.run_dir = str(default_run_dir(cfg))
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

    timer = threading.Timer(args.minutes * 60, lambda: (run_dir / "stop").touch())  # the Stop button
    timer.daemon = True
    t0 = time.perf_counter()
    timer.start()
    train(cfg)
    timer.cancel()
    wall_s = time.perf_counter() - t0
    status = json.loads((run_dir / "status.json").read_text())

    report, _ = evaluate(EvalConfig(run_dir=str(run_dir), step="latest", metrics="cas,kid", by_class=True,
                                    n=args.per_class * 9, real_split="train", features="domain",
                                    device="cpu", kid_subsets=50))
    cas, kid = report["metrics"]["cas"], report["metrics"]["kid"]
    per_class = {n: round(v["cas"], 3) for n, v in cas["per_class"].items()}
    kid_pc = {n: round(v["mean"], 4) for n, v in (kid.get("per_class") or {}).items() if "mean" in v}
    out = {"bench": "demo_quality", "preset": args.preset, "overrides": overrides, "threads": args.threads,
           "minutes": args.minutes, "wall_s": round(wall_s, 1), "state": status["state"],
           "step": status.get("step"), "kimg": status.get("kimg"), "res": cfg.res, "batch": cfg.batch,
           "cas_mean": round(cas["cas"], 3), "cas_min": round(min(per_class.values()), 3),
           "cas_per_class": per_class, "classifier_real_accuracy": cas.get("real_accuracy"),
           "kid_per_class": kid_pc, "kid": None if kid.get("mean") is None else round(kid["mean"], 4), "classifier_trained": clf,
           "target": {"cas_mean": TARGET_MEAN, "cas_min": TARGET_MIN},
           "meets_target": cas["cas"] >= TARGET_MEAN and min(per_class.values()) >= TARGET_MIN,
           "run_dir": str(run_dir)}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
