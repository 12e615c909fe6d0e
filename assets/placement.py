"""Where a step runs, declared on the asset itself: model-running steps carry the accelerator tag and join the GPU
concurrency pool; the k8s wiring gives steps with the tag a GPU pod (dagster-k8s per-step config)."""

from typing import Any

ACCELERATOR_TAG = "montessori/accelerator"
STAGE_TAG = "montessori/stage"
GPU_POOL = "gpu"


def on_gpu(stage: str) -> dict[str, Any]:
    """Decorator arguments of a model-running step of ``stage`` (op tags and pool)."""
    return {"op_tags": {ACCELERATOR_TAG: "gpu", STAGE_TAG: stage}, "pool": GPU_POOL}


def round_key_path(name: str, round_number: int) -> list[str]:
    """The key path of stage ``name`` in round ``round_number`` (round 1 keeps the bare name)."""
    return [name] if round_number == 1 else [f"round_{round_number}", name]


def gpu_op(stage: str) -> dict[str, Any]:
    """``@op`` arguments of a model-running op of ``stage`` (ops take ``tags`` where assets take ``op_tags``)."""
    arguments = on_gpu(stage)
    return {"tags": arguments["op_tags"], "pool": arguments["pool"]}
