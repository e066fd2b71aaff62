"""histosynth: a procedural, seeded generator of H&E-like 9-class demo patches.

Synthetic demo data, not real tissue. Each class is drawn from a handful of randomised primitives
(soft ellipse "nuclei", Voronoi membranes, fibre stripes, glands) into two optical-density maps,
haematoxylin (H, nuclei, purple) and eosin (E, cytoplasm and fibres, pink), which are mixed with
Beer-Lambert: rgb = 255 * exp(-(OD_h * h_vec + OD_e * e_vec)).

All geometry is drawn in unit coordinates [0, 1]^2 (the whole patch is one field of view, as an NCT-CRC
tile is), so a seed gives the same tissue at every size; only pixel grain differs.
"""
import numpy as np
from PIL import Image
from scipy import ndimage

from engine.data.classes import NCT_CLASSES

CLASSES = NCT_CLASSES  # histosynth draws the NCT classes, in their order
SYNTHETIC_LABEL = "histosynth (synthetic demo data, not real tissue)"
SIZE_RANGE = (32, 256)

# stain OD vectors (natural log), estimated with Macenko's method on the NCT-CRC example crops
H_VEC = np.array([0.53, 0.74, 0.41])
E_VEC = np.array([0.21, 0.88, 0.44])

# ---------------------------------------------------------------- primitives


def _grid(n):
    c = (np.arange(n, dtype=np.float32) + 0.5) / n
    return np.meshgrid(c, c)  # X (columns), Y (rows)


def _noise(rng, n, cells):
    """Smooth noise (about unit std) with `cells` features across the patch, bicubic upsampled."""
    g = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
    return np.asarray(Image.fromarray(g).resize((n, n), Image.BICUBIC)) * 1.3


def _rotated(X, Y, theta):
    c, s = np.cos(theta), np.sin(theta)
    return (X - 0.5) * c + (Y - 0.5) * s, -(X - 0.5) * s + (Y - 0.5) * c


def _stamp(od, cx, cy, ra, rb, ang, val, rim=0.0):
    """Draw N anti-aliased ellipses (unit coords, radii ra along ang, rb across) into od.

    Vectorised over all ellipses: each gets a k x k pixel box, merged with ufunc.at, so hundreds of
    nuclei cost about one numpy call. rim > 0 lightens the centre (vesicular nuclei, goblet cells).
    """
    n = od.shape[0]
    cx, cy, ra, rb, ang, val, rim = (np.atleast_1d(np.asarray(a, np.float32)).ravel()
                                     for a in np.broadcast_arrays(cx, cy, ra, rb, ang, val, rim))
    big = np.maximum(ra, rb)
    inside = (cx > -big) & (cx < 1 + big) & (cy > -big) & (cy < 1 + big)  # skip ellipses off the patch
    cx, cy, ra, rb, ang, val, rim = (a[inside] for a in (cx, cy, ra, rb, ang, val, rim))
    if cx.size == 0:
        return
    k = int(np.ceil(2 * big.max() * n)) + 3
    ox = np.floor(cx * n - k / 2).astype(np.int64)[:, None, None]
    oy = np.floor(cy * n - k / 2).astype(np.int64)[:, None, None]
    j = np.arange(k)
    px, py = ox + j[None, None, :], oy + j[None, :, None]  # (N, 1, k) and (N, k, 1): broadcast, not k*k
    dx = ((px + 0.5) / n - cx[:, None, None]).astype(np.float32)
    dy = ((py + 0.5) / n - cy[:, None, None]).astype(np.float32)
    c, s = np.cos(ang)[:, None, None], np.sin(ang)[:, None, None]
    ia, ib = 1 / ra[:, None, None], 1 / rb[:, None, None]
    r = np.sqrt((dx * (c * ia) + dy * (s * ia)) ** 2 + (dy * (c * ib) - dx * (s * ib)) ** 2)
    # edge ramp one pixel wide whatever the size, so small nuclei stay round and visible at 32 px
    width = np.maximum(rb * n, 0.6)[:, None, None]
    v = np.clip((1 - r) * width + 0.5, 0, 1) * val[:, None, None]
    if rim.any():
        v *= 1 - rim[:, None, None] * np.clip(1 - r, 0, 1) ** 0.7
    ok = ((px >= 0) & (px < n)) & ((py >= 0) & (py < n)) & (v > 0)
    assert od.flags.c_contiguous  # else reshape would copy and the stamps would be lost
    np.maximum.at(od.reshape(-1), (py * n + px)[ok], v[ok].astype(od.dtype))  # overlaps merge, not add up


