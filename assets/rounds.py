"""The graph as factories: ``build_round(n)`` gives round n's stages and checks with concrete keys (round 1 bare,
round n >= 2 under ``round_n/`` in group ``round_n``), wired to round n-1's teacher; ``build_final(last_round)``
gives the final dataset, the baseline, the evaluation, the report and their checks, reading the last round.
With ``pairs.review: required`` each round also has ``reviewed_pairs`` between its pairs and its teacher, and the
graph the ``pair_review`` sheet as an observed source.
"""

from dagster import AssetChecksDefinition, AssetsDefinition

from assets.checks import build_final_checks, build_round_checks
from assets.data import OBSERVED_FILES, heldout_set, reference_set, seed_prompts
from assets.dataset import baseline_dataset, build_student_dataset
from assets.evaluation import build_evaluation_report, student_evaluation
from assets.influence import build_influence, build_warm_student
from assets.review import build_reviewed_pairs, pair_review
from assets.synthesis import build_synthesis
from assets.teacher import build_preference_pairs, build_teacher_checkpoint

ROUND_ONE_GROUPS = {"synthesis": "synthesis", "influence": "influence", "teacher": "teacher"}
Stage = AssetsDefinition | AssetChecksDefinition


def build_round(round_number: int, review: bool = False) -> list[Stage]:
    """Round ``round_number``'s synthesis, warm student, influence, pairs and teacher, with their checks; with
    ``review`` (``pairs.review: required``) the teacher trains on the reviewed pairs."""
    groups = ROUND_ONE_GROUPS if round_number == 1 else dict.fromkeys(ROUND_ONE_GROUPS, f"round_{round_number}")
    return [
        build_synthesis(round_number, groups["synthesis"]),
        build_warm_student(round_number, groups["influence"]),
        build_influence(round_number, groups["influence"]),
        build_preference_pairs(round_number, groups["teacher"]),
        *([build_reviewed_pairs(round_number, groups["teacher"])] if review else []),
        build_teacher_checkpoint(round_number, groups["teacher"], review),
        *build_round_checks(round_number),
    ]


def build_final(last_round: int) -> list[Stage]:
    """The stages after the rounds, reading the last round's teacher, warm student and pairs."""
    return [
        build_student_dataset(last_round), baseline_dataset, student_evaluation,
        build_evaluation_report(last_round), *build_final_checks(last_round),
    ]


def build_graph(rounds: int, review: bool = False) -> list[Stage]:
    """Every asset and check of a pipeline with ``rounds`` rounds, the observed data files first (``review``: the
    review gate before each DPO, and the review sheet as an observed source)."""
    rounds_stages = [stage for n in range(1, rounds + 1) for stage in build_round(n, review)]
    sources = [pair_review] if review else []
    return [*OBSERVED_FILES, *sources, seed_prompts, reference_set, heldout_set, *rounds_stages, *build_final(rounds)]
