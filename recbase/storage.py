"""Paths that may be local or ``s3://``: one place that turns a path into (filesystem, path).

S3 goes through s3fs; its endpoint and credentials come from the environment (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, instance roles, ...), never from the repo.
"""
from __future__ import annotations

import contextlib
import json
import posixpath
import time
import uuid
from typing import Any, Callable, Iterable, Iterator

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq


# an object store that is briefly unreachable (a restart, a network blip) costs a wait, not the run:
# remote reads and writes are retried with exponential backoff for about RETRY_SECONDS, then fail loudly. Each
# retried write is a whole-object PUT, so a reader never sees a partial object; a stage whose writes
# fail never writes its manifest (always last), so nothing half written ever looks complete.
RETRY_SECONDS = 30.0
_NOT_TRANSIENT = (FileNotFoundError, PermissionError, IsADirectoryError, ValueError, TypeError, KeyError)


def _retrying(what: str, fn: Callable[[], Any], after: str = "nothing was marked complete, rerun to continue") -> Any:
    """``fn()``, retried with backoff until RETRY_SECONDS of wall time (s3fs's and botocore's own retries
    inside each attempt count too) have passed since the first attempt."""
    delay, t0 = 0.5, time.monotonic()
    while True:
        try:
            return fn()
        except _NOT_TRANSIENT:
            raise
        except Exception as e:  # s3fs/botocore/aiohttp raise many types for "cannot reach the store"
            waited = time.monotonic() - t0
            if waited >= RETRY_SECONDS:
                raise OSError(f"{what}: the object store did not answer for {waited:.0f} s ({type(e).__name__}: {e}); "
                              f"{after}") from e
            time.sleep(min(delay, max(0.0, RETRY_SECONDS - waited)))
            delay = min(2 * delay, 8.0)


def _remote_read(path: str, fn: Callable[[], Any]) -> Any:
    """``fn()``, with the write retry budget when ``path`` is remote (a missing file is never retried)."""
    return _retrying(f"reading {path}", fn, "nothing was changed, rerun once it answers") if is_remote(path) else fn()


