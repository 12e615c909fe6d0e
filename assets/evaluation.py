"""Stage 7: does the tuned teacher teach better? Students fine-tuned on the Montessori and Self-Instruct
datasets are compared on the held-out set, and a report with plots is written next to the data."""

import json

import polars as pl
from dagster import AssetExecutionContext, AssetIn, AssetKey, AssetsDefinition, MetadataValue, Output, asset

from assets._output import table_output
from dagster_project.resource import PipelineResource
from dagster_project.settings import project_path
from resources.diversity import diversity_stats, shared_texts
from resources.evaluation import SFTParams, compare, evaluate_students
from resources.judge import PairwiseJudge, judge_students
from resources.models import load_causal_lm
from resources.report import ReportPage, comparison_png, curve_png, histogram_png, markdown_table
from resources.storage import TableStore

MONTESSORI, SELF_INSTRUCT = "montessori", "self_instruct"


@asset(group_name="evaluation", kinds={"pytorch", "parquet"})
def student_evaluation(
    context: AssetExecutionContext,
    pipeline: PipelineResource,
    student_dataset: pl.DataFrame,
    baseline_dataset: pl.DataFrame,
    heldout_set: pl.DataFrame,
) -> Output[pl.DataFrame]:
    """Held-out loss and perplexity of the student fine-tuned (TRL SFT) on each dataset, per seed; plus the
    untuned student, and a judge's pairwise preference where ``evaluation.judge`` is set."""
    settings = pipeline.settings.evaluation
    pipeline.prepare_torch()
    params = SFTParams(settings.learning_rate, settings.epochs, settings.batch_size, settings.max_length)
    datasets = {MONTESSORI: student_dataset, SELF_INSTRUCT: baseline_dataset}
    results, answers = evaluate_students(
        pipeline.model_folder("student"), datasets, heldout_set, params, settings.seeds, pipeline.device,
        pipeline.dtype, context.log.info, answer_tokens=settings.judge_max_new_tokens if settings.judge else 0,
        launch=pipeline.accelerate_launch(),
    )
    if settings.judge:
        judge = PairwiseJudge(*load_causal_lm(pipeline.resolve_model(settings.judge), pipeline.device,
                                              pipeline.dtype))
        preference = judge_students(judge, heldout_set["instruction"].to_list(), answers, MONTESSORI, SELF_INSTRUCT)
        judged = pl.DataFrame({"dataset": MONTESSORI, "seed": list(preference),
                               "judge_preference": list(preference.values())})
        results = results.join(judged, on=["dataset", "seed"], how="left")
    comparison = compare(results, MONTESSORI, SELF_INSTRUCT)
    shared = shared_texts(student_dataset["instruction"], baseline_dataset["instruction"])
    context.log.info(f"{comparison.sentence()}; {shared} of {student_dataset.height} Montessori instructions "
                     "are also in the baseline")
    return table_output(
        results, results.columns,
        comparison=comparison.sentence(), verdict=comparison.verdict, paired_difference=comparison.difference,
        standard_error=comparison.standard_error, p_value=comparison.p_value, seeds=comparison.seeds,
        instructions_shared_with_baseline=shared,
    )


def _diversity_table(texts: dict[str, list[str]]) -> pl.DataFrame:
    return pl.DataFrame([{"instructions": name, **diversity_stats(values)} for name, values in texts.items()])


REPORT_INPUTS = ("synthetic_instructions", "preference_pairs", "teacher_checkpoint", "baseline_dataset",
                 "student_dataset", "student_evaluation")


def build_evaluation_report(influence_keys: list[AssetKey]) -> AssetsDefinition:
    """The report asset, reading the influence scores of every round (``influence_keys``, round order)."""
    rounds = {f"influence_round_{n}": AssetIn(key) for n, key in enumerate(influence_keys, start=1)}
    named = {name: AssetIn(name) for name in REPORT_INPUTS}

    @asset(group_name="evaluation", kinds={"parquet"}, ins={**named, **rounds})
    def evaluation_report(
        context: AssetExecutionContext, pipeline: PipelineResource, **inputs: pl.DataFrame
    ) -> Output[pl.DataFrame]:
        """A markdown page with PNG plots (influence per round, preference margins, DPO curve, held-out loss)
        and the diversity monitors, attached to the materialization and written under ``{tables}/report/``."""
        influence = {name.removeprefix("influence_").replace("_", " "): inputs.pop(name)["influence"].to_list()
                     for name in rounds}
        return _report(context, pipeline, influence, **inputs)

    return evaluation_report


def _report(
    context: AssetExecutionContext,
    pipeline: PipelineResource,
    influence: dict[str, list[float]],
    synthetic_instructions: pl.DataFrame,
    preference_pairs: pl.DataFrame,
    teacher_checkpoint: pl.DataFrame,
    baseline_dataset: pl.DataFrame,
    student_dataset: pl.DataFrame,
    student_evaluation: pl.DataFrame,
) -> Output[pl.DataFrame]:
    comparison = compare(student_evaluation, MONTESSORI, SELF_INSTRUCT)
    history = json.loads(teacher_checkpoint["dpo_history"][0])
    plots = {
        "influence.png": histogram_png(influence, "Local data influence of candidates per round",
                                       "influence (L_before - L_after)"),
        "preference_margins.png": histogram_png({"pairs": preference_pairs["margin"].to_list()},
                                                "Preference margins", "influence(chosen) - influence(rejected)"),
        "dpo_curve.png": curve_png(history, ["loss", "rewards/margins", "rewards/chosen", "rewards/rejected"],
                                   "Teacher DPO"),
        "heldout_loss.png": comparison_png(student_evaluation.filter(pl.col("seed").is_not_null()),
                                           "Student held-out loss by training data"),
    }
    diversity = _diversity_table({
        "round candidates (untuned teacher)": synthetic_instructions.filter(pl.col("kept"))["instruction"].to_list(),
        "self_instruct (untuned teacher)": baseline_dataset["instruction"].to_list(),
        "montessori (tuned teacher)": student_dataset["instruction"].to_list(),
    })
    page = ReportPage([
        "# Montessori-Instruct report",
        f"Teacher `{teacher_checkpoint['teacher_version'][0]}`, run `{context.run.run_id}`.",
        f"**Montessori vs Self-Instruct:** {comparison.sentence()}",
        f"{shared_texts(student_dataset['instruction'], baseline_dataset['instruction'])} of "
        f"{student_dataset.height} Montessori instructions are identical to a baseline instruction (same prompts and "
        "seeds: the closer the tuned teacher is to the untuned one, the more rows the two datasets share).",
        markdown_table(student_evaluation),
        "## Diversity of instructions", markdown_table(diversity),
    ], plots)
    folder = TableStore(project_path(pipeline.settings.storage.tables)).base / "report"
    files = page.publish(folder)
    manifest = pl.DataFrame({"file": list(files), "path": [str(path) for path in files.values()]})
    return table_output(manifest, ["file", "path"], report=MetadataValue.md(page.render(inline=True)),
                        report_path=MetadataValue.path(str(folder)),
                        diversity=MetadataValue.md(markdown_table(diversity)))
