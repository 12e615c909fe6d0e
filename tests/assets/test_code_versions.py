"""Code versions follow exactly what each asset declares: changing any field of a stage's settings changes the
code version of exactly the assets that receive that stage's settings (so they and their descendants go stale,
see test_versioning for staleness on a real instance), and nothing else."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
import yaml
from dagster import AssetKey, Config

from dagster_project.definitions import build_definitions
from dagster_project.settings import PROFILE_DIR, STAGE_BLOCKS

# Which assets receive each stage's settings, written out by hand (the oracle the wiring is checked against).
RECEIVERS = {
    "synthesis": {"synthetic_instructions", "student_dataset", "baseline_dataset"},
    "decontamination": {"synthetic_instructions", "student_dataset", "baseline_dataset"},
    "warmup": {"warm_student", "influence_scores"},
    "influence": {"influence_scores", "student_dataset"},
    "pairs": {"preference_pairs"},  # which also receives runtime (the random signal's seed)
    "dpo": {"teacher_checkpoint"},
    "student_dataset": {"student_dataset"},
    "evaluation": {"student_evaluation"},
}
SHARED_WITH_BASELINE = {("student_dataset", "num_prompts"), ("student_dataset", "seed_offset")}
NOT_VERSIONED = {("influence", "shards"), ("influence", "chunk_size"), ("influence", "candidate_batch_size"),
                 ("evaluation", "max_diversity_drop"), ("dpo", "activation_checkpointing"),
                 ("evaluation", "activation_checkpointing")}  # memory and speed only: the same weights
# read by one method only, and versioned only under it (the test profile's method, exact, does not read it)
METHOD_ONLY = {("influence", "projection_dim")}
BASE = yaml.safe_load((PROFILE_DIR / "test.yaml").read_text())


def _changed(annotation: object, value: object) -> object:
    """A different valid value of the same type."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return next(option for option in args if option != value)
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 0.5 if value else 0.05
    if isinstance(value, list):
        return [*value, 99] if all(isinstance(v, int) for v in value) else ["q_proj"]
    if value is None:
        return "layers" if "str" in str(annotation) else 1
    return f"{value}-changed"


GRAPH_SETTINGS = {("pairs", "review")}  # changes the graph, not a code version: test_review_changes_the_graph


def _cases() -> list[tuple[str, tuple[str, ...]]]:
    cases = []
    for block, model in STAGE_BLOCKS.items():
        defaults = model()
        for name in model.model_fields:
            if (block, name) in GRAPH_SETTINGS:
                continue
            value = getattr(defaults, name)
            if isinstance(value, Config):
                cases += [(block, (name, sub)) for sub in type(value).model_fields]
            else:
                cases.append((block, (name,)))
    return cases


def _versions(tmp_path: Path, raw: dict) -> dict[str, str]:
    path = tmp_path / f"profile_{len(list(tmp_path.iterdir()))}.yaml"
    path.write_text(yaml.safe_dump(raw))
    graph = build_definitions(str(path)).resolve_asset_graph()
    return {key.to_user_string(): graph.get(key).code_version for key in graph.materializable_asset_keys}


@pytest.fixture(scope="module")
def base_versions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return _versions(tmp_path_factory.mktemp("base"), BASE)


def _case_id(part: str | tuple[str, ...]) -> str:
    return part if isinstance(part, str) else ".".join(part)


@pytest.mark.parametrize(("block", "path"), _cases(), ids=_case_id)
def test_a_stage_setting_changes_exactly_its_receivers(
    tmp_path: Path, base_versions: dict[str, str], block: str, path: tuple[str, ...]
) -> None:
    raw = yaml.safe_load(yaml.safe_dump(BASE))
    settings = STAGE_BLOCKS[block].model_validate(raw.get(block, {}))
    holder, model, current = raw.setdefault(block, {}), STAGE_BLOCKS[block], settings
    for part in path[:-1]:
        holder = holder.setdefault(part, getattr(current, part).model_dump())
        model, current = type(getattr(current, part)), getattr(current, part)
    holder[path[-1]] = _changed(model.model_fields[path[-1]].annotation, getattr(current, path[-1]))
    changed = {name for name, version in _versions(tmp_path, raw).items() if base_versions[name] != version}
    if (block, path[0]) in NOT_VERSIONED | METHOD_ONLY:
        expected: set[str] = set()
    elif (block, path[0]) in SHARED_WITH_BASELINE:
        expected = RECEIVERS[block] | {"baseline_dataset"}
    else:
        expected = RECEIVERS[block]
    assert changed == expected


