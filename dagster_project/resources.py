"""Profile -> resources: the one place the validated settings become the typed resources the assets declare."""

from __future__ import annotations

from dagster import ConfigurableResource

from assets.config import ExampleSource, GenerationBackend, ModelSource, Runtime, Stores, TrainingLauncher
from dagster_project.io_manager import ParquetIOManager
from dagster_project.settings import PROJECT_ROOT, STAGE_BLOCKS, Settings, project_path


def build_resources(settings: Settings) -> dict[str, ConfigurableResource]:
    """Every resource of the graph, keyed by the name assets declare it under."""
    runtime, models, storage, data = settings.runtime, settings.models, settings.storage, settings.data
    cache = project_path(models.cache_dir)
    stores = Stores(
        tables=project_path(storage.tables), namespace=settings.namespace,
        cache=project_path(storage.cache or storage.tables),
        checkpoints=project_path(storage.checkpoints), model_cache=cache, retry_attempts=storage.retry_attempts,
        retry_backoff_seconds=storage.retry_backoff_seconds,
        settings_yaml=settings.resolved_yaml(),
    )
    root = str(PROJECT_ROOT)

    def source(path: str, columns: dict[str, str]) -> ExampleSource:
        return ExampleSource(path=path, max_instruction_chars=data.max_instruction_chars, columns=columns, root=root)

    return {
        "runtime": Runtime(device=runtime.device, precision=runtime.precision, torch_threads=runtime.torch_threads,
                           seed=runtime.seed),
        "generation": GenerationBackend(
            generation_backend=runtime.generation_backend, tensor_parallel_size=runtime.tensor_parallel_size,
            gpu_memory_utilization=runtime.gpu_memory_utilization,
        ),
        "launcher": TrainingLauncher(accelerate_config=runtime.accelerate_config, num_processes=runtime.num_processes,
                                     root=root),
        "teacher": ModelSource(source=models.teacher, cache_dir=cache, setting="models.teacher"),
        "student": ModelSource(source=models.student, cache_dir=cache, setting="models.student"),
        "stores": stores,
        "seed_source": source(data.seed_prompts, data.seed_prompts_columns),
        "reference_source": source(data.reference_set, data.reference_set_columns),
        "heldout_source": source(data.heldout_set, data.heldout_set_columns),
        **{block: getattr(settings, block) for block in STAGE_BLOCKS},
        "final_prompts": settings.student_dataset.prompts(),
        "io_manager": ParquetIOManager(stores=stores),
    }
