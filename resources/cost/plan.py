"""``montessori plan``: before a run, preview a few generations and project what every stage will take.

:func:`measure` runs small pieces of the real engines on this machine with the profile's models, writing nothing to
the tables (scratch files only, in a temporary folder): one batch of synthesis prompts with the current synthesis
settings (the samples, their filter verdicts and the generation rates), a short warm-up of the student on the
preview's kept rows (the training token rate) and influence scoring of those rows from that warm state (the
fixed reference cost and the cost per candidate). :func:`project` turns the rates into each stage's time, tokens and
money for the profile's sizes; every number that is assumed rather than measured is listed in
:attr:`Projection.assumptions`.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import torch

from resources.cost.prices import PriceTable
from resources.cost.usage import TALLY, Usage
from resources.generation.interface import GenerationStats, Generator, Progress, SamplingParams
from resources.influence.engines import make_influence_engine
from resources.influence.scoring import InfluenceParams, example_losses, pair_encoder
from resources.synthesis.synthesize import SynthesisParams, few_shot_prompts, synthesize
from resources.training.encoding import encode_pairs
from resources.training.warmup import WarmupParams, load_training_state, save_training_state, warmup_sft

DPO_TOKEN_COST = 4 / 3  # policy forward + backward on chosen and rejected, plus a forward of the reference model
FORWARD_TOKEN_COST = 1 / 3  # a forward pass (held-out loss) against a training step's forward + backward
SMALL_STAGE_SECONDS = {"seed_prompts": 0.5, "reference_set": 0.5, "heldout_set": 0.5, "preference_pairs": 1.0,
                       "evaluation_report": 5.0}


@dataclass(frozen=True)
class PlanParams:
    """What the plan needs from a profile (built by the CLI from its settings)."""

    rounds: int
    style: str
    shots: int | None
    generated_shots: int
    num_prompts: int
    final_prompts: int
    synthesis: SynthesisParams
    warmup: WarmupParams
    warmup_fraction: float
    warmup_max_length: int
    warmup_truncation: str
    influence: InfluenceParams
    influence_shards: int
    scores_final_dataset: bool
    dpo_epochs: float
    pair_target: str
    eval_seeds: int
    eval_epochs: float
    eval_max_length: int
    judge_tokens: int
    seed: int
    device: torch.device
    dtype: torch.dtype
    prices: PriceTable


@dataclass
class Rates:
    """What :func:`measure` found on this machine."""

    seconds_per_sample: float = 0.0  # an instruction completion
    seconds_per_response: float = 0.0
    prompt_tokens: float = 0.0  # mean tokens of a synthesis prompt
    sample_tokens: float = 0.0  # mean generated tokens of an instruction completion
    response_tokens: float = 0.0
    answer_prompt_tokens: float = 0.0  # mean tokens of the prompt asking for an answer
    kept_share: float = 0.0
    row_tokens: float = 0.0  # mean encoded tokens of an (instruction, response) training row
    train_tokens_per_second: float = 0.0
    model_load_seconds: float = 0.0
    influence_fixed_seconds: float = 0.0
    seconds_per_candidate: float = 0.0
    cpu_per_wall: float = 1.0
    heldout_tokens: int = 0
    heldout_rows: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class StagePlan:
    """One stage's projection."""

    stage: str
    usage: Usage
    money: float | None
    how: str


@dataclass(frozen=True)
class Projection:
    """Every stage's projection and the assumptions behind them."""

    stages: list[StagePlan]
    assumptions: list[str]

    @property
    def total_seconds(self) -> float:
        """The projected wall time of the whole run (stages one after the other)."""
        return sum(stage.usage.wall_seconds for stage in self.stages)


