"""Bases of every settings block and resource: strict validation, versioned configuration, engine parameter
objects filled by field name, and the one path resolver."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any, ClassVar

from dagster import Config, ConfigurableResource
from pydantic import BaseModel, ConfigDict

STRICT = ConfigDict(extra="forbid", strict=True, frozen=True)
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def resolve_path(path: str, root: str | Path = PROJECT_ROOT) -> str:
    """``path`` resolved against ``root`` (the project root) when relative and local; URLs and absolute paths as
    given. The one place a user's path is resolved."""
    if "://" in path or Path(path).is_absolute():
        return path
    return str(Path(root) / path)


def by_name(engine_type: type, source: Any, **extra: Any) -> Any:
    """An engine dataclass filled by field name from ``source`` (settings) and ``extra``: no positional mapping."""
    names = {f.name for f in fields(engine_type)} - set(extra)
    return engine_type(**{name: getattr(source, name) for name in names}, **extra)


class StrictModel(BaseModel):
    """Base of the profile's plain blocks (not resources): unknown keys are errors, values are not coerced."""

    model_config = STRICT


class StrictResource(ConfigurableResource):
    """Base of every resource: unknown keys are errors, values are not coerced, and ``UNVERSIONED`` names the fields
    that do not change what an asset produces (so they stay out of code versions)."""

    model_config = STRICT
    UNVERSIONED: ClassVar[frozenset[str]] = frozenset()

    def versioned_config(self) -> dict[str, Any]:
        """The configuration that is part of the code version of every asset declaring this resource."""
        return self.model_dump(mode="json", exclude=set(self.UNVERSIONED))


class StrictConfig(Config):
    """Base of nested settings blocks (same strictness as :class:`StrictResource`)."""

    model_config = STRICT
