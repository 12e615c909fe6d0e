"""Stage 7: does the tuned teacher teach better? Students fine-tuned on the Montessori and Self-Instruct
datasets are compared on the held-out set, and a report with plots is written next to the data."""

import json

import polars as pl
from dagster import AssetExecutionContext, AssetIn, AssetsDefinition, MetadataValue, Output, asset

from assets.config import EvaluationSettings, ModelSource, Runtime, Stores, TrainingLauncher
from assets.cost import count_examples, metered
from assets.output import table_output
from assets.placement import on_gpu, round_key_path
from resources.evaluation.diversity import diversity_stats, shared_texts
from resources.evaluation.judge import PairwiseJudge, judge_students
from resources.evaluation.report import ReportPage, comparison_png, curve_png, histogram_png, markdown_table
from resources.evaluation.student_sft import MONTESSORI, SELF_INSTRUCT, compare, evaluate_students
from resources.models import load_causal_lm


@asset(group_name="evaluation", kinds={"pytorch", "parquet"}, **on_gpu("student_evaluation"))
@metered()
def student_evaluation(
    context: AssetExecutionContext,
    evaluation: EvaluationSettings,
    runtime: Runtime,
    launcher: TrainingLauncher,
    student: ModelSource,
    student_dataset: pl.DataFrame,
    baseline_dataset: pl.DataFrame,
    heldout_set: pl.DataFrame,
) -> Output[pl.DataFrame]:
    """Held-out loss and perplexity of the student fine-tuned (TRL SFT) on each dataset, per seed; plus the
    untuned student, and a judge's pairwise preference where ``evaluation.judge`` is set."""
    settings = evaluation
    runtime.prepare_torch()
    datasets = {MONTESSORI: student_dataset, SELF_INSTRUCT: baseline_dataset}
    results, answers = evaluate_students(
        student.folder(), datasets, heldout_set, settings.sft_params(), settings.seeds, runtime.torch_device,
        runtime.dtype, context.log.info, answer_tokens=settings.judge_max_new_tokens if settings.judge else 0,
        launch=launcher.launch(),
    )
    if settings.judge:
        judge_folder = student.resolve(settings.judge, "evaluation.judge")
        judge = PairwiseJudge(*load_causal_lm(judge_folder, runtime.torch_device, runtime.dtype))
        preference = judge_students(judge, heldout_set["instruction"].to_list(), answers, MONTESSORI, SELF_INSTRUCT)
        judged = pl.DataFrame({"dataset": MONTESSORI, "seed": list(preference),
                               "judge_preference": list(preference.values())})
        results = results.join(judged, on=["dataset", "seed"], how="left")
    count_examples(int(results["train_rows"].sum()))  # every row of every student fine-tuning
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


REPORT_INPUTS = ("synthetic_instructions", "baseline_dataset", "student_dataset", "student_evaluation")
LAST_ROUND_INPUTS = ("preference_pairs", "teacher_checkpoint")


def build_evaluation_report(last_round: int) -> AssetsDefinition:
    """The report asset, reading the influence scores of every round and the last round's pairs and teacher."""
    rounds = {f"influence_round_{n}": AssetIn(round_key_path("influence_scores", n))
              for n in range(1, last_round + 1)}
    named = {name: AssetIn(name) for name in REPORT_INPUTS}
    last = {name: AssetIn(round_key_path(name, last_round)) for name in LAST_ROUND_INPUTS}

    @asset(group_name="evaluation", kinds={"parquet"}, ins={**named, **last, **rounds})
    @metered()
    def evaluation_report(
        context: AssetExecutionContext, stores: Stores, **inputs: pl.DataFrame
    ) -> Output[pl.DataFrame]:
        """A markdown page with PNG plots (influence per round, preference margins, DPO curve, held-out loss)
        and the diversity monitors, attached to the materialization and written under ``{tables}/report/``."""
        influence = {name.removeprefix("influence_").replace("_", " "): inputs.pop(name)["influence"].to_list()
                     for name in rounds}
        return _report(context, stores, influence, **inputs)

    return evaluation_report


def _report(
    context: AssetExecutionContext,
    stores: Stores,
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
    folder = stores.table_store().base / stores.namespace / "report" / context.run.run_id  # one folder per run
    files = page.publish(folder)
    manifest = pl.DataFrame({"file": list(files), "path": [str(path) for path in files.values()]})
    return table_output(manifest, ["file", "path"], report=MetadataValue.md(page.render(inline=True)),
                        report_path=MetadataValue.path(str(folder)),
                        diversity=MetadataValue.md(markdown_table(diversity)))
