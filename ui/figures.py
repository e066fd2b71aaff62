"""Every plotly figure the pages draw: pure functions of DataFrames / dicts that return a go.Figure.

No engine logic here: the numbers come from the engine (engine.train.curves reads metrics_gan.csv,
engine.metrics writes the evaluation reports); these functions only lay them out. They are unit-tested
through `fig.to_dict()` (tests/ui/test_figures.py), so a page test need not look inside a chart.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from engine.train.curves import thin

# A metric that does not apply to a run (e.g. alpha without the domain head) is an empty column;
# `figures` leaves its figure out, and a figure built on its own says so instead of drawing nothing.
NOT_APPLICABLE = "not used in this run"


# ----------------------------------------------------------------------------------------------
# Train page: x = kimg, one figure per question a researcher asks while a run trains

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


# ----------------------------------------------------------------------------------------------
# Evaluate page (pure functions of report tables)

def bars(df: pd.DataFrame, cols: list[tuple[str, str | None, str]], title: str, y: str) -> go.Figure:
    """Grouped bars per class; cols = [(value column, std column or None, legend name)]."""
    fig = go.Figure()
    for col, err, name in cols:
        if col in df:
            e = dict(type="data", array=df[err].tolist(), visible=True) if err and err in df else None
            fig.add_bar(x=list(df.index), y=df[col].tolist(), name=name, error_y=e)
    fig.update_layout(title=title, yaxis_title=y, barmode="group", height=320, margin=dict(t=40, b=10))
    return fig


# One panel per metric, each with its own y axis: (panel title, [(column, std column or None, legend name)]).
HISTORY_PANELS = (
    ("FID", [("fid", None, "FID")]),
    ("KID (± std over subsets)", [("kid", "kid_std", "KID")]),
    ("precision / recall", [("precision", None, "precision"), ("recall", None, "recall")]),
    ("IS", [("is", "is_std", "IS")]),
    ("downstream accuracy", [("acc_real", None, "trained on real"), ("acc_synthetic", None, "trained on synthetic"),
                             ("acc_real+synthetic", None, "trained on real+synthetic")]),
    ("feature diversity", [("diversity_generated", None, "diversity generated"),
                           ("diversity_real", None, "diversity real")]),
    ("memorised fraction", [("memorised_fraction", None, "memorised")]),
    ("CAS", [("cas", None, "CAS"), ("cas_real_accuracy", None, "classifier on real test")]),
)
SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x", "cross")


def _spread(steps: pd.Series, trace: int, traces: int, gap: float) -> list[float]:
    """x positions that keep markers apart: the traces of one panel side by side around their step, and
    reports of one step within a trace beside each other (the hover says the true step). Everything stays
    within 30 % of the smallest gap between steps, centred on the step."""
    width = 0.3 * gap
    slot = width / max(traces, 1)
    count = steps.groupby(steps).transform("size")
    rank = steps.groupby(steps).cumcount()
    dup = slot / max(int(count.max()), 1) if len(steps) else 0.0
    base = (trace - (traces - 1) / 2) * slot
    return [float(s) + base + (r - (c - 1) / 2) * dup for s, r, c in zip(steps, rank, count)]


def history_figure(hist: pd.DataFrame) -> go.Figure:
    """Metrics over training steps: one subplot per metric with its own y axis, integer steps on x,
    the legend outside the plot area, distinct marker symbols and a small x offset per trace."""
    panels = [(t, [c for c in cols if c[0] in hist and hist[c[0]].notna().any()]) for t, cols in HISTORY_PANELS]
    panels = [(t, cols) for t, cols in panels if cols]
    steps = sorted(int(s) for s in hist["step"].dropna().unique())
    gap = float(min(b - a for a, b in zip(steps, steps[1:]))) if len(steps) > 1 else 1.0
    fig = make_subplots(rows=max(1, len(panels)), cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=[t for t, _ in panels])
    k = 0
    for row, (_, cols) in enumerate(panels, start=1):
        for i, (col, err, name) in enumerate(cols):
            e = dict(type="data", array=hist[err].tolist(), visible=True) if err and err in hist else None
            fig.add_scatter(x=_spread(hist["step"], i, len(cols), gap), y=hist[col], mode="lines+markers",
                            name=name, error_y=e, marker=dict(symbol=SYMBOLS[k % len(SYMBOLS)], size=9),
                            customdata=hist["step"], hovertemplate=f"{name}: %{{y:.4g}}<br>step %{{customdata}}"
                                                                   "<extra></extra>", row=row, col=1)
            k += 1
    ticks = dict(tickmode="array", tickvals=steps) if len(steps) <= 12 else dict(tickformat="d")
    fig.update_xaxes(**ticks)
    fig.update_xaxes(title_text="step", row=max(1, len(panels)), col=1)
    fig.update_layout(title="Over training", height=80 + 200 * max(1, len(panels)), showlegend=True,
                      legend=dict(x=1.02, xanchor="left", y=1, yanchor="top"),
                      margin=dict(t=60, b=10, r=10), uirevision="history")
    return fig


def confusion_figure(conf: list[list[int]], names: list[str], title: str) -> go.Figure:
    fig = go.Figure(go.Heatmap(z=conf, x=names, y=names, colorscale="Blues", text=conf, texttemplate="%{text}"))
    fig.update_layout(title=title, xaxis_title="predicted", yaxis_title="true", yaxis_autorange="reversed",
                      height=360, margin=dict(t=40, b=10))
    return fig


def stain_figure(stain: dict) -> go.Figure:
    edges = np.asarray(stain["edges"])
    mid = (edges[:-1] + edges[1:]) / 2
    fig = go.Figure()
    for s, dash in (("H", "solid"), ("E", "dot")):
        for side, color in (("real", "#1f77b4"), ("generated", "#d62728")):
            fig.add_scatter(x=mid, y=stain[s][side], mode="lines", name=f"{s} {side}",
                            line=dict(dash=dash, color=color, shape="hvh"))
    fig.update_layout(title="H&E optical density (concentration) histograms", xaxis_title="OD",
                      yaxis_title="density", height=320, margin=dict(t=40, b=10))
    return fig


# ----------------------------------------------------------------------------------------------
# Data page

def counts_figure(counts: pd.DataFrame, splits: list[str]) -> go.Figure:
    """Patches per class, one stacked bar segment per split (`counts` as engine.data.catalog.counts_table
    gives it: one row per class, then a total row, one column per split)."""
    fig = go.Figure([go.Bar(name=s, x=list(counts.index[:-1]), y=list(counts[s].iloc[:-1])) for s in splits])
    fig.update_layout(barmode="stack", height=320, margin=dict(l=10, r=10, t=30, b=10),
                      title=" / ".join(splits) + " per class")
    return fig


def optical_density_figure(df: pd.DataFrame) -> go.Figure | None:
    """Mean optical density per class and channel (engine.data.stain.stain_stats_table); None when the
    table has no OD column."""
    cols = [c for c in ("od_r", "od_g", "od_b") if c in df.columns]
    if not cols:
        return None
    fig = go.Figure([go.Bar(name=c, x=list(df.index), y=list(df[c])) for c in cols])
    fig.update_layout(barmode="group", height=300, margin=dict(l=10, r=10, t=30, b=10),
                      title="mean optical density per class (R, G, B)")
    return fig


# ----------------------------------------------------------------------------------------------
# Review page (pure functions of engine.review.stats results)

def review_accuracy_figure(per_reviewer: list[dict], pooled: dict) -> go.Figure:
    """Accuracy at telling real from synthetic, one point per reviewer and the pooled one, each with its
    95 % exact interval; the 50 % line is chance (`stats.detection` rows)."""
    rows = [r for r in per_reviewer if r.get("accuracy") is not None]
    rows = rows + ([dict(pooled, reviewer="pooled")] if pooled.get("accuracy") is not None else [])
    fig = go.Figure()
    if rows:
        acc = [float(r["accuracy"]) for r in rows]
        hi = [float(r["ci_high"]) - a if r.get("ci_high") is not None else 0.0 for r, a in zip(rows, acc)]
        lo = [a - float(r["ci_low"]) if r.get("ci_low") is not None else 0.0 for r, a in zip(rows, acc)]
        fig.add_scatter(x=[str(r["reviewer"]) for r in rows], y=acc, mode="markers",
                        marker=dict(size=11, symbol=["diamond" if r["reviewer"] == "pooled" else "circle"
                                                     for r in rows]),
                        error_y=dict(type="data", symmetric=False, array=hi, arrayminus=lo, visible=True),
                        customdata=[[r["n"], r.get("p_value")] for r in rows], name="accuracy",
                        hovertemplate="%{x}: %{y:.1%} of %{customdata[0]} answers<br>p = %{customdata[1]:.3g}"
                                      "<extra></extra>")
    else:
        fig.add_annotation(text="no answers yet", showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5,
                           font=dict(color="gray"))
    fig.add_hline(y=0.5, line=dict(dash="dash", width=1, color="gray"), annotation_text="chance (50 %)",
                  annotation_position="top left")
    fig.update_layout(title="Real vs synthetic: accuracy with 95 % CI", yaxis=dict(range=[0, 1], tickformat=".0%"),
                      height=320, margin=dict(t=40, b=10), showlegend=False)
    return fig


def review_realism_figure(realism: dict) -> go.Figure:
    """Realism scores (1-5) of real and synthetic patches side by side (`stats.realism`)."""
    fig = go.Figure()
    for src, color in (("real", "#1f77b4"), ("synthetic", "#d62728")):
        part = realism.get(src) or {}
        counts = {int(k): int(v) for k, v in (part.get("counts") or {}).items()}
        mean = part.get("mean")
        fig.add_bar(x=[1, 2, 3, 4, 5], y=[counts.get(v, 0) for v in (1, 2, 3, 4, 5)], marker_color=color,
                    name=f"{src} (n={part.get('n', 0)}" + (f", mean {mean:.2f})" if mean is not None else ")"))
    p = realism.get("p_value")
    fig.update_layout(title="Realism scores" + (f" (Mann-Whitney p = {p:.3g})" if p is not None else ""),
                      barmode="group", xaxis=dict(title="realism (1 = clearly artificial, 5 = fully realistic)",
                                                  tickmode="array", tickvals=[1, 2, 3, 4, 5]),
                      yaxis_title="answers", height=320, margin=dict(t=40, b=10))
    return fig


def review_confusion_figure(agreement: dict, title: str = "Tissue class: true vs answered") -> go.Figure:
    """The class confusion matrix of `stats.class_agreement` (rows: true / conditioned class)."""
    names, conf = list(agreement["labels"]), agreement["matrix"]
    fig = go.Figure(go.Heatmap(z=conf, x=names, y=names, colorscale="Blues", text=conf, texttemplate="%{text}",
                               hovertemplate="true %{y}, answered %{x}: %{z}<extra></extra>"))
    acc = agreement.get("accuracy")
    fig.update_layout(title=title + (f" (agreement {acc:.0%})" if acc is not None else ""),
                      xaxis_title="answered class", yaxis_title="true class", yaxis_autorange="reversed",
                      height=380, margin=dict(t=40, b=10))
    return fig


def review_kappa_figure(kappa: pd.DataFrame, title: str = "Cohen's kappa between reviewers") -> go.Figure:
    """A reviewer x reviewer kappa table (`stats.kappa_table`) as a heatmap on the -1..1 scale."""
    z = kappa.to_numpy(dtype=float)
    text = [["-" if not np.isfinite(v) else f"{v:.2f}" for v in row] for row in z]
    fig = go.Figure(go.Heatmap(z=np.where(np.isfinite(z), z, np.nan).tolist(), x=list(kappa.columns),
                               y=list(kappa.index), zmin=-1, zmax=1, colorscale="RdBu", text=text,
                               texttemplate="%{text}", hovertemplate="%{y} ~ %{x}: %{text}<extra></extra>"))
    fig.update_layout(title=title, yaxis_autorange="reversed", height=120 + 40 * max(1, len(kappa)),
                      margin=dict(t=40, b=10))
    return fig


# ----------------------------------------------------------------------------------------------
# Compare page (pure functions of engine.compare's tables)

def compare_bars(table: pd.DataFrame, col: str, err: str | None, title: str) -> go.Figure:
    """One bar per run (x = run id, the family in the hover), with the report's error bar when it has one."""
    t = table[table[col].notna()] if col in table else table.iloc[:0]
    e = dict(type="data", array=t[err].fillna(0).tolist(), visible=True) if err and err in t else None
    fig = go.Figure(go.Bar(x=t["run"].tolist(), y=t[col].tolist() if col in t else [], error_y=e,
                           customdata=t["family"].tolist() if "family" in t else None,
                           hovertemplate="%{x} (%{customdata}): %{y:.4g}<extra></extra>"))
    fig.update_layout(title=title, yaxis_title=col, height=280, margin=dict(t=40, b=10))
    return fig


