"""Rounds of Montessori-Instruct as separate, prefixed assets: round 1 is the base graph
(``synthetic_instructions`` ... ``teacher_checkpoint``); round n >= 2 repeats those stages under
``round_n/`` (its own group in the UI), starting from round n-1's tuned teacher. The final dataset, its
checks and the report read the last round's teacher.

Prefixed copies rather than partitions: every round's assets are plain, separately versioned assets,
so Dagster's staleness (which has gaps for partitioned assets) and the input-pointer lineage used by
``montessori audit`` work unchanged, and the audit of a round-2 dataset walks through both teachers.
"""

from __future__ import annotations

from collections.abc import Iterable

from dagster import AssetKey, AssetsDefinition

from assets._rounds import ROUND_N, ROUND_PREVIOUS

ROUND_STAGES = ("synthetic_instructions", "warm_student", "influence_scores", "preference_pairs", "teacher_checkpoint")
LAST_ROUND_INPUTS = ("teacher_checkpoint", "warm_student", "preference_pairs")


def round_key(name: str, round_number: int) -> AssetKey:
    """The key of stage ``name`` in round ``round_number`` (round 1 keeps the bare name)."""
    return AssetKey(name) if round_number == 1 else AssetKey([f"round_{round_number}", name])


def _checks_only(stage: AssetsDefinition) -> bool:
    return not stage.specs


def round_copies(stages: Iterable[AssetsDefinition], round_number: int) -> list[AssetsDefinition]:
    """Round ``round_number``'s copies of ``stages`` (round stages, their checks and the round-n templates):
    keys prefixed, the round-n template keys resolved, the previous teacher wired, grouped by round."""
    replacements = {AssetKey(name): round_key(name, round_number) for name in ROUND_STAGES}
    replacements |= {AssetKey([ROUND_N, name]): round_key(name, round_number) for name in ROUND_STAGES}
    replacements[AssetKey([ROUND_PREVIOUS, "teacher_checkpoint"])] = round_key("teacher_checkpoint", round_number - 1)
    group = f"round_{round_number}"
    copies = []
    for stage in stages:
        copy = stage.with_attributes(asset_key_replacements=replacements)
        if not _checks_only(copy):
            copy = copy.map_asset_specs(lambda spec: spec.replace_attributes(group_name=group))
        copies.append(copy)
    return copies


def reading_last_round(consumers: Iterable[AssetsDefinition], rounds: int) -> list[AssetsDefinition]:
    """``consumers`` (final dataset, report, their checks) reading the last round's teacher, warm student
    and pairs instead of round 1's."""
    replacements = {AssetKey(name): round_key(name, rounds) for name in LAST_ROUND_INPUTS}
    return [consumer.with_attributes(asset_key_replacements=replacements) for consumer in consumers]


def is_round_stage(stage: AssetsDefinition) -> bool:
    """Whether ``stage`` (an asset or a check) belongs to a round, rather than reading the final round."""
    keys = [*stage.keys, *(check.asset_key for check in stage.check_keys)]
    return any(key.path[-1] in ROUND_STAGES and len(key.path) == 1 for key in keys)
