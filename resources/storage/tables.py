"""Storage engines: Parquet tables and content-addressed checkpoint folders, local or on S3.

Paths are UPath locations (a local path or ``s3://bucket/prefix``; S3 credentials and endpoint
come from the standard AWS environment). Writes are published atomically: locally by renaming a
finished temporary file or folder into place; on S3 by uploading whole objects and writing a
checkpoint's manifest last, so a reader never sees a partial table or checkpoint.

Versioned tables never overwrite one another: every materialization of an asset is its own file,
``{base}/{namespace}/{asset path}/{data_version}.parquet``, and the resolved settings a run used are
kept once per content hash under ``{base}/{namespace}/_settings/``. Removing old versions is an
explicit step (:mod:`resources.gc`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import polars as pl
from upath import UPath

from resources.storage.retry import DEFAULT_POLICY, RetryPolicy, retrying

MANIFEST_FILE = "_MANIFEST.json"
CONTENT_HASH_KEY = "content_hash"
SETTINGS_FOLDER = "_settings"


def is_local(path: UPath | str) -> bool:
    """True for plain filesystem paths."""
    return UPath(path).protocol in ("", "file", "local")


PROVENANCE_COLUMNS = ("source_run",)
"""Columns naming the run that first wrote a row: provenance, not content. They stay out of a table's content hash,
so a rerun that writes the same rows gets the same data version (and keeps the stored file, with its first run)."""


def frame_hash(df: pl.DataFrame) -> str:
    """Content hash of a table (schema and rows, in order, :data:`PROVENANCE_COLUMNS` left out), stable across
    processes."""
    content = df.drop(PROVENANCE_COLUMNS, strict=False)
    digest = hashlib.sha256(str(content.schema).encode())
    digest.update(content.write_ndjson().encode())
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


def _through_temp_file(target: Path, data: bytes, place: Callable[[Path, Path], None]) -> None:
    """Write ``data`` to a temporary file beside ``target``, then ``place`` it (rename or link): never half-written."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_bytes(data)
        place(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _write_whole(path: UPath, data: bytes) -> None:
    if is_local(path):
        _through_temp_file(Path(path.path), data, os.replace)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def publish_new_bytes(path: UPath | Path | str, data: bytes, policy: RetryPolicy = DEFAULT_POLICY) -> bool:
    """Like :func:`publish_bytes`, but never replaces an existing object: True if ``data`` was written, False if
    something was already at ``path``. Locally the finished temporary file is hard-linked into place, which
    fails when the name exists, so two concurrent writers cannot replace each other's file; on S3 the
    existence check and the PUT are two requests."""
    path = UPath(path)
    return retrying(lambda: _write_new(path, data), f"writing {path}", policy)


def _write_new(path: UPath, data: bytes) -> bool:
    if not is_local(path):
        if path.exists():
            return False
        _write_whole(path, data)
        return True
    try:
        _through_temp_file(Path(path.path), data, os.link)  # linking fails when the name exists
    except FileExistsError:
        return False
    return True


def read_bytes(path: UPath | str, policy: RetryPolicy = DEFAULT_POLICY) -> bytes:
    """The bytes at ``path``, transient faults retried."""
    path = UPath(path)
    return retrying(path.read_bytes, f"reading {path}", policy)


def check_writable(base: UPath | str, policy: RetryPolicy = DEFAULT_POLICY) -> None:
    """Raise :class:`~resources.storage.retry.StorageError` (naming the path and the reason) unless a small probe file
    can be written under ``base`` and removed again (transient faults retried)."""
    probe = UPath(base) / f".montessori-write-check-{uuid.uuid4().hex}"
    publish_bytes(probe, b"", policy)
    retrying(lambda: probe.unlink(missing_ok=True), f"removing {probe}", policy)


@dataclass(frozen=True)
class StoredVersion:
    """One stored version of an asset: a table file or a checkpoint folder, when it was written and its size."""

    path: str
    data_version: str
    modified: float
    size: int


@dataclass(frozen=True)
class VersionWrite:
    """Where a versioned table lives and what writing it did: ``written`` (a new file), ``unchanged`` (the same
    table was already stored under this version) or ``kept_existing`` (a different table carries the same data
    version, e.g. a checkpoint manifest of identical weights from another run; the first one is kept)."""

    path: UPath
    status: Literal["written", "unchanged", "kept_existing"]


def _segment(value: str, what: str) -> str:
    """``value`` if it is usable as one path segment (non-empty, no separator, not hidden)."""
    if not value or "/" in value or "\\" in value or value.startswith("."):
        raise ValueError(f"{what} {value!r} cannot be a path segment (empty, a separator or a leading dot)")
    return value


def content_version(text: str) -> str:
    """The short content hash naming a stored text (e.g. a settings file)."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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

    def asset_folder(self, namespace: str, asset_path: Sequence[str]) -> UPath:
        """``{base}/{namespace}/{asset path}``: the folder holding every version of an asset."""
        parts = [_segment(namespace, "namespace"), *(_segment(part, "asset path part") for part in asset_path)]
        return self.base.joinpath(*parts)

    def version_location(self, namespace: str, asset_path: Sequence[str], data_version: str) -> UPath:
        """``{base}/{namespace}/{asset path}/{data_version}.parquet``."""
        return self.asset_folder(namespace, asset_path) / f"{_segment(data_version, 'data version')}.parquet"

    def write_version(
        self, df: pl.DataFrame, namespace: str, asset_path: Sequence[str], data_version: str,
        metadata: dict[str, str] | None = None,
    ) -> VersionWrite:
        """Publish ``df`` as version ``data_version`` of the asset, atomically, never replacing a stored file.
        The table's content hash is stamped into the Parquet metadata (``content_hash``) and tells whether a
        table already stored under this version is the same one."""
        path = self.version_location(namespace, asset_path, data_version)
        content = frame_hash(df)
        if not path.exists():
            buffer = io.BytesIO()
            df.write_parquet(buffer, metadata={**(metadata or {}), CONTENT_HASH_KEY: content})
            if publish_new_bytes(path, buffer.getvalue(), self.policy):
                return VersionWrite(path, "written")
        stored = self.read_metadata(path, self.policy).get(CONTENT_HASH_KEY)
        return VersionWrite(path, "unchanged" if stored == content else "kept_existing")

    def versions(self, namespace: str, asset_path: Sequence[str]) -> list[StoredVersion]:
        """Every stored version of an asset, oldest first (by file modification time)."""
        folder = self.asset_folder(namespace, asset_path)
        if not folder.exists():
            return []
        found = []
        for path in folder.glob("*.parquet"):
            if path.name.startswith("."):
                continue
            info = path.stat()
            found.append(StoredVersion(str(path), path.stem, info.st_mtime, info.st_size))
        return sorted(found, key=lambda v: (v.modified, v.data_version))

    def store_settings(self, namespace: str, settings_yaml: str) -> UPath:
        """Keep the resolved settings text once per content hash, ``{base}/{namespace}/_settings/{hash}.yaml``;
        return its path (the same path for the same text, written only the first time)."""
        path = self.base.joinpath(_segment(namespace, "namespace"), SETTINGS_FOLDER,
                                  f"{content_version(settings_yaml)}.yaml")
        publish_new_bytes(path, settings_yaml.encode(), self.policy)
        return path

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

    def versions(self, name: str) -> list[StoredVersion]:
        """Every complete checkpoint published under ``name``, oldest first (by its manifest's time)."""
        folder = self.base / name
        if not folder.exists():
            return []
        found = []
        for manifest in folder.glob(f"*/{MANIFEST_FILE}"):
            checkpoint = manifest.parent
            if checkpoint.name.startswith("."):
                continue
            size = sum(p.stat().st_size for p in checkpoint.rglob("*") if p.is_file())
            found.append(StoredVersion(str(checkpoint), checkpoint.name, manifest.stat().st_mtime, size))
        return sorted(found, key=lambda v: (v.modified, v.data_version))

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