def compare_class_bars(per_class: pd.DataFrame, col: str, err: str | None, title: str) -> go.Figure:
    """Grouped bars per class, one trace per run, with the per-class error bars the reports carry."""
    fig = go.Figure()
    for run, rows in per_class.groupby("run", sort=False) if col in per_class else ():
        e = dict(type="data", array=rows[err].fillna(0).tolist(), visible=True) if err and err in rows else None
        fig.add_bar(x=rows["class"].tolist(), y=rows[col].tolist(), name=str(run), error_y=e)
    fig.update_layout(title=title, yaxis_title=col, barmode="group", height=320, margin=dict(t=40, b=10))
    return fig


def compare_curves(frames: dict[str, pd.DataFrame], signal: str) -> go.Figure:
    """The same signal of several runs overlaid, x = kimg (step when a CSV has no kimg)."""
    fig = go.Figure()
    x_title = "kimg"
    for run, df in frames.items():
        if signal not in df or not df[signal].notna().any():
            continue
        df = thin(df)
        x_name, x = _x(df)
        x_title = x_name if x_name != "kimg" else x_title
        fig.add_trace(go.Scatter(x=x.tolist(), y=df[signal].tolist(), name=str(run), mode="lines"))
    fig.update_layout(title=f"{signal} over training", xaxis_title=x_title, yaxis_title=signal, height=320,
                      margin=dict(l=50, r=10, t=40, b=36), uirevision=f"compare_{signal}")
    return fig


