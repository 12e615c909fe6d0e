"""Kubernetes wiring (``runtime.executor: k8s``): every step runs in its own pod (dagster-k8s ``k8s_job_executor``).

The assets declare which steps run a model (op tag ``montessori/accelerator: gpu``, pool ``gpu``); here the
executor gets, through its public configuration, a memory-only pod for every step (``step_k8s_config``) and a GPU
pod for each op so tagged (``per_step_k8s_config``, keyed by op name). Influence shards are dynamic steps of one op,
so they fan out one GPU pod per shard.
"""

from __future__ import annotations

from collections.abc import Iterable

from dagster import AssetChecksDefinition, AssetsDefinition, ExecutorDefinition, GraphDefinition, OpDefinition

from assets.config import KubernetesSettings
from assets.placement import ACCELERATOR_TAG, STAGE_TAG
from dagster_project.settings import Settings


def gpu_ops(stages: Iterable[AssetsDefinition | AssetChecksDefinition]) -> dict[str, str]:
    """Op name -> stage of every op that declares the accelerator tag, across rounds and graph-backed assets."""
    found: dict[str, str] = {}

    def visit(node: OpDefinition | GraphDefinition) -> None:
        if isinstance(node, GraphDefinition):
            for child in node.node_defs:
                visit(child)
        elif node.tags.get(ACCELERATOR_TAG) == "gpu":
            found[node.name] = node.tags[STAGE_TAG]

    for stage in stages:
        visit(stage.node_def)
    return found


def cpu_step_config(k8s: KubernetesSettings) -> dict:
    """The pod resources of a CPU-only step: memory only."""
    memory = {"memory": k8s.cpu_memory}
    return {"container_config": {"resources": {"requests": memory, "limits": memory}}}


def gpu_step_config(k8s: KubernetesSettings, stage: str) -> dict:
    """The pod resources of a model-running step of ``stage``: GPUs, memory, the GPU toleration and node labels."""
    gpu = {k8s.gpu_resource: str(k8s.gpus_per_step), "memory": k8s.gpu_memory_by_step.get(stage, k8s.gpu_memory)}
    pod_spec: dict = {"tolerations": [{"key": k8s.gpu_resource, "operator": "Exists", "effect": "NoSchedule"}]}
    if k8s.gpu_node_selector:
        pod_spec["node_selector"] = dict(k8s.gpu_node_selector)
    return {"container_config": {"resources": {"requests": gpu, "limits": dict(gpu)}}, "pod_spec_config": pod_spec}


def k8s_executor(
    settings: Settings, profile: str, stages: Iterable[AssetsDefinition | AssetChecksDefinition]
) -> ExecutorDefinition:
    """``k8s_job_executor`` configured from ``settings.kubernetes``; step pods rebuild the same ``profile``."""
    from dagster_k8s import k8s_job_executor  # the k8s extra: only needed by this profile

    k8s = settings.kubernetes
    on_gpu = gpu_ops(stages)
    unknown = set(k8s.gpu_memory_by_step) - set(on_gpu.values())
    if unknown:
        raise ValueError(f"kubernetes.gpu_memory_by_step names stages that use no GPU: {sorted(unknown)}")
    config: dict = {
        "job_namespace": k8s.namespace,
        "image_pull_policy": k8s.image_pull_policy,
        "env_secrets": list(k8s.env_secrets),
        "env_config_maps": list(k8s.env_config_maps),
        "env_vars": [f"MONTESSORI_PROFILE={profile}", *k8s.env_vars],
        "max_concurrent": settings.runtime.max_concurrent,
        "tag_concurrency_limits": [{"key": ACCELERATOR_TAG, "value": "gpu", "limit": k8s.max_concurrent_gpu}],
        "step_k8s_config": cpu_step_config(k8s),
        "per_step_k8s_config": {op: gpu_step_config(k8s, stage) for op, stage in sorted(on_gpu.items())},
    }
    if k8s.image:
        config["job_image"] = k8s.image
    if k8s.service_account:
        config["service_account_name"] = k8s.service_account
    return k8s_job_executor.configured(config, name="k8s_gpu")
