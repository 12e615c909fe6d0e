"""The Kubernetes Jobs dagster-k8s would submit for every step of the bundled ``k8s`` profile, built with no cluster.

The executor is created from the job's own resolved executor config (as Dagster does at run start) under an
instance whose run launcher is a ``K8sRunLauncher``; its step handler launches every step of the execution plan,
influence shards included, and the ``create_namespaced_job`` call of the Kubernetes client is captured instead
of sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest
import yaml
from dagster import build_reconstructable_job
from dagster._core.execution.api import create_execution_plan
from dagster._core.execution.context.system import PlanData, PlanOrchestrationContext
from dagster._core.execution.context_creation_job import create_context_free_log_manager
from dagster._core.execution.plan.plan import ExecutionPlan
from dagster._core.execution.plan.state import KnownExecutionState
from dagster._core.execution.retries import RetryMode
from dagster._core.executor.init import InitExecutorContext
from dagster._core.executor.step_delegating.step_handler.base import StepHandlerContext
from dagster._core.system_config.objects import ResolvedRunConfig
from dagster._core.test_utils import create_run_for_test, instance_for_test
from dagster._grpc.types import ExecuteStepArgs
from kubernetes.client import BatchV1Api, V1Container, V1Job

from dagster_project.definitions import PIPELINE_JOB, build_definitions, pipeline_job

ROOT = Path(__file__).resolve().parents[2]
PROFILE = "k8s"
IMAGE = "montessori-dagster:0.1.0"
DAGSTER_HOME = "/opt/dagster/dagster_home"
SHARDS = ["shard_0", "shard_1", "shard_2"]
SHARD_STEPS = {f"influence_scores.score_influence_shard[{shard}]" for shard in SHARDS}
GPU_STEPS = {
    "synthetic_instructions", "warm_student", *SHARD_STEPS, "teacher_checkpoint",
    "teacher_checkpoint_teacher_loads_and_generates", "student_dataset", "baseline_dataset", "student_evaluation",
}
CPU_STEPS = {
    "observe_seed_prompts_file", "observe_reference_set_file", "observe_heldout_set_file",
    "seed_prompts", "reference_set", "heldout_set", "preference_pairs", "evaluation_report",
    "influence_scores.plan_influence_shards", "influence_scores.merge_influence_shards",
    "synthetic_instructions_synthetic_instructions_schema", "synthetic_instructions_no_near_duplicates",
    "influence_scores_influence_scores_valid", "preference_pairs_pairs_are_ordered",
    "student_dataset_student_dataset_names_its_teacher", "student_dataset_diversity_not_collapsed",
    "synthetic_instructions_not_contaminated", "student_dataset_not_contaminated", "baseline_dataset_not_contaminated",
}
KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: none, user: {token: unused}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
"""


def _launcher_config(kubeconfig: Path) -> dict:
    """The K8sRunLauncher config the Helm chart renders from deploy/helm/values.yaml (secrets, resources)."""
    helm = yaml.safe_load((ROOT / "deploy" / "helm" / "values.yaml").read_text())["runLauncher"]["config"]
    launcher = helm["k8sRunLauncher"]
    return {
        "service_account_name": "dagster",
        "instance_config_map": "dagster-instance",
        "postgres_password_secret": "dagster-postgresql-secret",
        "dagster_home": DAGSTER_HOME,
        "load_incluster_config": False,
        "kubeconfig_file": str(kubeconfig),
        "env_secrets": [secret["name"] for secret in launcher["envSecrets"]],
        **({"resources": launcher["resources"]} if "resources" in launcher else {}),  # merged into every step
    }


def _plan(job: object) -> ExecutionPlan:
    """The execution plan once ``plan_influence_shards`` has emitted ``SHARDS``."""
    known = KnownExecutionState(dynamic_mappings={"influence_scores.plan_influence_shards": {"result": SHARDS}})
    return create_execution_plan(job, known_state=known)


def _launch_all(instance: object, job: object, plan: ExecutionPlan) -> dict[str, V1Job]:
    """Launch every step with the executor's real step handler; return the Job body submitted per step."""
    job_def = job.get_definition()
    executor_def = job_def.executor_def
    executor_config = ResolvedRunConfig.build(job_def, {}).execution.execution_engine_config
    executor = executor_def.executor_creation_fn(
        InitExecutorContext(job=job, executor_def=executor_def, executor_config=executor_config, instance=instance)
    )
    run = create_run_for_test(instance, job_name=PIPELINE_JOB, job_code_origin=job.get_python_origin())
    plan_context = PlanOrchestrationContext(
        plan_data=PlanData(job=job, dagster_run=run, instance=instance, execution_plan=plan, raise_on_error=True,
                           retry_mode=RetryMode.DISABLED),
        log_manager=create_context_free_log_manager(instance, run),
        executor=executor,
        output_capture=None,
    )
    submitted: dict[str, V1Job] = {}

    def capture(_api: BatchV1Api, body: V1Job, namespace: str, **_: object) -> V1Job:
        env = {var.name: var.value for var in body.spec.template.spec.containers[0].env}
        submitted[env["DAGSTER_RUN_STEP_KEY"]] = body  # the "dagster/op" label is the key made label-safe
        body.metadata.namespace = namespace
        return body

    steps = plan.get_steps_to_execute_in_topo_order()
    with mock.patch.object(BatchV1Api, "create_namespaced_job", autospec=True, side_effect=capture):
        for step in steps:
            args = ExecuteStepArgs(job.get_python_origin(), run.run_id, [step.key], known_state=plan.known_state)
            context = StepHandlerContext(instance=instance, plan_context=plan_context, steps=steps,
                                         execute_step_args=args, dagster_run=run)
            list(executor._step_handler.launch_step(context))  # noqa: SLF001 - the handler k8s_job_executor uses
    return submitted


