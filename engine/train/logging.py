"""What a training process tells the rest of the lab: metrics_gan.csv (+ TensorBoard events), events.jsonl
(status.json: engine.jobs.core.StatusWriter).

Everything here is written by rank 0 only and read by the UI while the run is alive, so every write
is either an fsync'ed append of whole lines (CSV, events) or an atomic replace (status).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from engine.utils import atomic_write_text

# DESIGN "Run directory": exactly these columns, in this order; extras go after them.
CSV_COLUMNS = ("epoch", "step", "kimg", "d_loss", "g_loss", "real_mu", "real_min", "real_max",
               "fake_mu", "fake_min", "fake_max", "ada_p", "acc", "acc_ema", "alpha", "r1", "lr_g",
               "lr_d", "img_per_s", "time_s")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _fmt(v: Any) -> str:
    """CSV cell: '' for a value that does not apply (None / NaN), compact repr for numbers."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return repr(v) if v == 0 or 1e-4 <= abs(v) < 1e6 else f"{v:.9g}"
    return str(v)


# TensorBoard tag groups: the tag is "<group>/<CSV column>" (one name per idea: the last part is the
# column). A column not listed here (a family's own extra) goes under "metrics/".
TB_GROUPS = {
    "loss": ("d_loss", "g_loss", "r1", "g_total", "g_fm", "g_perc", "g_stats", "g_sat", "g_div", "pl",
             "pl_mean", "d_real", "d_fake", "loss", "loss_q1", "loss_q2", "loss_q3", "loss_q4"),
    "pixels": ("real_mu", "real_min", "real_max", "fake_mu", "fake_min", "fake_max", "fake_abs"),
    "ada": ("ada_p", "acc", "acc_ema"),
    "domain": ("alpha", "perceptual_scale"),
    "lr": ("lr_g", "lr_d", "lr"),
    "grad": ("d_gnorm", "g_gnorm", "grad_norm"),
    "speed": ("img_per_s", "time_s"),
    "progress": ("epoch", "step", "kimg", "watchdog_events"),
}
_TB_TAG = {col: f"{group}/{col}" for group, cols in TB_GROUPS.items() for col in cols}


def tb_tag(column: str) -> str:
    """The TensorBoard scalar tag of a CSV column."""
    return _TB_TAG.get(column, f"metrics/{column}")


def _number(v: Any) -> float | None:
    """A CSV cell as a TensorBoard scalar: None for what is empty in the CSV (None / NaN / text)."""
    if v is None or isinstance(v, str):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def config_markdown(config: dict[str, Any]) -> str:
    """The resolved config as TensorBoard text: JSON in a fenced code block (the text plugin renders it)."""
    return "```json\n" + json.dumps(config, indent=2, sort_keys=True, default=str) + "\n```"


