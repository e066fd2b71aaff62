"""Review studies, the researcher's side: build one from runs (synthetic) and their data sets' held-out
`eval` split (real), invite reviewers, follow progress, close, archive, export. The reviewer's side
(`reviewer_view`, `submit`) lives in engine.review.reviewer and is re-exported here.

A study is a folder `<runs root>/.review/<study id>/patches/<patch id>.png` plus rows in the store
(engine.review.store). Blinding:
- Patch ids and file names are 16 random hex digits; files are written in a shuffled order.
- Real and synthetic patches pass through one function (`_encode`: `resize_uint8` to the display size,
  then `png_bytes`), so they have the same size and a PNG with no text chunks or EXIF.
- A reviewer's order is a permutation of the study's patch ids seeded by the reviewer's own seed
  (`reviewer.display_order`): it depends on nothing else, so it is random with respect to the truth and
  the same after the browser is closed (resumable).
- The truth goes into its own table; only the functions here (export, progress, stats) read it.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import secrets
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np

from engine import config as C
from engine.config import ConfigError, StudyConfig
from engine.review.reviewer import (BAD_TOKEN, CLOSED, EXPIRED, QUESTIONS, display_order, reviewer_view,
                                    submit, token_hash)
from engine.review.store import ReviewError, Store, is_past, now_iso, open_store, review_root
from engine.utils import atomic_write_bytes, atomic_write_text, runs_root

__all__ = ["BAD_TOKEN", "CLOSED", "EXPIRED", "EXPORT_COLUMNS", "QUESTIONS", "ReviewError", "StudyConfig",
           "answers_frame", "archive_study", "close_study", "create_study", "display_order", "export_csv",
           "export_rows", "get_study", "invite", "list_studies", "progress", "reviewer_view", "submit",
           "token_hash"]

EXPORT_COLUMNS = ("study", "reviewer", "reviewer_id", "patch", "real_or_synthetic", "confidence", "realism",
                  "class", "comment", "answered_at", "revision", "source", "true_class", "run", "step", "seed",
                  "psi", "data", "item", "correct")


# ----------------------------------------------------------------------------------------------
# The study's settings (one name per idea: field = CLI flag = JSON key in the study's spec)

def _parse_step(text: Any) -> str | int:
    """RUN@STEP's step: "latest", "best" or a step number (the one step rule of engine.config)."""
    s = C.canonical_step(text)
    if not re.fullmatch(C.STEP_PATTERN, s):
        raise ConfigError(f"step must be latest, best or a step number (got {text!r})")
    return int(s) if s.isdigit() else s


def _resolve_run(spec: str, default_step: str) -> tuple[Path, str | int]:
    name, _, step = spec.partition("@")
    p = Path(name).expanduser()
    d = p if p.is_dir() else runs_root() / name
    if not (d / "config.json").is_file() and not (d / "exports").is_dir():
        raise ConfigError(f"runs: {name!r} is not a run (looked for {d}); give a run id under {runs_root()} "
                          "or a run directory")
    return d.resolve(), _parse_step(step or default_step)


# ----------------------------------------------------------------------------------------------
# Creating a study

def _encode(images: np.ndarray, display_size: int) -> list[bytes]:
    """THE path every patch takes to the reviewer, real or synthetic: one resize, one PNG encoder
    (PIL, no text chunks, no EXIF)."""
    from engine.images import png_bytes, resize_uint8  # torch: only when patches are made

    return [png_bytes(im) for im in resize_uint8(images, display_size)]


