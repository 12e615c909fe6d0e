"""Stage 1: the teacher writes synthetic instructions (and answers) from few-shot seed prompts."""

from collections.abc import Callable
from pathlib import Path

import polars as pl
from dagster import AssetExecutionContext, AssetIn, AssetsDefinition, Output, asset

from assets.config import GenerationBackend, ModelSource, Runtime, Stores, SynthesisSettings
from assets.cost import metered
from assets.output import table_output
from assets.placement import on_gpu, round_key_path
from resources.generation.chunk_cache import ChunkedGeneration
from resources.generation.interface import rate_logger
from resources.storage.tables import folder_hash
from resources.synthesis.synthesize import few_shot_prompts, synthesize

PREVIEW = ["prompt_id", "sample_index", "verdict", "instruction", "response"]
ROUND_SEED_STEP = 100  # round n builds its prompts with seed + 100 (n - 1): new candidates each round


def verdict_counts(table: pl.DataFrame) -> dict[str, int]:
    """How many samples got each filter verdict."""
    return {v: n for v, n in table["verdict"].value_counts().sort("verdict").iter_rows()}


def synthesize_table(
    synthesis: SynthesisSettings, runtime: Runtime, generation: GenerationBackend, stores: Stores,
    teacher_folder: str, seeds: pl.DataFrame, num_prompts: int, seed_offset: int, log: Callable[[str], None],
) -> tuple[pl.DataFrame, dict[str, int | float]]:
    """Every sample the teacher at ``teacher_folder`` writes for ``num_prompts`` few-shot prompts from ``seeds``,
    and the generation's token counts and tokens/s (chunks read back from the cache count nothing); finished
    chunks are cached, so a killed run resumes."""
    model_key = f"{generation.generation_backend}:{folder_hash(Path(teacher_folder))}"
    generator = generation.generator(teacher_folder, runtime, synthesis.instruction.batch_size)
    chunked = ChunkedGeneration(generator, stores.cache_store(), model_key, synthesis.chunk_size, log)
    seed = runtime.seed + seed_offset
    prompts = few_shot_prompts(synthesis.style, seeds, num_prompts, seed, synthesis.shots, synthesis.generated_shots)
    existing = [] if synthesis.style == "official" else seeds["instruction"].to_list()  # official: shown examples
    log(f"synthesis: {len(prompts)} prompts x {synthesis.samples_per_prompt} samples with {teacher_folder}")
    table = synthesize(
        chunked, chunked.tokenizer, prompts, synthesis.params(seed), existing, log,
        lambda label: rate_logger(log, f"generating {label}"),
    )
    return table, chunked.stats.metadata()


def _candidates(
    context: AssetExecutionContext, synthesis: SynthesisSettings, runtime: Runtime, generation: GenerationBackend,
    stores: Stores, seed_prompts: pl.DataFrame, teacher_folder: str, round_number: int,
) -> Output[pl.DataFrame]:
    table, tokens = synthesize_table(synthesis, runtime, generation, stores, teacher_folder, seed_prompts,
                                     synthesis.num_prompts, ROUND_SEED_STEP * (round_number - 1), context.log.info)
    kept = int(table["kept"].sum())
    if kept == 0:
        raise ValueError(f"every synthetic instruction was filtered out: {verdict_counts(table)}")
    return table_output(table, PREVIEW, kept=kept, verdicts=verdict_counts(table), teacher=teacher_folder,
                        generation=tokens)


def build_synthesis(round_number: int, group: str) -> AssetsDefinition:
    """Round ``round_number``'s candidates: round 1 from the configured teacher, round n from round n-1's tuned
    teacher, each from fresh few-shot prompts."""
    decorator = asset(key=round_key_path("synthetic_instructions", round_number), group_name=group,
                      kinds={"pytorch", "parquet"}, ins=_previous_teacher(round_number),
                      **on_gpu("synthetic_instructions"))
    if round_number == 1:

        @decorator
        @metered()
        def synthetic_instructions(
            context: AssetExecutionContext, synthesis: SynthesisSettings, runtime: Runtime,
            generation: GenerationBackend, stores: Stores, teacher: ModelSource, seed_prompts: pl.DataFrame,
        ) -> Output[pl.DataFrame]:
            """Every sampled instruction with its prompt, raw output, filter verdict and (if kept) answer."""
            return _candidates(context, synthesis, runtime, generation, stores, seed_prompts, teacher.folder(), 1)

        return synthetic_instructions

    @decorator
    @metered()
    def next_round_synthetic_instructions(
        context: AssetExecutionContext, synthesis: SynthesisSettings, runtime: Runtime, generation: GenerationBackend,
        stores: Stores, seed_prompts: pl.DataFrame, previous_teacher: pl.DataFrame,
    ) -> Output[pl.DataFrame]:
        """This round's candidates, written by the previous round's tuned teacher from fresh few-shot prompts."""
        folder = stores.checkpoint_store().local_folder(previous_teacher["uri"][0])
        return _candidates(context, synthesis, runtime, generation, stores, seed_prompts, folder, round_number)

    return next_round_synthetic_instructions


def _previous_teacher(round_number: int) -> dict[str, AssetIn]:
    """Round n >= 2 reads round n-1's teacher checkpoint as ``previous_teacher``."""
    if round_number == 1:
        return {"seed_prompts": AssetIn("seed_prompts")}
    return {"seed_prompts": AssetIn("seed_prompts"),
            "previous_teacher": AssetIn(round_key_path("teacher_checkpoint", round_number - 1))}
