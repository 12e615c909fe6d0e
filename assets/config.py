"""The typed resources every asset declares: one per concern, each holding exactly the settings it owns.

Stage settings (synthesis, warm-up, influence, pairs, DPO, datasets, evaluation) are validated straight from their
YAML block of the profile into these classes: they are the one representation of each hyper-parameter set, and
they build the engines' parameter objects by name. Cross-cutting resources (runtime, generation backend, training
launcher, models, stores, example sources) are built by the wiring from the profile's runtime / models / storage /
data blocks. An asset's code version is the hash of the versioned configuration of exactly the resources it
declares (``dagster_project/versions.py``), so an asset that starts reading a new setting goes stale when it changes.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from dagster import Config, ConfigurableResource
from pydantic import ConfigDict, Field

from resources.generation.interface import Generator, SamplingParams
from resources.generation.transformers_backend import TransformersGenerator
from resources.generation.vllm_backend import VLLMGenerator
from resources.models import load_causal_lm, resolve_device, resolve_dtype, resolve_model_source
from resources.storage.retry import RetryPolicy
from resources.storage.tables import CheckpointStore, TableStore
from resources.synthesis.synthesize import SynthesisConfig
from resources.training.launch import AccelerateLaunch
from resources.training.trl_trainers import DPOParams, LoraParams, SFTParams
from resources.training.warmup import WarmupConfig

STRICT = ConfigDict(extra="forbid", strict=True, frozen=True)


def by_name(engine_type: type, source: Any, **extra: Any) -> Any:
    """An engine dataclass filled by field name from ``source`` (settings) and ``extra``: no positional mapping."""
    names = {f.name for f in fields(engine_type)} - set(extra)
    return engine_type(**{name: getattr(source, name) for name in names}, **extra)


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


# --- cross-cutting resources: built by the wiring from the profile's runtime / models / storage / data blocks ---


class Runtime(StrictResource):
    """Device, precision, threads and seed: where and how models run."""

    UNVERSIONED: ClassVar[frozenset[str]] = frozenset({"device", "torch_threads"})
    device: str
    precision: Literal["float32", "bfloat16", "float16"]
    torch_threads: int
    seed: int

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
    generation_backend: Literal["transformers", "vllm"]
    tensor_parallel_size: int
    gpu_memory_utilization: float

    def generator(self, folder: str, runtime: Runtime, batch_size: int) -> Generator:
        """A generator over the model at ``folder``."""
        runtime.prepare_torch()
        if self.generation_backend == "vllm":
            return VLLMGenerator(folder, runtime.precision, self.tensor_parallel_size, self.gpu_memory_utilization,
                                 runtime.seed)
        model, tokenizer = load_causal_lm(folder, runtime.torch_device, runtime.dtype)
        return TransformersGenerator(model, tokenizer, batch_size)


def resolved(path: str, root: str) -> str:
    """``path`` resolved against the project ``root`` when relative and local; URLs and absolute paths as given."""
    if "://" in path or Path(path).is_absolute():
        return path
    return str(Path(root) / path)


class TrainingLauncher(StrictResource):
    """Teacher DPO and student SFT in this process, or on several processes through ``accelerate launch``."""

    UNVERSIONED: ClassVar[frozenset[str]] = frozenset({"root"})
    accelerate_config: str | None
    num_processes: int | None
    root: str

    def launch(self) -> AccelerateLaunch | None:
        """The ``accelerate launch`` settings, or None to train in the step's own process."""
        if self.accelerate_config is None:
            return None
        return AccelerateLaunch(resolved(self.accelerate_config, self.root), self.num_processes)


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


