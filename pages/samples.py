"""Samples page: per-class sample grids from any checkpoint of any run; seeds, truncation; export."""
from __future__ import annotations

import time

import streamlit as st

import ui_cache
import ui_nav
from engine import images, sampling
from engine.config import ConfigError

ui_cache.require_frame()

st.title("Samples")
st.caption("Each patch is named by (class, seed): the same pair gives the same patch here, on the "
           "Style mixing page and in `python -m engine sample`.")

picked = ui_cache.pick_generator("samples")
if picked is None:
    st.stop()
G, meta, run = picked
names = meta["class_names"]

MAX_COLUMNS = 64  # seeds per class on the page (the CLI takes more): one column each
with st.form("samples"):
    classes = st.multiselect("classes", names, default=names)
    c1, c2, c3 = st.columns(3)
    seeds_text = c1.text_input("seeds", "0-7",
                               help=f"one column per seed, e.g. 0-7 (8 columns) or 1,5,9 (3); at most "
                                    f"{MAX_COLUMNS}. A seed names a patch: the same (class, seed) gives the "
                                    "same patch here, on Style mixing and in "
                                    "`python -m engine sample --seeds`")
    real_n = c2.number_input("real tiles per class · real_per_class", 0, 16, 4,
                             help="real patches of each class from the `eval` split of the run's data set "
                                  "(the ones the metrics compare with), shown beside the generated ones; "
                                  "0 = none. CLI: `python -m engine sample --real-per-class`")
    psi = c3.slider("truncation", 0.0, 1.0, 0.7, 0.05,
                    help="truncation psi: 1 = full diversity, smaller = closer to the class average "
                         "(cleaner, less varied), 0 = the class average only")
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
key = (meta["path"], meta["mtime"], tuple(idx), tuple(seeds), float(psi))
result = st.session_state.get("samples_result")
if result is None or result["key"] != key:
    bar = st.progress(0.0, text="Generating...")
    t0 = time.perf_counter()
    patches, records = sampling.generate(
        G, idx, seeds, truncation=psi, class_names=names, batch=32,
        progress=lambda done, total: bar.progress(done / total, text=f"Generating {done}/{total}"))
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
           f"{meta['res']} px in {result['seconds']:.2f} s {ui_cache.device_caption(G)}; psi {psi:g}")
n, k = len(seeds), int(real_n)
real, real_note = ui_cache.real_tiles_of_run(run.run_dir, classes, k, meta["res"]) if k else ({}, "")
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
base = f"{run.run_id}_step{step}_psi{psi:g}"
d1.download_button("Download grid PNG", result["grid_png"], file_name=f"{base}_grid.png",
                   mime="image/png", icon=":material/grid_on:")
d2.download_button("Download patches (zip + manifest.csv)",
                   result["zip"],
                   file_name=f"{base}_patches.zip", mime="application/zip", icon=":material/folder_zip:")
ui_nav.next_step("pages/style_mixing.py", "mix the coarse and fine styles of two samples")
