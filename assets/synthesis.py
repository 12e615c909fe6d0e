"""Stage 1: the teacher writes synthetic instructions (and answers) from few-shot seed prompts."""

import time
from collections.abc import Callable
from pathlib import Path

import polars as pl
from dagster import AssetExecutionContext, AssetIn, AssetsDefinition, Output, asset

from assets.config import DecontaminationSettings, GenerationBackend, ModelSource, Runtime, Stores, SynthesisSettings
from assets.cost import metered
from assets.output import table_output
from assets.placement import on_gpu, round_key_path
from resources.generation.chunk_cache import ChunkedGeneration
from resources.generation.interface import rate_logger
from resources.storage.tables import folder_hash
from resources.synthesis.decontamination import contaminated_rows, contamination_counts, decontaminate
from resources.synthesis.synthesize import few_shot_prompts, synthesize

PREVIEW = ["prompt_id", "sample_index", "verdict", "instruction", "response"]
REFERENCE_SETS = ("reference_set", "heldout_set")  # what generated rows must not reproduce
ROUND_SEED_STEP = 100  # round n builds its prompts with seed + 100 (n - 1): new candidates each round


def reference_tables(reference_set: pl.DataFrame, heldout_set: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """The sets generated rows are checked against, by name."""
    return dict(zip(REFERENCE_SETS, (reference_set, heldout_set), strict=True))


def verdict_counts(table: pl.DataFrame) -> dict[str, int]:
    """How many samples got each filter verdict."""
    return {v: n for v, n in table["verdict"].value_counts().sort("verdict").iter_rows()}


def synthesize_table(
    synthesis: SynthesisSettings, decontamination: DecontaminationSettings, runtime: Runtime,
    generation: GenerationBackend, stores: Stores, teacher_folder: str, seeds: pl.DataFrame,
    references: dict[str, pl.DataFrame], num_prompts: int, seed_offset: int, log: Callable[[str], None],
) -> tuple[pl.DataFrame, dict[str, object]]:
    """Every sample the teacher at ``teacher_folder`` writes for ``num_prompts`` few-shot prompts from ``seeds``,
    checked against the ``references`` (set name -> table) for contamination; and metadata: the generation's token
    counts and tokens/s (chunks read back from the cache count nothing) and the decontamination's counts and
    seconds. Finished chunks are cached, so a killed run resumes."""
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
    started = time.perf_counter()
    table = decontaminate(table, references, decontamination.params(), decontamination.action)
    seconds = round(time.perf_counter() - started, 3)
    counts = contamination_counts(table)
    log(f"decontamination ({decontamination.action}) against {', '.join(references)} in {seconds} s: "
        + (", ".join(f"{n} row(s) match {name}" for name, n in counts.items()) or "no row matches"))
    for line in contaminated_rows(table):
        log(f"contaminated {line}")
    return table, {"generation": chunked.stats.metadata(),
                   "decontamination": {"action": decontamination.action, "rows": int(table["contaminated"].sum()),
                                       "by_set": counts, "seconds": seconds}}


def _candidates(
    context: AssetExecutionContext, synthesis: SynthesisSettings, decontamination: DecontaminationSettings,
    runtime: Runtime, generation: GenerationBackend, stores: Stores, seed_prompts: pl.DataFrame,
    references: dict[str, pl.DataFrame], teacher_folder: str, round_number: int,
) -> Output[pl.DataFrame]:
    table, metadata = synthesize_table(synthesis, decontamination, runtime, generation, stores, teacher_folder,
                                       seed_prompts, references, synthesis.num_prompts,
                                       ROUND_SEED_STEP * (round_number - 1), context.log.info)
    kept = int(table["kept"].sum())
    if kept == 0:
        raise ValueError(f"every synthetic instruction was filtered out: {verdict_counts(table)}")
    return table_output(table, PREVIEW, kept=kept, verdicts=verdict_counts(table), teacher=teacher_folder,
                        **metadata)


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
            context: AssetExecutionContext, synthesis: SynthesisSettings, decontamination: DecontaminationSettings,
            runtime: Runtime, generation: GenerationBackend, stores: Stores, teacher: ModelSource,
            seed_prompts: pl.DataFrame, reference_set: pl.DataFrame, heldout_set: pl.DataFrame,
        ) -> Output[pl.DataFrame]:
            """Every sampled instruction with its prompt, raw output, filter verdict (``contaminated`` when it or
            its answer reproduces a reference or held-out item) and (if kept) answer."""
            return _candidates(context, synthesis, decontamination, runtime, generation, stores, seed_prompts,
                               reference_tables(reference_set, heldout_set), teacher.folder(), 1)

        return synthetic_instructions

    @decorator
    @metered()
    def next_round_synthetic_instructions(
        context: AssetExecutionContext, synthesis: SynthesisSettings, decontamination: DecontaminationSettings,
        runtime: Runtime, generation: GenerationBackend, stores: Stores, seed_prompts: pl.DataFrame,
        reference_set: pl.DataFrame, heldout_set: pl.DataFrame, previous_teacher: pl.DataFrame,
    ) -> Output[pl.DataFrame]:
        """This round's candidates, written by the previous round's tuned teacher from fresh few-shot prompts."""
        folder = stores.checkpoint_store().local_folder(previous_teacher["uri"][0])
        return _candidates(context, synthesis, decontamination, runtime, generation, stores, seed_prompts,
                           reference_tables(reference_set, heldout_set), folder, round_number)

    return next_round_synthetic_instructions


def _previous_teacher(round_number: int) -> dict[str, AssetIn]:
    """The inputs of a round's synthesis (the seeds, and the sets it is checked against); round n >= 2 also reads
    round n-1's teacher checkpoint as ``previous_teacher``."""
    data = {name: AssetIn(name) for name in ("seed_prompts", *REFERENCE_SETS)}
    if round_number == 1:
        return data
    return {**data, "previous_teacher": AssetIn(round_key_path("teacher_checkpoint", round_number - 1))}
