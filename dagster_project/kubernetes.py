"""Kubernetes wiring (``runtime.executor: k8s``): every step runs in its own pod (dagster-k8s ``k8s_job_executor``).

Model-running ops request GPUs and memory through their ``dagster-k8s/config`` tag and join the GPU concurrency
pool; CPU-only ops request memory only. Influence shards are dynamic steps, so they fan out one pod per shard.
Other executors never see these tags: the graph is only re-tagged for the k8s profile.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import NamedTuple

from dagster import (
    AssetsDefinition,
    ExecutorDefinition,
    GraphDefinition,
    In,
    OpDefinition,
    Out,
)

from assets._rounds import ROUND_N
from dagster_project.settings import KubernetesSettings, Settings

K8S_CONFIG_TAG = "dagster-k8s/config"
ACCELERATOR_TAG = "montessori/accelerator"
# Ops that load a model (teacher, student or judge): one pod with a GPU each. Every other op runs on CPU.
# Round n >= 2 templates (ops named round_n__STAGE) count as their stage.
GPU_OPS = frozenset({
    "synthetic_instructions",
    "warm_student",
    "score_influence_shard",
    "teacher_checkpoint",
    "student_dataset",
    "baseline_dataset",
    "student_evaluation",
    "teacher_checkpoint_teacher_loads_and_generates",
})
Node = OpDefinition | GraphDefinition
Retagged = dict[int, Node]  # id of an original node -> its re-tagged copy


class KubernetesWiring(NamedTuple):
    """What ``build_definitions`` needs for the k8s profile."""

    executor: ExecutorDefinition
    assets: list[AssetsDefinition]
    asset_checks: list[AssetsDefinition]


def stage_of(op_name: str) -> str:
    """The stage an op runs: its name, without the ``round_n__`` prefix of a round n >= 2 template."""
    return op_name.removeprefix(f"{ROUND_N}__")


def step_k8s_config(k8s: KubernetesSettings, op_name: str) -> dict:
    """The ``dagster-k8s/config`` of one op: GPUs and memory for model-running ops, memory only otherwise."""
    stage = stage_of(op_name)
    if stage not in GPU_OPS:
        memory = {"memory": k8s.cpu_memory}
        return {"container_config": {"resources": {"requests": memory, "limits": memory}}}
    gpu = {k8s.gpu_resource: str(k8s.gpus_per_step), "memory": k8s.gpu_memory_by_step.get(stage, k8s.gpu_memory)}
    pod_spec = {"tolerations": [{"key": k8s.gpu_resource, "operator": "Exists", "effect": "NoSchedule"}]}
    if k8s.gpu_node_selector:
        pod_spec["node_selector"] = dict(k8s.gpu_node_selector)
    return {"container_config": {"resources": {"requests": gpu, "limits": dict(gpu)}}, "pod_spec_config": pod_spec}


def k8s_executor(settings: Settings, profile: str) -> ExecutorDefinition:
    """``k8s_job_executor`` configured from ``settings.kubernetes``; step pods rebuild the same ``profile``."""
    from dagster_k8s import k8s_job_executor  # the k8s extra: only needed by this profile

    k8s = settings.kubernetes
    config: dict = {
        "job_namespace": k8s.namespace,
        "image_pull_policy": k8s.image_pull_policy,
        "env_secrets": list(k8s.env_secrets),
        "env_config_maps": list(k8s.env_config_maps),
        "env_vars": [f"MONTESSORI_PROFILE={profile}", *k8s.env_vars],
        "max_concurrent": settings.runtime.max_concurrent,
        "tag_concurrency_limits": [{"key": ACCELERATOR_TAG, "value": "gpu", "limit": k8s.max_concurrent_gpu}],
    }
    if k8s.image:
        config["job_image"] = k8s.image
    if k8s.service_account:
        config["service_account_name"] = k8s.service_account
    return k8s_job_executor.configured(config, name="k8s_gpu")


def _retag_op(op_def: OpDefinition, k8s: KubernetesSettings) -> OpDefinition:
    on_gpu = stage_of(op_def.name) in GPU_OPS
    tags = {
        **op_def.tags,
        K8S_CONFIG_TAG: json.dumps(step_k8s_config(k8s, op_def.name)),
        ACCELERATOR_TAG: "gpu" if on_gpu else "cpu",
    }
    return OpDefinition(
        compute_fn=op_def.compute_fn,
        name=op_def.name,
        ins={definition.name: In.from_definition(definition) for definition in op_def.input_defs},
        outs={definition.name: Out.from_definition(definition) for definition in op_def.output_defs},
        description=op_def.description,
        config_schema=op_def.config_schema,
        required_resource_keys=op_def.required_resource_keys,
        tags=tags,
        code_version=op_def._version,  # as OpDefinition.with_replaced_properties does; .version is deprecated
        retry_policy=op_def.retry_policy,
        pool=k8s.gpu_pool if on_gpu else op_def.pool,
    )


def _retag_graph(graph_def: GraphDefinition, k8s: KubernetesSettings, retagged: Retagged) -> GraphDefinition:
    return GraphDefinition(
        name=graph_def.name,
        description=graph_def.description,
        node_defs=[_retag_node(child, k8s, retagged) for child in graph_def.node_defs],
        dependencies=graph_def.dependencies,
        input_mappings=graph_def.input_mappings,
        output_mappings=graph_def.output_mappings,
        config=graph_def.config_mapping,
        tags=graph_def.tags,
    )


def _retag_node(node_def: Node, k8s: KubernetesSettings, retagged: Retagged) -> Node:
    """Each original node is re-tagged once: stages copied per round share one op, and a job must too."""
    if id(node_def) not in retagged:
        if isinstance(node_def, OpDefinition):
            retagged[id(node_def)] = _retag_op(node_def, k8s)
        elif isinstance(node_def, GraphDefinition):
            retagged[id(node_def)] = _retag_graph(node_def, k8s, retagged)
        else:
            raise TypeError(f"cannot place {node_def.name!r} ({type(node_def).__name__}) on Kubernetes")
    return retagged[id(node_def)]


def _with_k8s_tags(stage: AssetsDefinition, k8s: KubernetesSettings, retagged: Retagged) -> AssetsDefinition:
    """``stage`` (an asset, graph-backed asset or asset check) with every op tagged for its pod and pool."""
    node_def = _retag_node(stage.node_def, k8s, retagged)
    return type(stage)(**{**stage.get_attributes_dict(), "node_def": node_def})


def kubernetes_wiring(
    settings: Settings, profile: str, assets: Sequence[AssetsDefinition], asset_checks: Sequence[AssetsDefinition]
) -> KubernetesWiring:
    """The k8s executor plus ``assets`` and ``asset_checks`` re-tagged with their pod resources and GPU pool."""
    k8s = settings.kubernetes
    unknown = set(k8s.gpu_memory_by_step) - GPU_OPS
    if unknown:
        raise ValueError(f"kubernetes.gpu_memory_by_step names ops that use no GPU: {sorted(unknown)}")
    retagged: Retagged = {}
    return KubernetesWiring(
        executor=k8s_executor(settings, profile),
        assets=[_with_k8s_tags(stage, k8s, retagged) for stage in assets],
        asset_checks=[_with_k8s_tags(check, k8s, retagged) for check in asset_checks],
    )