def _scatter(rng, m, jitter=0.5, lo=-0.05, hi=1.05):
    """~m*m points on a jittered grid over [lo, hi]^2: even spacing like packed cells, not clumps."""
    c = (np.arange(m) + 0.5) / m
    x, y = np.meshgrid(c, c)
    x = x.ravel() + rng.uniform(-jitter, jitter, m * m) / m
    y = y.ravel() + rng.uniform(-jitter, jitter, m * m) / m
    return lo + (hi - lo) * x, lo + (hi - lo) * y


def _uniform_pts(rng, k, lo=-0.03, hi=1.03):
    return rng.uniform(lo, hi, k), rng.uniform(lo, hi, k)


def _in(mask, x, y):
    """mask looked up at unit-coordinate points."""
    n = mask.shape[0]
    return mask[(np.clip(y, 0, 0.999) * n).astype(int), (np.clip(x, 0, 0.999) * n).astype(int)]


def _nuclei(rng, h, e, x, y, r, aspect=1.3, ang=None, dark=1.2, rim=0.0, jit=0.25, keep=None):
    """Nuclei at (x, y): H-dense ellipses with size / shape / darkness jitter, a little E underneath.

    keep masks nuclei out after the random draws, so the draws (and every later one) do not depend on
    a raster test that can flip with the patch size.
    """
    k = len(x)
    r = r * rng.uniform(1 - jit, 1 + jit, k)
    asp = aspect * rng.uniform(0.85, 1.15, k)
    ang = rng.uniform(0, np.pi, k) if ang is None else ang
    d = dark * rng.uniform(0.8, 1.15, k)
    if keep is not None:
        x, y, r, asp, ang, d, rim = (np.broadcast_to(v, (k,))[keep] for v in (x, y, r, asp, ang, d, rim))
    _stamp(h, x, y, r * np.sqrt(asp), r / np.sqrt(asp), ang, d, rim)
    _stamp(e, x, y, r * np.sqrt(asp), r / np.sqrt(asp), ang, 0.35 * d, 0.0)


def _clear(h, e, mask):
    """Empty space (lumen, vacuole, tear): no stain where mask = 1."""
    keep = 1 - np.clip(mask, 0, 1)
    h *= keep
    e *= keep


def _tears(rng, n, thr):
    """Ragged empty cracks: multi-octave noise above thr (thr ~ 1.5 gives a few % of the area)."""
    f = _noise(rng, n, 3) + 0.5 * _noise(rng, n, 7) + 0.25 * _noise(rng, n, 15)
    return np.clip((f - thr) * 3, 0, 1)


def _stripes(V, period, n):
    """Cosine fibre stripes across V, faded out where they would alias (period under ~3 px)."""
    fade = np.clip((period * n - 2.5) / 2.5, 0, 1)
    return (0.5 + 0.5 * np.cos(2 * np.pi * V / period)) * fade + 0.5 * (1 - fade)


def _fibre_profile(rng, V, spacing, n):
    """Irregular parallel fibres across V: random strand intensities on knots `spacing` apart."""
    kn = np.arange(-1.0, 1.0, spacing)
    val = np.clip(rng.standard_normal(kn.size) + 0.3, 0, None)
    fade = np.clip((spacing * n - 1.0) / 1.5, 0, 1)  # fibres finer than the pixels would only alias
    return fade * np.interp(V, kn, val) + (1 - fade) * val.mean()


# ---------------------------------------------------------------- classes


