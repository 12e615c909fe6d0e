"""Profiles: a YAML file (or a bundled name) loaded, merged with what it ``extends``, and validated block by block
into the classes of :mod:`assets.config` (each block defined once there).

A profile is either a bundled name (``demo``, ``test``, ``gpu``: files in ``profiles/``) or the
path of a YAML file. Unknown keys and wrong types fail with a message naming the key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, ValidationInfo, field_validator

from assets.config import (
    PROJECT_ROOT,
    AutomationSettings,
    DataSettings,
    DecontaminationSettings,
    DPOSettings,
    EvaluationSettings,
    ExperimentSettings,
    ExportSettings,
    InfluenceSettings,
    KubernetesSettings,
    ModelSettings,
    PairSettings,
    PriceSettings,
    RuntimeSettings,
    StorageSettings,
    StrictModel,
    StrictResource,
    StudentDatasetSettings,
    SynthesisSettings,
    WarmupSettings,
)

PROFILE_DIR = Path(__file__).parent / "profiles"
__all__ = ["PROJECT_ROOT", "PROFILE_DIR", "STAGE_BLOCKS", "Settings", "SettingsError", "load_settings"]


class Settings(StrictModel):
    """All settings of one profile: its two scalars and one validated block per field (the list of blocks)."""

    name: str = "custom"
    rounds: int = Field(
        1, ge=1, le=10,
        description="Montessori-Instruct rounds; round n >= 2 synthesizes with and DPO-tunes round n-1's tuned teacher",
    )
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    models: ModelSettings = Field(default_factory=ModelSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    data: DataSettings = Field(default_factory=DataSettings)
    experiment: ExperimentSettings = Field(default_factory=ExperimentSettings)
    automation: AutomationSettings = Field(default_factory=AutomationSettings)
    kubernetes: KubernetesSettings = Field(default_factory=KubernetesSettings)
    export: ExportSettings = Field(default_factory=ExportSettings)
    prices: PriceSettings = Field(default_factory=PriceSettings)
    synthesis: SynthesisSettings = Field(default_factory=SynthesisSettings)
    decontamination: DecontaminationSettings = Field(default_factory=DecontaminationSettings)
    warmup: WarmupSettings = Field(default_factory=WarmupSettings)
    influence: InfluenceSettings = Field(default_factory=InfluenceSettings)
    pairs: PairSettings = Field(default_factory=PairSettings)
    dpo: DPOSettings = Field(default_factory=DPOSettings)
    student_dataset: StudentDatasetSettings = Field(default_factory=StudentDatasetSettings)
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)

    @field_validator("*", mode="before")
    @classmethod
    def _empty_block(cls, value: Any, info: ValidationInfo) -> Any:
        """An empty block (``runtime:`` with nothing under it) means its defaults."""
        return {} if value is None and info.field_name in cls.blocks() else value

    @classmethod
    def blocks(cls) -> list[str]:
        """The names of the profile's blocks (every field but the scalars)."""
        return [name for name in cls.model_fields if name not in ("name", "rounds")]

    def document(self) -> dict[str, Any]:
        """Every setting, defaults included, as a plain profile mapping (loads back to the same settings)."""
        return self.model_dump(mode="json")

    def resolved_yaml(self) -> str:
        """Every setting, defaults included, as YAML: what a run really used."""
        return yaml.safe_dump(self.document(), sort_keys=True)

    @property
    def namespace(self) -> str:
        """The folder separating this profile's tables from other experiments'."""
        return self.storage.namespace or self.name


STAGE_BLOCKS: dict[str, type[StrictResource]] = {
    name: field.annotation for name, field in Settings.model_fields.items()
    if isinstance(field.annotation, type) and issubclass(field.annotation, StrictResource)
}
"""The stage blocks: validated straight into the resources the stage assets declare."""


class _SafeLoader(yaml.SafeLoader):
    """YAML safe loader that also reads ``1e-6`` (no dot) as a float, as users write it."""


_SafeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)$"),
    list("-+0123456789."),
)


class SettingsError(ValueError):
    """A profile could not be found or does not validate."""


def resolve_profile_path(profile: str) -> Path:
    """Return the YAML path of a bundled profile name or an explicit file path."""
    bundled = PROFILE_DIR / f"{profile}.yaml"
    if bundled.is_file():
        return bundled
    path = Path(profile).expanduser()
    if path.is_file():
        return path
    names = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))
    raise SettingsError(f"profile {profile!r} is neither a bundled profile {names} nor an existing file")


def _describe(error: ValidationError, source: Path) -> str:
    lines = [f"invalid settings in {source}:"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"])
        lines.append(f"  {key}: {item['msg']} (got {item.get('input')!r})")
    return "\n".join(lines)


def _read_profile(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The raw mapping of a profile file, with ``extends: OTHER`` (a bundled name or path) merged underneath it
    block by block: the file's own keys win."""
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_SafeLoader) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SettingsError(f"cannot parse settings file {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise SettingsError(f"settings file {path} must hold a mapping at the top level")
    base_name = raw.pop("extends", None)
    if base_name is None:
        return raw
    base_path = resolve_profile_path(str(base_name))
    if base_path in seen:
        raise SettingsError(f"settings file {path}: extends {base_name!r} makes a cycle")
    merged = _read_profile(base_path, (*seen, path))
    merged.pop("name", None)
    for key, value in raw.items():
        merged[key] = _merge(merged.get(key), value)
    return merged


def _merge(base: Any, override: Any) -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        return {**base, **{key: _merge(base.get(key), value) for key, value in override.items()}}
    return override


def load_settings(profile: str) -> Settings:
    """Load and validate a profile (bundled name or YAML path; ``extends: NAME`` builds on another profile).
    Raises SettingsError naming bad keys."""
    path = resolve_profile_path(profile)
    raw = _read_profile(path)
    raw.setdefault("name", path.stem)
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        raise SettingsError(_describe(exc, path)) from None
