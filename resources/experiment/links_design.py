"""Where does the chain break? The effect experiment's links 1 and 2, each a pre-registered question of its own.

Montessori-Instruct is a chain of three links: (1) local influence picks data that helps the student, (2) DPO on
influence pairs makes the teacher write more influential data, (3) that data teaches better. H1-H4
(:mod:`~resources.experiment.effect_design`) measured link 3; this module states links 1 and 2:

- **Link 1, selection** (no DPO): from each replicate's own round candidates (the pool the DPO arms learned from),
  equal-size training sets chosen by the rules of :mod:`resources.preference.selection`; the student fine-tuned on
  each as in the effect arms; task and general held-out loss.
- **Link 2, teacher shift**: every effect arm's final dataset scored by the replicate's warm student against the
  task reference set (the pairs' influence method and baseline); per arm the mean influence and the share of
  positive-influence rows.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from resources.evaluation.student_sft import MONTESSORI, SELF_INSTRUCT
from resources.experiment.effect_design import DPO_RANDOM, DPO_STUDENT_LOSS, GENERAL_LOSS_MARGIN
from resources.experiment.preregistration import Criterion, Hypothesis, Preregistration
from resources.experiment.statistics import Metric

LINK1, LINK2 = "link1", "link2"
HEADINGS = {LINK1: "link 1, does local influence pick data that helps the student?",
            LINK2: "link 2, does DPO on influence pairs make the teacher write more influential data?"}
SELECTION_ARMS = {"select_random": "random", "select_bottom_influence": "bottom_influence",
                  "select_top_student_loss": "top_student_loss", "select_top_influence": "top_influence"}
"""The selection arms and the rule each chooses its training set by; the treatment (top influence) last."""
TOP_INFLUENCE = "select_top_influence"
EFFECT_BUDGET = (
    "Budget (the bundled effect profile on the arithmetic task): the 20 H1-H4 records are reused; a run from a "
    "checkout without the work folder remakes each replicate's four datasets (about 14 minutes: the measured effect "
    "run less its fine-tunes), fine-tunes the 4 selection arms on half-size sets (about 4 x 35 s) and scores the "
    "four final datasets (about 130 rows, about 3.5 minutes): about 20 minutes per replicate, about 100 minutes for "
    "5 (the measured effect run: 89.8 minutes, about 18 per replicate, machine speed varying by about 10%). That is "
    "inside the 120-minute budget, so the full size is pre-registered, not a smaller one."
)
"""The budget statement of the links added to the effect design's 20 records (pre-registered with them)."""
CHAIN = (
    "Reading the chain: link 1 holds when L1 is supported, link 2 when L2 is, link 3 is H1. L1 and L2 are the "
    "primary questions of their links; the others are secondary and each is read on its own (no correction across "
    "hypotheses). A hypothesis that is not supported is reported as such, whatever the point estimates say."
)


def _heldout_metrics(heldout: str, general: str) -> tuple[Metric, Metric]:
    return (
        Metric("task_loss", f"the student's mean answer-token loss on the task's held-out set ({heldout}) after "
               "SFT on the arm's selected rows", "lower"),
        Metric("general_loss", f"the same student's loss on the general held-out set ({general})", "lower"),
    )


def _size(replicates: int, share: float) -> str:
    return (f"Size, fixed before the run: {replicates} replicates (the effect design's: the same seeds, candidates "
            f"and warm students), each selection arm {share:.0%} of its replicate's candidate pool (rounded half up, "
            "at least one row; student_dataset.select_share).")