class _PhaseRecorder:
    """A generator that records each ``generate`` call's stats (instruction chunks first, responses last)."""

    def __init__(self, generator: Generator) -> None:
        self.generator = generator
        self.tokenizer = generator.tokenizer
        self.calls: list[GenerationStats] = []

    @property
    def stats(self) -> GenerationStats:
        return self.generator.stats

    def generate(self, prompts: list[str], params: SamplingParams, progress: Progress | None = None) -> list[list[str]]:
        before, started = self.generator.stats, time.perf_counter()
        outputs = self.generator.generate(prompts, params, progress)
        delta = self.generator.stats - before
        self.calls.append(dataclasses.replace(delta, seconds=time.perf_counter() - started))
        return outputs


def _per(seconds: float, count: int) -> float:
    return seconds / count if count else 0.0


def measure(
    generator: Generator, student_folder: str, seeds: pl.DataFrame, reference: pl.DataFrame, heldout: pl.DataFrame,
    params: PlanParams, preview_prompts: int, log: Callable[[str], None],
) -> tuple[pl.DataFrame, Rates]:
    """The preview's samples (the synthesis table of ``preview_prompts`` prompts) and this machine's rates."""
    rates = Rates()
    cpu_started, wall_started = time.process_time(), time.perf_counter()
    recorder = _PhaseRecorder(generator)
    prompts = few_shot_prompts(params.style, seeds, preview_prompts, params.seed, params.shots,
                               params.generated_shots)
    existing = [] if params.style == "official" else seeds["instruction"].to_list()
    table = synthesize(recorder, generator.tokenizer, prompts, params.synthesis, existing, log)
    instructions, responses = recorder.calls[:-1], recorder.calls[-1]
    asked = sum(instructions, GenerationStats())
    rates.seconds_per_sample = _per(asked.seconds, asked.completions)
    rates.seconds_per_response = _per(responses.seconds, responses.completions)
    rates.prompt_tokens = _per(asked.prompt_tokens, asked.prompts)
    rates.sample_tokens = _per(asked.generated_tokens, asked.completions)
    rates.response_tokens = _per(responses.generated_tokens, responses.completions)
    rates.answer_prompt_tokens = _per(responses.prompt_tokens, responses.prompts)
    rates.kept_share = float(table["kept"].mean()) if table.height else 0.0
    kept = table.filter(pl.col("kept"))
    if kept.height < 2:
        rates.notes.append(f"only {kept.height} of {table.height} preview samples were kept: the student's rates "
                           "are measured on seed-like rows instead")
        kept = reference.head(4)
    with tempfile.TemporaryDirectory() as scratch:
        _measure_student(student_folder, kept.head(8), reference, heldout, params, Path(scratch), rates, log)
    rates.cpu_per_wall = (time.process_time() - cpu_started) / max(time.perf_counter() - wall_started, 1e-9)
    return table, rates


