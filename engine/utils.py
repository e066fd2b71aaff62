"""Small shared helpers: atomic file writes, paths, device choice."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the whole new one, never a part.

    Temp file in the same directory (os.replace is atomic only within one file system), fsync of the
    file before the rename, then fsync of the directory so the rename itself survives a power cut.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def fsync_dir(path: str | os.PathLike) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_json(path: str | os.PathLike, default: Any = None) -> Any:
    """Read a JSON file; return `default` when it is missing or not valid JSON."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return default


def runs_root() -> Path:
    """Where run directories live: $HISTOGEN_RUNS or <repo>/runs."""
    return Path(os.environ.get("HISTOGEN_RUNS", REPO_ROOT / "runs")).resolve()


def default_demo_dir(size: int = 64) -> Path:
    """Where the built-in histosynth demo set of one size lives (<data root>/histosynth-<size>)."""
    return data_root() / f"histosynth-{size}"


def data_root() -> Path:
    """Where prepared data sets live: $HISTOGEN_DATA or <repo>/data."""
    return Path(os.environ.get("HISTOGEN_DATA", REPO_ROOT / "data")).resolve()


def pick_device(requested: str = "auto") -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'. Anything else is returned as given."""
    if requested != "auto":
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def device_label() -> str:
    """Human-readable name of the compute device, for the UI sidebar and logs."""
    import torch

    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        name = torch.cuda.get_device_name(0)
        return f"{n} x {name}" if n > 1 else name
    return f"CPU ({os.cpu_count()} cores)"
