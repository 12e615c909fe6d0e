"""Where a reader starts: the whole Montessori-Instruct graph for one profile.

``MONTESSORI_PROFILE`` (a bundled profile name or a settings file path, default ``demo``) picks the
profile for ``dagster dev -w workspace.yaml``; the ``montessori`` CLI builds the same Definitions.
"""

from __future__ import annotations

import hashlib
import os
import warnings

from dagster import (
    AssetsDefinition,
    AssetSelection,
    BetaWarning,
    Definitions,
    JobDefinition,
    define_asset_job,
    in_process_executor,
    multiprocess_executor,
)

from assets.checks import ASSET_CHECKS
from assets.data import heldout_set, reference_set, seed_prompts
from assets.dataset import baseline_dataset, student_dataset
from assets.evaluation import evaluation_report, student_evaluation
from assets.influence import influence_scores, warm_student
from assets.synthesis import synthetic_instructions
from assets.teacher import preference_pairs, teacher_checkpoint
from dagster_project.kubernetes import kubernetes_wiring
from dagster_project.resource import PipelineResource
from dagster_project.settings import Settings, load_settings, project_path
from resources.parquet_io import ParquetIOManager

ENGINE_VERSION = "2"
PIPELINE_JOB = "montessori_pipeline"
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
warnings.filterwarnings("ignore", category=BetaWarning)  # Output(data_version=...) is what we want
warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
# The settings each stage depends on; changing any of them changes that asset's code_version.
STAGE_SETTINGS: list[tuple[AssetsDefinition, tuple[str, ...]]] = [
    (seed_prompts, ("data.seed_prompts", "data.max_instruction_chars")),
    (reference_set, ("data.reference_set", "data.max_instruction_chars")),
    (heldout_set, ("data.heldout_set", "data.max_instruction_chars")),
    (synthetic_instructions, ("synthesis", "models.teacher", "runtime.seed", "runtime.precision")),
    (warm_student, ("warmup", "models.student", "runtime.seed", "runtime.precision")),
    (influence_scores, ("influence", "runtime.precision")),
    (preference_pairs, ("pairs",)),
    (teacher_checkpoint, ("dpo", "models.teacher", "runtime.seed", "runtime.precision")),
    (student_dataset, ("student_dataset", "synthesis", "influence", "runtime.seed", "runtime.precision")),
    (baseline_dataset, ("student_dataset.num_prompts", "student_dataset.seed_offset", "synthesis", "models.teacher",
                        "runtime.seed", "runtime.precision")),
    (student_evaluation, ("evaluation", "models.student", "runtime.seed", "runtime.precision")),
    (evaluation_report, ()),
]


def _lookup(settings: Settings, dotted: str) -> object:
    value: object = settings
    for part in dotted.split("."):
        value = getattr(value, part)
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


def code_version(settings: Settings, keys: tuple[str, ...]) -> str:
    """Hash of the engine version and the settings a stage depends on."""
    payload = repr([ENGINE_VERSION, *((key, _lookup(settings, key)) for key in keys)])
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def _with_code_version(stage: AssetsDefinition, version: str) -> AssetsDefinition:
    return stage.map_asset_specs(lambda spec: spec.replace_attributes(code_version=version))


def build_definitions(profile: str) -> Definitions:
    """Definitions of every stage, versioned by the settings of ``profile``."""
    settings = load_settings(profile)
    assets = [_with_code_version(stage, code_version(settings, keys)) for stage, keys in STAGE_SETTINGS]
    executor = in_process_executor
    if settings.runtime.executor == "multiprocess":
        executor = multiprocess_executor.configured({"max_concurrent": settings.runtime.max_concurrent})
    checks = ASSET_CHECKS
    if settings.runtime.executor == "k8s":  # one pod per step; GPU ops request GPUs and join the GPU pool
        executor, assets, checks = kubernetes_wiring(settings, profile, assets, ASSET_CHECKS)
    return Definitions(
        assets=assets,
        executor=executor,
        jobs=[define_asset_job(PIPELINE_JOB, AssetSelection.all(include_sources=False))],
        asset_checks=checks,
        resources={
            "pipeline": PipelineResource(profile=profile),
            "io_manager": ParquetIOManager(
                base_path=project_path(settings.storage.tables), retry_attempts=settings.storage.retry_attempts,
                retry_backoff_seconds=settings.storage.retry_backoff_seconds,
            ),
        },
    )


defs = build_definitions(os.environ.get("MONTESSORI_PROFILE", "demo"))


def pipeline_job(profile: str) -> JobDefinition:
    """The whole graph of ``profile`` as one job; the CLI runs it through ``build_reconstructable_job`` so
    that every worker process (multiprocess executor) rebuilds exactly this profile's job."""
    return build_definitions(profile).resolve_job_def(PIPELINE_JOB)
