"""Where a reader starts: the whole Montessori-Instruct graph for one profile.

``MONTESSORI_PROFILE`` (a bundled profile name or a settings file path, default ``demo``) picks the
profile for ``dagster dev -w workspace.yaml``; the ``montessori`` CLI builds the same Definitions.
"""

from __future__ import annotations

import hashlib
import os
import warnings

from dagster import (
    AssetKey,
    AssetsDefinition,
    AssetSelection,
    BetaWarning,
    Definitions,
    JobDefinition,
    define_asset_job,
    in_process_executor,
    multiprocess_executor,
)

from assets._rounds import ROUND_N
from assets.checks import ASSET_CHECKS
from assets.data import heldout_set, reference_set, seed_prompts
from assets.dataset import baseline_dataset, student_dataset
from assets.evaluation import build_evaluation_report, student_evaluation
from assets.influence import influence_scores, warm_student
from assets.synthesis import next_round_synthetic_instructions, synthetic_instructions
from assets.teacher import next_round_teacher_checkpoint, preference_pairs, teacher_checkpoint
from dagster_project.kubernetes import kubernetes_wiring
from dagster_project.resource import PipelineResource
from dagster_project.rounds import is_round_stage, reading_last_round, round_copies, round_key
from dagster_project.settings import Settings, load_settings, project_path
from resources.parquet_io import ParquetIOManager

ENGINE_VERSION = "2"
PIPELINE_JOB = "montessori_pipeline"
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
warnings.filterwarnings("ignore", category=BetaWarning)  # Output(data_version=...) is what we want
warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
# The settings each stage depends on; changing any of them changes that asset's code_version.
GENERATION = ("runtime.seed", "runtime.precision", "runtime.generation_backend")  # generated text depends on these
SYNTHESIS = ("synthesis", "models.teacher", *GENERATION)
DPO = ("dpo", "models.teacher", "runtime.seed", "runtime.precision", "runtime.accelerate_config",
       "runtime.num_processes")
STAGE_SETTINGS: list[tuple[AssetsDefinition, tuple[str, ...]]] = [
    (seed_prompts, ("data.seed_prompts", "data.max_instruction_chars")),
    (reference_set, ("data.reference_set", "data.max_instruction_chars")),
    (heldout_set, ("data.heldout_set", "data.max_instruction_chars")),
    (synthetic_instructions, SYNTHESIS),
    (warm_student, ("warmup", "models.student", "runtime.seed", "runtime.precision")),
    (influence_scores, ("influence", "runtime.precision")),
    (preference_pairs, ("pairs",)),
    (teacher_checkpoint, DPO),
    (student_dataset, ("student_dataset", "synthesis", "influence", *GENERATION)),
    (baseline_dataset, ("student_dataset.num_prompts", "student_dataset.seed_offset", "synthesis", "models.teacher",
                        *GENERATION)),
    (student_evaluation, ("evaluation", "models.student", "runtime.seed", "runtime.precision",
                          "runtime.accelerate_config", "runtime.num_processes")),
]
# Round n >= 2 templates: the same settings as their round-1 stage.
ROUND_TEMPLATES: list[tuple[AssetsDefinition, tuple[str, ...]]] = [
    (next_round_synthetic_instructions, SYNTHESIS),
    (next_round_teacher_checkpoint, DPO),
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


def _versioned(
    settings: Settings, stages: list[tuple[AssetsDefinition, tuple[str, ...]]]
) -> list[AssetsDefinition]:
    """Each stage with the code_version of the settings it depends on."""
    return [_with_code_version(stage, code_version(settings, keys)) for stage, keys in stages]


def _with_code_version(stage: AssetsDefinition, version: str) -> AssetsDefinition:
    return stage.map_asset_specs(lambda spec: spec.replace_attributes(code_version=version))


def _with_rounds(
    definitions: list[AssetsDefinition], templates: list[AssetsDefinition], rounds: int
) -> list[AssetsDefinition]:
    """Add rounds 2..``rounds`` of the round stages (round n's synthesis and DPO start from round n-1's
    teacher, via ``templates``); everything downstream of the rounds reads the last round."""
    round_one = [d for d in definitions if is_round_stage(d)]
    replaced_by_template = {key for template in templates for key in template.keys}
    repeated = [d for d in round_one if not any(AssetKey([ROUND_N, *k.path]) in replaced_by_template for k in d.keys)]
    copies = [copy for n in range(2, rounds + 1) for copy in round_copies([*repeated, *templates], n)]
    consumers = reading_last_round([d for d in definitions if not is_round_stage(d)], rounds)
    return [*round_one, *copies, *consumers]


def build_definitions(profile: str) -> Definitions:
    """Definitions of every stage, versioned by the settings of ``profile``."""
    settings = load_settings(profile)
    report = build_evaluation_report([round_key("influence_scores", n) for n in range(1, settings.rounds + 1)])
    assets = _versioned(settings, [*STAGE_SETTINGS, (report, ())])
    checks: list[AssetsDefinition] = list(ASSET_CHECKS)
    if settings.rounds > 1:
        templates = _versioned(settings, ROUND_TEMPLATES)
        assets, checks = _with_rounds(assets, templates, settings.rounds), _with_rounds(checks, [], settings.rounds)
    executor = in_process_executor
    if settings.runtime.executor == "multiprocess":
        executor = multiprocess_executor.configured({"max_concurrent": settings.runtime.max_concurrent})
    if settings.runtime.executor == "k8s":  # one pod per step; GPU ops request GPUs and join the GPU pool
        executor, assets, checks = kubernetes_wiring(settings, profile, assets, checks)
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
