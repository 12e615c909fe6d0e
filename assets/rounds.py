"""The graph as factories: ``build_round(n)`` gives round n's stages and checks with concrete keys (round 1 bare,
round n >= 2 under ``round_n/`` in group ``round_n``), wired to round n-1's teacher; ``build_final(last_round)``
gives the final dataset, the baseline, the evaluation, the report and their checks, reading the last round.
"""

from dagster import AssetChecksDefinition, AssetsDefinition

from assets.checks import build_final_checks, build_round_checks
from assets.data import OBSERVED_FILES, heldout_set, reference_set, seed_prompts
from assets.dataset import baseline_dataset, build_student_dataset
from assets.evaluation import build_evaluation_report, student_evaluation
from assets.influence import build_influence, build_warm_student
from assets.synthesis import build_synthesis
from assets.teacher import build_preference_pairs, build_teacher_checkpoint

ROUND_ONE_GROUPS = {"synthesis": "synthesis", "influence": "influence", "teacher": "teacher"}
Stage = AssetsDefinition | AssetChecksDefinition


def build_round(round_number: int) -> list[Stage]:
    """Round ``round_number``'s synthesis, warm student, influence, pairs and teacher, with their checks."""
    groups = ROUND_ONE_GROUPS if round_number == 1 else dict.fromkeys(ROUND_ONE_GROUPS, f"round_{round_number}")
    return [
        build_synthesis(round_number, groups["synthesis"]),
        build_warm_student(round_number, groups["influence"]),
        build_influence(round_number, groups["influence"]),
        build_preference_pairs(round_number, groups["teacher"]),
        build_teacher_checkpoint(round_number, groups["teacher"]),
        *build_round_checks(round_number),
    ]


def build_final(last_round: int) -> list[Stage]:
    """The stages after the rounds, reading the last round's teacher, warm student and pairs."""
    return [
        build_student_dataset(last_round), baseline_dataset, student_evaluation,
        build_evaluation_report(last_round), *build_final_checks(last_round),
    ]


def build_graph(rounds: int) -> list[Stage]:
    """Every asset and check of a pipeline with ``rounds`` rounds, the observed data files first."""
    rounds_stages = [stage for n in range(1, rounds + 1) for stage in build_round(n)]
    return [*OBSERVED_FILES, seed_prompts, reference_set, heldout_set, *rounds_stages, *build_final(rounds)]
