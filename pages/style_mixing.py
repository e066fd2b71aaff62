"""Style mixing page: take some layers' styles from a donor sample; the image follows the sliders."""
from __future__ import annotations

import time

import streamlit as st

from engine import images, sampling
from ui import frame, widgets

frame.require_frame()

st.title("Style mixing")
st.caption("Coarse layers set the layout (tissue architecture), middle ones the structures (glands, "
           "nuclei), fine ones texture and stain colour. Each sample is a (class, seed) pair, the same "
           "as on the Samples page.")

picked = widgets.pick_generator("mix")
if picked is None:
    st.stop()
G, meta, run = picked
if sampling.is_family(G):
    st.info(f"Style mixing is StyleGAN-only: run `{run.run_id}` is a {meta.get('family')} run, which has no "
            "per-layer styles to blend. Sample it per class on the Samples page.")
    st.stop()
names = meta["class_names"]
groups = sampling.layer_groups(G)
n = G.num_ws
MAX_SEED = 2**32 - 1

c1, c2 = st.columns(2)
with c1:
    st.subheader("Source")
    src_class = st.selectbox("source class", names, key=f"mix_src_class_{run.run_id}")
    src_seed = st.number_input("source seed", 0, MAX_SEED, 0, key=f"mix_src_seed_{run.run_id}")
with c2:
    st.subheader("Style donor")
    dst_class = st.selectbox("donor class", names, key=f"mix_dst_class_{run.run_id}",
                             help="the same class as the source or another one")
    dst_seed = st.number_input("donor seed", 0, MAX_SEED, 1, key=f"mix_dst_seed_{run.run_id}")

mode = st.radio("mix", ["crossover layer", "per-layer sliders"], horizontal=True, key="mix_mode",
                help="crossover: every layer from the chosen one on comes from the donor; sliders: a donor "
                     "weight per layer (0 = source, 1 = donor)")


def _span(g: str) -> str:
    rs = sorted({e["res"] for e in groups if e["group"] == g})
    return "" if not rs else f"{rs[0]}-{rs[-1]} px" if len(rs) > 1 else f"{rs[0]} px"


if mode == "crossover layer":
    first_middle = next((e["index"] for e in groups if e["group"] != "coarse"), n)
    labels = {e["index"]: f"{e['index']}: {e['name']} ({e['group']}) and above" for e in groups}
    labels[n] = f"{n}: none (source only)"
    mix = st.selectbox("crossover layer", list(range(n + 1)), index=first_middle,
                       format_func=labels.get, key=f"mix_cross_{n}",
                       help="layers from this one on take the donor's style")
else:
    cols = st.columns(3)
    mix = [0.0] * n
    for col, g in zip(cols, ("coarse", "middle", "fine")):
        col.markdown(f"**{g}** {_span(g)}")
        for e in (e for e in groups if e["group"] == g):
            mix[e["index"]] = col.slider(f"{e['name']} ({g})", 0.0, 1.0, 1.0 if g == "fine" else 0.0, 0.05,
                                         key=f"mix_w_{n}_{e['index']}")

c3, c4 = st.columns(2)
psi = c3.slider("truncation", 0.0, 1.0, 0.7, 0.05, key="mix_psi",
                help="truncation psi toward each class's average w (1 = none)")
noise = c4.slider("noise_strength", 0.0, 2.0, 1.0, 0.05, key="mix_noise",
                  help="scale of the generator's fixed per-pixel noise (fine detail); 0 = none")

t0 = time.perf_counter()
src, dst = (names.index(src_class), int(src_seed)), (names.index(dst_class), int(dst_seed))
panel = sampling.style_mix_batch(G, src, dst, mix, truncation=psi, noise_strength=noise, with_sources=True)
dt = time.perf_counter() - t0
st.session_state["mix_panel"] = panel  # the last render (source, donor, mixed), for tests and reuse

cols = st.columns(3)
captions = (f"source: {src_class} seed {src[1]}", f"donor: {dst_class} seed {dst[1]}", "mixed")
for col, img, cap in zip(cols, panel, captions):
    col.image(images.upscale(img, min_px=max(192, meta["res"])), caption=cap, width="stretch")
st.caption(f"run `{run.run_id}`, step {meta['step']} ({meta['kind']}); rendered in {dt * 1000:.0f} ms "
           f"{widgets.device_caption(G)}")
st.download_button("Download mixed PNG", sampling.png_bytes(panel[2]),
                   file_name=f"{run.run_id}_mix_{src_class}{src[1]}_{dst_class}{dst[1]}.png", mime="image/png",
                   icon=":material/download:")
frame.next_step("pages/evaluate.py", "measure FID / KID per class against the real patches")
