"""Student evaluation engine: SFT the student on a dataset (TRL ``SFTTrainer``), measure its held-out loss,
and compare two datasets over several seeds with their spread.

The loss is the one used everywhere in the project (:func:`resources.examples.per_example_loss`: mean
response-token cross-entropy of each chat-formatted example); perplexity is ``exp`` of its mean.
"""

from __future__ import annotations

import math
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

import polars as pl
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from resources.examples import collate, encode_pairs, per_example_loss
from resources.judge import student_answers
from resources.models import load_causal_lm
from resources.training import check_finite


@dataclass(frozen=True)
class SFTParams:
    """Student fine-tuning hyperparameters shared by every dataset being compared."""

    learning_rate: float = 2e-5
    epochs: float = 1.0
    batch_size: int = 4
    max_length: int = 256


def sft_records(rows: pl.DataFrame) -> list[dict[str, list[dict[str, str]]]]:
    """Conversational prompt/completion records (TRL computes the loss on the completion only)."""
    return [
        {"prompt": [{"role": "user", "content": instruction}],
         "completion": [{"role": "assistant", "content": response}]}
        for instruction, response in rows.select("instruction", "response").iter_rows()
    ]


def sft_student(
    student_folder: str, rows: pl.DataFrame, params: SFTParams, seed: int, device: torch.device, dtype: torch.dtype
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Fine-tune a fresh copy of the student on ``rows`` (instruction, response) with TRL SFT."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    if rows.height == 0:
        raise ValueError("SFT needs at least one instruction/response row")
    model, tokenizer = load_causal_lm(student_folder, device, dtype)
    with tempfile.TemporaryDirectory() as scratch:
        args = SFTConfig(
            output_dir=scratch, learning_rate=params.learning_rate, num_train_epochs=params.epochs,
            per_device_train_batch_size=params.batch_size, max_length=params.max_length, logging_steps=1,
            save_strategy="no", report_to=[], seed=seed, data_seed=seed, use_cpu=device.type == "cpu",
            bf16=dtype == torch.bfloat16, disable_tqdm=True,
        )
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(sft_records(rows)),
                             processing_class=tokenizer)
        result = trainer.train()
    check_finite(result.training_loss, "student SFT loss")
    model.eval()
    return model, tokenizer


@torch.inference_mode()
def heldout_loss(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, heldout: pl.DataFrame, max_length: int,
    batch_size: int = 8,
) -> float:
    """Mean response-token loss of ``model`` over the held-out pairs."""
    examples = encode_pairs(tokenizer, heldout["instruction"].to_list(), heldout["response"].to_list(), max_length)
    losses = [
        per_example_loss(model, collate(examples[start : start + batch_size], tokenizer.pad_token_id))
        for start in range(0, len(examples), batch_size)
    ]
    return check_finite(float(torch.cat(losses).mean()), "held-out loss")


def equal_size(datasets: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    """Cut every dataset to the smallest one's row count (first rows), so the comparison is like for like."""
    size = min(frame.height for frame in datasets.values())
    if size == 0:
        empty = [name for name, frame in datasets.items() if frame.height == 0]
        raise ValueError(f"cannot compare students: dataset(s) {empty} have no rows")
    return {name: frame.head(size) for name, frame in datasets.items()}


def evaluate_students(
    student_folder: str,
    datasets: dict[str, pl.DataFrame],
    heldout: pl.DataFrame,
    params: SFTParams,
    seeds: list[int],
    device: torch.device,
    dtype: torch.dtype,
    log: Callable[[str], None],
    answer_tokens: int = 0,
) -> tuple[pl.DataFrame, dict[tuple[str, int], list[str]]]:
    """One row per (dataset, seed): the held-out loss and perplexity of the student fine-tuned on it; the
    untuned student is measured once as dataset ``untuned``. With ``answer_tokens``, each fine-tuned
    student also answers the held-out instructions (greedy), returned by (dataset, seed) for a judge."""
    base, tokenizer = load_causal_lm(student_folder, device, dtype)
    untuned = heldout_loss(base, tokenizer, heldout, params.max_length)
    del base
    rows = [{"dataset": "untuned", "seed": None, "train_rows": 0, "heldout_loss": untuned}]
    answers: dict[tuple[str, int], list[str]] = {}
    datasets = equal_size(datasets)
    for seed in seeds:
        for name, frame in datasets.items():
            model, tokenizer = sft_student(student_folder, frame, params, seed, device, dtype)
            loss = heldout_loss(model, tokenizer, heldout, params.max_length)
            log(f"student SFT on {name} ({frame.height} rows, seed {seed}): held-out loss {loss:.4f}")
            rows.append({"dataset": name, "seed": seed, "train_rows": frame.height, "heldout_loss": loss})
            if answer_tokens:
                answers[name, seed] = student_answers(model, tokenizer, heldout["instruction"].to_list(),
                                                      answer_tokens)
    table = pl.DataFrame(rows, schema={"dataset": pl.String, "seed": pl.Int64, "train_rows": pl.Int64,
                                       "heldout_loss": pl.Float64}, orient="row")
    return table.with_columns(perplexity=pl.col("heldout_loss").exp()), answers


@dataclass(frozen=True)
class Comparison:
    """Held-out loss of students trained on ``treatment`` vs ``control`` data, over seeds."""

    treatment: str
    control: str
    treatment_mean: float
    treatment_std: float
    control_mean: float
    control_std: float
    seeds: int

    @property
    def difference(self) -> float:
        """treatment minus control (negative: the treatment's student has the lower held-out loss)."""
        return self.treatment_mean - self.control_mean

    @property
    def noise(self) -> float:
        """Standard error of the difference of the two means (0 with a single seed)."""
        return math.sqrt((self.treatment_std**2 + self.control_std**2) / self.seeds)

    @property
    def verdict(self) -> str:
        """Plain-words reading: which student is better, and whether that is beyond twice the noise."""
        if self.seeds < 2:
            return "one seed only: no spread, so noise cannot be told apart"
        if abs(self.difference) <= 2 * self.noise:
            return "within noise (|difference| <= 2 standard errors)"
        better = self.treatment if self.difference < 0 else self.control
        return f"{better} is better beyond noise (|difference| > 2 standard errors)"

    def sentence(self) -> str:
        """One line for logs and the CLI."""
        return (
            f"held-out loss {self.treatment} {self.treatment_mean:.4f} ± {self.treatment_std:.4f} vs "
            f"{self.control} {self.control_mean:.4f} ± {self.control_std:.4f} over {self.seeds} seed(s): "
            f"difference {self.difference:+.4f} (standard error {self.noise:.4f}), {self.verdict}"
        )


def compare(results: pl.DataFrame, treatment: str, control: str) -> Comparison:
    """Mean and sample standard deviation of each dataset's held-out loss over seeds."""

    def stats(name: str) -> tuple[float, float, int]:
        losses = results.filter(pl.col("dataset") == name)["heldout_loss"].to_list()
        if not losses:
            raise ValueError(f"no evaluation results for dataset {name!r}")
        return statistics.fmean(losses), statistics.stdev(losses) if len(losses) > 1 else 0.0, len(losses)

    t_mean, t_std, n = stats(treatment)
    c_mean, c_std, _ = stats(control)
    return Comparison(treatment, control, t_mean, t_std, c_mean, c_std, n)
