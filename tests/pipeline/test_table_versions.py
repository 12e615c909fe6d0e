"""Nothing is ever overwritten: two runs with different DPO settings keep both datasets readable and auditable,
inputs load the exact upstream version, pruning spares what is referenced, exports load in `datasets`, namespaces
never share files, a selection of ancestors runs without the baseline, and runs print no progress bars."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import yaml
from datasets import load_from_disk

from resources.storage.export import read_card_provenance
from tests.helpers import run_json, write_profile

PROGRESS_BAR = re.compile(r"\d+%\|[^\n]*\||it/s\]")


def test_versions_side_by_side(tmp_path: Path, model_cache: Path, dagster_home: Path, capsys) -> None:  # noqa: ANN001
    first = write_profile(tmp_path, model_cache)
    run1 = run_json(capsys, "run", "--profile", str(first), "--select", "*student_dataset", "--json")
    output = capsys.readouterr()
    assert "student_dataset" in run1["assets"] and "baseline_dataset" not in run1["assets"]
    assert not PROGRESS_BAR.search(output.out + output.err)
    dataset1 = run1["assets"]["student_dataset"]["path"]

    second = tmp_path / "beta.yaml"  # same storage and namespace, another DPO beta
    raw = yaml.safe_load(first.read_text())
    raw["dpo"]["beta"] = 0.3
    raw["storage"]["namespace"] = "profile"
    second.write_text(yaml.safe_dump(raw))
    run2 = run_json(capsys, "run", "--profile", str(second), "--select",
                    "key:teacher_checkpoint or key:student_dataset", "--json")
    dataset2 = run2["assets"]["student_dataset"]["path"]
    assert dataset1 != dataset2 and Path(dataset1).exists() and Path(dataset2).exists()
    teacher1 = pl.read_parquet(dataset1)["teacher_version"].unique().to_list()
    teacher2 = pl.read_parquet(dataset2)["teacher_version"].unique().to_list()
    assert teacher1 != teacher2

    audit1 = run_json(capsys, "audit", dataset1, "--json")
    teacher_node = next(n for n in audit1["lineage"]["inputs"] if n["asset"] == "teacher_checkpoint")
    assert [teacher_node["metadata"]["teacher_version"]] == teacher1
    assert audit1["lineage"]["run_id"] == run1["run_id"]

    # a third run only adds a newer version of another asset; the dataset list is unchanged
    heldout = run_json(capsys, "run", "--profile", str(second), "--select", "key:heldout_set", "--json")
    listed = run_json(capsys, "versions", "student_dataset", "--json")
    assert [row["path"] for row in listed] == [dataset2, dataset1] and all(row["exists"] for row in listed)
    assert [row["teacher_version"] for row in listed] == [teacher2[0], teacher1[0]]

    again = run_json(capsys, "run", "--profile", str(second), "--select", "key:heldout_set", "--json")
    assert again["assets"]["heldout_set"]["path"] == heldout["assets"]["heldout_set"]["path"]  # same data, same file
    capsys.readouterr()
    from dagster_project.cli import main

    assert main(["gc", "--profile", str(second), "--keep", "1"]) == 0
    plan = capsys.readouterr().out
    assert "would delete" in plan and dataset1 in plan and dataset2 not in plan and Path(dataset1).exists()
    assert main(["gc", "--profile", str(second), "--keep", "1", "--delete"]) == 0
    assert not Path(dataset1).exists() and Path(dataset2).exists()
    pruned = run_json(capsys, "audit", "student_dataset", "--json")
    assert pruned["lineage"]["metadata"]["path"] == dataset2

    export = tmp_path / "export"
    assert main(["export", "student_dataset", "--to", str(export), "--profile", str(second)]) == 0
    exported = load_from_disk(str(export))
    assert len(exported) == pl.read_parquet(dataset2).height
    provenance = read_card_provenance(export)
    assert provenance["teacher_version"] == teacher2[0] and provenance["run_id"] == pruned["lineage"]["run_id"]
    assert "beta: 0.3" in provenance["settings_yaml"]


def test_namespaces_never_share_a_table(tmp_path: Path, model_cache: Path, dagster_home: Path, capsys) -> None:  # noqa: ANN001
    paths = []
    for namespace in ("exp_a", "exp_b"):
        (tmp_path / namespace).mkdir()
        profile = write_profile(tmp_path / namespace, model_cache, storage={"namespace": namespace})
        raw = yaml.safe_load(profile.read_text())
        raw["storage"]["tables"] = str(tmp_path / "shared_tables")
        profile.write_text(yaml.safe_dump(raw))
        result = run_json(capsys, "run", "--profile", str(profile), "--select", "key:seed_prompts", "--json")
        paths.append(result["assets"]["seed_prompts"]["path"])
    assert paths[0] != paths[1]
    assert "/exp_a/seed_prompts/" in paths[0] and "/exp_b/seed_prompts/" in paths[1]