def _measure_student(
    student_folder: str, rows: pl.DataFrame, reference: pl.DataFrame, heldout: pl.DataFrame, params: PlanParams,
    scratch: Path, rates: Rates, log: Callable[[str], None],
) -> None:
    """Warm the student up on ``rows`` (one pass) and score them from that state: training and influence rates."""
    from resources.models import load_causal_lm

    started = time.perf_counter()
    model, tokenizer = load_causal_lm(student_folder, params.device, params.dtype)
    rates.model_load_seconds = time.perf_counter() - started
    examples = encode_pairs(tokenizer, rows["instruction"].to_list(), rows["response"].to_list(),
                            params.warmup_max_length, params.warmup_truncation)
    rates.row_tokens = sum(len(e.input_ids) for e in examples) / len(examples)
    heldout_examples = encode_pairs(tokenizer, heldout["instruction"].to_list(), heldout["response"].to_list(),
                                    params.eval_max_length)
    rates.heldout_tokens, rates.heldout_rows = sum(len(e.input_ids) for e in heldout_examples), len(heldout_examples)
    config = dataclasses.replace(params.warmup, epochs=1, gradient_accumulation=1)
    trained, started = TALLY.snapshot()["tokens_trained"], time.perf_counter()
    optimizer, _ = warmup_sft(model, examples, tokenizer.pad_token_id, config, log)
    seconds = time.perf_counter() - started
    rates.train_tokens_per_second = (TALLY.snapshot()["tokens_trained"] - trained) / max(seconds, 1e-9)
    save_training_state(model, tokenizer, optimizer, scratch)
    del model, optimizer
    started = time.perf_counter()
    model, tokenizer, optimizer = load_training_state(str(scratch), params.device, torch.float32)
    encode = pair_encoder(tokenizer, params.influence.max_length, params.influence.truncation)
    engine = make_influence_engine(
        params.influence.method, model, optimizer, encode(reference), tokenizer.pad_token_id,
        params.influence.reference_batch_size, params.influence.param_pattern, params.influence.reference_loss,
        params.influence.candidate_batch_size, params.dtype,
    )
    rates.influence_fixed_seconds = time.perf_counter() - started
    started = time.perf_counter()
    candidates = encode(rows)
    example_losses(model, candidates, tokenizer.pad_token_id, batch_size=1)
    engine.score_all(candidates)
    rates.seconds_per_candidate = (time.perf_counter() - started) / len(candidates)
    log(f"plan: warm-up {rates.train_tokens_per_second:.0f} tokens/s; influence {params.influence.method}: "
        f"{rates.influence_fixed_seconds:.1f} s fixed + {rates.seconds_per_candidate:.2f} s per candidate")


def _synthesis_usage(prompts: int, samples_per_prompt: int, rates: Rates) -> tuple[Usage, int]:
    samples = prompts * samples_per_prompt
    kept = round(samples * rates.kept_share)
    seconds = samples * rates.seconds_per_sample + kept * rates.seconds_per_response
    usage = Usage(wall_seconds=seconds, examples=samples,
                  tokens_in=round(prompts * rates.prompt_tokens + kept * rates.answer_prompt_tokens),
                  tokens_out=round(samples * rates.sample_tokens + kept * rates.response_tokens))
    return usage, kept


