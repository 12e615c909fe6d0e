"""Text generation with transformers (CPU, tests, single GPU): ``TransformersGenerator``
behind the :mod:`resources.generation.interface` protocol.

Each prompt is encoded once for its ``n`` samples (its KV cache repeated), batches halve on out-of-memory, and the
official presence penalty is applied as a logits processor."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import torch
from transformers import DynamicCache, LogitsProcessor, LogitsProcessorList, PreTrainedModel, PreTrainedTokenizerBase

from resources.generation.interface import GenerationStats, Progress, SamplingParams, counted

log = logging.getLogger(__name__)


T = TypeVar("T")
R = TypeVar("R")


class PresencePenalty(LogitsProcessor):
    """OpenAI-style presence penalty: subtract ``penalty`` once from every token already generated."""

    def __init__(self, penalty: float, prompt_length: int) -> None:
        self.penalty = penalty
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, self.prompt_length :]
        if generated.shape[1] == 0:
            return scores
        seen = torch.zeros_like(scores, dtype=torch.bool)
        seen.scatter_(1, generated, True)
        return scores - self.penalty * seen.to(scores.dtype)


class TransformersGenerator:
    """Batched sampling with a transformers causal LM (left padding; each prompt encoded once for its ``n``
    samples, :func:`shared_prompt_inputs`)."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, batch_size: int = 8) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.stats = GenerationStats()

    def generate(
        self, prompts: list[str], params: SamplingParams, progress: Progress | None = None
    ) -> list[list[str]]:
        """Sample ``params.n`` completions per prompt, ``batch_size`` sequences per forward batch."""
        def run(batch: list[str], start: int) -> list[list[str]]:
            torch.manual_seed(params.seed + start)
            return self._generate_batch(batch, params)

        started = time.perf_counter()
        results = halving_on_oom(prompts, self.batch_prompts(params), run, progress)
        self.stats += GenerationStats(seconds=time.perf_counter() - started)
        return results

    def batch_prompts(self, params: SamplingParams) -> int:
        """Prompts per forward batch (``batch_size`` sequences, ``params.n`` per prompt), seeded together."""
        return max(1, self.batch_size // params.n)

    def _generate_batch(self, prompts: list[str], params: SamplingParams) -> list[list[str]]:
        self.tokenizer.padding_side = "left"
        encoded = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        encoded = encoded.to(self.model.device)
        width = encoded["input_ids"].shape[1]
        processors = LogitsProcessorList()
        if params.presence_penalty:
            processors.append(PresencePenalty(params.presence_penalty, width))
        sampling = params.temperature > 0
        sampling_args = {"temperature": params.temperature, "top_p": params.top_p} if sampling else {}
        self.model.eval()
        with torch.inference_mode():
            inputs = shared_prompt_inputs(self.model, encoded["input_ids"], encoded["attention_mask"], params.n)
            output = self.model.generate(
                **inputs,
                do_sample=sampling,
                max_new_tokens=params.max_new_tokens,
                logits_processor=processors,
                pad_token_id=self.tokenizer.pad_token_id,
                top_k=None,
                **sampling_args,
            )
        generated = output[:, width:]
        self.stats += counted(GenerationStats(
            prompts=len(prompts), completions=generated.shape[0], prompt_tokens=int(encoded["attention_mask"].sum()),
            generated_tokens=int(generated_lengths(generated, self.model.generation_config.eos_token_id).sum()),
        ))
        texts = self.tokenizer.batch_decode(generated, skip_special_tokens=True)
        return [texts[i * params.n : (i + 1) * params.n] for i in range(len(prompts))]


def shared_prompt_inputs(
    model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, n: int
) -> dict[str, object]:
    """``generate`` inputs for ``n`` samples per (left-padded) prompt that run each prompt through the model once.

    ``num_return_sequences=n`` copies every prompt ``n`` times before the prompt pass, so a few-shot prompt is
    encoded ``n`` times. Here the prompts but their last token are encoded once into a KV cache, the cache is
    repeated ``n`` times, and ``generate`` continues from it; the samples are the same (identical tokens for the
    same seed, measured on the embedded model) for about ``n`` times less prompt compute."""
    repeated = {"input_ids": input_ids.repeat_interleave(n, 0),
                "attention_mask": attention_mask.repeat_interleave(n, 0)}
    if n == 1 or input_ids.shape[1] < 2:
        return repeated
    cache = DynamicCache(config=model.config)
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # as generate numbers left-padded prompts
    model(input_ids=input_ids[:, :-1], attention_mask=attention_mask[:, :-1], position_ids=positions[:, :-1],
          cache=cache, use_cache=True)
    cache.batch_repeat_interleave(n)
    return {**repeated, "cache": cache}


def generated_lengths(tokens: torch.Tensor, eos_token_id: int | list[int] | None) -> torch.Tensor:
    """Per row of generated ``tokens``: the count up to and including the first end-of-sequence token, or the
    full width when there is none (the padding after a finished sequence is not counted)."""
    width = torch.full((tokens.shape[0],), tokens.shape[1], device=tokens.device)
    if eos_token_id is None:
        return width
    eos = torch.tensor(eos_token_id if isinstance(eos_token_id, list) else [eos_token_id], device=tokens.device)
    ended = torch.isin(tokens, eos)
    return torch.where(ended.any(dim=1), ended.int().argmax(dim=1) + 1, width)


def halving_on_oom(
    items: list[T], batch_size: int, run: Callable[[list[T], int], list[R]], progress: Progress | None = None
) -> list[R]:
    """``run(batch, start)`` over consecutive batches of ``items``; when a batch runs out of (GPU) memory the
    batch size is halved and the same items are tried again, down to one item per batch."""
    results: list[R] = []
    while len(results) < len(items):
        start = len(results)
        batch = items[start : start + batch_size]
        try:
            results.extend(run(batch, start))
        except torch.OutOfMemoryError:
            if len(batch) == 1:
                raise
            batch_size = max(1, len(batch) // 2)
            log.warning("out of memory on a batch of %d; retrying with batches of %d", len(batch), batch_size)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        if progress:
            progress(len(results), len(items))
    return results