def _study_id(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "study"
    return f"{slug}-{secrets.token_hex(3)}"


def _class_list(wanted: list[str], names: list[str]) -> list[str]:
    if not wanted or [w.lower() for w in wanted] == ["all"]:
        return list(names)
    upper = {n.upper(): n for n in names}
    out = []
    for w in wanted:
        if w.upper() not in upper:
            raise ConfigError(f"classes: unknown class {w!r}; choose from {', '.join(names)}")
        out.append(upper[w.upper()])
    return list(dict.fromkeys(out))


def create_study(cfg: StudyConfig | dict, store: Store | None = None,
                 progress: Callable[[str], None] | None = None) -> dict:
    """Build a study: draw the patches, write them blinded into the study folder, store the truth apart.

    Synthetic: `synthetic_per_class` per class and run, seeds seed, seed+1, ..., truncation `psi`, from
    each run's checkpoint (`step`, or RUN@STEP). Real: `real_per_class` per class from the held-out
    `eval` split of every data set the runs train on, first brought to the smallest resolution of the
    runs that use it (so no real patch shows more detail than the synthetic ones beside it).
    Returns {"id", "name", "dir", "patches", "synthetic", "real", "warnings", "tokens"} - the tokens
    (when `reviewers` > 0) are shown here once and never again.
    """
    from engine import runs as R
    from engine.data.dataset import load_prepared, real_tiles
    from engine.images import resize_uint8
    from engine.sampling import generate, load_generator

    cfg = C.from_dict(StudyConfig, cfg) if isinstance(cfg, dict) else C.validate(cfg)
    store = store or open_store()
    say = progress or (lambda msg: None)
    warnings: list[str] = []

    # 1. the generators, and the classes every run and data set must have
    gens = []
    for spec in cfg.runs:
        d, step = _resolve_run(spec, cfg.step)
        say(f"loading {d.name} ({step})")
        try:
            G, meta = load_generator(d, step=step, device=cfg.device)
        except (FileNotFoundError, ValueError) as e:
            raise ConfigError(f"runs: {d.name}: {e}") from None
        gens.append((d, G, meta))
    classes = _class_list(cfg.classes, list(gens[0][2]["class_names"]))
    for d, _, meta in gens:
        missing = [c for c in classes if c not in meta["class_names"]]
        if missing:
            raise ConfigError(f"runs: {d.name} has no class {', '.join(missing)} "
                              f"(its classes: {', '.join(meta['class_names'])})")

    images: list[bytes] = []
    truth: list[dict] = []
    # 2. synthetic patches, (class, seed) pairs as on the Samples page
    seeds = list(range(cfg.seed, cfg.seed + cfg.synthetic_per_class))
    for d, G, meta in gens:
        if not seeds:
            break
        say(f"generating {len(classes) * len(seeds)} patches from {d.name}")
        idx = [list(meta["class_names"]).index(c) for c in classes]
        ims, recs = generate(G, idx, seeds, truncation=cfg.truncation)
        images += _encode(ims, cfg.display_size)
        truth += [{"source": "synthetic", "class": meta["class_names"][r["class_index"]], "run": d.name,
                   "step": int(meta.get("step", 0)), "seed": int(r["seed"]), "psi": float(cfg.truncation)}
                  for r in recs]

    # 3. real patches from each data set's held-out eval split
    by_data: dict[Path, list[int]] = {}
    for d, G, _ in gens:
        by_data.setdefault(Path(R.data_dir(d)).expanduser().resolve(), []).append(int(G.res))
    for data_path, resolutions in by_data.items() if cfg.real_per_class else ():
        data = load_prepared(data_path)
        if not data.eval_disjoint:
            raise ConfigError(f"data set {data_path} has no held-out eval split (it was prepared before eval "
                              "was held out, so its eval patches were trained on); prepare it again to use "
                              "it in a review study")
        missing = [c for c in classes if c not in data.class_names]
        if missing:
            raise ConfigError(f"data set {data_path} has no class {', '.join(missing)}")
        res = min(resolutions)
        for c in classes:
            tiles = real_tiles(data, c, cfg.real_per_class, seed=cfg.seed, split="eval")
            if len(tiles) == 0:
                raise ConfigError(f"data set {data_path}: the eval split has no {c} patch; prepare it with "
                                  "more patches per class or a larger eval_frac")
            if len(tiles) < cfg.real_per_class:
                warnings.append(f"{data_path.name}: the eval split holds only {len(tiles)} {c} patches "
                                f"({cfg.real_per_class} asked)")
            images += _encode(resize_uint8(tiles, res), cfg.display_size)
            # item k = the k-th tile of real_tiles(data, c, real_per_class, seed=seed, split="eval")
            truth += [{"source": "real", "class": c, "data": str(data_path), "item": k} for k in range(len(tiles))]

    # 4. blinded ids and files, in a shuffled order (not even mtimes follow the truth)
    study_id = _study_id(cfg.name)
    while (review_root() / study_id).exists():  # never write into (or clean up) another study's folder
        study_id = _study_id(cfg.name)
    sdir = review_root() / study_id
    order = list(range(len(images)))
    secrets.SystemRandom().shuffle(order)
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < len(images):
        pid = secrets.token_hex(8)
        if pid not in seen:
            seen.add(pid)
            ids.append(pid)
    patches, truth_rows = [], []
    try:
        say(f"writing {len(images)} patches to {sdir}")
        for pid, i in zip(ids, order):
            atomic_write_bytes(sdir / "patches" / f"{pid}.png", images[i])
            patches.append({"id": pid, "file": f"patches/{pid}.png"})
            truth_rows.append({"patch_id": pid, **truth[i]})
        spec = {"config": C.to_dict(cfg), "classes": classes, "warnings": warnings,
                "runs": [{"run": d.name, "dir": str(d), "step": int(m.get("step", 0)), "kind": m.get("kind"),
                          "res": int(G.res)} for d, G, m in gens],
                "data": [str(p) for p in by_data]}
        atomic_write_text(sdir / "study.json", json.dumps({"id": study_id, **spec}, indent=2) + "\n")
        store.add_study({"id": study_id, "name": cfg.name, "created_at": now_iso(), "dir": str(sdir),
                         "spec": json.dumps(spec)}, patches, truth_rows)
    except BaseException:
        shutil.rmtree(sdir, ignore_errors=True)
        raise
    tokens = invite(study_id, cfg.reviewers, expires_days=cfg.expires_days, store=store) if cfg.reviewers else []
    n_syn = sum(t["source"] == "synthetic" for t in truth)
    return {"id": study_id, "name": cfg.name, "dir": str(sdir), "patches": len(images), "synthetic": n_syn,
            "real": len(images) - n_syn, "warnings": warnings, "tokens": tokens}


# ----------------------------------------------------------------------------------------------
# The researcher's side

def _study(study: str, store: Store) -> dict:
    """A study by id, or by name when one study has that name."""
    row = store.get_study(study)
    if row is None:
        named = [s for s in store.list_studies() if s["name"] == study]
        if len(named) == 1:
            row = named[0]
        elif named:
            raise ReviewError(f"several studies are named {study!r}; use an id: "
                              + ", ".join(s["id"] for s in named))
        else:
            raise ReviewError(f"there is no study {study!r}; `python -m engine review list` shows them")
    row = dict(row)
    row["spec"] = json.loads(row["spec"]) if isinstance(row["spec"], str) else row["spec"]
    return row


def get_study(study: str, store: Store | None = None) -> dict:
    """A study's row (id, name, state, created_at, dir) with its spec decoded (config, classes, runs ...)."""
    return _study(study, store or open_store())


def list_studies(include_archived: bool = False, store: Store | None = None) -> list[dict]:
    """[{"id", "name", "state", "created_at", "dir", "patches", "reviewers", "answers", "runs"}], newest first."""
    out = []
    for s in (store or open_store()).list_studies():
        if s["state"] == "archived" and not include_archived:
            continue
        spec = json.loads(s.pop("spec"))
        out.append({**s, "runs": [r["run"] for r in spec.get("runs", [])]})
    return out


def invite(study: str, n: int, expires_days: float = 0.0, labels: list[str] | None = None,
           store: Store | None = None) -> list[dict]:
    """Make `n` reviewer tokens for a study. Returns [{"reviewer", "label", "token", "expires_at"}]:
    the tokens appear here only (the store keeps their sha256)."""
    store = store or open_store()
    s = _study(study, store)
    if s["state"] != "open":
        raise ReviewError(f"study {s['id']} is {s['state']}; only an open study takes new reviewers")
    n = int(n)
    if not 1 <= n <= 1000:
        raise ReviewError(f"reviewers must be between 1 and 1000 (got {n})")
    if labels is not None and len(labels) != n:
        raise ReviewError(f"{len(labels)} labels given for {n} reviewers")
    have = len(store.reviewers(s["id"]))
    expires = None
    if expires_days and expires_days > 0:
        expires = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=float(expires_days))).isoformat(
            timespec="seconds")
    rows, out = [], []
    for i in range(n):
        token = secrets.token_urlsafe(32)
        rid = secrets.token_hex(8)
        label = labels[i] if labels else f"reviewer {have + i + 1}"
        rows.append({"id": rid, "study_id": s["id"], "label": label, "token_hash": token_hash(token),
                     "seed": secrets.randbits(62), "created_at": now_iso(), "expires_at": expires})
        out.append({"reviewer": rid, "label": label, "token": token, "expires_at": expires})
    store.add_reviewers(rows)
    return out