def project(params: PlanParams, rates: Rates, stages: list[str]) -> Projection:
    """Each of ``stages`` (the graph's asset keys, in order) projected from ``rates`` for the profile's sizes."""
    n = params.synthesis.instruction.n
    train_rate = max(rates.train_tokens_per_second, 1e-9)
    round_synthesis, kept = _synthesis_usage(params.num_prompts, n, rates)
    warm_rows = max(1, round(kept * params.warmup_fraction))
    candidates = max(0, kept - warm_rows)
    kept_per_prompt = kept / params.num_prompts
    candidate_prompts = max(1, round(params.num_prompts * (1 - params.warmup_fraction)))
    pairs = candidate_prompts * math.floor(kept_per_prompt / 2) * math.ceil(kept_per_prompt / 2)
    pair_tokens = 2 * (rates.prompt_tokens + (rates.sample_tokens if params.pair_target == "raw_output"
                                              else rates.row_tokens / 2))
    final, final_kept = _synthesis_usage(params.final_prompts, n, rates)
    fine_tunings = 2 * params.eval_seeds
    eval_tokens = fine_tunings * final_kept * rates.row_tokens * params.eval_epochs
    heldout_seconds = (fine_tunings + 1) * rates.heldout_tokens * FORWARD_TOKEN_COST / train_rate
    seconds_per_token = _per(rates.seconds_per_response, round(rates.response_tokens))
    judge_seconds = fine_tunings * rates.heldout_rows * params.judge_tokens * seconds_per_token
    plans = {
        "synthetic_instructions": (round_synthesis, f"{params.num_prompts} prompts x {n} samples, "
                                   f"{rates.kept_share:.0%} kept and answered"),
        "warm_student": (Usage(wall_seconds=rates.model_load_seconds * 2 + warm_rows * rates.row_tokens
                               * params.warmup.epochs / train_rate, examples=warm_rows,
                               tokens_trained=round(warm_rows * rates.row_tokens * params.warmup.epochs)),
                         f"{warm_rows} warm-up rows x {params.warmup.epochs} epoch(s)"),
        "influence_scores": (Usage(wall_seconds=params.influence_shards * rates.influence_fixed_seconds
                                   + candidates * rates.seconds_per_candidate, examples=candidates),
                             f"{candidates} candidates, {params.influence_shards} shard(s) one after the other"),
        "preference_pairs": (Usage(wall_seconds=SMALL_STAGE_SECONDS["preference_pairs"], examples=pairs),
                             f"about {pairs} pairs ({candidate_prompts} prompts, half of each prompt's samples "
                             "preferred over the other half)"),
        "teacher_checkpoint": (Usage(wall_seconds=rates.model_load_seconds * 3 + pairs * params.dpo_epochs
                                     * pair_tokens * DPO_TOKEN_COST / train_rate, examples=pairs,
                                     tokens_trained=round(pairs * params.dpo_epochs * pair_tokens)),
                               f"DPO on {pairs} pairs x {params.dpo_epochs:g} epoch(s)"),
        "baseline_dataset": (final, f"{params.final_prompts} prompts x {n} samples by the untuned teacher"),
        "student_dataset": (dataclasses.replace(final, wall_seconds=final.wall_seconds + (
            rates.influence_fixed_seconds + final_kept * rates.seconds_per_candidate
            if params.scores_final_dataset else 0.0)), f"{params.final_prompts} prompts x {n} samples by the tuned "
            "teacher" + (", each row scored for influence" if params.scores_final_dataset else "")),
        "student_evaluation": (Usage(wall_seconds=fine_tunings * rates.model_load_seconds + eval_tokens / train_rate
                                     + heldout_seconds + judge_seconds, examples=round(fine_tunings * final_kept),
                                     tokens_trained=round(eval_tokens)),
                               f"{fine_tunings} student fine-tunings on {final_kept} rows each, held-out loss of "
                               f"{fine_tunings + 1} students" + (", answers for the judge" if judge_seconds else "")),
    }
    planned = []
    for stage in stages:
        name = stage.split("/")[-1]
        usage, how = plans.get(name) or (Usage(wall_seconds=SMALL_STAGE_SECONDS.get(name, 1.0)), "small, assumed")
        usage = dataclasses.replace(
            usage, cpu_seconds=usage.wall_seconds * rates.cpu_per_wall,
            accelerator_seconds=usage.wall_seconds if params.device.type == "cuda" else 0.0,
        )
        planned.append(StagePlan(stage, usage, params.prices.money(usage) if params.prices.charges else None, how))
    assumptions = [
        f"generation: {rates.seconds_per_sample:.2f} s per instruction sample and {rates.seconds_per_response:.2f} s "
        f"per answer, {rates.kept_share:.0%} of samples kept, as measured on the preview batch (the same share in "
        "every round, by the tuned teacher too)",
        f"training: {rates.train_tokens_per_second:.0f} tokens/s measured on a warm-up of the student; the teacher's "
        f"DPO at {DPO_TOKEN_COST:.2f}x that cost per token (policy on chosen and rejected plus the reference's "
        f"forward), the evaluation's SFT at 1x, held-out losses at {FORWARD_TOKEN_COST:.2f}x; "
        f"{rates.model_load_seconds:.1f} s per model load",
        f"influence: {rates.influence_fixed_seconds:.1f} s per shard for the reference set and "
        f"{rates.seconds_per_candidate:.2f} s per candidate, measured from a warm state on the preview's rows",
        "pairs: half of each prompt's candidates preferred over the other half (the rank rule's count; the sign "
        "rule's with half of the candidates positive)",
        f"CPU seconds = {rates.cpu_per_wall:.2f} x wall seconds (the measurement's ratio); stages run one after the "
        f"other; rounds: {params.rounds}",
        *rates.notes,
    ]
    return Projection(planned, assumptions)