def _tensorboard_writer(log_dir: Path, purge_step: int | None):
    """A SummaryWriter, or None with one warning line when the tensorboard package is missing: the CSV
    is the contract, TensorBoard a convenience, so its absence never stops a run."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:  # torch raises ImportError when the tensorboard package is absent
        print(f"warning: TensorBoard events off ({e}); the curves are in {log_dir}/metrics_*.csv only",
              flush=True)
        return None
    # flush_secs: a backstop; write() flushes per row so a live run's curves show at once.
    return SummaryWriter(log_dir=str(log_dir), purge_step=purge_step, flush_secs=5)


class MetricsCSV:
    """Append-only metrics file: header once, one row per log interval, flushed and fsync'ed per row.

    With `tensorboard=True` every row also goes to TensorBoard event files beside the CSV (each numeric
    column one scalar tag, `tb_tag`, at global step = the row's step; empty cells skipped), and
    `config` (the resolved config) once as the text summary "config" when the writer opens. A resumed
    run passes `purge_step` = checkpoint step + 1: TensorBoard then drops the events the killed session
    wrote after the checkpoint, as `truncate_csv` drops those rows, so the curves are never doubled.
    Call `close()` at the end (it flushes and closes the event file).
    """

    def __init__(self, path: str | os.PathLike, extras: tuple[str, ...] = (), *, tensorboard: bool = False,
                 config: dict[str, Any] | None = None, purge_step: int | None = None):
        self.path = Path(path)
        self.columns = CSV_COLUMNS + tuple(c for c in extras if c not in CSV_COLUMNS)
        if self.path.exists() and self.path.stat().st_size > 0:
            with open(self.path, newline="", encoding="utf-8") as f:
                header = next(csv.reader(f), None)
            if header and tuple(header) != self.columns:
                self.columns = tuple(header)  # a resumed run keeps the header it started with
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path, ",".join(self.columns) + "\n")
        self.tb = _tensorboard_writer(self.path.parent, purge_step) if tensorboard else None
        if self.tb is not None and config is not None:
            self.tb.add_text("config", config_markdown(config), global_step=purge_step or 0)
            self.tb.flush()

    def write(self, row: dict[str, Any]) -> None:
        line = ",".join(_fmt(row.get(c)) for c in self.columns) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        if self.tb is not None:
            step = _number(row.get("step"))
            for c in self.columns:  # the CSV's columns only: TB shows what the CSV holds, no more
                v = _number(row.get(c))
                if v is not None:
                    self.tb.add_scalar(tb_tag(c), v, global_step=int(step or 0))
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None

    def __enter__(self) -> "MetricsCSV":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def truncate_csv(path: str | os.PathLike, max_step: int) -> int:
    """Keep the header and the rows with step <= `max_step` (resume: curves never duplicate).

    A torn last line (a kill mid-append) is dropped too. Returns the number of rows kept.
    """
    path = Path(path)
    if not path.exists():
        return 0
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    if not lines:
        return 0
    header = lines[0] if lines[0].endswith("\n") else lines[0] + "\n"
    cols = next(csv.reader(io.StringIO(header)))
    i_step = cols.index("step")
    kept = [header]
    for line in lines[1:]:
        if not line.endswith("\n"):
            break  # torn append
        cells = next(csv.reader(io.StringIO(line)), [])
        try:
            if len(cells) == len(cols) and int(float(cells[i_step])) <= max_step:
                kept.append(line)
        except ValueError:
            continue
    atomic_write_text(path, "".join(kept))
    return len(kept) - 1


def read_csv_rows(path: str | os.PathLike) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# status.json is written by engine.jobs.core.StatusWriter (one writer for every kind of job).


def log_event(run_dir: str | os.PathLike, event: dict[str, Any], *, enabled: bool = True) -> None:
    """Print an event and append it to <run_dir>/events.jsonl (one JSON object per line)."""
    event = {"time": now_iso(), **event}
    print(f"event: {json.dumps(event)}", flush=True)
    if not enabled:
        return
    with open(Path(run_dir) / "events.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(event) + "\n")
        f.flush()
        os.fsync(f.fileno())


class Stats:
    """Per-step statistics accumulated on the device; one host sync when a row is written.

    `add(name, value)` averages over the interval; `add_min` / `add_max` keep extremes. Values may be
    tensors (kept on the device) or floats. State round-trips through a checkpoint so that a
    resumed run writes the same rows as an uninterrupted one.
    """

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.mins: dict[str, torch.Tensor] = {}
        self.maxs: dict[str, torch.Tensor] = {}

    def _t(self, v: Any) -> torch.Tensor:
        return torch.as_tensor(v, dtype=torch.float32, device=self.device).detach().reshape(())

    def add(self, name: str, value: Any) -> None:
        v = self._t(value)
        self.sums[name] = self.sums[name] + v if name in self.sums else v.clone()
        self.counts[name] = self.counts.get(name, 0) + 1

    def add_min(self, name: str, value: Any) -> None:
        v = self._t(value)
        self.mins[name] = torch.minimum(self.mins[name], v) if name in self.mins else v.clone()

    def add_max(self, name: str, value: Any) -> None:
        v = self._t(value)
        self.maxs[name] = torch.maximum(self.maxs[name], v) if name in self.maxs else v.clone()

    def result(self, reduce_fn=None) -> dict[str, float]:
        """Means / mins / maxs as floats (one device->host copy); `reduce_fn(sums, mins, maxs)` lets
        DDP combine ranks first. Does not reset."""
        names_s, names_n, names_x = sorted(self.sums), sorted(self.mins), sorted(self.maxs)
        sums = torch.stack([self.sums[n] for n in names_s]) if names_s else None
        mins = torch.stack([self.mins[n] for n in names_n]) if names_n else None
        maxs = torch.stack([self.maxs[n] for n in names_x]) if names_x else None
        if reduce_fn is not None:
            sums, mins, maxs = reduce_fn(sums, mins, maxs)
        out: dict[str, float] = {}
        for names, vals, div in ((names_s, sums, True), (names_n, mins, False),
                                 (names_x, maxs, False)):
            if vals is None:
                continue
            for n, v in zip(names, vals.float().cpu().tolist()):
                out[n] = v / self.counts[n] if div else v
        return out

    def state_dict(self) -> dict:
        cpu = lambda d: {k: v.detach().cpu() for k, v in d.items()}  # noqa: E731
        return {"sums": cpu(self.sums), "counts": dict(self.counts), "mins": cpu(self.mins),
                "maxs": cpu(self.maxs)}

    def load_state_dict(self, d: dict) -> None:
        dev = lambda m: {k: v.to(self.device) for k, v in m.items()}  # noqa: E731
        self.sums, self.mins, self.maxs = dev(d["sums"]), dev(d["mins"]), dev(d["maxs"])
        self.counts = {k: int(v) for k, v in d["counts"].items()}