def _adi(rng, n, X, Y):
    h, e = np.zeros((2, n, n), np.float32)
    m = rng.integers(2, 5)  # fat cells across the patch: large, 50-100 um
    px, py = _scatter(rng, m + 2, jitter=0.4, lo=-1.0 / m, hi=1 + 1.0 / m)
    d1 = np.full((n, n), 9.0, np.float32)
    d2 = d1.copy()
    for a, b in zip(px, py):  # nearest / second-nearest seed: membranes lie where both are equal
        d = np.hypot(X - a, Y - b)
        d2 = np.minimum(d2, np.maximum(d1, d))
        d1 = np.minimum(d1, d)
    dist = (d2 - d1) * 0.5 * n  # ~ pixel distance to the nearest membrane
    hw = max(rng.uniform(0.003, 0.007) * n, 0.6)
    memb = np.clip(1 - dist / hw, 0, 1) * (_noise(rng, n, 6) > -1.4)
    e += memb * rng.uniform(0.9, 1.4) + rng.uniform(0.04, 0.1) + 0.03 * _noise(rng, n, 4)
    h += memb * 0.15
    # a few flattened nuclei lying along membranes: snap random points onto the nearest cell border
    x, y = _uniform_pts(rng, rng.integers(0, 4), 0.05, 0.95)
    for x0, y0 in zip(x, y):
        a, b = np.argsort(np.hypot(px - x0, py - y0))[:2]
        ux, uy = px[b] - px[a], py[b] - py[a]
        t = ((x0 - (px[a] + px[b]) / 2) * ux + (y0 - (py[a] + py[b]) / 2) * uy) / (ux * ux + uy * uy)
        _nuclei(rng, h, e, [x0 - t * ux], [y0 - t * uy], 0.012, aspect=4, ang=np.arctan2(ux, -uy), dark=1.0)
    return h, e


def _back(rng, n, X, Y):
    tone = rng.uniform(0, 1) ** 0.5  # 0 = bare glass, 1 = the mauve blank tiles of NCT-CRC
    base_h, base_e = 0.02 + 0.6 * tone, 0.03 + 0.55 * tone
    h = np.full((n, n), base_h, np.float32) * (1 + 0.06 * _noise(rng, n, 3))
    e = np.full((n, n), base_e, np.float32) * (1 + 0.06 * _noise(rng, n, 3))
    if rng.uniform() < 0.4:  # a scanner tile seam: two tones meet on a straight line
        side = (X if rng.uniform() < 0.5 else Y) > rng.uniform(0.2, 0.8)
        f = rng.uniform(0.75, 1.3)
        h[side] *= f
        e[side] *= f
    # blocky compression noise on a fixed unit grid, and dust specks
    blocks = rng.standard_normal((28, 28)).astype(np.float32)
    blk = np.asarray(Image.fromarray(blocks).resize((n, n), Image.NEAREST))
    h += 0.015 * blk * (0.3 + tone)
    k = rng.integers(0, 6)
    sx, sy = _uniform_pts(rng, k)
    _stamp(h, sx, sy, rng.uniform(0.003, 0.01, k), rng.uniform(0.002, 0.006, k), rng.uniform(0, 3, k), 0.6)
    return h, e


def _deb(rng, n, X, Y):
    h = np.clip(0.1 + 0.12 * _noise(rng, n, 5), 0.02, None)  # smudged, dissolved chromatin
    e = np.clip(rng.uniform(0.15, 0.3) + 0.1 * _noise(rng, n, 6), 0.05, None)
    x, y = _scatter(rng, rng.integers(18, 28), jitter=0.5)  # ghost cells / red cells, packed
    k = len(x)
    r = rng.uniform(0.013, 0.024, k)
    ang = rng.uniform(0, 3.2, k)
    _stamp(e, x, y, r, r * rng.uniform(0.6, 1.0, k), ang, rng.uniform(0.6, 1.3, k), rng.uniform(0, 0.3, k))
    _stamp(h, x, y, r, r * 0.8, ang, rng.uniform(0, 0.5, k) ** 2)  # some ghosts keep a purple tinge
    # karyorrhexis: dark nuclear fragments of every size, in clumps
    c = rng.integers(8, 20)
    cx, cy = _uniform_pts(rng, c)
    k = rng.integers(80, 250)
    j = rng.integers(0, c, k)
    x, y = cx[j] + rng.normal(0, 0.05, k), cy[j] + rng.normal(0, 0.05, k)
    r = rng.uniform(0.004, 0.013, k)
    _stamp(h, x, y, r, r * rng.uniform(0.4, 1.0, k), rng.uniform(0, 3.2, k), rng.uniform(0.8, 1.7, k))
    _clear(h, e, _tears(rng, n, rng.uniform(1.2, 3.0)))
    return h, e


