"""Training curves for the lab, the data side: read metrics_gan.csv incrementally and thin it for plotting.

The trainer appends whole, fsync'ed rows while the UI reads, so a reader can still meet a partly
written last line; `read_metrics` stops at the last newline and leaves the rest for the next call.
The plotly figures of these frames live in ui/figures.py (no figure code in the engine).
"""
from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

MAX_POINTS = 2000  # a figure redrawn every 2 s should stay light over the websocket


def _header(path: Path) -> tuple[list[str], int]:
    """Column names and the byte offset where the rows start ([] and 0 if the header is incomplete)."""
    with open(path, "rb") as f:
        line = f.readline()
    if not line.endswith(b"\n"):
        return [], 0
    return [c.strip() for c in line.decode("utf-8").strip().split(",")], len(line)


def read_metrics(path: str | os.PathLike, offset: int = 0) -> tuple[pd.DataFrame, int]:
    """Rows of a metrics CSV after byte `offset`, up to the last complete line, and the new offset.

    Cells are numbers (empty cells NaN). The header is read from the top of the file on every call so
    that `offset` can point anywhere after it. A missing file or one without a whole header gives an
    empty DataFrame and offset 0. When the file is shorter than `offset` (a resumed run rewrote it),
    reading starts again from the top; the caller sees that as a new offset below the old one.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        cols, start = _header(path)
    except FileNotFoundError:
        return pd.DataFrame(), 0
    if not cols:
        return pd.DataFrame(), 0
    if offset > size:
        offset = 0
    offset = max(offset, start)
    with open(path, "rb") as f:
        f.seek(offset)
        chunk = f.read(size - offset)
    end = chunk.rfind(b"\n") + 1  # 0 when no whole line yet
    if end == 0:
        return pd.DataFrame(columns=cols, dtype=float), offset
    df = pd.read_csv(io.BytesIO(chunk[:end]), header=None, names=cols, on_bad_lines="skip",
                     skip_blank_lines=True, dtype=str, keep_default_na=False)
    df = df.apply(pd.to_numeric, errors="coerce")
    return df.reset_index(drop=True), offset + end


def follow_metrics(path: str | os.PathLike, state: dict[str, Any]) -> pd.DataFrame:
    """All rows so far, reading only what was appended since the last call.

    `state` is a plain dict the caller keeps between calls (the Train page keeps it in session_state):
    it holds the file identity, the byte offset and the rows read so far. A replaced file (resume
    truncates the CSV to the checkpoint's step) is read again from the top.
    """
    path = Path(path)
    try:
        st = path.stat()
        ident = (st.st_ino, st.st_dev)
    except FileNotFoundError:
        state.clear()
        return pd.DataFrame()
    if state.get("ident") != ident or st.st_size < state.get("offset", 0):
        state.clear()
        state["ident"] = ident
    old = state.get("df")
    if old is not None and st.st_size == state.get("offset"):
        return old  # nothing new: skip the parse entirely
    new, state["offset"] = read_metrics(path, state.get("offset", 0))
    if old is not None and not new.empty and "step" in new and "step" in old:
        old = old[old["step"] < new["step"].min()]  # rows repeated after a resume replace older ones
    df = new if old is None or old.empty else pd.concat([old, new], ignore_index=True)
    state["df"] = df
    return df


def thin(df: pd.DataFrame, max_points: int = MAX_POINTS) -> pd.DataFrame:
    """Every k-th row (the last one always kept) so that a long run plots at most ~max_points points."""
    if len(df) <= max_points:
        return df
    k = math.ceil(len(df) / max_points)
    idx = np.unique(np.r_[np.arange(0, len(df), k), len(df) - 1])
    return df.iloc[idx]
