"""Profiles validate strictly and name the offending key."""

from __future__ import annotations

from pathlib import Path

import pytest

from dagster_project.settings import SettingsError, load_settings


@pytest.mark.parametrize("name", ["demo", "test", "gpu", "k8s"])
def test_bundled_profiles_validate(name: str) -> None:
    assert load_settings(name).name == name


def test_scientific_notation_reads_as_float(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("dpo:\n  learning_rate: 1e-6\n")
    assert load_settings(str(path)).dpo.learning_rate == 1e-6


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("synthesis:\n  samples: 4\n", "synthesis.samples"),
        ("dpo:\n  beta: high\n", "dpo.beta"),
        ("runtime:\n  device: tpu\n", "runtime.device"),
        ("warmup:\n  batch_size: '2'\n", "warmup.batch_size"),
        ("surprise: 1\n", "surprise"),
        ("runtime:\n  generation_backend: tgi\n", "runtime.generation_backend"),
        ("runtime:\n  gpu_memory_utilization: 1.5\n", "runtime.gpu_memory_utilization"),
        ("runtime:\n  num_processes: 0\n", "runtime.num_processes"),
        ("dpo:\n  lora:\n    rank: 8\n", "dpo.lora.rank"),
        ("evaluation:\n  seeds: []\n", "evaluation.seeds"),
        ("rounds: 0\n", "rounds"),
    ],
)
def test_bad_settings_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(SettingsError, match=key.replace(".", r"\.")):
        load_settings(str(path))


def test_unknown_profile_lists_bundled() -> None:
    with pytest.raises(SettingsError, match="demo"):
        load_settings("no-such-profile")
