"""Dagster's side of the settings: the typed resources every asset declares, one per concern.

- :mod:`~assets.config.base` - strict bases, ``versioned_config`` (what enters code versions), the path resolver
- :mod:`~assets.config.infrastructure` - the ``runtime``, ``models``, ``storage``, ``data``, ``experiment``,
  ``automation``, ``kubernetes``, ``export`` and ``prices`` blocks, and the resources made of them (``Runtime``,
  ``GenerationBackend``, ``TrainingLauncher``, ``ModelSource``, ``Stores``, ``ExampleSource``, ``ReviewSheet``)
- :mod:`~assets.config.stages` - one block per stage (``synthesis``, ``decontamination``, ``warmup``, ``influence``,
  ``pairs``, ``dpo``, ``student_dataset``, ``evaluation``), each the resource its assets declare

Each setting is defined once, with its default and description, and is validated from the profile's YAML straight
into these classes. An asset's code version is the hash of the versioned configuration of exactly the resources it
declares (``dagster_project/versions.py``), so an asset that starts reading a new setting goes stale when it changes.
"""

from assets.config.base import PROJECT_ROOT, StrictConfig, StrictModel, StrictResource, by_name, resolve_path
from assets.config.infrastructure import (
    DATA_FILES,
    AutomationSettings,
    DataSettings,
    ExampleSource,
    Executor,
    ExperimentSettings,
    ExportSettings,
    GenerationBackend,
    KubernetesSettings,
    ModelSettings,
    ModelSource,
    PriceSettings,
    ReviewSheet,
    Runtime,
    RuntimeSettings,
    StorageSettings,
    Stores,
    TrainingLauncher,
    runtime_part,
)
from assets.config.stages import (
    DecontaminationSettings,
    DPOSettings,
    EvaluationSettings,
    FinalPromptSettings,
    GenerationSettings,
    InfluenceSettings,
    LoraSettings,
    PairSettings,
    StudentDatasetSettings,
    SynthesisSettings,
    WarmupSettings,
)

__all__ = [
    "DATA_FILES", "PROJECT_ROOT", "AutomationSettings", "DPOSettings", "DataSettings", "DecontaminationSettings",
    "EvaluationSettings", "ExampleSource", "Executor", "ExperimentSettings", "ExportSettings", "FinalPromptSettings",
    "GenerationBackend", "GenerationSettings", "InfluenceSettings", "KubernetesSettings", "LoraSettings",
    "ModelSettings", "ModelSource", "PairSettings", "PriceSettings", "ReviewSheet", "Runtime", "RuntimeSettings",
    "StorageSettings",
    "Stores", "StrictConfig", "StrictModel", "StrictResource", "StudentDatasetSettings", "SynthesisSettings",
    "TrainingLauncher", "WarmupSettings", "by_name", "resolve_path", "runtime_part",
]
