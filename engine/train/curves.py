"""Training curves for the lab: read metrics_gan.csv incrementally and build the plotly figures.

The trainer appends whole, fsync'ed rows while the UI reads, so a reader can still meet a partly
written last line; `read_metrics` stops at the last newline and leaves the rest for the next call.
The figure builders are pure functions of a DataFrame (unit-tested through `fig.to_dict()`).
"""
from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

# A metric that does not apply to a run (e.g. alpha without the domain head) is an empty column;
# `figures` leaves its figure out, and a figure built on its own says so instead of drawing nothing.
NOT_APPLICABLE = "not used in this run"
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


# ----------------------------------------------------------------------------------------------
# Figures: x = kimg, one figure per question a researcher asks while a run trains

def _x(df: pd.DataFrame) -> tuple[str, pd.Series]:
    if "kimg" in df and df["kimg"].notna().any():
        return "kimg", df["kimg"]
    return "step", df["step"] if "step" in df else pd.Series(range(len(df)), dtype=float)


def _figure(df: pd.DataFrame, title: str, series: list[tuple[str, str]], *, y_title: str = "",
            log_y: bool = False, height: int = 260, dash: dict | None = None,
            legend_right: bool = False) -> go.Figure:
    """Lines of the columns in `series` ([(column, label)]) against kimg; a note if none has data."""
    df = thin(df)
    x_name, x = _x(df)
    fig = go.Figure()
    for col, label in series:
        if col in df and df[col].notna().any():
            fig.add_trace(go.Scatter(x=x.tolist(), y=df[col].tolist(), name=label, mode="lines",
                                     connectgaps=False, line=dict(dash=(dash or {}).get(col, "solid"))))
    if not fig.data:
        fig.add_annotation(text=NOT_APPLICABLE if len(df) else "no rows yet", showarrow=False,
                           xref="paper", yref="paper", x=0.5, y=0.5, font=dict(color="gray"))
    fig.update_layout(title=dict(text=title, font=dict(size=14)), height=height,
                      margin=dict(l=50, r=10, t=36, b=36), xaxis_title=x_name, yaxis_title=y_title,
                      legend=dict(font=dict(size=10)) if legend_right else
                      dict(orientation="h", y=1.02, x=1, xanchor="right", yanchor="bottom", font=dict(size=10)),
                      uirevision=title)  # keeps zoom across updates where the chart is updated in place
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def _hline(fig: go.Figure, y: float | None, label: str, dash: str = "dash") -> None:
    if y is not None:
        fig.add_hline(y=float(y), line=dict(dash=dash, width=1, color="gray"),
                      annotation_text=label, annotation_position="top left")


def fig_losses(df: pd.DataFrame) -> go.Figure:
    """D and G losses (and the R1 penalty) per log interval."""
    return _figure(df, "Losses", [("d_loss", "d_loss"), ("g_loss", "g_loss"), ("r1", "r1")])


def fig_acc(df: pd.DataFrame, ada_target: float | None = None, alpha_on: float | None = None,
            alpha_off: float | None = None) -> go.Figure:
    """D accuracy on reals (acc) and its EMA, with the ADA target and the alpha gate thresholds."""
    fig = _figure(df, "D accuracy on reals", [("acc", "acc"), ("acc_ema", "acc_ema")])
    _hline(fig, ada_target, f"ada_target {ada_target}" if ada_target is not None else "")
    _hline(fig, alpha_on, f"alpha_on {alpha_on}", "dot")
    _hline(fig, alpha_off, f"alpha_off {alpha_off}", "dot")
    fig.update_yaxes(range=[-0.02, 1.02])
    return fig


def fig_ada_p(df: pd.DataFrame, ada_p_max: float | None = None) -> go.Figure:
    """The ADA augmentation probability p."""
    fig = _figure(df, "ADA p", [("ada_p", "ada_p")])
    if fig.data:
        _hline(fig, ada_p_max, f"ada_p_max {ada_p_max}" if ada_p_max is not None else "", "dot")
    return fig


def fig_alpha(df: pd.DataFrame, alpha_max: float | None = None) -> go.Figure:
    """The domain head's alpha gate (empty column = the head is off)."""
    fig = _figure(df, "Domain head alpha", [("alpha", "alpha")])
    if fig.data:
        _hline(fig, alpha_max, f"alpha_max {alpha_max}" if alpha_max is not None else "", "dot")
    return fig


def fig_lr(df: pd.DataFrame) -> go.Figure:
    """G and D learning rates (cosine schedule), log scale. Plotly's default log ticks read "2", "5",
    "100µ" for 4e-4 and 7e-5; ticks at 1, 2 and 5 per decade in exponent form read `2e-4`, `5e-5`."""
    fig = _figure(df, "Learning rates", [("lr_g", "lr_g"), ("lr_d", "lr_d")], log_y=True)
    fig.update_yaxes(dtick="D2", tickformat=".0e", exponentformat="e", minor=dict(showgrid=False))
    fig.update_traces(hovertemplate="%{y:.2e}")
    return fig


def fig_speed(df: pd.DataFrame) -> go.Figure:
    """Training throughput in images per second."""
    return _figure(df, "Speed", [("img_per_s", "img_per_s")], y_title="img/s")


def fig_ranges(df: pd.DataFrame) -> go.Figure:
    """Mean and range of real vs fake pixels: saturation shows as fake_min/max stuck at the clamp."""
    cols = ("real_mu", "real_min", "real_max", "fake_mu", "fake_min", "fake_max")
    return _figure(df, "Pixel range (real vs fake)", [(c, c) for c in cols], legend_right=True,
                   dash={c: "dot" for c in cols if c.startswith("real")})


def figures(df: pd.DataFrame, config: dict | None = None) -> dict[str, go.Figure]:
    """The curves of a run that apply to it, keyed by a stable name, in display order; `config` (the
    run's config.json) adds the reference lines (ADA target, alpha gate thresholds, caps).

    A curve that does not apply takes no slot: the domain alpha when the run's config has the head off,
    and, once rows exist, any figure all of whose columns are empty (ADA p with ADA off, pixel ranges of
    a family that does not write them). Before the first row every curve is kept ("no rows yet")."""
    c = config or {}
    domain = bool(c.get("domain_head"))
    figs = _all_figures(df, c, domain)
    if config is not None and "domain_head" in c and not domain:
        figs.pop("alpha")
    if len(df):
        figs = {k: f for k, f in figs.items() if f.data}
    return figs


def _all_figures(df: pd.DataFrame, c: dict, domain: bool) -> dict[str, go.Figure]:
    return {
        "losses": fig_losses(df),
        "acc": fig_acc(df, c.get("ada_target") if c.get("ada", True) else None,
                       c.get("alpha_on") if domain else None, c.get("alpha_off") if domain else None),
        "ada_p": fig_ada_p(df, c.get("ada_p_max")),
        "alpha": fig_alpha(df, c.get("alpha_max") if domain else None),
        "lr": fig_lr(df),
        "speed": fig_speed(df),
        "ranges": fig_ranges(df),
    }
