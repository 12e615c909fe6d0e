"""Pairwise preference of a judge model between two students' answers (optional part of the evaluation).

The judge reads the instruction and both answers and is asked for the letter of the better one; its
preference is the probability mass on "A" vs "B" for the next token, averaged over both orders so the
position of an answer does not matter.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from resources.generation.interface import SamplingParams
from resources.generation.transformers_backend import TransformersGenerator
from resources.training.encoding import chat_prompt

QUESTION = (
    "Instruction:\n{instruction}\n\nResponse A:\n{first}\n\nResponse B:\n{second}\n\n"
    "Which response follows the instruction better? Answer with the single letter A or B."
)


def student_answers(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, instructions: list[str], max_new_tokens: int
) -> list[str]:
    """Greedy answers of a student to ``instructions``."""
    prompts = [chat_prompt(tokenizer, instruction) for instruction in instructions]
    generated = TransformersGenerator(model, tokenizer, batch_size=8).generate(
        prompts, SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens)
    )
    return [completions[0] for completions in generated]


class PairwiseJudge:
    """A causal LM asked "A or B?"; :meth:`preference` returns P(first answer is better) per instruction."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.letters = [tokenizer.encode(letter, add_special_tokens=False)[0] for letter in ("A", "B")]

    @torch.inference_mode()
    def _prefers_first(self, instruction: str, first: str, second: str) -> float:
        prompt = chat_prompt(self.tokenizer, QUESTION.format(instruction=instruction, first=first, second=second))
        ids = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
        logits = self.model(input_ids=ids.to(self.model.device)).logits[0, -1, self.letters].float()
        return float(torch.softmax(logits, dim=0)[0])

    def preference(self, instructions: list[str], answers_a: list[str], answers_b: list[str]) -> list[float]:
        """P(answer A beats answer B) for each instruction, averaged over both presentation orders."""
        return [
            (self._prefers_first(i, a, b) + 1 - self._prefers_first(i, b, a)) / 2
            for i, a, b in zip(instructions, answers_a, answers_b, strict=True)
        ]


def judge_students(
    judge: PairwiseJudge, instructions: list[str], answers: dict[tuple[str, int], list[str]], treatment: str,
    control: str,
) -> dict[int, float]:
    """Mean P(treatment's answer beats control's) per seed."""
    seeds = sorted(seed for name, seed in answers if name == treatment)
    return {
        seed: sum(prefs) / len(prefs)
        for seed in seeds
        for prefs in [judge.preference(instructions, answers[treatment, seed], answers[control, seed])]
    }