def progress(study: str, store: Store | None = None) -> list[dict]:
    """Per reviewer: {"reviewer", "label", "answered", "total", "state", "last_answered_at", "expires_at"}
    with state one of: not started, in progress, finished, expired, revoked."""
    store = store or open_store()
    s = _study(study, store)
    total = len(store.study_patches(s["id"]))
    out = []
    for r in store.reviewers(s["id"]):
        state = ("revoked" if r["revoked_at"] else "finished" if r["answered"] >= total else
                 "expired" if is_past(r["expires_at"]) else
                 "in progress" if r["answered"] else "not started")
        out.append({"reviewer": r["id"], "label": r["label"], "answered": r["answered"], "total": total,
                    "state": state, "last_answered_at": r["last_answered_at"], "expires_at": r["expires_at"]})
    return out


def close_study(study: str, store: Store | None = None) -> dict:
    """No more answers: every later submit gets one sentence saying the study is closed."""
    store = store or open_store()
    s = _study(study, store)
    store.set_state(s["id"], "closed", allowed_from=("open",))
    return _study(s["id"], store)


def archive_study(study: str, store: Store | None = None) -> dict:
    """Close (if open) and archive: the answers (answers.csv) and statistics (stats.json) are written into
    the study folder, and the study leaves `list_studies` (include_archived=True still lists it)."""
    from engine.review import stats

    store = store or open_store()
    s = _study(study, store)
    if s["state"] == "open":
        store.set_state(s["id"], "closed", allowed_from=("open",))
    sdir = Path(s["dir"])
    export_csv(s["id"], sdir / "answers.csv", store=store)
    summary = stats.summarize(answers_frame(s["id"], store=store), s["spec"]["classes"])
    atomic_write_text(sdir / "stats.json", json.dumps(summary, indent=2, default=str) + "\n")
    store.set_state(s["id"], "archived", allowed_from=("closed",))
    return _study(s["id"], store)


def export_rows(study: str, store: Store | None = None) -> list[dict]:
    """Every current answer joined with its patch's truth, with `correct` (answer == source, or None)."""
    store = store or open_store()
    rows = store.export_rows(_study(study, store)["id"])
    for r in rows:
        r["correct"] = None if r["real_or_synthetic"] is None else int(r["real_or_synthetic"] == r["source"])
    return [{k: r.get(k) for k in EXPORT_COLUMNS} for r in rows]


def answers_frame(study: str, store: Store | None = None):
    """`export_rows` as a pandas DataFrame with the EXPORT_COLUMNS (what engine.review.stats reads)."""
    import pandas as pd

    return pd.DataFrame(export_rows(study, store), columns=list(EXPORT_COLUMNS))


def export_csv(study: str, out: str | Path | None = None, store: Store | None = None) -> str:
    """The answers joined with the truth as CSV text (EXPORT_COLUMNS); written atomically to `out` if given."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(EXPORT_COLUMNS), lineterminator="\n")
    w.writeheader()
    w.writerows(export_rows(study, store))
    if out is not None:
        atomic_write_text(out, buf.getvalue())
    return buf.getvalue()
