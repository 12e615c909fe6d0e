"""Shared test helpers (fixtures stay in conftest.py): profiles on tiny models and the CLI's JSON output."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import polars as pl
import yaml

from assets.config import (
    DPOSettings,
    EvaluationSettings,
    InfluenceSettings,
    LoraSettings,
    SynthesisSettings,
    WarmupSettings,
)
from dagster_project.cli import main
from dagster_project.settings import PROFILE_DIR
from resources.generation.interface import SamplingParams
from resources.influence.scoring import InfluenceParams
from resources.synthesis.synthesize import SynthesisParams
from resources.training.trl_trainers import DPOParams, LoraParams, SFTParams
from resources.training.warmup import WarmupParams


def write_profile(folder: Path, model_cache: Path, **overrides: dict) -> Path:
    """Copy the bundled test profile with storage under ``folder`` and ``overrides`` merged per block."""
    raw = yaml.safe_load((PROFILE_DIR / "test.yaml").read_text())
    raw["storage"] = {"tables": str(folder / "tables"), "checkpoints": str(folder / "checkpoints")}
    raw["models"]["cache_dir"] = str(model_cache)
    for block, values in overrides.items():
        raw.setdefault(block, {}).update(values)
    path = folder / "profile.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def run_json(capsys, *args: str) -> dict | list:  # noqa: ANN001 - pytest's capsys
    """Run the CLI with ``args`` (ending in --json) and return its last output line, parsed."""
    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    out = captured.out.strip().splitlines()
    errors = [line for line in captured.err.splitlines() if "Error" in line]
    assert code == 0, (out[-20:], errors[-5:])
    return json.loads(out[-1])


PROMPT = "Write one new instruction."
PAIRS = pl.DataFrame({
    "prompt": [PROMPT, PROMPT, "Write another task.", "Write another task."],
    "chosen": ["Explain why the sky is blue.", "List three uses of salt.",
               "Summarize the water cycle.", "Give two tips for sleep."],
    "rejected": ["blue blue blue blue", "salt salt salt", "cycle cycle cycle", "sleep sleep sleep"],
})


def warmup_params(*positional: float, **overrides: object) -> WarmupParams:
    """The warm-up engine's configuration: the settings' defaults (``WarmupSettings``, the one place they are
    written), seed 0, with ``overrides`` (positional: learning_rate, epochs, batch_size)."""
    overrides |= dict(zip(("learning_rate", "epochs", "batch_size"), positional, strict=False))
    return dataclasses.replace(WarmupSettings().params(seed=0), **overrides)


def influence_params(**overrides: object) -> InfluenceParams:
    """Influence scoring parameters from the settings' defaults with ``overrides``."""
    return dataclasses.replace(InfluenceSettings().params(), **overrides)


def dpo_params(**overrides: object) -> DPOParams:
    """DPO engine parameters from the settings' defaults, seed 0, with ``overrides``."""
    return dataclasses.replace(DPOSettings().params(seed=0), **overrides)


def sft_params(**overrides: object) -> SFTParams:
    """Student SFT engine parameters from the evaluation settings' defaults, with ``overrides``."""
    return dataclasses.replace(EvaluationSettings().sft_params(), **overrides)


def lora_params(**overrides: object) -> LoraParams:
    """LoRA adapter parameters from the settings' defaults, with ``overrides``."""
    return dataclasses.replace(LoraSettings(enabled=True).params(), **overrides)


def synthesis_params(instruction: SamplingParams, response: SamplingParams, **overrides: object) -> SynthesisParams:
    """The synthesis engine's configuration from the settings' defaults with the given sampling and ``overrides``."""
    defaults = SynthesisSettings().params(seed=0)
    return dataclasses.replace(defaults, instruction=instruction, response=response, **overrides)
