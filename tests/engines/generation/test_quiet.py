"""Readable runs: generation and TRL training print no progress bars once silenced; generators count tokens."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import datasets
import huggingface_hub.utils
import polars as pl
import pytest
import torch
import transformers.utils.logging

from resources.generation.chunk_cache import ChunkedGeneration
from resources.generation.interface import GenerationStats, SamplingParams
from resources.generation.transformers_backend import TransformersGenerator, generated_lengths, shared_prompt_inputs
from resources.models import load_causal_lm, resolve_model_source
from resources.quiet import QUIET_ENVIRONMENT, silence_progress_bars
from resources.storage.tables import TableStore
from resources.training.trl_trainers import train_dpo
from tests.helpers import dpo_params

# tqdm's bar ("42%|####      |") and its rate suffix ("3.1it/s]", "12.5 examples/s]").
PROGRESS_BAR = re.compile(r"\d+%\||(?:it|s/it|examples)/s\]")
PAIRS = pl.DataFrame({"prompt": ["Write one new instruction."] * 2, "chosen": ["List three fruits.", "Name a city."],
                      "rejected": ["fruit fruit", "city city"]})


@pytest.fixture
def progress_bars_restored(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Undo :func:`silence_progress_bars` after the test, so other tests see the libraries' defaults."""
    for name in QUIET_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    states = (transformers.utils.logging.is_progress_bar_enabled(), datasets.is_progress_bar_enabled(),
              huggingface_hub.utils.are_progress_bars_disabled())
    transformers.utils.logging.enable_progress_bar()
    datasets.enable_progress_bars()
    yield
    if states[0]:
        transformers.utils.logging.enable_progress_bar()
    if states[1]:
        datasets.enable_progress_bars()
    if not states[2]:
        huggingface_hub.utils.enable_progress_bars()


def pipeline_steps(model_cache: Path, scratch: Path) -> None:
    """A tiny generation, a datasets map and a one-step TRL DPO: the kinds of work a pipeline run does."""
    model, tokenizer = load_causal_lm(resolve_model_source("tiny-random:quiet", model_cache))
    TransformersGenerator(model, tokenizer).generate(["Say hi.", "Name a color."], SamplingParams(max_new_tokens=4))
    datasets.Dataset.from_list([{"x": i} for i in range(3)]).map(lambda row: row)
    train_dpo(resolve_model_source("tiny-random:quiet", model_cache), PAIRS,
              dpo_params(learning_rate=1e-4, batch_size=2, max_length=64), scratch / "tuned")


def test_silenced_pipeline_steps_print_no_progress_bars(
    model_cache: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str], progress_bars_restored: None
) -> None:
    def bar_lines() -> list[str]:
        captured = capfd.readouterr()
        return [line for line in (captured.out + captured.err).splitlines() if PROGRESS_BAR.search(line)]

    pipeline_steps(model_cache, tmp_path / "loud")
    assert bar_lines(), "without the silencer these steps draw bars, so the check below can fail"

    silence_progress_bars()
    pipeline_steps(model_cache, tmp_path / "quiet")
    assert bar_lines() == []
    assert (tmp_path / "quiet" / "tuned" / "model.safetensors").exists()


def test_generated_lengths_stop_at_the_first_end_token() -> None:
    tokens = torch.tensor([[5, 2, 0, 0], [5, 6, 7, 8], [2, 0, 0, 0]])
    assert generated_lengths(tokens, 2).tolist() == [2, 4, 1]
    assert generated_lengths(tokens, [7, 2]).tolist() == [2, 3, 1]
    assert generated_lengths(tokens, None).tolist() == [4, 4, 4]


def test_prompts_encoded_once_give_the_samples_num_return_sequences_gives(model_cache: Path) -> None:
    model, tokenizer = load_causal_lm(resolve_model_source("tiny-random:tokens", model_cache))
    tokenizer.padding_side = "left"
    encoded = tokenizer(["Say hi to everyone here.", "Add 2 and 3."], return_tensors="pt", padding=True,
                        add_special_tokens=False)
    width = encoded["input_ids"].shape[1]
    assert (encoded["attention_mask"] == 0).any(), "one prompt is left-padded"
    sampling = {"do_sample": True, "temperature": 1.0, "top_p": 0.9, "top_k": None, "max_new_tokens": 8,
                "pad_token_id": tokenizer.pad_token_id}
    with torch.inference_mode():
        torch.manual_seed(5)
        copied = model.generate(**encoded, num_return_sequences=3, **sampling)
        torch.manual_seed(5)
        shared = model.generate(**shared_prompt_inputs(model, encoded["input_ids"], encoded["attention_mask"], 3),
                                **sampling)
    assert torch.equal(shared[:, width:], copied[:, width:])
    assert shared_prompt_inputs(model, encoded["input_ids"], encoded["attention_mask"], 1).keys() == {
        "input_ids", "attention_mask"}, "one sample per prompt: nothing to share"


def test_transformers_generator_counts_prompt_and_generated_tokens(model_cache: Path) -> None:
    model, tokenizer = load_causal_lm(resolve_model_source("tiny-random:tokens", model_cache))
    prompts = ["Say hi.", "Name a color, please.", "Add 2 and 3."]
    params = SamplingParams(temperature=0.0, max_new_tokens=6)
    model.generation_config.eos_token_id = None  # run to max_new_tokens to see every greedy token
    greedy = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
        greedy.append(model.generate(ids, do_sample=False, max_new_tokens=6, top_k=None)[0, ids.shape[1]:].tolist())
    stop = greedy[0][2]  # make a token the first completion emits an end token
    model.generation_config.eos_token_id = stop
    expected = [row.index(stop) + 1 if stop in row else len(row) for row in greedy]

    generator = TransformersGenerator(model, tokenizer, batch_size=2)
    generator.generate(prompts[:1], params)
    before = generator.stats
    generator.generate(prompts[1:], params)
    used = generator.stats - before
    prompt_tokens = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    assert before == GenerationStats(1, 1, prompt_tokens[0], expected[0], before.seconds)
    assert used == GenerationStats(2, 2, sum(prompt_tokens[1:]), sum(expected[1:]), used.seconds)
    assert used.seconds > 0 and used.tokens_per_second == pytest.approx(sum(expected[1:]) / used.seconds)
    assert generator.stats.metadata()["generated_tokens"] == sum(expected)


def test_chunked_generation_counts_only_what_it_generates(model_cache: Path, tmp_path: Path) -> None:
    model, tokenizer = load_causal_lm(resolve_model_source("tiny-random:tokens", model_cache))
    chunked = ChunkedGeneration(TransformersGenerator(model, tokenizer), TableStore(str(tmp_path)), "tokens", 2,
                                lambda message: None)
    prompts, params = ["Say hi.", "Name a color.", "Add 2 and 3."], SamplingParams(max_new_tokens=3)
    first = chunked.generate(prompts, params)
    counted = chunked.stats
    assert counted.prompts == 3 and counted.completions == 3 and 3 <= counted.generated_tokens <= 9
    assert chunked.generate(prompts, params) == first
    assert chunked.stats == counted  # read back from saved chunks: nothing generated, nothing counted