def _lym(rng, n, X, Y):
    h = np.full((n, n), 0.05, np.float32)
    e = np.clip(rng.uniform(0.12, 0.25) + 0.08 * _noise(rng, n, 8), 0, None)
    m = rng.integers(22, 30)
    x, y = _scatter(rng, m, jitter=0.45)
    keep = _in(_noise(rng, 8, 3), x, y) > rng.uniform(-1.8, -0.6)  # sparse pockets between packed areas
    _nuclei(rng, h, e, x[keep], y[keep], rng.uniform(0.015, 0.02), aspect=1.15, dark=rng.uniform(1.2, 1.6),
            jit=0.15)
    if rng.uniform() < 0.3:  # a small vessel lumen
        mask = np.zeros((n, n), np.float32)
        _stamp(mask, rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.12),
               rng.uniform(0.03, 0.08), rng.uniform(0, 3), 1.0)
        _clear(h, e, mask)
    _clear(h, e, 0.7 * _tears(rng, n, 2.0))
    return h, e


def _muc(rng, n, X, Y):
    U, V = _rotated(X, Y, rng.uniform(0, np.pi))
    wisps = np.zeros((n, n), np.float32)
    for cells, p in ((4, 6), (8, 10)):  # ridged noise: thin branching threads of mucin
        f = _noise(rng, n, cells) + 1.5 * np.sin(2 * np.pi * V * rng.uniform(2, 5) + 2 * _noise(rng, n, 3))
        wisps += (1 - np.abs(f)).clip(0, 1) ** p
    pool = 0.55 + 0.45 * np.tanh(_noise(rng, n, 3) + 1.0)  # mucus lakes, thinner in places
    h = ((0.3 + 0.1 * _noise(rng, n, 10)).clip(0) + 0.35 * wisps) * pool * rng.uniform(0.8, 1.3) + 0.03
    e = (0.12 + 0.12 * wisps) * pool * rng.uniform(0.7, 1.3) + 0.03
    for _ in range(rng.integers(0, 3)):  # pink strands of stroma crossing the mucus
        U, V = _rotated(X, Y, rng.uniform(0, np.pi))
        w = rng.uniform(0.01, 0.05)
        band = np.exp(-((V - rng.uniform(-0.4, 0.4) - 0.05 * _noise(rng, n, 3)) / w) ** 2)
        e += band * rng.uniform(0.4, 0.9)
    _clear(h, e, 0.5 * _tears(rng, n, 2.2))
    k = rng.integers(0, 6)  # a few floating cells
    x, y = _uniform_pts(rng, k)
    _nuclei(rng, h, e, x, y, 0.014, dark=1.0)
    return h, e


