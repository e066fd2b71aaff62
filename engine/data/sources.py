"""Data sources: the built-in `histosynth` demo set and `folder:PATH` image trees (NCT-CRC-HE / ImageFolder).

A source lists its items up front (cheap: file names only) and then decodes them one at a time, so that
`prepare` can stream 100k patches into the cache without holding them in memory. A file that cannot be
used is never fatal: `load()` returns a reject reason instead of an image, and `prepare` counts it.
"""
from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
import numpy as np

from engine.data.classes import NCT_CLASSES
from PIL import Image

from engine.config import ConfigError

IMAGE_EXTS = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
TIFF_EXTS = (".tif", ".tiff")
# Decompression bombs: a tile data set has no business holding a 25-megapixel image (and the quality
# filter's float copies of one would cost ~1 GB per worker). PIL raises above twice this number; we
# reject anything above it ourselves (reason `too_large`) before decoding.
MAX_PIXELS = 25_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

# Reject reasons of the source (the quality filter adds its own, see engine.data.quality.REASONS).
HISTOSYNTH_PER_CLASS = 200  # histosynth patches per class when per_class is 0 (the default)
READ_REASONS = ("empty", "not_image", "unreadable", "too_small", "too_large", "outside_class_folder")


def display_name(name: str | os.PathLike) -> str:
    """A file or folder name as valid UTF-8 text: bytes that are not UTF-8 (Latin-1 names on shared
    drives) become `\\xe9`-style escapes. Python keeps such bytes in a str as lone surrogates, which
    open() accepts but no UTF-8 writer (files.csv, JSON readers, the browser) does. Valid names are unchanged.
    """
    return os.fsencode(name).decode("utf-8", "backslashreplace")