class Stores(StrictResource):
    """Where tables and checkpoints live, with the retry policy of every storage call: the only place stores are
    built."""

    UNVERSIONED: ClassVar[frozenset[str]] = frozenset(
        {"tables", "namespace", "cache", "checkpoints", "model_cache", "retry_attempts", "retry_backoff_seconds",
         "settings_yaml"}
    )
    tables: str
    namespace: str
    cache: str
    checkpoints: str
    model_cache: str
    retry_attempts: int
    retry_backoff_seconds: float
    settings_yaml: str

    def settings_file(self) -> str:
        """Where the run's resolved settings are kept (once per content hash; written on first use)."""
        return str(self.table_store().store_settings(self.namespace, self.settings_yaml))

    @property
    def retry_policy(self) -> RetryPolicy:
        """The retry policy of every storage call."""
        return RetryPolicy(self.retry_attempts, self.retry_backoff_seconds)

    def table_store(self) -> TableStore:
        """The table store (Parquet tables, caches, reports)."""
        return TableStore(self.tables, self.retry_policy)

    def cache_store(self) -> TableStore:
        """The store of the content-keyed caches (generation chunks, influence scores); may be shared by profiles."""
        return TableStore(self.cache, self.retry_policy)

    def checkpoint_store(self) -> CheckpointStore:
        """The checkpoint store (content-addressed model folders)."""
        return CheckpointStore(self.checkpoints, self.model_cache, self.retry_policy)


class ExampleSource(StrictResource):
    """One hand-written data file (seeds, reference set or held-out set)."""

    UNVERSIONED: ClassVar[frozenset[str]] = frozenset({"root"})
    path: str
    max_instruction_chars: int
    columns: dict[str, str]
    root: str

    @property
    def location(self) -> str:
        """The file or folder to read (relative paths resolved against the project root)."""
        return resolved(self.path, self.root)


# --- stage settings: each is one YAML block of the profile, validated into these classes ---


class GenerationSettings(StrictConfig):
    """Sampling parameters for one generation call."""

    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    presence_penalty: float = Field(1.0, ge=0.0, description="OpenAI-style: subtracted once per seen token")
    max_new_tokens: int = Field(64, gt=0)
    batch_size: int = Field(8, gt=0, description="prompts (or prompt x sample rows) per forward batch")

    def sampling(self, n: int, seed: int) -> SamplingParams:
        """The engine's sampling parameters for ``n`` samples per prompt."""
        return by_name(SamplingParams, self, n=n, seed=seed)


class SynthesisSettings(StrictResource):
    """Few-shot instruction synthesis by the teacher (paper: 4 samples, T=1, top_p 0.9, presence 1)."""

    num_prompts: int = Field(8, gt=0, description="few-shot synthesis prompts to build")
    style: Literal["official", "compact"] = Field(
        "compact",
        description="official: the authors' protocol (the teacher gives a reason, whether an input is needed, then "
        "the instruction in tags; 8 shots incl. 2 generated earlier; last closed tag pair, no pair = rejected). "
        "compact: a short prompt with the assistant turn prefilled by the opening tag, 3 seed shots, first pair or "
        "text to the end (deviation: a 135M teacher never closes the tag in the official style, 0 of 32 kept)",
    )
    shots: int | None = Field(None, gt=0, description="examples per prompt; null: the style's (official 8, compact 3)")
    generated_shots: int = Field(
        2, ge=0, description="official style: instructions generated earlier in the run shown once that many exist"
    )
    filters: Literal["official", "self_instruct"] = Field(
        "self_instruct",
        description="official: the authors' (<=5 or >400 characters, 13-word task list, first character ASCII, "
        "<input> tags removed); self_instruct: 5-400 words, whole text ASCII, the Self-Instruct 18-word list",
    )
    samples_per_prompt: int = Field(4, gt=0)
    instruction: GenerationSettings = GenerationSettings()
    response: GenerationSettings = GenerationSettings(
        temperature=0.6, top_p=0.9, presence_penalty=0.0, max_new_tokens=96
    )
    min_words: int = Field(5, ge=1)
    max_words: int = Field(400, ge=1)
    rouge_threshold: float = Field(0.7, gt=0.0, le=1.0, description="drop if ROUGE-L F1 > this vs kept")
    chunk_size: int = Field(
        16, gt=0, description="prompts generated between two saves; a killed run resumes from the last saved chunk. "
        "In the official style it also decides which earlier instructions a prompt can show",
    )

    def config(self, seed: int) -> SynthesisConfig:
        """The synthesis engine's configuration with sampling seeded by ``seed``."""
        return by_name(
            SynthesisConfig, self, instruction=self.instruction.sampling(self.samples_per_prompt, seed),
            response=self.response.sampling(1, seed),
        )