def _mus(rng, n, X, Y):
    theta = rng.uniform(0, np.pi)
    U, V = _rotated(X, Y, theta)
    V = V + rng.uniform(0, 0.02) * np.sin(2 * np.pi * U / rng.uniform(0.5, 1.5)) + 0.004 * _noise(rng, n, 5)
    kn = np.linspace(-0.8, 0.8, 14)
    bundle = np.interp(V, kn, rng.uniform(0.65, 1.2, kn.size))  # fascicles differ in tone
    fib = _stripes(V + 0.005 * _noise(rng, n, 9), rng.uniform(0.012, 0.022), n)
    e = rng.uniform(0.55, 0.85) * bundle * (0.8 + 0.2 * fib) * (1 + 0.06 * _noise(rng, n, 6))
    h = 0.08 + 0.03 * fib
    # clefts between fascicles: straight white gaps running with the fibres
    g = np.interp(V, np.linspace(-0.8, 0.8, 20), rng.standard_normal(20))
    _clear(h, e, np.clip((g - rng.uniform(0.3, 1.2)) * 5, 0, 1))
    k = rng.integers(15, 40)  # cigar-shaped smooth-muscle nuclei, aligned with the fibres
    x, y = _uniform_pts(rng, k)
    _nuclei(rng, h, e, x, y, 0.018, aspect=rng.uniform(6, 10), ang=theta + rng.normal(0, 0.05, k), dark=1.2)
    return h, e


def _str(rng, n, X, Y):
    theta = rng.uniform(0, np.pi)
    e = np.zeros((n, n), np.float32)
    for layer in range(rng.integers(1, 3)):  # one or two interwoven layers of wavy collagen bundles
        U, V = _rotated(X, Y, theta + layer * rng.uniform(0.4, 1.4))
        V = V + rng.uniform(0.01, 0.03) * np.sin(2 * np.pi * U / rng.uniform(0.25, 0.6) + _noise(rng, n, 3)) \
            + 0.06 * _noise(rng, n, 3)
        s = _fibre_profile(rng, V, rng.uniform(0.02, 0.035), n)
        e = np.maximum(e, s * np.clip(0.5 + 0.7 * _noise(rng, n, 4), 0, 1))
    e = rng.uniform(0.5, 0.85) * e + 0.22 + 0.05 * _noise(rng, n, 6)
    h = 0.05 + 0.04 * e
    _clear(h, e, _tears(rng, n, rng.uniform(1.3, 2.5)))
    k = rng.integers(10, 30)  # sparse fibroblasts (spindles) and a few lymphocytes
    x, y = _uniform_pts(rng, k)
    _nuclei(rng, h, e, x, y, 0.013, aspect=rng.uniform(3, 6), ang=theta + rng.normal(0, 0.5, k), dark=1.2)
    k = rng.integers(0, 8)
    x, y = _uniform_pts(rng, k)
    _nuclei(rng, h, e, x, y, 0.014, dark=1.3)
    k = rng.integers(0, 12)  # red blood cells: small bright eosin discs
    x, y = _uniform_pts(rng, k)
    _stamp(e, x, y, 0.011, 0.01, 0, rng.uniform(1.0, 1.4))
    return h, e


def _glands(rng, n, X, Y, k, rmin, rmax, wobble, spread=0.0):
    """k gland cross-sections: radial coordinate rho (0 centre, 1 basement) of the nearest, and list."""
    rho = np.full((n, n), 9.0, np.float32)
    gl = []
    for _ in range(k):
        cx, cy = rng.uniform(0.1 - spread, 0.9 + spread, 2)
        r = rng.uniform(rmin, rmax)
        asp = rng.uniform(1.0, 1.4)
        harm, ph = rng.normal(0, wobble, 4), rng.uniform(0, 6.3, 4)
        a = np.arctan2(Y - cy, X - cx)
        rr = np.hypot((X - cx) * np.sqrt(asp), (Y - cy) / np.sqrt(asp)) / r
        rho = np.minimum(rho, rr / (1 + sum(harm[i] * np.sin((i + 2) * a + ph[i]) for i in range(4))))
        gl.append((cx, cy, r, asp, harm, ph))
    return rho, gl


def _gland_pts(g, rhos, angs):
    """Points at radial coordinate rhos and polar angles angs of gland g (inverse of _glands)."""
    cx, cy, r, asp, harm, ph = g
    rad = r * rhos * (1 + sum(harm[i] * np.sin((i + 2) * angs + ph[i]) for i in range(4)))
    return cx + rad * np.cos(angs) / np.sqrt(asp), cy + rad * np.sin(angs) * np.sqrt(asp)



