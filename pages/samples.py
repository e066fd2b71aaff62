"""Samples page: per-class sample grids from any checkpoint of any run; seeds, truncation; export."""
from __future__ import annotations

import time

import streamlit as st

from engine import images, sampling
from engine.config import ConfigError, SampleConfig
from ui import forms, frame, widgets

frame.require_frame()

st.title("Samples")
st.caption("Each patch is named by (class, seed): the same pair gives the same patch here, on the "
           "Style mixing page and in `python -m engine sample`.")

picked = widgets.pick_generator("samples")
if picked is None:
    st.stop()
G, meta, run = picked
names = meta["class_names"]

MAX_COLUMNS = 64  # seeds per class on the page (the CLI takes more): one column each
# The form is generated from SampleConfig (`python -m engine sample`'s fields: ui.forms, `label · name`);
# the page opens on a few real tiles and a mild truncation, where the CLI's defaults are none.
FORM = forms.ConfigForm(SampleConfig, prefix="samples_cfg_", defaults={"real_per_class": 4, "truncation": 0.7})
# A diffusion run (ddpm) samples with its sampler options instead of truncation; the widgets open on the
# run's own (its config's sampler, steps, eta, guidance), keyed per run.
family = sampling.is_family(G)  # a family module's generator (ddpm, dcgan, mlp_gan): no truncation
diffusion = family and bool(G.sample_options())
if diffusion:
    run_opts = G.sample_options()
    OPTS_FORM = forms.ConfigForm(SampleConfig, prefix=f"samples_{run.run_id}_", defaults={
        "sampler": run_opts["sampler"], "sample_steps": int(run_opts["steps"]), "eta": float(run_opts["eta"]),
        "guidance": float(run_opts["guidance"])})
options: dict = {}
with st.form("samples"):
    classes = st.multiselect(FORM.label("classes"), names, default=names)
    c1, c2, c3 = st.columns(3)
    seeds_text = FORM.widget("seeds", c1, help=(
        f"one column per seed, e.g. 0-7 (8 columns) or 1,5,9 (3); at most {MAX_COLUMNS}. A seed names a patch: "
        "the same (class, seed) gives the same patch here, on Style mixing and in `python -m engine sample --seeds`"))
    real_n = FORM.widget("real_per_class", c2, help=(
        "real patches of each class from the `eval` split of the run's data set (the ones the metrics compare "
        "with), shown beside the generated ones; 0 = none. CLI: `python -m engine sample --real-per-class`"))
    if diffusion:
        truncation = 1.0  # StyleGAN-only
        options["sampler"] = OPTS_FORM.widget("sampler", c3, format_func=lambda v: v or "the run's")
        o1, o2, o3 = st.columns(3)
        options["steps"] = OPTS_FORM.widget("sample_steps", o1)
        options["guidance"] = OPTS_FORM.widget("guidance", o2)
        options["eta"] = OPTS_FORM.widget("eta", o3, help="DDIM only: 0 = deterministic per seed")
        options = {k: (v if v != "" else None) for k, v in options.items()}
    elif family:
        truncation = 1.0
        c3.caption(f"truncation is StyleGAN-only: a {meta.get('family')} sample is G_ema(z of the seed, class)")
    else:
        truncation = FORM.widget("truncation", c3)
    st.form_submit_button("Generate", type="primary")

if not classes:
    st.warning("Choose at least one class.")
    st.stop()
try:
    # The seeds alone decide the columns (as in the CLI): `0-5` gives 6, whatever was shown before.
    seeds = sampling.parse_seeds(seeds_text, max_count=MAX_COLUMNS)
except ConfigError as e:
    st.error(str(e))
    st.stop()

idx = [names.index(c) for c in classes]
key = (meta["path"], meta["mtime"], tuple(idx), tuple(seeds), float(truncation), tuple(sorted(options.items())))
result = st.session_state.get("samples_result")
if result is None or result["key"] != key:
    bar = st.progress(0.0, text="Generating...")
    t0 = time.perf_counter()
    # diffusion sampling is slow on a CPU: the bar follows its denoising steps
    what = "denoising step" if diffusion else "Generating"
    patches, records = sampling.generate(
        G, idx, seeds, truncation=truncation, class_names=names, batch=32,
        progress=lambda done, total: bar.progress(min(1.0, done / max(total, 1)), text=f"{what} {done}/{total}"),
        **options)
    bar.empty()
    grid = sampling.tile(patches, rows=len(idx))
    # PNG and zip bytes are made once per result, not on every rerun of the page
    result = dict(key=key, images=patches, grid_png=sampling.png_bytes(grid),
                  zip=sampling.export_zip(patches, records, meta["step"]), seconds=time.perf_counter() - t0)
    st.session_state["samples_result"] = result

step = meta["step"]
best = meta.get("best") or {}
kind = meta["kind"] if not best else f"best model, {best.get('metric')} {best.get('score', float('nan')):.4g} on " \
                                     f"{best.get('n')} patches"
st.caption(f"run `{run.run_id}`, step {step} ({kind}), {len(result['images'])} patches of "
           f"{meta['res']} px in {result['seconds']:.2f} s {widgets.device_caption(G)}; "
           + (", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in G.sample_options(**options).items()) if diffusion else
              meta.get("family", "") if family else f"truncation {truncation:g}"))
n, k = len(seeds), int(real_n)
real, real_note = widgets.real_tiles_of_run(run.run_dir, classes, k, meta["res"]) if k else ({}, "")
if real_note:
    st.caption(real_note)
px = max(96, meta["res"])
for r, c in enumerate(classes):
    row = sampling.tile(result["images"][r * n:(r + 1) * n], rows=1)
    tiles = real.get(c)
    if tiles is None or not len(tiles):
        st.image(images.upscale(row, min_px=px), caption=f"{c} · generated")
        continue
    # Column widths follow the tile counts, so generated and real tiles are drawn at the same size.
    g, rc = st.columns([n, len(tiles)], gap="medium")
    g.image(images.upscale(row, min_px=px), caption=f"{c} · generated", width="stretch")
    few = f", all {len(tiles)} it holds" if len(tiles) < k else ""
    rc.image(images.upscale(sampling.tile(tiles, rows=1), min_px=px),
             caption=f"{c} · real (eval split{few})", width="stretch")

d1, d2 = st.columns(2)
base = f"{run.run_id}_step{step}_" + (f"{G.sample_options(**options)['sampler']}" if diffusion
                                      else meta.get("family", "") if family else f"truncation{truncation:g}")
d1.download_button("Download grid PNG", result["grid_png"], file_name=f"{base}_grid.png",
                   mime="image/png", icon=":material/grid_on:")
d2.download_button("Download patches (zip + manifest.csv)",
                   result["zip"],
                   file_name=f"{base}_patches.zip", mime="application/zip", icon=":material/folder_zip:")
frame.next_step("pages/style_mixing.py", "mix the coarse and fine styles of two samples")
