"""Template keys of the round-n assets: ``dagster_project.rounds`` replaces them by real round keys."""

from dagster import AssetIn

ROUND_N = "round_n"
ROUND_PREVIOUS = "round_previous"
PREVIOUS_TEACHER = AssetIn([ROUND_PREVIOUS, "teacher_checkpoint"])