def _norm(rng, n, X, Y):
    rho, gl = _glands(rng, n, X, Y, rng.integers(1, 4), 0.22, 0.4, 0.03)
    lumen = rng.uniform(0.2, 0.38)
    epi = (rho < 1) & (rho > lumen)
    e = (np.where(epi, rng.uniform(0.45, 0.65), rng.uniform(0.45, 0.7)) * (1 + 0.15 * _noise(rng, n, 6)))
    e, h = e.astype(np.float32), np.where(epi, 0.14, 0.08).astype(np.float32)
    holes = np.zeros((n, n), np.float32)
    for g in gl:
        m = int(2 * np.pi * g[2] / 0.022)  # basal nuclei, evenly spaced, oriented radially
        a = np.linspace(0, 2 * np.pi, m, endpoint=False) + rng.uniform(0, 1)
        x, y = _gland_pts(g, rng.uniform(0.86, 0.94, m), a)
        _nuclei(rng, h, e, x, y, 0.012, aspect=2.2, ang=a, dark=1.3, jit=0.15)
        # goblet cells: a ring of round pale mucin vacuoles in the epithelium, between the nuclei
        rg = g[2] * (0.84 - lumen) * 0.36
        ring = (lumen + 0.82) / 2
        m2 = int(2 * np.pi * g[2] * ring / (2.15 * rg))
        a2 = np.linspace(0, 2 * np.pi, m2, endpoint=False) + rng.uniform(0, 1)
        x, y = _gland_pts(g, ring + rng.normal(0, 0.02, m2), a2)
        rr = rg * rng.uniform(0.8, 1.05, m2)
        _stamp(holes, x, y, rr, rr * 0.85, a2, 0.9)
    goblets = holes.copy()
    holes = np.maximum(holes, (rho < lumen).astype(np.float32))
    _clear(h, e, holes)
    h += 0.1 * goblets  # faint grey-blue mucin in the goblets
    # lamina propria: many small round lymphocytes / plasma cells between the crypts
    x, y = _uniform_pts(rng, rng.integers(200, 450))
    _nuclei(rng, h, e, x, y, 0.012, dark=1.3, keep=_in(rho > 1.08, x, y))
    return h, e


def _tum(rng, n, X, Y):
    h = np.full((n, n), 0.14, np.float32)
    if rng.uniform() < 0.65:  # parts of large irregular glands: a crowded band of stratified cells
        rho, gl = _glands(rng, n, X, Y, rng.integers(1, 3), 0.4, 0.8, 0.1, spread=0.3)
        lumen = rng.uniform(0.35, 0.6)
        e = np.where(rho < 1.0, rng.uniform(0.5, 0.75), rng.uniform(0.4, 0.65)).astype(np.float32)
        e *= 1 + 0.1 * _noise(rng, n, 8)
        for g in gl:
            m = int(np.pi * g[2] ** 2 * (1 - lumen ** 2) * rng.uniform(500, 800))
            a = rng.uniform(0, 2 * np.pi, m)
            x, y = _gland_pts(g, rng.uniform(lumen + 0.04, 0.96, m), a)
            r, asp, ang = rng.uniform(0.017, 0.022), rng.uniform(2.5, 4), a + rng.normal(0, 0.2, m)
            dark, rim = rng.uniform(0.9, 1.3), rng.uniform(0.2, 0.6)
            _nuclei(rng, h, e, x, y, r, asp, ang, dark=dark, rim=rim, jit=0.35)
        _clear(h, e, np.clip((lumen - rho) * 20, 0, 1) * (0.75 + 0.25 * (_noise(rng, n, 8) < 0.8)))
        h += 0.15 * (rho < lumen) * (_noise(rng, n, 10) > 0.8)  # dirty necrosis in the lumen
        x, y = _uniform_pts(rng, 40)
        _nuclei(rng, h, e, x, y, 0.012, aspect=3, dark=1.1, keep=_in(rho > 1.05, x, y))
    else:  # solid sheet of large pleomorphic cells with vesicular nuclei
        e = rng.uniform(0.55, 0.8) * (1 + 0.15 * _noise(rng, n, 8)).astype(np.float32)
        x, y = _scatter(rng, rng.integers(8, 12), jitter=0.45)
        _nuclei(rng, h, e, x, y, rng.uniform(0.026, 0.034), aspect=rng.uniform(1.2, 1.8), dark=1.2,
                rim=rng.uniform(0.3, 0.6), jit=0.35)
        j = rng.uniform(size=x.size) < 0.5  # prominent nucleoli
        dx, dy = rng.normal(0, 0.005, (2, x.size))
        _stamp(h, (x + dx)[j], (y + dy)[j], 0.005, 0.005, 0, 1.3)
        _clear(h, e, _tears(rng, n, rng.uniform(1.5, 3.0)))
    return h, e


