"""The run-directory contract: where a run's files are, and how to read them. Everyone else calls this.

    runs/<run_id>/
      launch.json       the config as the UI / CLI launched it (validated, not resolved)
      config.json       the resolved config (preset and every value), written once before step 0
      status.json       the job's state (engine.jobs writes it: the launcher `queued`, the job the rest)
      name.txt          a display name (`rename`); the id, the directory, never changes
      metrics_gan.csv   one row per log interval (metrics_diffusion.csv for diffusion families)
      log.txt           the process's stdout/stderr
      samples/step_XXXXXXXX.png     the per-class grids
      checkpoints/step_XXXXXXXX.pt  full training states (+ latest.json)
      exports/generator.safetensors + generator.json   the EMA generator alone
      exports/best/     the best G_ema by the held-out quick FID (+ best.json)
      eval/<report id>.json  evaluation reports; eval/jobs/ their background jobs
      events.jsonl      watchdog and controller events
      stop              a stop request

No torch here: the pages call these on every rerun. The entries a run can sample from ("latest", a
step, "best") are decided here once; engine.sampling loads what an entry points at.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from engine.data.classes import NCT_CLASSES
from engine.utils import default_demo_dir, read_json, runs_root

RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
CKPT_RE = re.compile(r"^step_(\d{8,})\.pt$")  # 8 digits, more past step 99,999,999
GRID_RE = re.compile(r"^step_(\d{8,})\.png$")

LAUNCH = "launch.json"
CONFIG = "config.json"
STATUS = "status.json"
NAME = "name.txt"
LOG = "log.txt"
STOP = "stop"
EVENTS = "events.jsonl"
METRICS_GAN = "metrics_gan.csv"
METRICS_DIFFUSION = "metrics_diffusion.csv"
CHECKPOINTS = "checkpoints"
SAMPLES = "samples"
EXPORTS = "exports"
BEST = "best"
EVAL = "eval"
NAME_MAX = 80



# ----------------------------------------------------------------------------------------------
# Paths

def is_run_id(name: str) -> bool:
    """A run id is a directory name of letters, digits, '.', '_' and '-' (a run being deleted is renamed
    to `.deleting-...` first: no run any more)."""
    return RUN_ID_RE.fullmatch(name or "") is not None


def run_dir(run_id: str, root: str | os.PathLike | None = None) -> Path:
    if not is_run_id(run_id):
        raise ValueError(f"invalid run id {run_id!r}: use letters, digits, '.', '_' and '-'")
    return (Path(root) if root else runs_root()) / run_id


def grid_path(d: str | os.PathLike, step: int) -> Path:
    return Path(d) / SAMPLES / f"step_{int(step):08d}.png"


def checkpoint_path(d: str | os.PathLike, step: int) -> Path:
    return Path(d) / CHECKPOINTS / f"step_{int(step):08d}.pt"


def metrics_path(d: str | os.PathLike) -> Path:
    """The run's metrics CSV: metrics_diffusion.csv when the run writes one, else metrics_gan.csv."""
    d = Path(d)
    return d / METRICS_DIFFUSION if (d / METRICS_DIFFUSION).is_file() else d / METRICS_GAN


# ----------------------------------------------------------------------------------------------
# Config, status, name

def read_config(d: str | os.PathLike) -> dict:
    """The run's resolved config.json, else what it was launched with (launch.json), else {}."""
    d = Path(d)
    return read_json(d / CONFIG) or read_json(d / LAUNCH) or {}


def read_status(d: str | os.PathLike) -> dict:
    """status.json as it is on disk ({} when missing or half-written); liveness is engine.jobs' call."""
    return read_json(Path(d) / STATUS, {}) or {}


def read_name(d: str | os.PathLike) -> str:
    try:
        return (Path(d) / NAME).read_text(encoding="utf-8").strip()
    except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError):
        return ""


def family(d: str | os.PathLike) -> str:
    d = Path(d)
    return (read_json(d / EXPORTS / "generator.json") or {}).get("family") or \
        read_config(d).get("family") or "stylegan2"


# ----------------------------------------------------------------------------------------------
# Data set and class names

