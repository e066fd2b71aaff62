"""The researcher's access key: what the lab pages ask for when the app listens beyond this machine.

By default the app binds to 127.0.0.1 (.streamlit/config.toml), and only someone on this machine reaches
it. To let reviewers in, the researcher starts it on an outside address (`--server.address 0.0.0.0`);
then everyone on the network reaches the lab pages too, which launch jobs and read every run, so those
pages ask for this key (a reviewer's token link opens its review only, without it).

Where the key comes from:
- `HISTOGEN_ACCESS_KEY` in the environment, when set (nothing is written);
- else `<runs root>/.access_key.json`, made at the first exposed start: the key is printed once in the
  terminal and only its salted sha256 is stored. `python -m engine access reset` makes a new one.

Why a salted sha256 and not a slow password hash: the stored key is always one this module generated
(`secrets.token_urlsafe(24)`, 192 random bits), which no dictionary holds and no brute force reaches; the
salt keeps two labs' files from revealing that they share a key. A key from the environment is never
stored. Comparisons use `hmac.compare_digest` (constant time).
"""
from __future__ import annotations

import argparse
import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import sys
from pathlib import Path

from engine.utils import atomic_write_bytes, fsync_dir, runs_root

ENV_KEY = "HISTOGEN_ACCESS_KEY"
KEY_FILE = ".access_key.json"
LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


def key_path(root: str | os.PathLike | None = None) -> Path:
    """`<runs root>/.access_key.json` (hidden: never taken for a run)."""
    return (Path(root) if root is not None else runs_root()) / KEY_FILE


def is_loopback(address: str | None) -> bool:
    """Whether a server bound to `address` is reachable from this machine only.

    None or "" is not: Streamlit then listens on every interface (its default), as with 0.0.0.0 / ::.
    A host name other than localhost is not either (it names an outside interface, and resolving it is
    no business of a security check)."""
    a = (address or "").strip().strip("[]").lower()
    if not a:
        return False
    if a in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(a).is_loopback
    except ValueError:
        return False


def new_key() -> str:
    return secrets.token_urlsafe(24)


def hash_key(key: str, salt: str) -> str:
    """hex sha256 of salt + key (see the module docstring for why no slow hash)."""
    return hashlib.sha256(bytes.fromhex(salt) + key.strip().encode("utf-8")).hexdigest()


def _record(key: str) -> bytes:
    salt = secrets.token_hex(16)
    return (json.dumps({"algorithm": "sha256", "salt": salt, "hash": hash_key(key, salt)}, indent=2)
            + "\n").encode("utf-8")


def _read(path: Path) -> dict | None:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = (isinstance(d, dict) and d.get("algorithm") == "sha256" and isinstance(d.get("salt"), str)
          and isinstance(d.get("hash"), str))
    return d if ok else None


def source(root: str | os.PathLike | None = None) -> str | None:
    """Where the key comes from: "env", "file", or None (no key yet)."""
    if os.environ.get(ENV_KEY, "").strip():
        return "env"
    return "file" if _read(key_path(root)) else None


def ensure_key(root: str | os.PathLike | None = None) -> str | None:
    """Make the key at the first exposed start. Returns the new key (to print once) or None when a key
    already exists (the environment's, or a readable file)."""
    if source(root):
        return None
    path = key_path(root)
    key = new_key()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():  # unreadable (damaged): nobody can use it, so it is replaced
        atomic_write_bytes(path, _record(key))
        return key
    # Create-if-absent, atomically: write a temp file, then hard-link it to the name (fails if another
    # process made the file meanwhile: then that process printed the key, and this one prints nothing).
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        atomic_write_bytes(tmp, _record(key))
        try:
            os.link(tmp, path)
        except FileExistsError:
            return None
        except OSError:  # a file system without hard links: a plain atomic replace
            os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return key


def reset_key(root: str | os.PathLike | None = None) -> str:
    """A new key in the file (replacing the old one at once); returns it (to print once)."""
    key = new_key()
    atomic_write_bytes(key_path(root), _record(key))
    return key


def verify(key: str | None, root: str | os.PathLike | None = None) -> bool:
    """Whether `key` is the access key (constant-time comparison). No key set: nothing verifies."""
    if not isinstance(key, str) or not key.strip():
        return False
    env = os.environ.get(ENV_KEY, "").strip()
    if env:
        return hmac.compare_digest(key.strip().encode("utf-8"), env.encode("utf-8"))
    rec = _read(key_path(root))
    if rec is None:
        return False
    try:
        got = hash_key(key, rec["salt"])
    except ValueError:  # a salt that is not hex: a damaged file
        return False
    return hmac.compare_digest(got.encode("ascii"), rec["hash"].encode("ascii", "replace"))


# ----------------------------------------------------------------------------------------------
# CLI: python -m engine access ...

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine access",
                                description="the access key the lab pages ask for when the app listens on an "
                                            "outside address")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    sub.add_parser("reset", help="make a new key (printed once; only its hash is stored)")
    sub.add_parser("status", help="say where the key comes from")
    args = p.parse_args(argv)
    path = key_path()
    if args.cmd == "reset":
        key = reset_key()
        print(f"new access key (shown once; its hash is in {path}):\n{key}")
        if source() == "env":
            print(f"note: {ENV_KEY} is set, and it is the key while it is set", file=sys.stderr)
        print("browser sessions that typed the old key are asked for the new one", file=sys.stderr)
        return 0
    where = source()
    print({"env": f"the key is {ENV_KEY} (from the environment)",
           "file": f"the key's hash is in {path}",
           None: f"no key yet: one is made and printed at the first start on an outside address ({path})"}[where])
    return 0


if __name__ == "__main__":
    sys.exit(main())
