"""Asset checks guarding each stage; blocking ones stop bad data from flowing downstream."""

from pathlib import Path

import polars as pl
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetIn,
    AssetKey,
    AutomationCondition,
    asset_check,
)

from assets.config import (
    DecontaminationSettings,
    EvaluationSettings,
    GenerationBackend,
    Runtime,
    Stores,
    SynthesisSettings,
)
from assets.output import recorded_path
from assets.placement import on_gpu, round_key_path
from resources.evaluation.diversity import diversity_drop, diversity_stats
from resources.generation.interface import SamplingParams
from resources.storage.tables import MANIFEST_FILE, TableStore, folder_hash
from resources.synthesis.decontamination import contaminated_rows
from resources.synthesis.text_filters import dedup_rouge_l_detailed

# Under automation (dagster_project/automation.py) a check runs in the automated run that materializes its asset.
WITH_ITS_ASSET = AutomationCondition.any_deps_match(AutomationCondition.will_be_requested()).with_label(
    "with_its_asset")
REQUIRED_COLUMNS = {
    "synthetic_instructions": ["prompt_id", "prompt", "teacher_prompt", "raw_output", "instruction", "verdict", "kept",
                               "response", "candidate_id"],
    "influence_scores": ["candidate_id", "prompt_id", "loss_before", "loss_after", "loss_null_step", "influence",
                         "method", "student_version"],
    "preference_pairs": ["prompt_id", "prompt", "chosen", "rejected", "margin"],
    "student_dataset": ["instruction", "response", "teacher_version", "source_run"],
}


def schema_result(name: str, table: pl.DataFrame) -> AssetCheckResult:
    """Pass when ``table`` is non-empty and has every required column of asset ``name``."""
    missing = [c for c in REQUIRED_COLUMNS[name] if c not in table.columns]
    return AssetCheckResult(
        passed=not missing and table.height > 0,
        metadata={"missing_columns": ", ".join(missing) or "none", "rows": table.height},
    )


def build_contamination_check(key: str | list[str]) -> AssetChecksDefinition:
    """The check that no row the asset at ``key`` keeps reproduces a reference or held-out item: blocking under
    ``decontamination.action: block``, a warning under ``warn``, always passing under ``drop``."""

    @asset_check(asset=key, name="not_contaminated", blocking=True)
    def not_contaminated(decontamination: DecontaminationSettings, table: pl.DataFrame) -> AssetCheckResult:
        """No kept row shares an n-gram with, or nearly duplicates, a reference or held-out item."""
        flagged = table.filter(pl.col("kept")) if "kept" in table.columns else table
        rows = contaminated_rows(flagged)
        severity = AssetCheckSeverity.ERROR if decontamination.action == "block" else AssetCheckSeverity.WARN
        return AssetCheckResult(
            passed=not rows, severity=severity,
            description=f"{len(rows)} contaminated row(s) kept under action {decontamination.action}: "
                        + "; ".join(rows) if rows else None,
            metadata={"contaminated_rows": int(flagged["contaminated"].sum()), "action": decontamination.action,
                      "rows": "\n".join(rows) or "none"},
        )

    return not_contaminated


