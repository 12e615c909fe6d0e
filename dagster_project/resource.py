"""The one resource every asset receives: the validated profile and the engines it configures."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import polars as pl
import torch
from dagster import ConfigurableResource

from dagster_project.settings import Settings, load_settings, project_path
from resources.accelerate_launch import AccelerateLaunch
from resources.generation import Generator, SamplingParams, TransformersGenerator, rate_logger
from resources.generation_cache import ChunkedGeneration
from resources.models import load_causal_lm, resolve_device, resolve_dtype, resolve_model_source
from resources.storage import CheckpointStore, TableStore, folder_hash
from resources.synthesis import SynthesisConfig, build_prompts, synthesize
from resources.vllm_generation import VLLMGenerator


@lru_cache(maxsize=8)
def _settings(profile: str) -> Settings:
    return load_settings(profile)


class PipelineResource(ConfigurableResource):
    """Settings of one profile plus factories for models, generators and stores."""

    profile: str = "demo"

    @property
    def settings(self) -> Settings:
        """The validated settings of this profile."""
        return _settings(self.profile)

    @property
    def device(self) -> torch.device:
        """The torch device from settings (``auto``: CUDA when present)."""
        return resolve_device(self.settings.runtime.device)

    @property
    def dtype(self) -> torch.dtype:
        """The model dtype from settings."""
        return resolve_dtype(self.settings.runtime.precision)

    def prepare_torch(self) -> None:
        """Apply thread count and seed from settings."""
        if self.settings.runtime.torch_threads:
            torch.set_num_threads(self.settings.runtime.torch_threads)
        torch.manual_seed(self.settings.runtime.seed)

    def model_folder(self, role: str) -> str:
        """Resolve the configured ``teacher`` or ``student`` to a loadable folder."""
        return self.resolve_model(getattr(self.settings.models, role))

    def resolve_model(self, source: str) -> str:
        """Resolve a model source (embedded:, tiny-random:, folder or hub name) to a loadable folder."""
        return resolve_model_source(source, project_path(self.settings.models.cache_dir))

    def generator(self, folder: str) -> Generator:
        """A generator over the model at ``folder``, with the backend of ``runtime.generation_backend``."""
        self.prepare_torch()
        runtime = self.settings.runtime
        if runtime.generation_backend == "vllm":
            return VLLMGenerator(folder, runtime.precision, runtime.tensor_parallel_size,
                                 runtime.gpu_memory_utilization, runtime.seed)
        model, tokenizer = load_causal_lm(folder, self.device, self.dtype)
        return TransformersGenerator(model, tokenizer, self.settings.synthesis.instruction.batch_size)

    def sampling(self, which: str, n: int, seed_offset: int = 0) -> SamplingParams:
        """Sampling parameters of ``synthesis.instruction`` or ``synthesis.response``."""
        block = getattr(self.settings.synthesis, which)
        return SamplingParams(
            temperature=block.temperature,
            top_p=block.top_p,
            presence_penalty=block.presence_penalty,
            max_new_tokens=block.max_new_tokens,
            n=n,
            seed=self.settings.runtime.seed + seed_offset,
        )

    def accelerate_launch(self) -> AccelerateLaunch | None:
        """``accelerate launch`` settings when ``runtime.accelerate_config`` is set, else None (train in process)."""
        runtime = self.settings.runtime
        if runtime.accelerate_config is None:
            return None
        return AccelerateLaunch(project_path(runtime.accelerate_config), runtime.num_processes)

    def checkpoints(self) -> CheckpointStore:
        """The checkpoint store under ``storage.checkpoints``."""
        storage = self.settings.storage
        return CheckpointStore(project_path(storage.checkpoints), project_path(self.settings.models.cache_dir),
                               storage.retry_policy)

    def synthesize(
        self, teacher_folder: str, seeds: pl.DataFrame, num_prompts: int, seed_offset: int, log: Callable[[str], None]
    ) -> pl.DataFrame:
        """Run the synthesis engine with the teacher at ``teacher_folder`` on few-shot prompts from ``seeds``."""
        synthesis = self.settings.synthesis
        store = TableStore(project_path(self.settings.storage.tables), self.settings.storage.retry_policy)
        model_key = f"{self.settings.runtime.generation_backend}:{folder_hash(Path(teacher_folder))}"
        generator = ChunkedGeneration(self.generator(teacher_folder), store, model_key, synthesis.chunk_size, log)
        seed = self.settings.runtime.seed + seed_offset
        config = SynthesisConfig(
            instruction=self.sampling("instruction", synthesis.samples_per_prompt, seed_offset),
            response=self.sampling("response", 1, seed_offset),
            min_words=synthesis.min_words,
            max_words=synthesis.max_words,
            rouge_threshold=synthesis.rouge_threshold,
        )
        prompts = build_prompts(seeds, num_prompts, synthesis.shots, seed)
        log(f"synthesis: {len(prompts)} prompts x {synthesis.samples_per_prompt} samples with {teacher_folder}")
        return synthesize(
            generator, generator.tokenizer, prompts, config, seeds["instruction"].to_list(), log,
            lambda label: rate_logger(log, f"generating {label}"),
        )