def is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def filesystem(path: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem that serves ``path`` and the path within it."""
    fs, p = fsspec.core.url_to_fs(path)
    return fs, p


def join(base: str, *parts: str) -> str:
    return posixpath.join(base, *parts)


def exists(path: str) -> bool:
    fs, p = filesystem(path)
    return _remote_read(path, lambda: fs.exists(p))


def write_parquet(table: pa.Table, path: str) -> None:
    """Write a table so that a reader never sees it half written (temp name, then rename/PUT)."""
    write_parquet_batches(lambda: [table], table.schema, path)


def write_parquet_batches(batches: Callable[[], Iterable[pa.Table]], schema: pa.Schema, path: str) -> int:
    """``write_parquet`` for a table that arrives in pieces (``batches()`` yields them; called again when a
    remote write is retried): each batch becomes a row group as it comes, so the writer holds one batch;
    the file appears whole or not at all (locally a temp name, then a rename; an S3 object becomes visible
    only when its upload completes). Returns the rows written."""
    fs, p = filesystem(path)
    parent = posixpath.dirname(p)
    if parent and not is_remote(path):
        fs.makedirs(parent, exist_ok=True)
    target = p if is_remote(path) else f"{p}.tmp-{uuid.uuid4().hex[:8]}"

    def write() -> int:
        rows = 0
        with fs.open(target, "wb") as f, pq.ParquetWriter(f, schema) as writer:
            for batch in batches():
                writer.write_table(batch.cast(schema))
                rows += batch.num_rows
        return rows

    try:
        rows = write() if not is_remote(path) else _retrying(f"writing {path}", write)
    except BaseException:
        if not is_remote(path) and fs.exists(target):
            fs.rm(target)
        raise
    if not is_remote(path):
        fs.mv(target, p)
    return rows


def read_parquet(path: str, columns: list[str] | None = None) -> pa.Table:
    fs, p = filesystem(path)

    def read() -> pa.Table:
        if not fs.exists(p):
            raise FileNotFoundError(f"{path}: no such file")
        if fs.isdir(p):  # a sharded table (corpus preparation on Ray): its part files in name order
            parts = sorted(f for f in fs.ls(p, detail=False) if f.endswith(".parquet"))
            tables = []
            for part in parts:
                with fs.open(part, "rb") as f:
                    tables.append(pq.read_table(f, columns=columns))
            if not tables:
                raise FileNotFoundError(f"{path}: a directory with no .parquet part")
            return pa.concat_tables(tables)
        with fs.open(p, "rb") as f:
            return pq.read_table(f, columns=columns)

    return _remote_read(path, read)


def write_bytes(data: bytes, path: str) -> None:
    """Write a whole file so that a reader never sees it half written."""
    fs, p = filesystem(path)
    if is_remote(path):
        _retrying(f"writing {path}", lambda: fs.pipe_file(p, data))  # one PUT: visible only once complete
        return
    parent = posixpath.dirname(p)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    tmp = f"{p}.tmp-{uuid.uuid4().hex[:8]}"
    with fs.open(tmp, "wb") as f:
        f.write(data)
    fs.mv(tmp, p)


def as_json(obj: Any) -> Any:
    """``obj`` as ``write_json`` stores it and ``read_json`` gives it back (tuples as lists, others as str)."""
    return json.loads(json.dumps(obj, default=str))


def write_json(obj: Any, path: str) -> None:
    write_bytes(json.dumps(obj, indent=2, sort_keys=False, default=str).encode(), path)


def remove(path: str) -> None:
    fs, p = filesystem(path)
    if fs.exists(p):
        fs.rm(p, recursive=True)


def list_files(directory: str, suffix: str = "") -> list[str]:
    """Files directly under ``directory`` (full paths, same scheme), sorted; [] if it does not exist."""
    fs, p = filesystem(directory)

    def ls() -> list[str]:
        return sorted(f.rsplit("/", 1)[-1] for f in fs.ls(p, detail=False)) if fs.exists(p) else []

    return [join(directory, n) for n in _remote_read(directory, ls) if n.endswith(suffix)]


def read_json(path: str) -> Any:
    fs, p = filesystem(path)

    def read() -> bytes:
        with fs.open(p, "rb") as f:
            return f.read()

    return json.loads(_remote_read(path, read))


def open_binary(path: str):
    """Open ``path`` for reading bytes, with a clear error when it is missing."""
    fs, p = filesystem(path)

    def open_() -> Any:
        if not fs.exists(p):
            raise FileNotFoundError(f"{path}: no such file")
        return fs.open(p, "rb")

    return _remote_read(path, open_)


def absolute(path: str, root: str = "") -> str:
    """A local path made absolute, relative to ``root`` ("" = this process's directory; Ray workers run
    in directories of their own); remote URIs as given."""
    import os

    return path if is_remote(path) else os.path.abspath(os.path.join(root, path))


def completed(manifest_path: str, force: bool, stage: str, log, accept: Callable[[dict], bool] | None = None,
              what: str = "") -> Any | None:
    """The manifest of a stage whose output is complete (and not forced to redo), else None. ``accept``
    may refuse a manifest that no longer answers the config (e.g. a pretraining asked for more steps);
    ``what`` says in the message what was found."""
    if force or not exists(manifest_path):
        return None
    manifest = read_json(manifest_path)
    if accept is not None and not accept(manifest):
        return None
    root, name = manifest_path.rsplit("/", 1)
    log(f"[{stage}] {root} is complete ({name}{what or ' present'}); "
        f"set {stage}.force=true to redo")
    return manifest


def put_dir(local_dir: str, dest: str) -> None:
    """Copy a local directory's files to ``dest`` (local or remote), replacing what was there.

    Locally the copy is written beside ``dest`` and renamed into place, so ``dest`` is never half written.
    """
    import os
    import shutil

    if is_remote(dest):
        fs, p = filesystem(dest)

        def put() -> None:
            if fs.exists(p):
                fs.rm(p, recursive=True)
            fs.put(local_dir.rstrip("/") + "/", p, recursive=True)

        _retrying(f"copying {local_dir} to {dest}", put)
        return
    tmp = f"{dest.rstrip('/')}.tmp-{uuid.uuid4().hex[:8]}"
    shutil.copytree(local_dir, tmp)
    if os.path.exists(dest):
        shutil.rmtree(dest)
    os.replace(tmp, dest)


def write_figure(fig, path_png: str, dpi: int = 110) -> bytes:
    """Save a matplotlib figure as PNG to ``path_png`` (local or remote), close it, return the bytes."""
    import io

    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    write_bytes(buf.getvalue(), path_png)
    return buf.getvalue()


@contextlib.contextmanager
def local_dir(path: str) -> Iterator[str]:
    """A local directory holding ``path``'s files: ``path`` itself when local, else a temporary download
    (for libraries that only read local directories, e.g. ``from_pretrained``)."""
    if not is_remote(path):
        yield path
        return
    import tempfile

    fs, p = filesystem(path)
    with tempfile.TemporaryDirectory(prefix="recbase-") as tmp:
        _retrying(f"downloading {path}", lambda: fs.get(p.rstrip("/") + "/", tmp + "/", recursive=True))
        yield tmp