def build_round_checks(round_number: int) -> list[AssetChecksDefinition]:
    """The blocking checks of round ``round_number``'s stages."""
    synthetic_key = round_key_path("synthetic_instructions", round_number)
    teacher_key = round_key_path("teacher_checkpoint", round_number)

    @asset_check(automation_condition=WITH_ITS_ASSET, asset=synthetic_key, blocking=True)
    def synthetic_instructions_schema(synthetic_instructions: pl.DataFrame) -> AssetCheckResult:
        """Every audit column is present and some rows exist."""
        return schema_result("synthetic_instructions", synthetic_instructions)

    @asset_check(automation_condition=WITH_ITS_ASSET, asset=synthetic_key, blocking=True)
    def no_near_duplicates(synthesis: SynthesisSettings, synthetic_instructions: pl.DataFrame) -> AssetCheckResult:
        """No two kept instructions have ROUGE-L F1 above the dedup threshold."""
        kept = synthetic_instructions.filter(pl.col("kept"))["instruction"].to_list()
        verdicts = dedup_rouge_l_detailed(kept, synthesis.rouge_threshold, script=synthesis.script)
        offenders = [text for text, verdict in zip(kept, verdicts, strict=True) if not verdict.keep]
        worst = max((v.max_rouge for v in verdicts), default=0.0)
        return AssetCheckResult(passed=not offenders, metadata={"max_pairwise_rouge_l": worst,
                                                                "near_duplicates": len(offenders)})

    @asset_check(asset=round_key_path("influence_scores", round_number), blocking=True,
                 automation_condition=WITH_ITS_ASSET)
    def influence_scores_valid(influence_scores: pl.DataFrame) -> AssetCheckResult:
        """Required columns present and every loss finite."""
        result = schema_result("influence_scores", influence_scores)
        losses = influence_scores.select("loss_before", "loss_after", "loss_null_step", "influence")
        finite = bool(losses.select(pl.all().is_finite().all()).row(0) == (True,) * losses.width)
        return AssetCheckResult(passed=result.passed and finite, metadata={**result.metadata, "all_finite": finite})

    @asset_check(asset=round_key_path("preference_pairs", round_number), blocking=True,
                 automation_condition=WITH_ITS_ASSET)
    def pairs_are_ordered(preference_pairs: pl.DataFrame) -> AssetCheckResult:
        """Every pair has chosen != rejected and score(chosen) > score(rejected) under its signal."""
        bad = preference_pairs.filter(
            (pl.col("chosen") == pl.col("rejected")) | (pl.col("chosen_score") <= pl.col("rejected_score"))
        )
        schema = schema_result("preference_pairs", preference_pairs)
        return AssetCheckResult(passed=schema.passed and bad.height == 0,
                                metadata={**schema.metadata, "misordered_pairs": bad.height})

    @asset_check(asset=teacher_key, blocking=True, automation_condition=WITH_ITS_ASSET,
                 **on_gpu("teacher_loads_and_generates"))
    def teacher_loads_and_generates(
        stores: Stores, runtime: Runtime, generation: GenerationBackend, teacher_checkpoint: pl.DataFrame
    ) -> AssetCheckResult:
        """The stored weights still hash to teacher_version, and the teacher loads and generates."""
        folder = stores.checkpoint_store().local_folder(teacher_checkpoint["uri"][0])
        expected = teacher_checkpoint["teacher_version"][0]
        intact = folder_hash(Path(folder), exclude=(MANIFEST_FILE,)).startswith(expected)
        generator = generation.generator(folder, runtime, batch_size=1)
        prompt = generator.tokenizer.apply_chat_template(
            [{"role": "user", "content": "Say hello."}], tokenize=False, add_generation_prompt=True
        )
        sample = generator.generate([prompt], SamplingParams(temperature=0.0, max_new_tokens=8))[0][0]
        return AssetCheckResult(passed=intact, metadata={"weights_match_teacher_version": intact, "sample": sample})

    return [synthetic_instructions_schema, no_near_duplicates, influence_scores_valid, pairs_are_ordered,
            teacher_loads_and_generates, build_contamination_check(synthetic_key)]


def build_final_checks(last_round: int) -> list[AssetChecksDefinition]:
    """The checks of the final dataset against the last round's teacher and the baseline."""

    @asset_check(automation_condition=WITH_ITS_ASSET, asset="student_dataset", blocking=True,
                 additional_ins={"teacher_checkpoint": AssetIn(round_key_path("teacher_checkpoint", last_round))})
    def student_dataset_names_its_teacher(
        student_dataset: pl.DataFrame, teacher_checkpoint: pl.DataFrame
    ) -> AssetCheckResult:
        """Every row carries the teacher_version of the current teacher checkpoint."""
        expected = teacher_checkpoint["teacher_version"][0]
        found = student_dataset["teacher_version"].unique().to_list()
        schema = schema_result("student_dataset", student_dataset)
        return AssetCheckResult(passed=schema.passed and found == [expected],
                                metadata={**schema.metadata, "expected": expected, "found": ", ".join(found)})

    @asset_check(automation_condition=WITH_ITS_ASSET, asset="student_dataset", additional_deps=["baseline_dataset"])
    def diversity_not_collapsed(
        context: AssetCheckExecutionContext, evaluation: EvaluationSettings, stores: Stores,
        student_dataset: pl.DataFrame,
    ) -> AssetCheckResult:
        """Warn when the tuned teacher's instructions are much less diverse (distinct-2) than the untuned
        teacher's from the same prompts: DPO collapsing toward one narrow style. Skipped (passing, with a
        message) while the baseline has not been materialized, e.g. when a selection leaves it out."""
        path = recorded_path(context.instance, AssetKey("baseline_dataset"))
        if path is None or not path.exists():
            message = "skipped: baseline_dataset is not materialized (not in this selection); nothing to compare"
            context.log.info(message)
            return AssetCheckResult(passed=True, severity=AssetCheckSeverity.WARN, description=message,
                                    metadata={"skipped": True})
        baseline_dataset = TableStore.read(path, stores.retry_policy)
        before = diversity_stats(baseline_dataset["instruction"].to_list())
        after = diversity_stats(student_dataset["instruction"].to_list())
        drop = diversity_drop(before, after)
        limit = evaluation.max_diversity_drop
        return AssetCheckResult(
            passed=drop <= limit, severity=AssetCheckSeverity.WARN,
            metadata={"distinct_2_drop": drop, "max_diversity_drop": limit,
                      **{f"baseline_{k}": v for k, v in before.items()},
                      **{f"tuned_{k}": v for k, v in after.items()}},
        )

    return [student_dataset_names_its_teacher, diversity_not_collapsed,
            *(build_contamination_check(name) for name in ("student_dataset", "baseline_dataset"))]
