"""The synthesis engine's styles: official prompts with generated shots, chunked and resumable generation,
the compact style's prompts, and whole runs on a tiny model."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import polars as pl
import pytest

from resources.generation.chunk_cache import ChunkedGeneration
from resources.generation.interface import Progress, SamplingParams
from resources.generation.transformers_backend import TransformersGenerator
from resources.models import load_causal_lm, load_tokenizer, resolve_model_source
from resources.storage.tables import TableStore
from resources.synthesis.synthesize import (
    INSTRUCTION_PREFILL,
    CompactPrompts,
    OfficialPrompts,
    Shot,
    build_prompts,
    few_shot_prompts,
    synthesize,
    teacher_prompt,
)
from resources.training.encoding import chat_prompt
from tests.helpers import synthesis_params

SEEDS = pl.DataFrame({
    "id": [f"seed-{i:02d}" for i in range(10)],
    "instruction": [
        "Write a limerick about a forgetful cat.",
        "Summarize the paragraph below in one sentence.",
        "Explain how vaccines train the immune system.",
        "List five uses for a paper clip.",
        "Translate the sentence into French.",
        "Give three tips for a job interview.",
        "Describe the water cycle to a child.",
        "Solve for x: 3x + 4 = 19.",
        "Name the planets in order from the sun.",
        "Suggest a title for a mystery novel.",
    ],
    "input": ["", "Bees carry pollen between flowers, which helps plants make seeds.", None, "", "I like tea.",
              "", "", "", "", ""],
})
WORDS = [
    "river", "budget", "planet", "explain", "garden", "recipe", "compare", "history", "engine", "winter",
    "poem", "market", "ocean", "ladder", "violin", "harbor", "puzzle", "lantern", "meadow", "copper",
]  # fmt: skip


def tagged_lines(message: str) -> list[str]:
    """The example lines of a prompt, without their tags."""
    open_tag, close_tag = "<instruction>", "</instruction>"
    return [line[len(open_tag) : -len(close_tag)] for line in message.splitlines()
            if line.startswith(open_tag) and line.endswith(close_tag)]


def prompt_index(prompt_id: str) -> int:
    return int(prompt_id.split("-")[1])


def test_official_prompts_show_eight_seeds_then_six_seeds_and_two_generated() -> None:
    prompts = OfficialPrompts(SEEDS, 40, seed=7)
    pool = [Shot("p7-000-x#0", "Write a haiku about copper kettles.")]
    for prompt in prompts.build(0, 20, pool):  # one generated instruction is not enough yet
        assert tagged_lines(prompt.message) == list(prompt.examples)
        assert len(prompt.examples) == 8 == len(set(prompt.seed_ids)) and prompt.generated_ids == ()
    pool += [Shot("p7-001-y#2", "Explain why harbors freeze in winter."), Shot("p7-001-y#3", "Compare two ladders.")]
    texts = {shot.id: shot.text for shot in pool}
    examples = {i: (t if not x else f"{t} {x}") for i, t, x in SEEDS.select("id", "instruction", "input").iter_rows()}
    positions = set()
    for prompt in prompts.build(20, 40, pool):
        assert tagged_lines(prompt.message) == list(prompt.examples)
        assert len(prompt.examples) == 8 and len(set(prompt.seed_ids)) == 6 and len(set(prompt.generated_ids)) == 2
        shown = [texts[i] for i in prompt.generated_ids] + [examples[i] for i in prompt.seed_ids]
        assert sorted(shown) == sorted(prompt.examples)
        positions |= {prompt.examples.index(texts[i]) for i in prompt.generated_ids}
    assert positions - {6, 7}, "generated examples are shuffled among the seeds"
    assert examples["seed-01"] == f"{SEEDS['instruction'][1]} {SEEDS['input'][1]}"  # seed inputs are appended
    assert examples["seed-02"] == SEEDS["instruction"][2]  # a null input is no input


def test_official_prompts_do_not_depend_on_chunking() -> None:
    prompts = OfficialPrompts(SEEDS, 6, seed=3, shots=5, generated_shots=2)
    pool = [Shot(f"g#{k}", f"Generated instruction number {k}.") for k in range(4)]
    whole = prompts.build(0, 6, pool)
    assert whole == prompts.build(0, 2, pool) + prompts.build(2, 6, pool)
    assert all(len(p.examples) == 5 and len(p.generated_ids) == 2 for p in whole)
    assert [p.message for p in whole] != [p.message for p in OfficialPrompts(SEEDS, 6, seed=4).build(0, 6, pool)]
    assert len({p.message for p in whole}) == 6


def test_prompt_options_are_validated() -> None:
    with pytest.raises(ValueError, match="at least 8 seed instructions"):
        OfficialPrompts(SEEDS.head(7), 1, seed=0)
    with pytest.raises(ValueError, match="generated_shots"):
        OfficialPrompts(SEEDS, 1, seed=0, shots=2, generated_shots=3)
    with pytest.raises(ValueError, match="unknown synthesis style"):
        few_shot_prompts("verbose", SEEDS, 1, seed=0)
    with pytest.raises(ValueError, match="unknown synthesis filters"):
        synthesis_params(SamplingParams(), SamplingParams(), filters="strict")


def test_compact_prompts_are_the_prefilled_three_shot_prompts(model_cache: Path) -> None:
    tokenizer = load_tokenizer(resolve_model_source("tiny-random:teacher", model_cache))
    compact = few_shot_prompts("compact", SEEDS, 5, seed=11)
    assert isinstance(compact, CompactPrompts) and compact.prompts == build_prompts(SEEDS, 5, 3, 11)
    for prompt in compact.prompts:
        assert len(tagged_lines(prompt.message)) == 3 and prompt.generated_ids == ()
        assert set(tagged_lines(prompt.message)) <= set(SEEDS["instruction"])  # seed inputs are not shown
    assert teacher_prompt(tokenizer, "m").endswith(INSTRUCTION_PREFILL)
    official = few_shot_prompts("official", SEEDS, 5, seed=11)
    assert isinstance(official, OfficialPrompts) and (official.shots, official.generated_shots) == (8, 2)


class ScriptedTeacher:
    """A stand-in teacher whose answers are easy to judge: for every prompt, ``n`` outputs of a short reason
    then a tagged instruction of random words, seeded like the real backends by the sampling seed plus the
    prompt's position in the call (so chunked calls write what one call would); every fourth
    sample leaves its tag open. ``fail_on_call`` raises on that call, as a crash would."""

    def __init__(self, tokenizer, fail_on_call: int | None = None) -> None:  # noqa: ANN001 - any tokenizer
        self.tokenizer = tokenizer
        self.calls: list[list[str]] = []
        self.fail_on_call = fail_on_call

    def batch_prompts(self, params: SamplingParams) -> int:
        """Each prompt is seeded on its own."""
        return 1

    def generate(self, prompts: list[str], params: SamplingParams, progress: Progress | None = None) -> list[list[str]]:
        self.calls.append(prompts)
        if len(self.calls) == self.fail_on_call:
            raise RuntimeError("teacher crashed")
        outputs = []
        for index, _ in enumerate(prompts):
            samples = []
            for k in range(params.n):
                words = random.Random(f"{params.seed + index}:{k}").sample(WORDS, 7)
                close = "" if k == 3 else "</instruction>"
                samples.append(f"I picked a new topic.\n<instruction>{' '.join(words)}.{close}")
            outputs.append(samples)
        return outputs


def official_run(generator, tokenizer, chunk_size: int = 2):  # noqa: ANN001, ANN201 - generator or cache
    config = synthesis_params(SamplingParams(n=4, seed=5), SamplingParams(seed=5), filters="official",
                             chunk_size=chunk_size)
    prompts = few_shot_prompts("official", SEEDS, 7, seed=5)
    return synthesize(generator, tokenizer, prompts, config, [], log=lambda _: None)


def test_official_run_draws_generated_shots_from_earlier_chunks_only(model_cache: Path) -> None:
    tokenizer = load_tokenizer(resolve_model_source("tiny-random:teacher", model_cache))
    teacher = ScriptedTeacher(tokenizer)
    table = official_run(teacher, tokenizer)
    # 4 chunks of instructions (2, 2, 2, 1 prompts) and one call for the answers
    assert [len(call) for call in teacher.calls] == [2, 2, 2, 1, int(table["kept"].sum())]
    assert table.height == 28 and set(table["style"]) == {"official"} and set(table["filters"]) == {"official"}
    assert (table.filter(pl.col("sample_index") == 3)["verdict"] == "no_closed_tag").all()
    assert table.filter(pl.col("sample_index") < 3)["kept"].all()
    assert all(text[0].isupper() for text in table.filter(pl.col("kept"))["instruction"])
    assert (table["teacher_prompt"] == pl.Series([chat_prompt(tokenizer, m) for m in table["prompt"]])).all()
    kept = {f"{p}#{k}": prompt_index(p) for p, k in table.filter(pl.col("kept")).select("prompt_id", "sample_index")
            .iter_rows()}
    prompts = table.unique("prompt_id").sort("prompt_id")
    for prompt_id, generated_ids in prompts.select("prompt_id", "generated_ids").iter_rows():
        chunk_start = prompt_index(prompt_id) // 2 * 2
        assert len(generated_ids) == (0 if chunk_start == 0 else 2)
        assert all(kept[i] < chunk_start for i in generated_ids)
    assert table.filter(pl.col("kept"))["response"].is_not_null().all()


def test_official_run_resumes_from_saved_chunks(model_cache: Path, tmp_path: Path) -> None:
    tokenizer = load_tokenizer(resolve_model_source("tiny-random:teacher", model_cache))
    uninterrupted = official_run(ScriptedTeacher(tokenizer), tokenizer)
    store = TableStore(str(tmp_path / "tables"))

    def cached(teacher: ScriptedTeacher) -> ChunkedGeneration:
        return ChunkedGeneration(teacher, store, "scripted", chunk_size=2, log=lambda _: None)

    with pytest.raises(RuntimeError, match="teacher crashed"):
        official_run(cached(ScriptedTeacher(tokenizer, fail_on_call=3)), tokenizer)
    teacher = ScriptedTeacher(tokenizer)
    resumed = official_run(cached(teacher), tokenizer)
    assert [len(call) for call in teacher.calls[:2]] == [2, 1]  # chunks 0 and 1 were read back
    assert resumed.equals(uninterrupted)


KOREAN_SEEDS = pl.DataFrame({"id": [f"ko-{i}" for i in range(4)], "instruction": [
    "가을에 어울리는 짧은 시를 써 주세요.", "물의 순환을 어린이에게 설명해 주세요.",
    "면접을 위한 세 가지 조언을 알려 주세요.", "다음 문장을 영어로 번역해 주세요.",
]})
GERMAN_SEEDS = pl.DataFrame({"id": [f"de-{i}" for i in range(4)], "instruction": [
    "Schreiben Sie ein kurzes Gedicht über den ersten Schnee.", "Erklären Sie einem Kind, wie Regen entsteht.",
    "Nennen Sie drei Tipps für ein gutes Vorstellungsgespräch.", "Übersetzen Sie den Satz ins Französische.",
]})


class EchoingTeacher(ScriptedTeacher):
    """A stand-in teacher that writes in the seeds' language: each sample is one of the examples its prompt shows,
    reworded by one appended word (so it is also a near-duplicate of that example)."""

    def generate(self, prompts: list[str], params: SamplingParams, progress: Progress | None = None) -> list[list[str]]:
        self.calls.append(prompts)
        return [[f"{example} {k}" for k, example in enumerate(tagged_lines(prompt)[: params.n])]
                if "<instruction>" in prompt else ["응답"] * params.n for prompt in prompts]


@pytest.mark.parametrize(("seeds", "filters"), [(KOREAN_SEEDS, "self_instruct"), (KOREAN_SEEDS, "official"),
                                                (GERMAN_SEEDS, "self_instruct")])
def test_non_english_seeds_are_filtered_out_unless_any_script(model_cache: Path, seeds: pl.DataFrame,
                                                             filters: str) -> None:
    tokenizer = load_tokenizer(resolve_model_source("tiny-random:teacher", model_cache))
    prompts = few_shot_prompts("compact", seeds, 3, seed=2, shots=2)

    def run(script: str, existing: list[str]) -> pl.DataFrame:
        config = synthesis_params(SamplingParams(n=2, seed=2), SamplingParams(seed=2), filters=filters,
                                  min_words=3, script=script)
        return synthesize(EchoingTeacher(tokenizer), tokenizer, prompts, config, existing, log=lambda _: None)

    official = run("ascii", [])  # the reference rule: nothing in these seeds' scripts survives
    assert official["kept"].sum() == 0
    assert set(official["verdict"]) == {"non_ascii" if filters == "self_instruct" else "non_ascii_start"}
    kept = run("any", [])
    assert kept["kept"].sum() > 0 and set(kept["filters"]) == {f"{filters}+any_script"}
    assert kept.filter(pl.col("kept"))["response"].is_not_null().all()
    # against the seeds they echo, every sample is a near-duplicate: caught on Unicode tokens
    assert set(run("any", seeds["instruction"].to_list())["verdict"]) == {"near_duplicate"}


def test_any_script_synthesis_runs_on_a_tiny_model(model_cache: Path) -> None:
    model, tokenizer = load_causal_lm(resolve_model_source("tiny-random:teacher", model_cache))
    config = synthesis_params(SamplingParams(max_new_tokens=12, n=2, seed=1), SamplingParams(max_new_tokens=8, seed=1),
                              script="any", min_words=1)
    prompts = few_shot_prompts("compact", KOREAN_SEEDS, 3, seed=1, shots=2)
    table = synthesize(TransformersGenerator(model, tokenizer, batch_size=8), tokenizer, prompts, config,
                       KOREAN_SEEDS["instruction"].to_list(), log=lambda _: None)
    assert table.height == 6 and set(table["filters"]) == {"self_instruct+any_script"}
    assert not set(table["verdict"]) & {"non_ascii", "non_ascii_start"}


def test_cache_keeps_the_generations_of_unchanged_sampling_groups(model_cache: Path, tmp_path: Path) -> None:
    model, tokenizer = load_causal_lm(resolve_model_source("tiny-random:teacher", model_cache))
    params = SamplingParams(max_new_tokens=6, n=2, seed=4)
    prompts = [chat_prompt(tokenizer, f"Write about {word}.") for word in WORDS[:7]]
    store = TableStore(str(tmp_path / "tables"))
    logged: list[str] = []

    def cached() -> tuple[ChunkedGeneration, TransformersGenerator]:
        generator = TransformersGenerator(model, tokenizer, batch_size=4)  # 2 prompts x 2 samples per batch
        return ChunkedGeneration(generator, store, "tiny", chunk_size=6, log=logged.append), generator

    first, _ = cached()
    assert first.generate(prompts, params) == TransformersGenerator(model, tokenizer, 4).generate(prompts[:6], params) \
        + TransformersGenerator(model, tokenizer, 4).generate(prompts[6:], dataclasses.replace(params, seed=10))
    changed = [*prompts[:3], chat_prompt(tokenizer, "Write about tides."), *prompts[4:]]  # group [2, 4) changed
    again, generator = cached()
    outputs = again.generate(changed, params)
    assert generator.stats.prompts == 2 and logged[-1].endswith("reused 5 of 7 prompts from saved chunks, generated 2")
    fresh = ChunkedGeneration(TransformersGenerator(model, tokenizer, 4), TableStore(str(tmp_path / "other")),
                              "tiny", chunk_size=6, log=logged.append)
    assert outputs == fresh.generate(changed, params)  # what a run without the cache writes


def test_official_synthesis_runs_on_a_tiny_model(model_cache: Path) -> None:
    model, tokenizer = load_causal_lm(resolve_model_source("tiny-random:teacher", model_cache))
    generator = TransformersGenerator(model, tokenizer, batch_size=8)
    config = synthesis_params(SamplingParams(max_new_tokens=12, n=2, seed=1),
                             SamplingParams(max_new_tokens=8, seed=1), filters="official", chunk_size=2)
    prompts = few_shot_prompts("official", SEEDS, 3, seed=1, shots=4)
    table = synthesize(generator, tokenizer, prompts, config, SEEDS["instruction"].to_list(), log=lambda _: None)
    assert table.height == 6 and table["prompt_id"].n_unique() == 3
    assert set(table["style"]) == {"official"} and set(table["filters"]) == {"official"}
    assert set(table["verdict"]) <= {"ok", "no_closed_tag", "too_short", "too_long", "unsupported_task",
                                     "leading_punctuation", "non_ascii_start", "near_duplicate"}
    assert not any(p.endswith(INSTRUCTION_PREFILL) for p in table["teacher_prompt"])
    assert table["raw_output"].str.len_chars().gt(0).all()
    assert table.filter(pl.col("kept"))["response"].is_not_null().all()
