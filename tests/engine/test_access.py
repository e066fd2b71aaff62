"""The access key (engine/access.py): loopback detection, first-start key, hashed storage, constant-time
verification, the environment override, reset, and the CLI."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from engine import access as A
from engine.utils import runs_root
from tests.conftest import ROOT


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch):
    monkeypatch.delenv(A.ENV_KEY, raising=False)


@pytest.mark.parametrize("address,loop", [
    ("127.0.0.1", True), ("127.0.1.1", True), ("localhost", True), ("::1", True), ("[::1]", True),
    ("0.0.0.0", False), ("::", False), ("", False), (None, False), ("192.168.1.20", False),
    ("lab.example.org", False),
])
def test_is_loopback(address, loop):
    assert A.is_loopback(address) is loop


def test_first_start_makes_a_key_stored_hashed(tmp_path):
    key = A.ensure_key(tmp_path)
    assert isinstance(key, str) and len(key) >= 32
    rec = json.loads((tmp_path / A.KEY_FILE).read_text())
    assert set(rec) == {"algorithm", "salt", "hash"} and key not in (tmp_path / A.KEY_FILE).read_text()
    assert rec["hash"] == A.hash_key(key, rec["salt"])
    assert A.verify(key, tmp_path) and A.verify(f"  {key}\n", tmp_path)  # pasted with whitespace
    assert not A.verify(key[:-1] + ("A" if key[-1] != "A" else "B"), tmp_path)
    assert not A.verify("", tmp_path) and not A.verify(None, tmp_path)
    # a second start makes nothing and keeps the key
    assert A.ensure_key(tmp_path) is None and A.verify(key, tmp_path)
    assert A.source(tmp_path) == "file"
    assert list(tmp_path.iterdir()) == [tmp_path / A.KEY_FILE]  # no temp file left


def test_same_key_two_labs_different_hashes(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    A.ensure_key(a)
    A.ensure_key(b)
    ra, rb = (json.loads((d / A.KEY_FILE).read_text()) for d in (a, b))
    assert ra["salt"] != rb["salt"] and ra["hash"] != rb["hash"]


def test_no_key_verifies_nothing(tmp_path):
    assert A.source(tmp_path) is None
    assert not A.verify("anything", tmp_path)


def test_damaged_file_is_replaced(tmp_path):
    (tmp_path / A.KEY_FILE).write_text("{not json")
    assert not A.verify("x", tmp_path) and A.source(tmp_path) is None
    key = A.ensure_key(tmp_path)
    assert key and A.verify(key, tmp_path)


def test_env_key_wins_and_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.setenv(A.ENV_KEY, "correct horse battery staple")
    assert A.ensure_key(tmp_path) is None
    assert not (tmp_path / A.KEY_FILE).exists()
    assert A.source(tmp_path) == "env"
    assert A.verify("correct horse battery staple", tmp_path)
    assert not A.verify("correct horse battery", tmp_path)


def test_reset_replaces_the_key(tmp_path):
    old = A.ensure_key(tmp_path)
    new = A.reset_key(tmp_path)
    assert new != old and A.verify(new, tmp_path) and not A.verify(old, tmp_path)


def test_cli_reset_prints_a_working_key(tmp_path):
    env = {"HISTOGEN_RUNS": str(runs_root()), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "engine", "access", "reset"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    key = out.stdout.strip().splitlines()[-1]
    assert A.verify(key, runs_root())
    status = subprocess.run([sys.executable, "-m", "engine", "access", "status"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 0 and "hash is in" in status.stdout and key not in status.stdout