class Reject(Exception):
    """A file that cannot be used; `reason` is one of READ_REASONS, `detail` says why in words."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


# ----------------------------------------------------------------------------------------------
# Decoding any image file to uint8 RGB

def to_rgb8(a: np.ndarray) -> np.ndarray:
    """Any decoded array (H,W), (H,W,1..4) or planar (C,H,W); uint8/16, int, float, bool -> uint8 (H,W,3).

    16-bit is scaled by 1/257 (full range), float in [0,1] by 255; alpha is composited on white, because
    transparent areas of a tile are background, and background in H&E is bright.
    """
    a = np.asarray(a)
    if a.ndim == 3 and a.shape[0] in (1, 2, 3, 4) and a.shape[-1] not in (1, 2, 3, 4):
        a = np.moveaxis(a, 0, -1)  # planar TIFF
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 2, 3, 4):
        raise Reject("unreadable", f"unsupported array shape {a.shape}")
    if a.dtype == np.bool_:
        a = a.astype(np.float32)
    if a.dtype == np.uint8:
        x = a.astype(np.float32)
    elif a.dtype.kind == "f":
        x = np.nan_to_num(a.astype(np.float32))
        x = x * 255.0 if x.max(initial=0) <= 1.0 else x
    elif a.dtype == np.uint16 or (a.dtype.kind in "iu" and a.max(initial=0) > 255):
        x = a.astype(np.float32) / 257.0
    else:
        x = a.astype(np.float32)
    x = np.clip(x, 0, 255)
    c = x.shape[-1]
    if c in (2, 4):  # colour + alpha
        alpha = x[..., -1:] / 255.0
        x = x[..., :-1] * alpha + 255.0 * (1.0 - alpha)
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    return np.ascontiguousarray(np.rint(x).astype(np.uint8))


def _pil_array(im: Image.Image) -> np.ndarray:
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode == "1":
        im = im.convert("L")
    elif im.mode not in ("L", "LA", "RGB", "RGBA", "I", "F") and not im.mode.startswith("I;16"):
        im = im.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX ...
    return np.asarray(im)


def _check_size(w: int, h: int, min_size: int) -> None:
    if w * h > MAX_PIXELS:
        raise Reject("too_large", f"{w}x{h} pixels is more than {MAX_PIXELS}")
    if min(w, h) < min_size:
        raise Reject("too_small", f"{w}x{h}, short side below {min_size}")


def _read_tifffile(path: Path, min_size: int) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            shape = page.shape
            hw = shape[1:3] if len(shape) == 3 and shape[0] in (1, 2, 3, 4) and shape[-1] > 4 else shape[:2]
            _check_size(int(hw[1]), int(hw[0]), min_size)
            return to_rgb8(page.asarray())
    except Reject:
        raise
    except Exception as e:  # tifffile raises many types on corrupt input; any of them means unreadable
        raise Reject("unreadable", f"{type(e).__name__}: {e}") from None


def read_image(path: str | os.PathLike, min_size: int = 0) -> np.ndarray:
    """Decode one image file to uint8 (H,W,3), or raise Reject with the reason.

    PIL first; TIFFs PIL cannot read (unusual compressions, float or planar layouts) go to tifffile.
    """
    path = Path(path)
    if path.suffix.lower() not in IMAGE_EXTS:
        raise Reject("not_image", f"extension {path.suffix or '(none)'} is not one of {', '.join(IMAGE_EXTS)}")
    try:
        if path.stat().st_size == 0:
            raise Reject("empty", "file has 0 bytes")
    except OSError as e:
        raise Reject("unreadable", str(e)) from None
    try:
        with Image.open(path) as im:
            _check_size(im.width, im.height, min_size)
            im.load()  # a truncated file fails here, not at open()
            return to_rgb8(_pil_array(im))
    except Reject:
        raise
    except Image.DecompressionBombError as e:
        raise Reject("too_large", str(e)) from None
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, struct.error ...
        if path.suffix.lower() in TIFF_EXTS:
            return _read_tifffile(path, min_size)
        raise Reject("unreadable", f"{type(e).__name__}: {e}") from None


def fit_square(img: np.ndarray, size: int) -> np.ndarray:
    """Resize so the short side is `size` (Lanczos, i.e. antialiased when shrinking), then centre-crop."""
    h, w = img.shape[:2]
    if (h, w) != (size, size):
        s = size / min(h, w)
        nw, nh = max(size, round(w * s)), max(size, round(h * s))
        if (nw, nh) != (w, h):
            img = np.asarray(Image.fromarray(img).resize((nw, nh), Image.Resampling.LANCZOS))
        top, left = (nh - size) // 2, (nw - size) // 2
        img = img[top:top + size, left:left + size]
    return np.ascontiguousarray(img)


# ----------------------------------------------------------------------------------------------
# Sources

@dataclass
class Source:
    """A listed data source. `items` are (class_index, ref); ref is a file path or a histosynth name."""

    name: str
    class_names: list[str]
    items: list[tuple[int, str]]
    synthetic: bool = False
    synthetic_label: str | None = None
    root: Path | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (reason, path) found while listing
    empty_classes: list[str] = field(default_factory=list)

    def load(self, k: int, size: int, min_size: int) -> np.ndarray:
        """Item k as uint8 (H,W,3) at its native resolution, or raise Reject.

        The quality filter looks at images before resizing (blur and JPEG blocks are only visible
        there); `fit_square(img, size)` then makes the patch.
        """
        return read_image(self.items[k][1], min_size)


class HistosynthSource(Source):
    """The built-in procedural set; item k = patch i of class c, rendered at the requested size."""

    def __init__(self, per_class: int, seed: int):
        from engine.data import histosynth as hs

        self.per_class, self.seed = per_class, seed
        super().__init__(name="histosynth", class_names=list(hs.CLASSES),
                         items=[(c, f"{name}-histosynth-s{seed}-{i:05d}")  # the names hs.generate gives
                                for c, name in enumerate(hs.CLASSES) for i in range(per_class)],
                         synthetic=True, synthetic_label=hs.SYNTHETIC_LABEL)

    def load(self, k: int, size: int, min_size: int) -> np.ndarray:
        from engine.data import histosynth as hs

        c, i = divmod(k, self.per_class)
        return hs.render(c, size, hs.patch_seed(self.seed, c, i))


def class_order(names: list[str]) -> list[str]:
    """NCT-CRC order when every class is an NCT class (a subset keeps that relative order), else sorted."""
    if names and all(n in NCT_CLASSES for n in names):
        return [n for n in NCT_CLASSES if n in names]
    return sorted(names)


def _walk_images(folder: Path) -> tuple[list[Path], list[Path]]:
    """Image files and other files under `folder` (recursive, sorted; hidden files and dirs ignored)."""
    images, others = [], []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in sorted(filenames):
            if fn.startswith("."):
                continue  # .DS_Store, ._AppleDouble, editor swap files: not data
            p = Path(dirpath) / fn
            (images if p.suffix.lower() in IMAGE_EXTS else others).append(p)
    return images, others


def folder_source(path: str | os.PathLike, per_class: int = 0, seed: int = 0, field: str = "source") -> Source:
    """List an ImageFolder-like tree `<root>/<CLASS>/**/<image>`; class names are the sub-folder names.

    `per_class` > 0 keeps a seeded random subset of that many files per class (the cap of PrepareConfig);
    files directly under the root and non-image files are counted as skipped, never read. `field` is the
    config field the errors name (`source`, or `test_source` for the second folder).
    """
    root = Path(path).expanduser()
    if not root.exists():
        raise ConfigError(f"config field '{field}': folder {root} does not exist")
    if not root.is_dir():
        raise ConfigError(f"config field '{field}': {root} is not a folder; expected <root>/<CLASS>/<images>")
    root = root.resolve()
    skipped = [("outside_class_folder", display_name(p)) for p in sorted(root.iterdir())
               if p.is_file() and not p.name.startswith(".")]
    class_dirs = {p.name: p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    if not class_dirs:
        raise ConfigError(f"config field '{field}': folder {root} has no class sub-folders; "
                          f"expected <root>/<CLASS>/<image files> ({', '.join(IMAGE_EXTS)})")
    listed, empty = {}, []
    for name, d in class_dirs.items():
        images, others = _walk_images(d)
        skipped += [("not_image", display_name(p)) for p in others]
        if not images:
            empty.append(name)
            continue
        if per_class and len(images) > per_class:
            # A seeded subset, not the first N: files sorted by name are often grouped by patient/slide.
            # fsencode: the folder's own bytes (the same as .encode() for UTF-8 names, and no crash otherwise)
            rng = np.random.default_rng([seed, zlib.crc32(os.fsencode(name))])
            images = [images[i] for i in sorted(rng.choice(len(images), per_class, replace=False))]
        # Class names are shown and stored as text, so they are made valid UTF-8; the item paths stay
        # as the OS gave them, so that the files can still be opened.
        listed[display_name(name)] = images
    names = class_order(list(listed))
    items = [(c, str(p)) for c, n in enumerate(names) for p in listed[n]]
    return Source(name=f"folder:{display_name(root)}", class_names=names, items=items, root=root,
                  skipped=skipped, empty_classes=sorted(display_name(e) for e in empty))


def open_source(source: str, per_class: int = 0, seed: int = 0, size: int = 64) -> Source:
    """`histosynth` or `folder:PATH` -> a listed Source; anything else is a ConfigError."""
    if source == "histosynth":
        from engine.data.histosynth import SIZE_RANGE

        if not SIZE_RANGE[0] <= size <= SIZE_RANGE[1]:
            raise ConfigError(f"config field 'size' must be between {SIZE_RANGE[0]} and {SIZE_RANGE[1]} "
                              f"for the histosynth source (got {size})")
        return HistosynthSource(per_class or HISTOSYNTH_PER_CLASS, seed)
    if source.startswith("folder:"):
        if not source[len("folder:"):]:
            raise ConfigError("config field 'source' is folder: with no path; use folder:/path/to/root")
        return folder_source(source[len("folder:"):], per_class, seed)
    raise ConfigError(f"config field 'source' must be one of: histosynth, folder:PATH (got {source!r})")


def open_test_source(spec: str, main: Source, per_class: int = 0, seed: int = 0) -> tuple[Source, list[str]]:
    """The second folder of `prepare --test-source folder:PATH` (e.g. CRC-VAL-HE-7K, spec 1.1), listed
    with its items' class indices in `main`'s class order (classes matched by folder name).

    Returns (source, main classes the folder has no image of). A class folder unknown to the main source
    is a ConfigError naming both lists (a silent extra class would shift every label); the same folder as
    the main source is refused too (every test patch would also be a training patch).
    """
    t = folder_source(spec[len("folder:"):], per_class, seed, field="test_source")
    if main.root is not None and t.root == main.root:
        raise ConfigError(f"config field 'test_source': {display_name(t.root)} is the main source itself; "
                          "its patches would be in train and test at once")
    unknown = [n for n in t.class_names if n not in main.class_names]
    if unknown:
        raise ConfigError(f"config field 'test_source': class folder(s) {', '.join(unknown)} of "
                          f"{display_name(t.root)} are not classes of the main source (main source classes: "
                          f"{', '.join(main.class_names)}; test source classes: {', '.join(t.class_names)})")
    to_main = [main.class_names.index(n) for n in t.class_names]
    items = [(to_main[c], ref) for c, ref in t.items]
    missing = [n for n in main.class_names if n not in t.class_names]
    return Source(name=t.name, class_names=list(main.class_names), items=items, root=t.root,
                  skipped=t.skipped, empty_classes=t.empty_classes), missing
