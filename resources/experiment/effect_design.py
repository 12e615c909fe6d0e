"""The effect experiment's design: its arms and its pre-registered hypotheses H1-H4."""

from __future__ import annotations

from resources.evaluation.student_sft import MONTESSORI, SELF_INSTRUCT
from resources.experiment.on_task import ARITHMETIC
from resources.experiment.preregistration import Criterion, Hypothesis, Preregistration
from resources.experiment.statistics import Metric

DPO_RANDOM, DPO_STUDENT_LOSS = "dpo_random", "dpo_student_loss"
SIGNALS = {DPO_RANDOM: "random", DPO_STUDENT_LOSS: "student_loss", MONTESSORI: "influence"}
"""The DPO arms and the preference signal each tunes its teacher on; the control arm is the untuned teacher."""
EFFECT_ARMS = (SELF_INSTRUCT, *SIGNALS)
GENERAL_LOSS_MARGIN = 0.05  # nats per answer token, about 5% perplexity


def effect_preregistration(
    replicates: int = 5, heldout: str = "data/heldout_math.jsonl", general: str = "data/heldout_set.jsonl",
    on_task: str = ARITHMETIC,
) -> Preregistration:
    """The effect experiment's design and criteria: does the influence-tuned teacher teach the task better
    than the untuned teacher, and is it the influence signal (not DPO as such, not the student's own loss)?
    ``heldout``, ``general`` and ``on_task``: the task's held-out set, the general one and the on-task rule
    (the defaults: the arithmetic task)."""
    counted = ("arithmetic problems (numbers plus a computation cue)" if on_task == ARITHMETIC
               else f"on task under the rule {on_task!r}")
    metrics = (
        Metric("task_loss", "the student's mean answer-token loss on the task's held-out set "
               f"({heldout}) after SFT on the arm's final dataset", "lower"),
        Metric("general_loss", f"the same student's loss on the general held-out set ({general})", "lower"),
        Metric("on_task_share", f"share of the arm's final instructions that resources.on_task counts as {counted}",
               "higher"),
    )
    hypotheses = (
        Hypothesis("H1", "the influence-tuned teacher's data teaches the task better than the untuned teacher's",
                   (Criterion("task_loss", SELF_INSTRUCT),)),
        Hypothesis("H2", "the gain comes from the influence signal: it beats DPO on random pairs and DPO on "
                   "student-loss pairs", (Criterion("task_loss", DPO_RANDOM),
                                          Criterion("task_loss", DPO_STUDENT_LOSS))),
        Hypothesis("H3", "the tuned teacher writes more on-task instructions than the untuned teacher and than "
                   "DPO on random pairs", (Criterion("on_task_share", SELF_INSTRUCT),
                                           Criterion("on_task_share", DPO_RANDOM))),
        Hypothesis("H4", f"general ability is not harmed: the general held-out loss is at most "
                   f"{GENERAL_LOSS_MARGIN} nats above the untuned teacher's (about 5% perplexity)",
                   (Criterion("general_loss", SELF_INSTRUCT, "not_worse", GENERAL_LOSS_MARGIN),)),
    )
    notes = (
        "H1 is the primary question; H2-H4 are secondary and each is read on its own (no correction across "
        "hypotheses). A hypothesis that is not supported is reported as such, whatever the point estimates say.",
    )
    return Preregistration(MONTESSORI, EFFECT_ARMS[:-1], metrics, hypotheses, replicates, 0.95, notes)