@pytest.mark.parametrize(
    ("block", "key", "value", "expected"),
    [
        ("runtime", "torch_threads", 1, set()),
        ("runtime", "device", "auto", set()),
        ("runtime", "executor", "multiprocess", set()),
        ("runtime", "generation_backend", "vllm",
         {"synthetic_instructions", "student_dataset", "baseline_dataset"}),
        ("runtime", "accelerate_config", "deploy/accelerate/ddp.yaml", {"teacher_checkpoint", "student_evaluation"}),
        ("models", "student", "tiny-random:other", {"warm_student", "student_evaluation"}),
        ("models", "teacher", "tiny-random:other", {"synthetic_instructions", "teacher_checkpoint",
                                                    "baseline_dataset"}),
        ("models", "cache_dir", "/tmp/elsewhere", set()),
        ("storage", "tables", "/tmp/elsewhere", set()),
        ("storage", "cache", "/tmp/shared-cache", set()),
        ("data", "reference_set", "data/reference_math.jsonl", {"reference_set"}),
        ("automation", "mode", "on_change", set()),
        ("automation", "observe_every_minutes", 0, set()),
        ("prices", "per_gpu_hour", 2.5, set()),  # prices change no data
    ],
)
def test_cross_cutting_settings(
    tmp_path: Path, base_versions: dict[str, str], block: str, key: str, value: object, expected: set[str]
) -> None:
    raw = yaml.safe_load(yaml.safe_dump(BASE))
    raw.setdefault(block, {})[key] = value
    changed = {name for name, version in _versions(tmp_path, raw).items() if base_versions[name] != version}
    assert changed == expected


def test_projection_dim_is_versioned_under_the_projected_method(tmp_path: Path) -> None:
    raw = yaml.safe_load(yaml.safe_dump(BASE))
    raw["influence"]["method"] = "projected"
    before = _versions(tmp_path, raw)
    raw["influence"]["projection_dim"] = 7
    changed = {name for name, version in _versions(tmp_path, raw).items() if before[name] != version}
    assert changed == RECEIVERS["influence"]


def test_runtime_seed_and_precision_reach_every_model_stage(tmp_path: Path, base_versions: dict[str, str]) -> None:
    raw = yaml.safe_load(yaml.safe_dump(BASE))
    raw["runtime"]["seed"] = 99
    changed = {name for name, version in _versions(tmp_path, raw).items() if base_versions[name] != version}
    assert changed == {"synthetic_instructions", "warm_student", "influence_scores", "preference_pairs",
                       "teacher_checkpoint", "student_dataset", "baseline_dataset", "student_evaluation"}


def test_review_changes_the_graph_not_the_pairs(tmp_path: Path, base_versions: dict[str, str]) -> None:
    raw = yaml.safe_load(yaml.safe_dump(BASE))
    raw["pairs"]["review"] = "required"
    path = tmp_path / "reviewed.yaml"
    path.write_text(yaml.safe_dump(raw))
    graph = build_definitions(str(path)).resolve_asset_graph()
    reviewed = {key.to_user_string(): graph.get(key).code_version for key in graph.materializable_asset_keys}
    assert set(reviewed) - set(base_versions) == {"reviewed_pairs"}
    assert all(reviewed[name] == version for name, version in base_versions.items())  # preference_pairs too
    teacher = graph.get(AssetKey("teacher_checkpoint"))
    assert teacher.parent_keys == {AssetKey("reviewed_pairs")}
    assert graph.get(AssetKey("reviewed_pairs")).parent_keys == {AssetKey("preference_pairs"), AssetKey("pair_review")}
