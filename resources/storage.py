"""Storage engines: Parquet tables and content-addressed checkpoint folders, local or on S3.

Paths are UPath locations (a local path or ``s3://bucket/prefix``; S3 credentials and endpoint
come from the standard AWS environment). Writes are published atomically: locally by renaming a
finished temporary file or folder into place; on S3 by uploading whole objects and writing a
checkpoint's manifest last, so a reader never sees a partial table or checkpoint.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from upath import UPath

from resources.retry import DEFAULT_POLICY, RetryPolicy, retrying

MANIFEST_FILE = "_MANIFEST.json"


def is_local(path: UPath | str) -> bool:
    """True for plain filesystem paths."""
    return UPath(path).protocol in ("", "file", "local")


def frame_hash(df: pl.DataFrame) -> str:
    """Content hash of a table (schema and rows, in order), stable across processes."""
    digest = hashlib.sha256(str(df.schema).encode())
    digest.update(df.write_ndjson().encode())
    return digest.hexdigest()


def folder_hash(folder: Path, exclude: tuple[str, ...] = ()) -> str:
    """Content hash of a folder: every file's relative path and bytes, in sorted order (``exclude``: names)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in exclude):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\x00")
        with path.open("rb") as handle:
            for block in iter(lambda h=handle: h.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def publish_bytes(path: UPath | Path | str, data: bytes, policy: RetryPolicy = DEFAULT_POLICY) -> UPath:
    """Write ``data`` at ``path`` so that a reader sees the old object or the whole new one, never a part:
    locally through a temporary file renamed into place, on S3 as one PUT. Transient faults are retried."""
    path = UPath(path)
    retrying(lambda: _write_whole(path, data), f"writing {path}", policy)
    return path


def _write_whole(path: UPath, data: bytes) -> None:
    if is_local(path):
        target = Path(path.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def read_bytes(path: UPath | str, policy: RetryPolicy = DEFAULT_POLICY) -> bytes:
    """The bytes at ``path``, transient faults retried."""
    path = UPath(path)
    return retrying(path.read_bytes, f"reading {path}", policy)


class TableStore:
    """Reads and writes Parquet tables under a base location (transient storage faults are retried)."""

    def __init__(self, base: str, policy: RetryPolicy = DEFAULT_POLICY) -> None:
        self.base = UPath(base)
        self.policy = policy

    def location(self, *parts: str) -> UPath:
        """Where the table named by ``parts`` lives (``.parquet`` is appended to the last part)."""
        *folders, name = parts
        return self.base.joinpath(*folders, f"{name}.parquet")

    def write(self, df: pl.DataFrame, path: UPath, metadata: dict[str, str] | None = None) -> UPath:
        """Publish ``df`` at ``path`` atomically, with ``metadata`` as Parquet key-value metadata."""
        buffer = io.BytesIO()
        df.write_parquet(buffer, metadata=metadata)
        return publish_bytes(path, buffer.getvalue(), self.policy)

    @staticmethod
    def read(path: UPath | str, policy: RetryPolicy = DEFAULT_POLICY) -> pl.DataFrame:
        """Read a Parquet table written by :meth:`write`."""
        return pl.read_parquet(io.BytesIO(read_bytes(path, policy)))

    @staticmethod
    def read_metadata(path: UPath | str, policy: RetryPolicy = DEFAULT_POLICY) -> dict[str, str]:
        """The Parquet key-value metadata of a table."""
        return pl.read_parquet_metadata(io.BytesIO(read_bytes(path, policy)))


@dataclass(frozen=True)
class PublishedCheckpoint:
    """Where a checkpoint folder was published and its content hash."""

    uri: str
    content_hash: str


class CheckpointStore:
    """Content-addressed model folders: ``{base}/{name}/{hash[:16]}``, published whole."""

    def __init__(self, base: str, cache_dir: str, policy: RetryPolicy = DEFAULT_POLICY) -> None:
        self.base = UPath(base)
        self.cache_dir = Path(cache_dir)
        self.policy = policy

    def publish(self, folder: Path, name: str) -> PublishedCheckpoint:
        """Copy ``folder`` into the store under its content hash; identical content is stored once (a local
        copy that no longer matches its hash, e.g. damaged on disk, is replaced)."""
        content_hash = folder_hash(folder)
        target = self.base / name / content_hash[:16]
        manifest = json.dumps({"content_hash": content_hash, "files": _relative_files(folder)})
        if is_local(target):
            _publish_local(folder, Path(target.path), manifest, content_hash)
        elif not (target / MANIFEST_FILE).exists():
            for relative in _relative_files(folder):
                publish_bytes(target / relative, (folder / relative).read_bytes(), self.policy)
            publish_bytes(target / MANIFEST_FILE, manifest.encode(), self.policy)
        return PublishedCheckpoint(str(target), content_hash)

    def local_folder(self, uri: str) -> str:
        """A local folder holding the checkpoint at ``uri`` (downloaded once into the cache for S3)."""
        source = UPath(uri)
        if not (source / MANIFEST_FILE).exists():
            raise FileNotFoundError(f"checkpoint {uri} is missing or incomplete (no {MANIFEST_FILE})")
        if is_local(source):
            return source.path
        manifest = json.loads(read_bytes(source / MANIFEST_FILE, self.policy))
        local = self.cache_dir / "downloads" / manifest["content_hash"][:16]
        if not local.exists():
            local.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".download.", dir=local.parent))
            for relative in manifest["files"]:
                (tmp / relative).parent.mkdir(parents=True, exist_ok=True)
                (tmp / relative).write_bytes(read_bytes(source / relative, self.policy))
            os.replace(tmp, local)
        return str(local)


def _relative_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _publish_local(folder: Path, target: Path, manifest: str, content_hash: str) -> None:
    """Copy ``folder`` to ``target`` unless an intact copy is already there; a damaged one is replaced."""
    if (target / MANIFEST_FILE).exists() and folder_hash(target, exclude=(MANIFEST_FILE,)) == content_hash:
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        shutil.copytree(folder, tmp, dirs_exist_ok=True)
        (tmp / MANIFEST_FILE).write_text(manifest)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
