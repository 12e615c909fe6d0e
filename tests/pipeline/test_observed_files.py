"""The team's own files, observed: a changed seed, reference or held-out file (local or on S3) makes exactly its data
asset and that asset's descendants stale, `--stale-only` reruns exactly those, an unchanged file keeps everything
fresh; declarative automation requests the stale stages once after a change and nothing otherwise; a rerun of
student_dataset that writes the same rows keeps its data version, its first run and the evaluation fresh."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from dagster import AssetKey, DagsterInstance, evaluate_automation_conditions

from dagster_project.definitions import build_definitions
from tests.helpers import run_json, write_profile

DATA = Path(__file__).resolve().parents[2] / "data"
FILES = {"seed_prompts": ("seed_prompts.jsonl", '{"id": "seed-041", "instruction": "Name three uses of a lemon."}\n'),
         "reference_set": ("reference_set.jsonl",
                           '{"id": "ref-x", "instruction": "Say hello.", "response": "Hello."}\n'),
         "heldout_set": ("heldout_set.jsonl", '{"id": "held-x", "instruction": "Say bye.", "response": "Bye."}\n')}


def descendants(profile: Path, name: str) -> set[str]:
    """``name`` and every asset downstream of it, from the graph itself."""
    graph = build_definitions(str(profile)).resolve_asset_graph()
    found, todo = set(), [AssetKey(name)]
    while todo:
        key = todo.pop()
        found.add(key.to_user_string())
        todo += graph.get(key).child_keys
    return found


def stale(status: dict) -> set[str]:
    return {name for name, row in status.items() if row["status"] != "fresh"}


def requested(result) -> set[str]:  # noqa: ANN001 - EvaluateAutomationConditionsResult
    return {r.key.to_user_string() for r in result.results if isinstance(r.key, AssetKey) and r.true_subset.size}


@pytest.mark.timeout(1800)  # one full tiny pipeline and three partial reruns
@pytest.mark.parametrize("where", ["local", "s3"])
def test_changed_files_make_exactly_their_descendants_stale(
    tmp_path: Path, model_cache: Path, dagster_home: Path, capsys, request, where: str  # noqa: ANN001
) -> None:
    if where == "s3":
        s3 = request.getfixturevalue("s3_server")
        locations = {name: f"s3://montessori/data/{file}" for name, (file, _) in FILES.items()}
        for file, _ in FILES.values():
            s3.upload_file(str(DATA / file), "montessori", f"data/{file}")
    else:
        locations = {name: str(shutil.copy(DATA / file, tmp_path / file)) for name, (file, _) in FILES.items()}
    profile = write_profile(tmp_path, model_cache, data=locations,
                            automation={"mode": "on_change", "observe_every_minutes": 0})  # observed by the CLI

    def append(name: str) -> None:
        file, line = FILES[name]
        if where == "s3":
            body = s3.get_object(Bucket="montessori", Key=f"data/{file}")["Body"].read() + line.encode()
            s3.put_object(Bucket="montessori", Key=f"data/{file}", Body=body)
        else:
            with open(locations[name], "a", encoding="utf-8") as handle:
                handle.write(line)

    first = run_json(capsys, "run", "--profile", str(profile), "--json")
    status = run_json(capsys, "status", "--profile", str(profile), "--json")
    assert stale(status) == set() and status["seed_prompts_file"]["reason"].startswith("observed: data version")
    defs, instance = build_definitions(str(profile)), DagsterInstance.get()
    tick = evaluate_automation_conditions(defs, instance)
    tick = evaluate_automation_conditions(defs, instance, cursor=tick.cursor)
    assert requested(tick) == set()  # observed again by status, unchanged: nothing to do

    for name in FILES:
        append(name)
        status = run_json(capsys, "status", "--profile", str(profile), "--json")
        expected = descendants(profile, name)
        assert stale(status) == expected, name
        assert "upstream data changed" in status[name]["reason"] and f"{name}_file" in status[name]["reason"]
        if where == "local":
            tick = evaluate_automation_conditions(defs, instance, cursor=tick.cursor)
            assert requested(tick) == expected, name  # the changed data asset and its descendants, in one tick
            tick = evaluate_automation_conditions(defs, instance, cursor=tick.cursor)
            assert requested(tick) == set(), name  # requested once: not again while nothing else changes
        rerun = run_json(capsys, "run", "--profile", str(profile), "--stale-only", "--json")
        assert set(rerun["assets"]) == expected, name
        assert stale(run_json(capsys, "status", "--profile", str(profile), "--json")) == set(), name
        if where == "local":
            tick = evaluate_automation_conditions(defs, instance, cursor=tick.cursor)
            assert requested(tick) == set(), name  # the rerun included every stage it updated

    if where == "s3":
        return
    before = run_json(capsys, "versions", "student_dataset", "--json")[0]
    again = run_json(capsys, "run", "--profile", str(profile), "--select", "student_dataset", "--json")
    after = run_json(capsys, "versions", "student_dataset", "--json")[0]
    assert after["run_id"] == again["run_id"] != before["run_id"]
    assert after["data_version"] == before["data_version"] and after["path"] == before["path"]
    assert stale(run_json(capsys, "status", "--profile", str(profile), "--json")) == set()  # evaluation still fresh
    audit = run_json(capsys, "audit", after["path"], "--json")
    assert set(audit["first_runs"]) <= {first["run_id"], *(r["run_id"] for r in
                                                          run_json(capsys, "versions", "student_dataset", "--json"))}
    assert again["run_id"] not in audit["first_runs"]  # the same rows: still named by the run that first wrote them
    assert audit["file"]["dagster_run_id"] != again["run_id"]


def test_automation_is_off_by_default_and_can_leave_gpu_stages_manual(tmp_path: Path, model_cache: Path) -> None:
    def conditions(**automation: object) -> dict[str, str | None]:
        raw = yaml.safe_load(write_profile(tmp_path, model_cache).read_text())
        raw["automation"] = automation or None
        path = tmp_path / "auto.yaml"
        path.write_text(yaml.safe_dump(raw))
        graph = build_definitions(str(path)).resolve_asset_graph()
        return {key.to_user_string(): graph.get(key).automation_condition for key in graph.get_all_asset_keys()}

    default = conditions()
    assert {name for name, condition in default.items() if condition} == {
        "seed_prompts_file", "reference_set_file", "heldout_set_file"}  # observed every 10 minutes, nothing launched
    assert set(conditions(observe_every_minutes=0).values()) == {None}
    manual = conditions(mode="on_change", manual=["gpu", "evaluation_report"])
    assert {name for name, condition in manual.items() if condition and condition.label == "on_change"} == {
        "seed_prompts", "reference_set", "heldout_set", "preference_pairs"}