def link1_preregistration(
    replicates: int = 5, share: float = 0.5, heldout: str = "data/heldout_math.jsonl",
    general: str = "data/heldout_set.jsonl", budget: str = "",
) -> Preregistration:
    """Link 1: the student fine-tuned on the top-influence ``share`` of its replicate's candidate pool against the
    same-size random, bottom-influence and top-student-loss shares; ``budget``: a statement of the run's time."""
    part = f"{share:.0%}"
    hypotheses = (
        Hypothesis("L1", f"local influence picks data that helps: the top-influence {part} of the round's "
                   "candidates teaches the task better than a random selection of the same size",
                   (Criterion("task_loss", "select_random"),)),
        Hypothesis("L1b", f"the signal has a direction: the top-influence {part} teaches the task better than the "
                   f"bottom-influence {part}", (Criterion("task_loss", "select_bottom_influence"),)),
        Hypothesis("L1c", f"influence selects better than the student's own loss (the paper's training-loss "
                   f"ablation: the hardest {part})", (Criterion("task_loss", "select_top_student_loss"),)),
        Hypothesis("L1d", f"selecting for the task costs no general ability: the general held-out loss is at most "
                   f"{GENERAL_LOSS_MARGIN} nats above random selection's",
                   (Criterion("general_loss", "select_random", "not_worse", GENERAL_LOSS_MARGIN),)),
    )
    notes = (
        "Pool: per replicate, the round's kept candidates less the warm-up prompts (the rows influence scored and "
        "the DPO arms' pairs came from), each with its influence from the replicate's warm student against the "
        "task reference set and the warm student's own loss on it. Every arm keeps the same number of rows; ties "
        "are broken by candidate_id; random selection is seeded with the replicate's seed. The student's "
        "fine-tune is the effect arms' (evaluation settings, seed = the replicate's).",
        _size(replicates, share), *([budget] if budget else []), CHAIN,
    )
    controls = tuple(arm for arm in SELECTION_ARMS if arm != TOP_INFLUENCE)
    return Preregistration(TOP_INFLUENCE, controls, _heldout_metrics(heldout, general), hypotheses, replicates,
                           0.95, notes)


def link2_preregistration(replicates: int = 5, baseline: str = "null_step", budget: str = "") -> Preregistration:
    """Link 2: the influence of each effect arm's final data, measured from the replicate's warm student against
    the task reference set (``baseline``: the pairs'); ``budget``: a statement of the run's time."""
    metrics = (
        Metric("shift_mean_influence", "mean influence of the arm's final dataset rows, each scored from the "
               f"replicate's warm student against the task reference set with the pairs' influence method and "
               f"baseline ({baseline})", "higher"),
        Metric("shift_positive_share", f"share of the arm's final rows with positive influence ({baseline} "
               "baseline)", "higher"),
    )
    hypotheses = (
        Hypothesis("L2", "DPO on influence pairs moves the teacher toward influential data: the influence-tuned "
                   "teacher's final rows have a higher mean influence than the untuned teacher's",
                   (Criterion("shift_mean_influence", SELF_INSTRUCT),)),
        Hypothesis("L2b", "the shift comes from the influence signal, not from DPO as such: a higher mean influence "
                   "than DPO on random pairs and than DPO on student-loss pairs",
                   (Criterion("shift_mean_influence", DPO_RANDOM),
                    Criterion("shift_mean_influence", DPO_STUDENT_LOSS))),
        Hypothesis("L2c", "more of the influence-tuned teacher's rows help the student than of the untuned teacher's",
                   (Criterion("shift_positive_share", SELF_INSTRUCT),)),
    )
    notes = (
        "The four arms' datasets are the ones the H1-H4 records measured (the same seeds; each link-2 record says "
        "whether its data matches its H1-H4 record: teacher and warm-student versions, row count). Every row of an "
        f"arm's final dataset is scored, not only the rows its student was fine-tuned on. {replicates} replicates.",
        *([budget] if budget else []), CHAIN,
    )
    return Preregistration(MONTESSORI, (SELF_INSTRUCT, DPO_RANDOM, DPO_STUDENT_LOSS), metrics, hypotheses,
                           replicates, 0.95, notes)


def shift_metrics(scores: Sequence[float]) -> dict[str, float | int]:
    """Link 2's measures of one arm's final rows from their influence scores (under the pairs' baseline): the mean,
    the share above 0 and the number of rows."""
    if not scores:
        raise ValueError("the teacher-shift measure needs at least one scored row")
    if any(math.isnan(score) for score in scores):
        raise ValueError("the teacher-shift measure got a NaN influence score")
    return {"shift_mean_influence": statistics.fmean(scores),
            "shift_positive_share": sum(score > 0 for score in scores) / len(scores), "shift_rows": len(scores)}
