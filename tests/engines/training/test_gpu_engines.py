"""GPU engines on CPU: backend and LoRA settings validate, a missing vllm fails clearly, and teacher DPO
really runs as two processes under ``accelerate launch`` (gloo) and writes a loadable checkpoint."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import polars as pl
import pytest
import torch

from dagster_project.resources import build_resources
from dagster_project.settings import PROJECT_ROOT, load_settings
from resources.evaluation.student_sft import fine_tune, heldout_loss
from resources.models import load_causal_lm, resolve_model_source
from resources.training.launch import AccelerateLaunch
from resources.training.trl_trainers import LoraParams, run_dpo
from tests.helpers import PAIRS, dpo_params, sft_params, write_profile

DDP_CONFIG = str(PROJECT_ROOT / "deploy" / "accelerate" / "ddp.yaml")


def test_gpu_profile_uses_vllm() -> None:
    assert load_settings("gpu").runtime.generation_backend == "vllm"


def test_engine_settings_reach_the_teacher_stage(tmp_path: Path, model_cache: Path) -> None:
    profile = write_profile(
        tmp_path, model_cache,
        runtime={"accelerate_config": "deploy/accelerate/ddp.yaml", "num_processes": 2},
        dpo={"lora": {"enabled": True, "r": 4, "target_modules": ["q_proj", "v_proj"]}},
    )
    resources = build_resources(load_settings(str(profile)))
    lora = resources["dpo"].params(seed=0).lora
    assert lora == LoraParams(r=4, alpha=32, dropout=0.05, target_modules=["q_proj", "v_proj"])
    assert resources["launcher"].launch() == AccelerateLaunch(DDP_CONFIG, 2)
    assert build_resources(load_settings("test"))["launcher"].launch() is None


def test_vllm_backend_without_vllm_names_the_setting_and_the_extra(
    tmp_path: Path, model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm raises ImportError, installed or not
    profile = write_profile(tmp_path, model_cache, runtime={"generation_backend": "vllm"})
    resources = build_resources(load_settings(str(profile)))
    with pytest.raises(ImportError, match=r"runtime\.generation_backend.*pip install -e \.\[gpu\]"):
        resources["generation"].generator(resources["teacher"].folder(), resources["runtime"], batch_size=1)


def test_accelerate_command_line() -> None:
    command = AccelerateLaunch("ddp.yaml", 4).command("resources.training", Path("/work"))
    assert command[1:] == ["-m", "accelerate.commands.launch", "--config_file", "ddp.yaml", "--num_processes", "4",
                           "-m", "resources.training", "/work"]
    assert "--num_processes" not in AccelerateLaunch("ddp.yaml").command("resources.training", Path("/work"))


def test_dpo_under_accelerate_runs_two_processes(model_cache: Path, tmp_path: Path) -> None:
    base = resolve_model_source("tiny-random:dpo", model_cache)
    messages: list[str] = []
    params = dpo_params(beta=0.1, learning_rate=5e-4, epochs=2.0, batch_size=2, max_length=128)
    history = run_dpo(base, PAIRS, params, tmp_path / "tuned", torch.device("cpu"), "float32",
                      AccelerateLaunch(DDP_CONFIG, 2), messages.append)
    assert history and all("loss" in entry for entry in history)
    assert "accelerate ran DPO on 2 processes (MULTI_CPU)" in messages
    tuned, _ = load_causal_lm(str(tmp_path / "tuned"))
    original, _ = load_causal_lm(base)
    assert any(not torch.equal(p, q) for p, q in zip(tuned.parameters(), original.parameters(), strict=True))


def test_student_sft_under_accelerate_runs_two_processes(model_cache: Path) -> None:
    base = resolve_model_source("tiny-random:sft", model_cache)
    rows = pl.DataFrame({"instruction": [f"Name fruit number {i}." for i in range(8)],
                         "response": [f"Fruit {i} is an apple." for i in range(8)]})
    messages: list[str] = []
    params = sft_params(learning_rate=5e-3, epochs=1.0, batch_size=4, max_length=64)
    model, tokenizer = fine_tune(base, rows, params, 0, torch.device("cpu"), torch.float32,
                                 AccelerateLaunch(DDP_CONFIG, 2), messages.append)
    assert "accelerate ran student SFT on 2 processes (MULTI_CPU)" in messages
    original, _ = load_causal_lm(base)
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), original.parameters(), strict=True))
    assert math.isfinite(heldout_loss(model, tokenizer, rows, 64))