class WarmupSettings(StrictResource):
    """Warm-up SFT of the student before influence is measured."""

    fraction: float = Field(0.25, gt=0.0, lt=1.0, description="share of kept synthetic rows used for warm-up")
    learning_rate: float = Field(5e-6, gt=0.0)
    epochs: int = Field(1, gt=0)
    batch_size: int = Field(2, gt=0)
    max_length: int = Field(256, gt=8)
    weight_decay: float = Field(0.0, ge=0.0)
    gradient_accumulation: int = Field(
        1, ge=1, description="batches per optimizer step (effective batch = batch_size x this; paper: 16 x 2 = 32)"
    )
    schedule: Literal["constant", "ramp_then_hold"] = Field(
        "constant",
        description="ramp_then_hold (paper): lr rises linearly from 0 over the warm-up's optimizer steps, then is "
        "held, and influence continues at the held rate; constant: the rate from the first step",
    )
    loss: Literal["example_mean", "token_mean"] = Field(
        "example_mean",
        description="token_mean (paper, HF): token-weighted over the whole accumulated batch; example_mean: the mean "
        "of each example's mean token loss",
    )
    truncation: Literal["left", "right"] = Field(
        "left",
        description="right (paper): the chat-formatted pair as one text, tail cut at max_length, labels through the "
        "end; left: the prompt is cut from the left so the answer survives",
    )

    def config(self, seed: int) -> WarmupConfig:
        """The warm-up engine's configuration."""
        return by_name(WarmupConfig, self, seed=seed)


class InfluenceSettings(StrictResource):
    """Local data influence of each candidate on the reference loss."""

    UNVERSIONED: ClassVar[frozenset[str]] = frozenset(
        {"shards", "chunk_size", "candidate_batch_size"}  # none changes a score
    )
    method: Literal["exact", "first_order"] = Field(
        "exact",
        description="exact: one real AdamW step per candidate; first_order: reference gradient dotted with "
        "the candidate's AdamW update",
    )
    shards: int = Field(1, gt=0, description="split scoring into this many parallel steps (workers or pods)")
    chunk_size: int = Field(8, gt=0, description="candidates scored between two saves to the score cache")
    candidate_batch_size: int = Field(
        4, gt=0, description="first_order only: candidates per batched backward pass (their per-example gradients "
        "are held together, so this bounds memory; 1 is the sequential method); does not change a score"
    )
    param_pattern: str | None = Field(
        None, description="first_order only: regex of parameter names to include (default: all)"
    )
    reference_batch_size: int = Field(8, gt=0)
    max_length: int = Field(256, gt=8)
    reference_loss: Literal["example_mean", "batch_token_mean"] = Field(
        "example_mean",
        description="batch_token_mean (paper): mean over file-order batches of reference_batch_size of the "
        "token-weighted batch loss; example_mean: the mean of each reference pair's mean token loss",
    )
    truncation: Literal["left", "right"] = Field(
        "left", description="encoding of reference pairs and candidates: right (paper) or left (see warmup.truncation)"
    )


