"""Profile -> resources: the one place the validated settings become the resources the assets declare."""

from __future__ import annotations

from dagster import ConfigurableResource

from assets.config import (
    DATA_FILES,
    GenerationBackend,
    Runtime,
    Stores,
    TrainingLauncher,
    resolve_path,
    runtime_part,
)
from dagster_project.io_manager import ParquetIOManager
from dagster_project.settings import STAGE_BLOCKS, Settings


def build_resources(settings: Settings, profile: str | None = None) -> dict[str, ConfigurableResource]:
    """Every resource of the graph, keyed by the name assets declare it under: stage blocks as they are, the
    runtime block in its parts, the models, data and storage blocks as the resources made of them. ``profile`` is
    how the user names the profile (default: its name), for messages that say what to run."""
    stores = Stores(storage=settings.storage, namespace=settings.namespace,
                    model_cache=resolve_path(settings.models.cache_dir), settings_yaml=settings.resolved_yaml())
    return {
        "runtime": runtime_part(settings.runtime, Runtime),
        "generation": runtime_part(settings.runtime, GenerationBackend),
        "launcher": runtime_part(settings.runtime, TrainingLauncher),
        "teacher": settings.models.source("teacher"),
        "student": settings.models.source("student"),
        "stores": stores,
        **{key: settings.data.source(name) for key, name in DATA_FILES.items()},
        "review_sheet": settings.data.review_sheet(profile or settings.name),
        **{block: getattr(settings, block) for block in STAGE_BLOCKS},
        "final_prompts": settings.student_dataset.prompts(),
        "io_manager": ParquetIOManager(stores=stores, prices=settings.prices),
    }
