"""vLLM generation backend (the optional ``gpu`` extra): the
:class:`~resources.generation.interface.Generator` interface on a vLLM engine, for CUDA machines.

vllm is imported only when a :class:`VLLMGenerator` is built, so this module imports fine on CPU. Prompts are
tokenized with the folder's own tokenizer without special tokens (they are already chat-formatted, exactly as
the transformers backend does) and passed to vLLM as token ids. Each prompt gets its own sampling seed
(``params.seed`` + its index), so results do not depend on how vLLM batches requests.
"""

from __future__ import annotations

import gc
import time
from types import ModuleType
from typing import Any

from transformers import AutoTokenizer

from resources.generation.interface import GenerationStats, Progress, SamplingParams, counted

INSTALL_HINT = (
    "runtime.generation_backend is 'vllm' but vllm cannot be imported ({error}); install the GPU extra with "
    "`pip install -e .[gpu]` on a CUDA machine, or set runtime.generation_backend: transformers"
)


def import_vllm() -> ModuleType:
    """Import vllm, or raise ImportError naming the setting and the install command."""
    try:
        import vllm
    except ImportError as exc:
        raise ImportError(INSTALL_HINT.format(error=exc)) from exc
    return vllm


class VLLMGenerator:
    """Sampling with a vLLM engine over the model folder ``folder`` (e.g. a checkpoint written by the pipeline)."""

    def __init__(
        self, folder: str, precision: str, tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.85,
        seed: int = 0,
    ) -> None:
        self.vllm = import_vllm()
        gc.collect()  # shut down engines of earlier generators that are no longer referenced (frees GPU memory)
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.llm = self.vllm.LLM(
            model=folder,
            tokenizer=folder,
            dtype=precision,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            seed=seed,
        )
        self.stats = GenerationStats()

    def generate(
        self, prompts: list[str], params: SamplingParams, progress: Progress | None = None
    ) -> list[list[str]]:
        """Sample ``params.n`` completions per prompt; vLLM schedules all prompts at once."""
        requests = [
            {"prompt_token_ids": self.tokenizer(prompt, add_special_tokens=False)["input_ids"]} for prompt in prompts
        ]
        sampling = [self._sampling(params, params.seed + index) for index in range(len(prompts))]
        started = time.perf_counter()
        outputs = self.llm.generate(requests, sampling, use_tqdm=False)
        self.stats += counted(GenerationStats(
            prompts=len(prompts), completions=sum(len(out.outputs) for out in outputs),
            prompt_tokens=sum(len(request["prompt_token_ids"]) for request in requests),
            generated_tokens=sum(len(choice.token_ids) for out in outputs for choice in out.outputs),
            seconds=time.perf_counter() - started,
        ))
        if progress:
            progress(len(prompts), len(prompts))
        return [[choice.text for choice in sorted(out.outputs, key=lambda c: c.index)] for out in outputs]

    def batch_prompts(self, params: SamplingParams) -> int:
        """1: every prompt has its own sampling seed (``params.seed`` + its index)."""
        return 1

    def _sampling(self, params: SamplingParams, seed: int) -> Any:
        greedy = params.temperature == 0
        return self.vllm.SamplingParams(
            n=params.n,
            temperature=params.temperature,
            top_p=1.0 if greedy else params.top_p,
            presence_penalty=params.presence_penalty,
            max_tokens=params.max_new_tokens,
            seed=seed,
            skip_special_tokens=True,
        )