class PairSettings(StrictResource):
    """How influence scores become preference pairs."""

    baseline: Literal["before_step", "null_step"] = Field(
        "before_step",
        description="before_step: the paper's sign against L_ref before the step; "
        "null_step: against L_ref after a momentum-only step (candidate gradient zeroed)",
    )
    rule: Literal["sign", "rank"] = Field(
        "sign", description="sign: positive vs negative influence; rank: above vs below the prompt's median"
    )
    min_margin: float = Field(0.0, ge=0.0, description="drop pairs whose margin (in the signal's units) is below this")
    signal: Literal["influence", "random", "student_loss"] = Field(
        "influence",
        description="which sample of a prompt is preferred: influence (the paper: local data influence on the "
        "reference loss, against the baseline); random (control: each prompt's influence scores shuffled among its "
        "samples, seeded with runtime.seed: same prompts, pair counts and margins, random choice); student_loss "
        "(the paper's training-loss ablation: the warm student's own loss on the candidate, HIGHER loss preferred, "
        "i.e. teach what the student has not learned yet; measured from the candidates' mean loss, so under rule "
        "sign harder-than-average beats easier-than-average)",
    )
    target: Literal["instruction", "raw_output"] = Field(
        "instruction",
        description="which text DPO prefers: instruction (the parsed instruction, re-tagged) or raw_output (the "
        "teacher's sampled output as it was, reason and tags included, as the official code)",
    )


class LoraSettings(StrictConfig):
    """Optional LoRA (peft) adapter for the teacher's DPO; merged into the weights before the checkpoint is saved."""

    enabled: bool = Field(False, description="train a LoRA adapter instead of every weight")
    r: int = Field(16, gt=0, description="adapter rank")
    alpha: int = Field(32, gt=0, description="adapter scaling numerator (scale = alpha / r)")
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(
        ["all-linear"], description="module names to adapt, or [all-linear] (every linear layer but the output head)"
    )

    def params(self) -> LoraParams | None:
        """The adapter's engine parameters, or None when disabled."""
        if not self.enabled:
            return None
        targets = "all-linear" if self.target_modules == ["all-linear"] else list(self.target_modules)
        return by_name(LoraParams, self, target_modules=targets)


ACTIVATION_CHECKPOINTING = (
    "recompute activations during backward to save memory (TRL's default is on): turn on for models that do not "
    "fit; the same weights either way, and off is faster on small models (benchmarks/activation_checkpointing.py)"
)


class DPOSettings(StrictResource):
    """Teacher DPO with TRL (paper defaults: beta 0.1, lr 1e-6, 1 epoch, batch 2)."""

    UNVERSIONED: ClassVar[frozenset[str]] = frozenset({"activation_checkpointing"})  # memory and speed only
    beta: float = Field(0.1, gt=0.0)
    learning_rate: float = Field(1e-6, gt=0.0)
    epochs: float = Field(1.0, gt=0.0)
    batch_size: int = Field(2, gt=0, description="global batch; split across processes under accelerate")
    max_length: int = Field(512, gt=8)
    lora: LoraSettings = LoraSettings()
    activation_checkpointing: bool = Field(False, description=ACTIVATION_CHECKPOINTING)

    def params(self, seed: int) -> DPOParams:
        """The DPO engine's parameters (with the LoRA adapter when enabled)."""
        return by_name(DPOParams, self, seed=seed, lora=self.lora.params())


class FinalPromptSettings(StrictResource):
    """The final synthesis prompts, shared by the tuned teacher's dataset and the Self-Instruct baseline."""

    num_prompts: int = Field(12, gt=0)
    seed_offset: int = Field(1000, description="added to the seed so final prompts differ from round prompts")


class StudentDatasetSettings(FinalPromptSettings):
    """The final dataset written by the tuned teacher."""

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

    def prompts(self) -> FinalPromptSettings:
        """Only the prompt settings (what the baseline shares with this dataset)."""
        return FinalPromptSettings(num_prompts=self.num_prompts, seed_offset=self.seed_offset)


class EvaluationSettings(StrictResource):
    """Student evaluation: SFT on the Montessori and Self-Instruct datasets, loss on the held-out set."""

    # max_diversity_drop is read by a check only; activation_checkpointing changes memory and speed only
    UNVERSIONED: ClassVar[frozenset[str]] = frozenset({"max_diversity_drop", "activation_checkpointing"})
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
    activation_checkpointing: bool = Field(False, description=ACTIVATION_CHECKPOINTING)

    def sft_params(self) -> SFTParams:
        """The student SFT engine's parameters."""
        return by_name(SFTParams, self)