@pytest.fixture(scope="module")
def plan() -> ExecutionPlan:
    """The k8s profile's execution plan with three influence shards."""
    return _plan(build_reconstructable_job("dagster_project.definitions", pipeline_job.__name__, (PROFILE,)))


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory, plan: ExecutionPlan) -> Iterator[dict[str, V1Job]]:
    """Step key -> the Kubernetes Job dagster-k8s would create for it."""
    kubeconfig = tmp_path_factory.mktemp("kube") / "config"
    kubeconfig.write_text(KUBECONFIG)
    launcher = {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": _launcher_config(kubeconfig)}
    job = build_reconstructable_job("dagster_project.definitions", pipeline_job.__name__, (PROFILE,))
    with instance_for_test(overrides={"run_launcher": launcher}) as instance:
        yield _launch_all(instance, job, plan)


def _container(job: V1Job) -> V1Container:
    (container,) = job.spec.template.spec.containers
    return container


def test_every_step_gets_its_own_job(jobs: dict[str, V1Job]) -> None:
    assert set(jobs) == GPU_STEPS | CPU_STEPS
    assert len({job.metadata.name for job in jobs.values()}) == len(jobs)  # one pod per shard, too


@pytest.mark.parametrize("step", sorted(GPU_STEPS))
def test_gpu_steps_request_a_gpu_and_memory(jobs: dict[str, V1Job], step: str) -> None:
    resources = _container(jobs[step]).resources
    memory = "64Gi" if step == "teacher_checkpoint" else "32Gi"
    assert resources.limits == {"nvidia.com/gpu": "1", "memory": memory}
    assert resources.requests == {"nvidia.com/gpu": "1", "memory": memory}
    tolerations = jobs[step].spec.template.spec.tolerations
    assert [(t.key, t.operator, t.effect) for t in tolerations] == [("nvidia.com/gpu", "Exists", "NoSchedule")]


@pytest.mark.parametrize("step", sorted(CPU_STEPS))
def test_cpu_steps_request_no_gpu(jobs: dict[str, V1Job], step: str) -> None:
    resources = _container(jobs[step]).resources
    assert resources.limits == {"memory": "2Gi"}
    assert resources.requests == {"memory": "2Gi"}
    assert not jobs[step].spec.template.spec.tolerations


def test_pods_run_the_code_location_image_with_profile_and_secrets(jobs: dict[str, V1Job]) -> None:
    for step, job in jobs.items():
        container = _container(job)
        env = {var.name: var.value for var in container.env}
        assert container.image == IMAGE
        assert job.metadata.namespace == "montessori"
        assert container.args[:3] == ["dagster", "api", "execute_step"]
        assert env["MONTESSORI_PROFILE"] == PROFILE
        assert env["DAGSTER_HOME"] == DAGSTER_HOME
        assert job.metadata.labels["dagster/op"] == step.replace("[", "-").replace("]", "")
        secrets = [source.secret_ref.name for source in container.env_from if source.secret_ref]
        assert "montessori-s3" in secrets  # AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for s3:// storage
        assert job.spec.template.spec.service_account_name == "dagster"


def test_gpu_steps_share_the_gpu_pool(plan: ExecutionPlan) -> None:
    pools = {step.key: step.pool for step in plan.get_steps_to_execute_in_topo_order()}
    assert {key for key, pool in pools.items() if pool == "gpu"} == GPU_STEPS
    assert {key for key, pool in pools.items() if pool is None} == CPU_STEPS


def test_executor_caps_gpu_steps_per_run(plan: ExecutionPlan) -> None:
    job_def = build_definitions(PROFILE).resolve_job_def(PIPELINE_JOB)
    config = ResolvedRunConfig.build(job_def, {}).execution.execution_engine_config
    assert job_def.executor_def.name == "k8s_gpu"
    assert config["tag_concurrency_limits"] == [{"key": "montessori/accelerator", "value": "gpu", "limit": 4}]
    assert config["max_concurrent"] == 8


def test_every_round_places_its_model_stages_on_gpus(tmp_path: Path) -> None:
    profile = tmp_path / "k8s-rounds.yaml"
    profile.write_text((ROOT / "dagster_project" / "profiles" / "k8s.yaml").read_text() + "rounds: 2\n")
    job = build_definitions(str(profile)).resolve_job_def(PIPELINE_JOB)
    steps = {step.key: step for step in create_execution_plan(job).steps}  # shards unmapped: "[?]"
    round_two = {"round_2__synthetic_instructions", "round_2__warm_student",
                 "round_2__influence_scores.round_2__score_influence_shard[?]", "round_2__teacher_checkpoint",
                 "round_2__teacher_checkpoint_teacher_loads_and_generates"}
    round_one = GPU_STEPS - SHARD_STEPS | {"influence_scores.score_influence_shard[?]"}
    assert {key for key, step in steps.items() if step.pool == "gpu"} == round_one | round_two
    per_op = ResolvedRunConfig.build(job, {}).execution.execution_engine_config["per_step_k8s_config"]
    assert {step.split(".")[-1].removesuffix("[?]") for step in round_two} <= set(per_op)
    dpo = per_op["round_2__teacher_checkpoint"]
    assert dpo["container_config"]["resources"]["limits"] == {"nvidia.com/gpu": "1", "memory": "64Gi"}


@pytest.mark.parametrize("profile", ["demo", "test", "gpu"])
def test_other_profiles_get_no_kubernetes_executor(profile: str) -> None:
    job = build_definitions(profile).resolve_job_def(PIPELINE_JOB)
    assert job.executor_def.name != "k8s_gpu"
    assert all("dagster-k8s/config" not in step.tags for step in _plan(job).get_steps_to_execute_in_topo_order())
