"""Student evaluation engine: SFT the student on a dataset (TRL ``SFTTrainer``), measure its held-out loss,
and compare two datasets over several seeds with their spread.

The loss is the one used everywhere in the project (:func:`resources.training.encoding.per_example_loss`: mean
response-token cross-entropy of each chat-formatted example); perplexity is ``exp`` of its mean.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import torch
from scipy.stats import ttest_rel
from transformers import PreTrainedModel, PreTrainedTokenizerBase, PrinterCallback

from resources.cost.usage import TALLY
from resources.evaluation.judge import student_answers
from resources.models import load_causal_lm, resolve_dtype
from resources.training.encoding import MeanLoss, encode_pairs
from resources.training.launch import AccelerateLaunch, process_device, serve, share_of_batch
from resources.training.trl_trainers import SFTParams, save_policy, tokens_seen, trainer_arguments
from resources.training.warmup import check_finite

MONTESSORI, SELF_INSTRUCT = "montessori", "self_instruct"
"""The labels of the two datasets compared: the tuned teacher's and the untuned teacher's (Self-Instruct)."""

def sft_records(rows: pl.DataFrame) -> list[dict[str, list[dict[str, str]]]]:
    """Conversational prompt/completion records (TRL computes the loss on the completion only)."""
    return [
        {"prompt": [{"role": "user", "content": instruction}],
         "completion": [{"role": "assistant", "content": response}]}
        for instruction, response in rows.select("instruction", "response").iter_rows()
    ]


def sft_student(
    student_folder: str, rows: pl.DataFrame, params: SFTParams, seed: int, device: torch.device, dtype: torch.dtype,
    output_folder: Path | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Fine-tune a fresh copy of the student on ``rows`` (instruction, response) with TRL SFT; with
    ``output_folder``, also save it there (every process of a distributed run must call this). The tokens it saw
    are added to this process's usage tally."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    if rows.height == 0:
        raise ValueError("SFT needs at least one instruction/response row")
    model, tokenizer = load_causal_lm(student_folder, device, dtype)
    with tempfile.TemporaryDirectory() as scratch:
        args = SFTConfig(
            **trainer_arguments(scratch, params.learning_rate, params.epochs, params.batch_size, params.max_length,
                                seed, device, dtype, params.activation_checkpointing),
            data_seed=seed,
        )
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(sft_records(rows)),
                             processing_class=tokenizer)
        trainer.remove_callback(PrinterCallback)
        result = trainer.train()
        TALLY.add(tokens_trained=tokens_seen(trainer.state.log_history))
        if output_folder is not None:
            save_policy(trainer, output_folder, merge_adapter=False, dtype=dtype)
    check_finite(result.training_loss, "student SFT loss")
    model.eval()
    return model, tokenizer


def _sft_job(job: dict, rows: pl.DataFrame) -> list[dict[str, float]]:
    """One launched process's share of a student SFT job; the fine-tuned student is written to the job's output;
    the history holds the tokens the training saw (for the parent's usage tally)."""
    params = SFTParams(**{**job["params"], "batch_size": share_of_batch(job["params"]["batch_size"])})
    before = TALLY.snapshot()["tokens_trained"]
    sft_student(job["model"], rows, params, job["seed"], process_device(job), resolve_dtype(job["precision"]),
                Path(job["output"]))
    return [{"num_tokens": TALLY.snapshot()["tokens_trained"] - before}]


def fine_tune(
    student_folder: str, rows: pl.DataFrame, params: SFTParams, seed: int, device: torch.device, dtype: torch.dtype,
    launch: AccelerateLaunch | None, log: Callable[[str], None],
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """:func:`sft_student` in this process, or under ``accelerate launch`` (then loaded from its output)."""
    if launch is None:
        return sft_student(student_folder, rows, params, seed, device, dtype)
    with tempfile.TemporaryDirectory() as scratch:
        job = {"model": student_folder, "output": scratch, "device": device.type,
               "precision": str(dtype).removeprefix("torch."), "params": dataclasses.asdict(params), "seed": seed}
        history = launch.run(__name__, job, rows, "student SFT", log)["history"]
        TALLY.add(tokens_trained=tokens_seen(history))
        model, tokenizer = load_causal_lm(scratch, device, dtype)
    return model.eval(), tokenizer


def heldout_loss(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, heldout: pl.DataFrame, max_length: int,
    batch_size: int = 8,
) -> float:
    """Mean response-token loss of ``model`` over the held-out pairs."""
    examples = encode_pairs(tokenizer, heldout["instruction"].to_list(), heldout["response"].to_list(), max_length)
    return check_finite(MeanLoss(examples, tokenizer.pad_token_id, batch_size, "the held-out set")(model),
                        "held-out loss")


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
    launch: AccelerateLaunch | None = None,
) -> tuple[pl.DataFrame, dict[tuple[str, int], list[str]]]:
    """One row per (dataset, seed): the held-out loss and perplexity of the student fine-tuned on it; the
    untuned student is measured once as dataset ``untuned``. With ``answer_tokens``, each fine-tuned
    student also answers the held-out instructions (greedy), returned by (dataset, seed) for a judge.
    With ``launch``, each fine-tuning runs on several processes through ``accelerate launch``."""
    base, tokenizer = load_causal_lm(student_folder, device, dtype)
    untuned = heldout_loss(base, tokenizer, heldout, params.max_length)
    del base
    rows = [{"dataset": "untuned", "seed": None, "train_rows": 0, "heldout_loss": untuned}]
    answers: dict[tuple[str, int], list[str]] = {}
    datasets = equal_size(datasets)
    for seed in seeds:
        for name, frame in datasets.items():
            model, tokenizer = fine_tune(student_folder, frame, params, seed, device, dtype, launch, log)
            loss = heldout_loss(model, tokenizer, heldout, params.max_length)
            log(f"student SFT on {name} ({frame.height} rows, seed {seed}): held-out loss {loss:.4f}")
            rows.append({"dataset": name, "seed": seed, "train_rows": frame.height, "heldout_loss": loss})
            if answer_tokens:
                answers[name, seed] = student_answers(model, tokenizer, heldout["instruction"].to_list(),
                                                      answer_tokens)
    table = pl.DataFrame(rows, schema={"dataset": pl.String, "seed": pl.Int64, "train_rows": pl.Int64,
                                       "heldout_loss": pl.Float64}, orient="row")
    return table.with_columns(perplexity=pl.col("heldout_loss").exp()), answers


def _mean_std(losses: tuple[float, ...]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.fmean(losses), statistics.stdev(losses) if len(losses) > 1 else 0.0


@dataclass(frozen=True)
class Comparison:
    """Held-out losses of students trained on ``treatment`` vs ``control`` data, paired by seed (the same
    seed gives both runs the same data order and initialization, so the per-seed differences are the
    cleanest measure of the data's effect)."""

    treatment: str
    control: str
    treatment_losses: tuple[float, ...]
    control_losses: tuple[float, ...]
    significance: float = 0.05

    @property
    def seeds(self) -> int:
        """Number of seeds (pairs)."""
        return len(self.treatment_losses)

    @property
    def difference(self) -> float:
        """Mean of treatment minus control (negative: the treatment's student has the lower held-out loss)."""
        return statistics.fmean(t - c for t, c in zip(self.treatment_losses, self.control_losses, strict=True))

    @property
    def standard_error(self) -> float:
        """Standard error of the mean paired difference (0 with one seed)."""
        diffs = [t - c for t, c in zip(self.treatment_losses, self.control_losses, strict=True)]
        return statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else 0.0

    @property
    def p_value(self) -> float:
        """Two-sided paired t-test p-value (nan with one seed or identical differences)."""
        if self.seeds < 2 or self.standard_error == 0:
            return math.nan
        return float(ttest_rel(self.treatment_losses, self.control_losses).pvalue)

    @property
    def verdict(self) -> str:
        """Plain-words reading: which student is better, and whether the paired t-test can tell it from noise."""
        if math.isnan(self.p_value):
            return "not testable (one seed, or no spread between seeds): add seeds to tell a difference from noise"
        better = self.treatment if self.difference < 0 else self.control
        if self.p_value < self.significance:
            return f"{better} is better (paired t-test p={self.p_value:.3f})"
        return f"within noise: {better} is ahead but the paired t-test gives p={self.p_value:.3f}"

    def sentence(self) -> str:
        """One line for logs and the CLI."""
        (t_mean, t_std), (c_mean, c_std) = _mean_std(self.treatment_losses), _mean_std(self.control_losses)
        return (
            f"held-out loss {self.treatment} {t_mean:.4f} ± {t_std:.4f} vs {self.control} {c_mean:.4f} ± "
            f"{c_std:.4f} (mean ± sd over {self.seeds} seed(s)); paired difference {self.difference:+.4f} ± "
            f"{self.standard_error:.4f} (standard error): {self.verdict}"
        )


def compare(results: pl.DataFrame, treatment: str, control: str) -> Comparison:
    """Pair each seed's held-out loss of the ``treatment`` student with the ``control`` student's."""
    paired = (
        results.filter(pl.col("dataset") == treatment).select("seed", treatment=pl.col("heldout_loss"))
        .join(results.filter(pl.col("dataset") == control).select("seed", control=pl.col("heldout_loss")), on="seed")
        .sort("seed")
    )
    if paired.height == 0:
        raise ValueError(f"no seed has evaluation results for both {treatment!r} and {control!r}")
    return Comparison(treatment, control, tuple(paired["treatment"]), tuple(paired["control"]))


if __name__ == "__main__":
    serve(Path(sys.argv[1]), _sft_job)
