"""`python -m engine prepare`: a data source -> a prepared data set directory (uint8 cache + splits).

    DIR/images.npy          (N, size, size, 3) uint8, memory-mappable (np.load(..., mmap_mode="r"))
    DIR/labels.npy          (N,) int64 class indices into dataset.json's class_names
    DIR/splits/<s>.npy      sorted int64 indices for s in train, val, test, eval: a partition of the patches
                            (sets made before dataset.json had "eval_disjoint" keep eval as a subset of train)
    DIR/files.csv           index, split, class, source (file path or histosynth patch name)
    DIR/dataset.json        source, sizes, classes, counts, rejects, settings (see `prepare`)

Everything is written into a temp directory beside DIR and renamed into place at the end, so a crash
never leaves a half-written DIR and an existing DIR is replaced only by a complete new one.
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import shutil
import time
import uuid
from collections import Counter, defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from engine import config as C
from engine.config import ConfigError, PrepareConfig
from engine.data import quality
from engine.data.classes import SPLITS
from engine.data.sources import (IMAGE_EXTS, Reject, Source, display_name, fit_square, open_source,
                                 open_test_source)
from engine.utils import data_root, fsync_dir, read_json

MAX_EXAMPLES = 5  # example paths kept per reject reason
Progress = Callable[[int, int, str], None]


def default_out(cfg: PrepareConfig) -> Path:
    """<data root>/histosynth-<size> or <data root>/<folder name>-<size>."""
    name = "histosynth" if cfg.source == "histosynth" else Path(cfg.source[len("folder:"):]).name or "folder"
    return data_root() / f"{name}-{cfg.size}"


# ----------------------------------------------------------------------------------------------
# Splits

def _split_sizes(n: int, val_frac: float, test_frac: float) -> tuple[int, int]:
    # Classes of 3+ patches get at least one val/test patch when the fraction is > 0, so every class
    # is measured; train always keeps at least one.
    k = [0 if f <= 0 or n < 3 else max(1, round(n * f)) for f in (val_frac, test_frac)]
    while sum(k) > n - 1:
        k[int(k[1] > k[0])] -= 1
    return k[0], k[1]


def make_splits(labels: np.ndarray, val_frac: float, test_frac: float, eval_frac: float,
                seed: int) -> dict[str, np.ndarray]:
    """Stratified, seeded splits: sorted index arrays; train/val/test/eval partition all indices.

    `eval` is the real side of the metrics (FID/KID/LPIPS, the trainer's best model), so it is held out
    like val and test (spec 1.3): a generator is never scored against the patches it trained on. Each
    fraction is of the class; val/test keep their sizes of before (at least one from 3 patches), eval
    takes its share of what is left, from 4 patches (train always keeps at least one)."""
    rng = np.random.default_rng([seed, 0x5EED])
    out: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        nv, nt = _split_sizes(len(idx), val_frac, test_frac)
        rest = len(idx) - nv - nt
        ne = 0 if eval_frac <= 0 or rest < 2 else min(rest - 1, max(1, round(len(idx) * eval_frac)))
        out["val"].append(idx[:nv])
        out["test"].append(idx[nv:nv + nt])
        out["eval"].append(idx[nv + nt:nv + nt + ne])
        out["train"].append(idx[nv + nt + ne:])
    return {s: np.sort(np.concatenate(v)).astype(np.int64) if v else np.zeros(0, np.int64)
            for s, v in out.items()}


# ----------------------------------------------------------------------------------------------
# Writing

def _shrink_npy(path: Path, n: int) -> None:
    """Cut an .npy written with more rows than used down to its first n rows, in place.

    The header is rewritten at its original length (padded with spaces, as the format allows) so the
    data offset stays put; then the file is truncated. Avoids copying a multi-GB cache.
    """
    with open(path, "r+b") as f:
        version = np.lib.format.read_magic(f)
        shape, fortran, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                                 else np.lib.format.read_array_header_2_0(f))
        offset = f.tell()
        shape = (n,) + tuple(shape[1:])
        head = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": fortran, "shape": shape})
        prefix = 10 if version == (1, 0) else 12
        head = head.ljust(offset - prefix - 1) + "\n"
        f.seek(prefix - (2 if version == (1, 0) else 4))
        f.write(len(head).to_bytes(prefix - 8, "little") + head.encode("latin1"))
        f.truncate(offset + n * int(np.prod(shape[1:])) * dtype.itemsize)


def _fsync_tree(root: Path) -> None:
    for p in root.rglob("*"):
        if p.is_file():
            with open(p, "rb+") as f:
                os.fsync(f.fileno())
    for d in [root, *[p for p in root.rglob("*") if p.is_dir()]]:
        fsync_dir(d)


def _check_replaceable(out: Path) -> None:
    # Never delete a directory we did not make: only an empty one or a prepared data set is replaced.
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or (out / "dataset.json").is_file())):
        raise ConfigError(f"config field 'out': {out} exists and is not a prepared data set (no dataset.json); "
                          "choose another path or remove it")


def _swap_into_place(tmp: Path, out: Path) -> None:
    # rename() cannot replace a non-empty directory, so the old one steps aside first; a crash between
    # the two renames leaves both complete copies beside `out`, never a partial one.
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    fsync_dir(out.parent)
    shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# Per-item work, inline or in worker processes

PARALLEL_MIN = 256  # below this many items, starting worker processes costs more than it saves
_job: tuple | None = None  # (source, cfg, normalizer) of this worker process


def _init_worker(job: tuple) -> None:
    global _job
    _job = job


def _one(k: int, job: tuple | None = None) -> tuple[np.ndarray | None, str, str]:
    """Item k -> (patch, "" or "stain_passed_through", "") or (None, reject reason, detail)."""
    src, cfg, normalizer = job or _job
    try:
        img = src.load(k, cfg.size, cfg.min_size or cfg.size)
    except Reject as r:
        return None, r.reason, r.detail
    if cfg.quality_filter and (why := quality.check(img, cfg)):
        return None, why, ""
    patch = fit_square(img, cfg.size)
    if normalizer is None:
        return patch, "", ""
    out = normalizer(patch)
    return out, "stain_passed_through" if out is patch else "", ""


@contextmanager
def _results(src: Source, cfg: PrepareConfig, normalizer, total: int) -> Iterator:
    """Results of `_one` for every item, in item order (so the output does not depend on `workers`)."""
    workers = cfg.workers or min(8, os.cpu_count() or 1)
    job = (src, cfg, normalizer)
    if workers <= 1 or total < PARALLEL_MIN:
        yield (_one(k, job) for k in range(total))
        return
    import multiprocessing as mp

    # spawn, not fork: prepare also runs inside the Streamlit server, whose threads must not be forked.
    with mp.get_context("spawn").Pool(workers, _init_worker, (job,)) as pool:
        yield pool.imap(_one, range(total), chunksize=16)


# ----------------------------------------------------------------------------------------------
# Prepare

def prepare(cfg: PrepareConfig, progress: Progress | None = None) -> Path:
    """Read `cfg.source`, filter, normalise, split and cache it; return the prepared directory.

    `progress(done, total, message)` is called as items are processed (a few hundred times at most).
    Raises ConfigError (one sentence naming the field or path) for a bad source, and when no usable
    image remains. dataset.json records: source, synthetic (+ synthetic_label), size, class_names,
    num_images, counts {split: {class: n}}, eval_disjoint (true: the four splits are disjoint),
    rejected {reason: n}, rejected_examples {reason: [path]}, empty_classes, dropped_classes,
    quality_filter, stain_norm, seed, created_at and the config; with `test_source` also test_source,
    test_rejected, test_rejected_examples, test_empty_classes and test_missing_classes (main classes
    the test folder has no usable patch of: their test count is 0).
    """
    from filelock import FileLock

    C.validate(cfg)
    src = open_source(cfg.source, cfg.per_class, cfg.seed, cfg.size)
    # The per_class cap applies to the test folder too (a quick look at a large validation set).
    test = open_test_source(cfg.test_source, src, cfg.per_class, cfg.seed) if cfg.test_source else None
    out = (Path(cfg.out).expanduser() if cfg.out else default_out(cfg)).resolve()
    _check_replaceable(out)
    normalizer = None
    if cfg.stain_norm != "none":
        from engine.data.stain import StainNormalizer, load_reference

        normalizer = StainNormalizer(cfg.stain_norm, load_reference(cfg.stain_reference))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    with FileLock(str(out.parent / f".{out.name}.lock")):  # one writer per DIR (UI and CLI may race)
        # Holding the lock, any temp or old copy beside DIR is debris of a killed run: clear it.
        for junk in [*out.parent.glob(f".{out.name}.tmp-*"), *out.parent.glob(f".{out.name}.old-*")]:
            shutil.rmtree(junk, ignore_errors=True)
        try:
            _write(cfg, src, normalizer, tmp, progress, test)
            _check_replaceable(out)
            _swap_into_place(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return out


class _Rejects:
    """Rejected files by reason, with a few example paths each (one per source: main and test folder)."""

    def __init__(self):
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = defaultdict(list)

    def __call__(self, reason: str, ref: str, detail: str = "") -> None:
        self.counts[reason] += 1
        if len(self.examples[reason]) < MAX_EXAMPLES:
            ref = display_name(ref)  # dataset.json and the summary are UTF-8 text (see display_name)
            self.examples[reason].append(f"{ref} ({display_name(detail)})" if detail else ref)

    def total(self) -> int:
        return sum(self.counts.values())


def _nothing_usable(src: Source, rejected: _Rejects, field: str = "") -> ConfigError:
    where = (f"config field '{field}': " if field else "") + (display_name(src.root) if src.root else src.name)
    if not rejected.counts:
        return ConfigError(f"nothing usable in {where}: its class folders hold no image files "
                           f"({', '.join(IMAGE_EXTS)})")
    why = ", ".join(f"{r} {k}" for r, k in rejected.counts.most_common())
    return ConfigError(f"nothing usable in {where}: every file was rejected ({why})")


def _write(cfg: PrepareConfig, src: Source, normalizer, tmp: Path, progress: Progress | None,
           test: tuple[Source, list[str]] | None = None) -> None:
    test_src = test[0] if test else None
    sources = [src] + ([test_src] if test_src else [])
    size, total = cfg.size, sum(len(s.items) for s in sources)
    (tmp / "splits").mkdir(parents=True)
    rejects = [_Rejects() for _ in sources]  # the test folder's are counted apart (test_rejected)
    for r, s in zip(rejects, sources):
        for reason, ref in s.skipped:
            r(reason, ref)
    # Stream into a memmap sized for every item, then cut it to the kept count: 100k patches never sit
    # in RAM, and no second copy of the cache is made. The main source's patches come first, then the
    # test folder's (the same filter, normalisation and resize: one code path).
    images = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8,
                                       shape=(max(total, 1), size, size, 3))
    labels, refs, n, passed, done = [], [], 0, 0, 0
    kept_per_source = []
    step, last = max(1, total // 200), 0.0
    for s, reject in zip(sources, rejects):
        n0 = n
        with _results(s, cfg, normalizer, len(s.items)) as results:
            for k, (patch, why, detail) in enumerate(results, 1):
                c, ref = s.items[k - 1]
                done += 1
                if patch is None:
                    reject(why, ref, detail)
                else:
                    images[n] = patch
                    labels.append(c)
                    refs.append(ref)
                    n += 1
                    passed += why == "stain_passed_through"
                if progress and (done % step == 0 or done == total) and \
                        (time.monotonic() - last > 0.05 or done == total):
                    last = time.monotonic()
                    what = "test: " if s is test_src else ""
                    progress(done, total, f"{what}{s.class_names[c]}: {n - n0} kept, {reject.total()} rejected")
        kept_per_source.append(n - n0)
    n_main = kept_per_source[0]
    if n_main == 0:
        raise _nothing_usable(src, rejects[0])
    if test_src is not None and kept_per_source[1] == 0:
        raise _nothing_usable(test_src, rejects[1], "test_source")

    # Classes left without a single usable image (of the main source) are dropped, so every listed
    # class can be sampled; test patches of such a class are dropped with it (test_rejected).
    kept = sorted(set(labels[:n_main]))
    remap = {old: new for new, old in enumerate(kept)}
    if test_src is not None:  # compact the test rows in place (row w <= row j: nothing is overwritten early)
        w = n_main
        for j in range(n_main, n):
            if labels[j] in remap:
                if w != j:
                    images[w] = images[j]
                labels[w], refs[w] = labels[j], refs[j]
                w += 1
            else:
                rejects[1]("class_dropped", refs[j], f"class {src.class_names[labels[j]]} has no usable "
                                                      "patch in the main source")
        del labels[w:], refs[w:]
        n = w
    images.flush()
    del images
    _shrink_npy(tmp / "images.npy", n)
    class_names = [src.class_names[c] for c in kept]
    dropped = [name for c, name in enumerate(src.class_names) if c not in remap]
    labels_a = np.array([remap[c] for c in labels], dtype=np.int64)
    np.save(tmp / "labels.npy", labels_a)
    # With a test folder, the main source gives train/val/eval only (test_frac is not used).
    splits = make_splits(labels_a[:n_main], cfg.val_frac, 0.0 if test_src else cfg.test_frac, cfg.eval_frac,
                         cfg.seed)
    if test_src is not None:
        splits["test"] = np.arange(n_main, n, dtype=np.int64)
    for s, idx in splits.items():
        np.save(tmp / "splits" / f"{s}.npy", idx)
    split_of = np.empty(n, dtype=object)
    for s in SPLITS:
        split_of[splits[s]] = s
    with open(tmp / "files.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["index", "split", "class", "source"])
        # display_name: a file name that is not valid UTF-8 is written escaped instead of crashing here
        w.writerows((i, split_of[i], class_names[labels_a[i]], display_name(refs[i])) for i in range(n))

    info = {
        "format": 1,
        "source": src.name,
        "synthetic": src.synthetic,
        "synthetic_label": src.synthetic_label,
        "size": size,
        "class_names": class_names,
        "num_images": n,
        "counts": {s: {name: int((labels_a[idx] == c).sum()) for c, name in enumerate(class_names)}
                   for s, idx in splits.items()},
        # eval is held out like val/test (spec 1.3); a set without these keys has eval inside train
        "eval_subset_of": None,
        "eval_disjoint": True,
        "rejected": dict(rejects[0].counts.most_common()),
        "rejected_examples": dict(rejects[0].examples),
        "empty_classes": src.empty_classes,
        "dropped_classes": dropped,
        "test_source": test_src.name if test_src else None,
        "quality_filter": {"enabled": cfg.quality_filter, "measured_on": "native resolution",
                           **{f: getattr(cfg, f) for f in quality.REASONS.values()}},
        "stain_norm": {"method": cfg.stain_norm, "reference": cfg.stain_reference or None,
                       "passed_through": passed},
        "seed": cfg.seed,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "config": C.to_dict(cfg),
    }
    if test_src is not None:
        counts_test = info["counts"]["test"]
        info.update(test_rejected=dict(rejects[1].counts.most_common()),
                    test_rejected_examples=dict(rejects[1].examples),
                    test_empty_classes=test_src.empty_classes,
                    test_missing_classes=[c for c in class_names if counts_test.get(c, 0) == 0])
    # A plain write: the whole temp dir is renamed into place atomically.
    (tmp / "dataset.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    _fsync_tree(tmp)


# ----------------------------------------------------------------------------------------------
# CLI

def eval_disjoint(info: dict) -> bool:
    """Whether a data set's `eval` split is held out (disjoint from train); sets prepared before that
    (no "eval_disjoint" key, "eval_subset_of": "train") keep their eval inside train."""
    return bool(info.get("eval_disjoint", False))


def summary_table(info: dict) -> str:
    """Per-class counts per split, totals, and the rejects, as fixed-width text."""
    names = info["class_names"]
    w = max(5, *(len(n) for n in names))
    head = f"{'class':<{w}} " + " ".join(f"{s:>7}" for s in SPLITS) + f" {'total':>7}"
    rows = [head, "-" * len(head)]
    counts = info["counts"]
    disjoint = eval_disjoint(info)
    summed = SPLITS if disjoint else SPLITS[:3]
    for name in names + ["total"]:
        vals = {s: sum(counts[s].values()) if name == "total" else counts[s][name] for s in SPLITS}
        rows.append(f"{name:<{w}} " + " ".join(f"{vals[s]:>7}" for s in SPLITS)
                    + f" {sum(vals[s] for s in summed):>7}")
    rows.append("(eval is held out for the metrics: the four splits are disjoint; total = all four)" if disjoint
                else "(eval is a subset of train: this set was prepared before eval was held out; prepare it "
                     "again for a held-out eval; total = train + val + test)")
    if info.get("test_source"):
        rows.append(f"test split: from {info['test_source']} (test_frac not used)")
    for key, what in (("rejected", ""), ("test_rejected", "test folder ")):
        if key == "test_rejected" and not info.get("test_source"):
            continue
        rej, examples = info.get(key) or {}, info.get(f"{key}_examples") or {}
        rows.append(f"{what}rejected: " + ("none" if not rej else f"{sum(rej.values())} files"))
        for r, k in rej.items():
            ex = (examples.get(r) or [""])[0]
            rows.append(f"  {r:<21} {k:>7}" + (f"  e.g. {ex[:160]}" if ex else ""))
    for key, label in (("empty_classes", "class folders with no images"),
                       ("dropped_classes", "classes with no usable image"),
                       ("test_empty_classes", "test folder: class folders with no images"),
                       ("test_missing_classes", "classes absent from the test folder (0 test patches)")):
        if info.get(key):
            rows.append(f"{label}: {', '.join(info[key])}")
    if info.get("stain_norm", {}).get("method", "none") != "none":
        sn = info["stain_norm"]
        rows.append(f"stain normalisation: {sn['method']} to {sn['reference']} "
                    f"({sn['passed_through']} low-tissue tiles left unchanged)")
    if info.get("synthetic"):
        rows.append(f"synthetic: {info.get('synthetic_label')}")
    return "\n".join(rows)


class ProgressFile:
    """`--progress-file`: {state, done, total, message} (+ out when finished) replaced atomically, running
    updates at most twice a second; how the Data page follows a background preparation (engine.jobs.prepare)."""

    def __init__(self, path: str | os.PathLike):
        from engine.jobs.core import StatusWriter

        self.file = StatusWriter(path, every_s=0.5)
        self.file.set("running", force=True, done=0, total=0, message="listing the source")

    def __call__(self, done: int, total: int, msg: str) -> bool:
        return self.file.set("running", force=done == total, done=done, total=total, message=msg)

    def end(self, e: BaseException | None, out: Path | None = None, info: dict | None = None) -> None:
        if e is None:
            self.file.set("finished", force=True, out=str(out),
                          message=f"wrote {out} ({info['num_images']} patches of {info['size']} px)")
        elif isinstance(e, (SystemExit, KeyboardInterrupt)):
            self.file.set("stopped", force=True, message="stopped; no data set was written")
        else:  # ours are one sentence naming the field or path; anything else gets its type too
            ours = isinstance(e, (ConfigError, FileNotFoundError, ValueError))
            self.file.set("failed", force=True, message=str(e) if ours else f"{type(e).__name__}: {e}")


def _exit_on_sigterm(signum: int, frame) -> None:
    # A stop (SIGTERM) unwinds through prepare(), which removes its temp directory on the way out.
    raise SystemExit(128 + signum)


def main(argv: list[str]) -> int:
    import signal
    import threading

    parser = argparse.ArgumentParser(prog="python -m engine prepare", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    C.add_arguments(parser, PrepareConfig)
    parser.add_argument("--progress-file", metavar="FILE.json",
                        help="also report {state, done, total, message} in this JSON file (for background jobs)")
    args = parser.parse_args(argv)
    report = ProgressFile(args.progress_file) if args.progress_file else None
    bar, printed = None, 0.0

    def progress(done: int, total: int, msg: str) -> None:
        nonlocal bar, printed
        if report is not None:  # a background job: the file is its progress bar; the log gets a line at times
            if report(done, total, msg) and (time.monotonic() - printed > 10 or done == total):
                print(f"{done}/{total} {msg}", flush=True)
                printed = time.monotonic()
            return
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="img", desc="prepare", mininterval=0.5)
        bar.n = done
        bar.set_postfix_str(msg, refresh=False)
        bar.refresh()

    main_thread = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGTERM, _exit_on_sigterm) if main_thread else None
    try:
        cfg = C.from_args(PrepareConfig, args)
        out = prepare(cfg, progress)
        info = read_json(out / "dataset.json")
    except BaseException as e:
        if report is not None:
            report.end(e)
        raise
    finally:
        if bar is not None:
            bar.close()
        if main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if old is None else old)
    if report is not None:
        report.end(None, out, info)
    print(summary_table(info))
    print(f"wrote {out} ({info['num_images']} patches of {info['size']} px)")
    return 0
