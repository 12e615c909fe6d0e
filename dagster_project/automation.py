"""Declarative automation (the ``automation`` block): which stages Dagster launches by itself, and how often the
data files are observed. Evaluated by the daemon's sensor (``make ui`` runs the daemon); tested without one through
``dagster.evaluate_automation_conditions``.

``on_change`` puts :func:`on_change` on every stage but the manual ones: a stage is requested once when one of its
inputs got a new data version (an observed file re-hashed to new content, an upstream table with new content) that
was not written by a run that already included the stage, or when its own code version changed; its stale
descendants are requested in the same tick, so one run carries the change through. Handled is handled: a requested
stage that fails is not requested again until an input changes again.
"""

from __future__ import annotations

from dagster import (
    AssetChecksDefinition,
    AssetsDefinition,
    AssetSelection,
    AutomationCondition,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
)

from assets.config import AutomationSettings
from dagster_project.kubernetes import gpu_ops

SENSOR = "montessori_automation"
GPU = "gpu"


def on_change() -> AutomationCondition:
    """True once after an input's data version changed (not by a run that included this stage) or this stage's code
    version changed; never while an input is missing or anything upstream or the stage itself is running."""
    input_changed = AutomationCondition.any_deps_match(
        (AutomationCondition.data_version_changed() & ~AutomationCondition.executed_with_root_target())
        | AutomationCondition.will_be_requested()
    ).with_label("input_changed")
    return (
        (input_changed | AutomationCondition.code_version_changed()).since_last_handled()
        & ~AutomationCondition.any_deps_missing()
        & ~AutomationCondition.any_deps_in_progress()
        & ~AutomationCondition.in_progress()
    ).with_label("on_change")


def _manual(stage: AssetsDefinition, manual: set[str]) -> bool:
    names = {key.to_user_string() for key in stage.keys}
    return bool(names & manual) or (GPU in manual and bool(gpu_ops([stage])))


def with_automation(
    stages: list[AssetsDefinition | AssetChecksDefinition], settings: AutomationSettings
) -> list[AssetsDefinition | AssetChecksDefinition]:
    """``stages`` with their automation conditions: the observed files re-observed on the configured interval; under
    ``on_change`` every stage but the manual ones launched on change."""
    manual = set(settings.manual)

    def condition(stage: AssetsDefinition) -> AutomationCondition | None:
        if stage.is_observable:
            minutes = settings.observe_every_minutes
            return AutomationCondition.cron_tick_passed(f"*/{minutes} * * * *") if minutes else None
        if settings.mode == "on_change" and not _manual(stage, manual):
            return on_change()
        return None

    def automated(stage: AssetsDefinition | AssetChecksDefinition) -> AssetsDefinition | AssetChecksDefinition:
        chosen = None if isinstance(stage, AssetChecksDefinition) else condition(stage)
        if chosen is None:
            return stage
        return stage.map_asset_specs(lambda spec: spec.replace_attributes(automation_condition=chosen))

    return [automated(stage) for stage in stages]


def automation_sensor(settings: AutomationSettings) -> AutomationConditionSensorDefinition:
    """The sensor evaluating every condition of the graph; running by default when there is something to do."""
    active = settings.mode != "off" or settings.observe_every_minutes > 0
    return AutomationConditionSensorDefinition(
        SENSOR, target=AssetSelection.all(include_sources=True),
        default_status=DefaultSensorStatus.RUNNING if active else DefaultSensorStatus.STOPPED,
        description="Dagster's declarative automation for this profile (the automation block)",
    )