def data_dir(d: str | os.PathLike) -> Path:
    """The prepared data set a run trains on: its config's `data`, else the histosynth demo at its res
    (what the trainer uses when `data` is empty)."""
    cfg = read_config(d)
    if cfg.get("data"):
        return Path(cfg["data"])
    # the size engine.train.data.load_training_data prepares the demo at (histosynth renders 32-256 px)
    return default_demo_dir(min(max(int(cfg.get("res") or 64), 32), 256))


def class_names(d: str | os.PathLike, num_classes: int | None = None) -> list[str]:
    """A run's class names: its export's, else its data set's dataset.json, else NCT order for 9
    classes, else class0, class1, ..."""
    d = Path(d)
    names = (read_json(d / EXPORTS / "generator.json") or {}).get("class_names")
    if not names:
        names = (read_json(data_dir(d) / "dataset.json") or {}).get("class_names")
    if names and (num_classes is None or len(names) == num_classes):
        return list(names)
    n = num_classes if num_classes is not None else int(read_config(d).get("num_classes") or 9)
    return list(NCT_CLASSES) if n == 9 else [f"class{i}" for i in range(n)]


# ----------------------------------------------------------------------------------------------
# Entries: what a run can sample from

def checkpoint_files(d: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoints/step_*.pt, newest first."""
    ckdir = Path(d) / CHECKPOINTS
    if not ckdir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckdir.iterdir() if (m := CKPT_RE.match(p.name))]
    return sorted(found, reverse=True)


def best_info(d: str | os.PathLike) -> dict | None:
    """exports/best/best.json of a run ({"step", "kimg", "metric", "score", "n", ...}) when the best
    model is there whole (its weights and generator.json too), else None."""
    b = Path(d) / EXPORTS / BEST
    info = read_json(b / "best.json")
    if not isinstance(info, dict) or not (b / "generator.safetensors").is_file() or \
            not (b / "generator.json").is_file():
        return None
    return info


def best_label(info: dict) -> str:
    """"best (step 800, FID 12.3)": how the pickers name the best model."""
    metric = {"fid_domain": "FID"}.get(str(info.get("metric")), str(info.get("metric", "score")))
    score = info.get("score")
    return f"best (step {info.get('step')}, {metric} {score:.4g})" if isinstance(score, (int, float)) \
        else f"best (step {info.get('step')})"


def entries(d: str | os.PathLike) -> list[dict]:
    """What a run can sample from, newest first: its step_*.pt checkpoints and its export, then its
    best model (exports/best, when the trainer kept one).

    Returns [{"label": "step 1200 (checkpoint)", "step", "path", "kind": "checkpoint"|"export"|"best"}];
    at equal steps the export comes first (it is what a finished run samples from by default). The best
    entry also has "best" (its best.json).
    """
    d = Path(d)
    out = [{"label": f"step {s} (checkpoint)", "step": s, "path": str(p), "kind": "checkpoint"}
           for s, p in checkpoint_files(d)]
    meta = read_json(d / EXPORTS / "generator.json")
    if meta and (d / EXPORTS / "generator.safetensors").is_file():
        s = int(meta.get("step", 0))
        out.append({"label": f"step {s} (export)", "step": s, "path": str(d / EXPORTS), "kind": "export"})
    out = sorted(out, key=lambda e: (e["step"], e["kind"] == "export"), reverse=True)
    if (info := best_info(d)) is not None:
        out.append({"label": best_label(info), "step": int(info.get("step", 0)), "path": str(d / EXPORTS / BEST),
                    "kind": "best", "best": info})
    return out


# What the two kinds of file are, in the words the pickers show (Samples, Style mixing, Evaluate).
KIND_HELP = ("**export**: the EMA generator's weights alone, `exports/generator.safetensors` (+ "
             "`generator.json`): the file to share or to use for inference, rewritten at every snapshot "
             "and when the run ends. **checkpoint**: a full training snapshot, `checkpoints/step_*.pt` "
             "(both networks, optimisers, EMA, data position) from which a run resumes; its EMA generator is "
             "what is sampled. At the same step both hold the same EMA weights, so each step is listed once. "
             "**latest** follows the newest step while a run is going (the export once it finished). "
             "**best**: `exports/best/`, the EMA generator of the checkpoint with the lowest quick FID "
             "(`domain` features, held-out `eval` split) so far, with its step and score (the spec's "
             "`cgan_best_model.pt`).")


def has_entry(d: str | os.PathLike) -> bool:
    """Whether a run has anything to sample from (a checkpoint or an export)."""
    return bool(entries(d))


def is_finished(d: str | os.PathLike) -> bool:
    return read_status(d).get("state") == "finished"


def choices(d: str | os.PathLike, finished: bool | None = None) -> list[dict]:
    """`entries`, one per step (newest first): what a picker offers.

    A step with both a checkpoint and an export appears once, as the file the default entry prefers
    (the export when the run finished, else the checkpoint): both hold the same G_ema, so two entries
    would be the same step twice. Each entry gets "label" ("step 8 · export") and "default" (True for
    the one "latest" loads). `finished` defaults to the run's status.json. The best model, when the
    run has one, comes first: {"kind": "best", "label": "best (step N, FID x)"}, never the default (a
    picker offers it beside latest).
    """
    d = Path(d)
    if finished is None:
        finished = is_finished(d)
    prefer = "export" if finished else "checkpoint"
    by_step: dict[int, dict] = {}
    all_entries = entries(d)
    for e in all_entries:
        if e["kind"] != "best" and (e["step"] not in by_step or e["kind"] == prefer):
            by_step[e["step"]] = e
    out = [dict(e, label=f"step {s} · {e['kind']}", default=False)
           for s, e in sorted(by_step.items(), reverse=True)]
    if out:
        kinds = ["export", "checkpoint"] if finished else ["checkpoint", "export"]
        next(e for k in kinds for e in out if e["kind"] == k)["default"] = True
    best = [dict(e, default=False) for e in all_entries if e["kind"] == "best"]
    return best + out


def default_entry(d: str | os.PathLike, finished: bool | None = None) -> dict | None:
    """The entry "latest" means: the export of a finished run, else the newest checkpoint (the export
    when there is no checkpoint). None when the run has nothing to sample from."""
    return next((e for e in choices(d, finished) if e["default"]), None)


def find_entry(d: str | os.PathLike, step: int | str | None = None, path: str | os.PathLike | None = None
               ) -> dict:
    """The entry a (step, path) request names: `path` (an entry's "path") wins; step None / "latest" ->
    the export of a finished run, else the newest checkpoint (the export when there is none); "best" ->
    the best model; an int -> that step (its checkpoint first). FileNotFoundError names what is missing
    and what exists."""
    d = Path(d)
    es = entries(d)
    if not es:
        raise FileNotFoundError(f"run {d} has no checkpoint or export yet; wait for its first snapshot "
                                "or start a run on the Train page")
    if path is not None:
        chosen = next((e for e in es if Path(e["path"]) == Path(path)), None)
        if chosen is None:
            raise FileNotFoundError(f"{path} is not a checkpoint or export of run {d}")
        return chosen
    if step == "best":
        chosen = next((e for e in es if e["kind"] == "best"), None)
        if chosen is None:
            raise FileNotFoundError(f"step: run {d.name} has no best model (exports/best/) yet: the trainer "
                                    "keeps one at its checkpoints when best_metric is fid_domain and the data "
                                    "set's domain classifier exists (see events.jsonl)")
        return chosen
    if step is None or step == "latest":
        kinds = ["export", "checkpoint"] if is_finished(d) else ["checkpoint", "export"]
        return next((e for k in kinds for e in es if e["kind"] == k), es[0])
    found = [e for e in es if e["step"] == int(step)]
    if not found:
        raise FileNotFoundError(f"step: run {d.name} has no checkpoint at step {step}; available steps: "
                                f"{', '.join(str(s) for s in sorted({e['step'] for e in es}, reverse=True))}")
    return min(found, key=lambda e: (e["kind"] != "checkpoint", e["kind"] == "best"))


# ----------------------------------------------------------------------------------------------
# Grids and reports

def grids(d: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, path) of every samples/step_*.png, oldest first."""
    sd = Path(d) / SAMPLES
    if not sd.is_dir():
        return []
    return sorted((int(m.group(1)), p) for p in sd.iterdir() if (m := GRID_RE.match(p.name)))


def eval_dir(d: str | os.PathLike) -> Path:
    return Path(d) / EVAL


def eval_jobs_dir(d: str | os.PathLike) -> Path:
    return Path(d) / EVAL / "jobs"