# ----------------------------------------------------------------------------------------------
# Train page, diffusion families (metrics_diffusion.csv: loss, loss_q1..loss_q4, lr, grad_norm, ...)

def fig_diffusion_loss(df: pd.DataFrame) -> go.Figure:
    """The denoising loss (MSE on the prediction target) per log interval."""
    return _figure(df, "Loss", [("loss", "loss")])


def fig_loss_quartiles(df: pd.DataFrame) -> go.Figure:
    """The loss per timestep quartile: q1 = the least noisy quarter of t, q4 the noisiest."""
    return _figure(df, "Loss per timestep quartile",
                   [(f"loss_q{k}", f"loss_q{k}") for k in range(1, 5)], log_y=True)


def fig_diffusion_lr(df: pd.DataFrame) -> go.Figure:
    """The learning rate (warm-up, then cosine), log scale."""
    fig = _figure(df, "Learning rate", [("lr", "lr")], log_y=True)
    fig.update_yaxes(dtick="D2", tickformat=".0e", exponentformat="e", minor=dict(showgrid=False))
    return fig


def fig_grad_norm(df: pd.DataFrame) -> go.Figure:
    """The gradient norm before clipping."""
    return _figure(df, "Gradient norm (before clipping)", [("grad_norm", "grad_norm")])


def diffusion_figures(df: pd.DataFrame) -> dict[str, go.Figure]:
    """The curves of a diffusion run (family ddpm), keyed by a stable name, in display order."""
    return {"loss": fig_diffusion_loss(df), "loss_quartiles": fig_loss_quartiles(df),
            "lr": fig_diffusion_lr(df), "grad_norm": fig_grad_norm(df), "speed": fig_speed(df)}


def run_figures(df: pd.DataFrame, config: dict | None = None) -> dict[str, go.Figure]:
    """The curves of a run of any family: `diffusion_figures` for ddpm (metrics_diffusion.csv), else the
    GAN curves of `figures`."""
    if (config or {}).get("family") == "ddpm":
        return diffusion_figures(df)
    return figures(df, config)
