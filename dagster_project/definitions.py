"""Where a reader starts: the whole Montessori-Instruct graph for one profile, built on demand.

``MONTESSORI_PROFILE`` (a bundled profile name or a settings file path, default ``demo``) picks the profile for
``dagster dev -w workspace.yaml``; the ``montessori`` CLI builds the same Definitions. Nothing happens at import:
:func:`defs` is Dagster's lazy entry point, and environment setup is done by :func:`prepare_process`.
"""

from __future__ import annotations

import os
import warnings

from dagster import (
    AssetsDefinition,
    AssetSelection,
    BetaWarning,
    Definitions,
    ExecutorDefinition,
    JobDefinition,
    define_asset_job,
    definitions,
    in_process_executor,
    multiprocess_executor,
)

from assets.rounds import Stage, build_graph
from dagster_project.automation import automation_sensor, with_automation
from dagster_project.console import CONSOLE
from dagster_project.kubernetes import k8s_executor
from dagster_project.resources import build_resources
from dagster_project.settings import Settings, load_settings
from dagster_project.versions import with_code_versions
from resources.quiet import silence_progress_bars

PIPELINE_JOB = "montessori_pipeline"


def prepare_process() -> None:
    """Quiet third-party chatter (progress bars, advisory warnings) for a process that runs the pipeline (CLI, code
    location, step workers): the pipeline logs one progress line per stage itself."""
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    silence_progress_bars()
    warnings.filterwarnings("ignore", category=BetaWarning)  # Output(data_version=...) is what we want
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")


def _executor(settings: Settings, profile: str, stages: list[Stage]) -> ExecutorDefinition:
    if settings.runtime.executor == "multiprocess":
        return multiprocess_executor.configured({"max_concurrent": settings.runtime.max_concurrent})
    if settings.runtime.executor == "k8s":  # one pod per step; steps tagged for a GPU get a GPU pod
        return k8s_executor(settings, profile, stages)
    return in_process_executor


def build_definitions(profile: str) -> Definitions:
    """Definitions of every stage for ``profile``: its resources, each asset versioned by what it declares, the
    observed data files, and the automation conditions and sensor of the ``automation`` block."""
    settings = load_settings(profile)
    resources = build_resources(settings, profile)
    graph = build_graph(settings.rounds, settings.pairs.review == "required")
    stages = with_automation(with_code_versions(graph, resources), settings.automation)
    return Definitions(
        assets=[stage for stage in stages if isinstance(stage, AssetsDefinition)],
        asset_checks=[stage for stage in stages if not isinstance(stage, AssetsDefinition)],
        executor=_executor(settings, profile, stages),
        jobs=[define_asset_job(PIPELINE_JOB, AssetSelection.all(include_sources=True))],
        sensors=[automation_sensor(settings.automation)],
        loggers=CONSOLE,
        resources=resources,
    )


@definitions
def defs() -> Definitions:
    """The code location's entry point (``workspace.yaml``): the profile named by ``MONTESSORI_PROFILE``."""
    prepare_process()
    return build_definitions(os.environ.get("MONTESSORI_PROFILE", "demo"))


def pipeline_job(profile: str) -> JobDefinition:
    """The whole graph of ``profile`` as one job; the CLI runs it through ``build_reconstructable_job`` so
    that every worker process (multiprocess executor) rebuilds exactly this profile's job."""
    prepare_process()
    return build_definitions(profile).resolve_job_def(PIPELINE_JOB)