_RENDER = (_adi, _back, _deb, _lym, _muc, _mus, _norm, _str, _tum)

# ---------------------------------------------------------------- public API


def _check(name, v, lo, hi):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
        raise ValueError(f"histosynth: {name} must be an integer in {lo}..{hi}, got {v!r}")


def render(class_index: int, size: int, seed: int) -> np.ndarray:
    """One synthetic patch, a pure function of its arguments.

    Args:
        class_index: 0..8, index into CLASSES.
        size: side in pixels, 32..256.
        seed: any non-negative integer.
    Returns:
        uint8 array (size, size, 3), RGB.
    """
    _check("class_index", class_index, 0, len(CLASSES) - 1)
    _check("size", size, *SIZE_RANGE)
    _check("seed", seed, 0, 2**63 - 1)
    rng = np.random.default_rng([int(seed), int(class_index)])
    X, Y = _grid(size)
    h, e = _RENDER[class_index](rng, size, X, Y)
    # random flips / quarter turns: tissue has no up
    t = rng.integers(0, 8)
    h, e = (np.rot90(m, t % 4) for m in (h, e))
    if t >= 4:
        h, e = h[:, ::-1], e[:, ::-1]
    # stain jitter: intensity and hue of each stain vary slide to slide
    hv = H_VEC + rng.normal(0, 0.03, 3)
    ev = E_VEC + rng.normal(0, 0.03, 3)
    grain = 1 + 0.12 * _noise(rng, size, 48)  # chromatin and cytoplasm granularity, ~2 um
    h = ndimage.gaussian_filter(np.asarray(h, np.float32) * grain, 0.5) * rng.uniform(0.9, 1.1)
    e = ndimage.gaussian_filter(np.asarray(e, np.float32), 0.5) * rng.uniform(0.9, 1.1)
    od = h[..., None] * (hv / np.linalg.norm(hv)) + e[..., None] * (ev / np.linalg.norm(ev))
    od += np.array([0.06, 0.08, 0.06]) + rng.normal(0, 0.025, (size, size, 1))  # glass tint, grain
    return np.clip(255 * np.exp(-od), 0, 255).astype(np.uint8)


def patch_seed(seed: int, class_index: int, i: int) -> int:
    """Seed of patch i of class class_index in the demo set `seed` (a hash: sets never share patches)."""
    ss = np.random.SeedSequence([int(seed), int(class_index), int(i)])
    return int(ss.generate_state(1, np.uint64)[0] >> 1)  # 63 bits: a plain non-negative int


def generate(size: int, per_class: int, seed: int):
    """Yield (image uint8 HWC, class_index, name) for per_class patches of every class, class by class.

    Patch i of class c is render(c, size, patch_seed(seed, c, i)); names look like
    'ADI-histosynth-s0-00012' (class, source, set seed, patch index). Arguments are checked at once.
    """
    _check("size", size, *SIZE_RANGE)
    _check("per_class", per_class, 0, 10**6)
    _check("seed", seed, 0, 2**63 - 1)

    def patches():
        for c, cls in enumerate(CLASSES):
            for i in range(per_class):
                yield render(c, size, patch_seed(seed, c, i)), c, f"{cls}-histosynth-s{seed}-{i:05d}"
    return patches()
