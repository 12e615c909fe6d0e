"""Pruning old versions: plan first (a dry run changes nothing), delete only what a plan lists.

A plan keeps, per asset, the ``keep`` newest versions plus every protected one (the files and checkpoints
that the latest materialization of any asset reads or wrote); everything else is listed for deletion.
"""

from __future__ import annotations

import shutil
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from upath import UPath

from resources.storage.tables import MANIFEST_FILE, StoredVersion, is_local


@dataclass(frozen=True)
class PrunePlan:
    """What pruning would keep and delete, per asset name."""

    keep: dict[str, list[StoredVersion]]
    delete: dict[str, list[StoredVersion]]

    @property
    def deletions(self) -> list[StoredVersion]:
        """Every version to delete, asset by asset."""
        return [version for versions in self.delete.values() for version in versions]

    @property
    def freed_bytes(self) -> int:
        """Bytes the deletions would free."""
        return sum(version.size for version in self.deletions)


def plan_prune(
    versions: Mapping[str, Sequence[StoredVersion]], keep: int, protected: Collection[str] = ()
) -> PrunePlan:
    """Keep the ``keep`` newest versions of each asset (by ``modified``) and every version whose path is in
    ``protected``; list the rest for deletion. Nothing is touched."""
    if keep < 0:
        raise ValueError(f"keep must be >= 0, got {keep}")
    protected = set(protected)
    kept: dict[str, list[StoredVersion]] = {}
    deleted: dict[str, list[StoredVersion]] = {}
    for asset, stored in versions.items():
        newest_first = sorted(stored, key=lambda v: (v.modified, v.data_version), reverse=True)
        kept[asset] = [v for rank, v in enumerate(newest_first) if rank < keep or v.path in protected]
        deleted[asset] = [v for rank, v in enumerate(newest_first) if rank >= keep and v.path not in protected]
    return PrunePlan(kept, deleted)


def delete_versions(plan: PrunePlan) -> list[str]:
    """Delete every version the plan lists (table files; checkpoint folders manifest first, so a half-deleted
    checkpoint reads as incomplete, never as whole); return the deleted paths."""
    deleted = []
    for version in plan.deletions:
        path = UPath(version.path)
        if path.is_dir():
            (path / MANIFEST_FILE).unlink(missing_ok=True)
            if is_local(path):
                shutil.rmtree(Path(path.path))
            else:
                path.fs.rm(path.path, recursive=True)
        else:
            path.unlink(missing_ok=True)
        deleted.append(version.path)
    return deleted
